#!/usr/bin/env bash
# The demo job: builds a tiny random Llama checkpoint and describes it with `moeforge info`.
set -euo pipefail
build=${1:-build}
bin="$build/moeforge"
work="$build/demo"
mkdir -p "$work"
cat > "$work/config.json" <<'JSON'
{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": 8192,
  "hidden_size": 256,
  "intermediate_size": 1024,
  "num_hidden_layers": 6,
  "num_attention_heads": 8,
  "num_key_value_heads": 4,
  "max_position_embeddings": 1024,
  "rms_norm_eps": 1e-5,
  "rope_theta": 10000.0,
  "tie_word_embeddings": true,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "torch_dtype": "bfloat16"
}
JSON
"$bin" init --config "$work/config.json" --out "$work/tiny-random" --seed 1
"$bin" info "$work/tiny-random"
