#!/usr/bin/env bash
# `moeforge merge` end to end (issue 16; docs/benchmarks.md): wall time and peak RSS (GNU time) of
#  1. merging models/tiny-qwen-moe (32 experts per layer) to 16 with every method, calibrated as
#     scripts/merge_fidelity.sh does (32 blocks of 512 tokens of the reference corpus);
#  2. hc-smoe 64 -> 32 on a random OLMoE-shaped checkpoint (d 2048, f 1024, 64 experts, 6 layers,
#     bf16, 5 GB; 2 blocks of 1024 tokens), where the weights, not libtorch's fixed RSS, dominate.
# The baseline RSS is `moeforge info` on the same model (the process with libtorch loaded).
#   bash bench/merge_end_to_end.sh        (needs data/corpus: scripts/build-corpus.sh; writes under $TMPDIR)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOEFORGE_BIN:-build/moeforge}
TMP=${TMPDIR:-/tmp}/moeforge-merge-bench
CALIB=data/corpus/validation.jsonl
rm -rf "$TMP" && mkdir -p "$TMP"
mb() { echo $(( $1 / 1024 )); }
measure() {  # measure LABEL MODEL ARGS... -> one table row
  local label=$1 model=$2
  shift 2
  local base ckpt
  base=$(/usr/bin/time -f %M "$BIN" -q info "$model" 2>&1 >/dev/null | tail -1)
  ckpt=$(du -bc "$model"/*.safetensors | tail -1 | cut -f1)
  /usr/bin/time -f "%e %M" -o "$TMP/time" "$BIN" -q merge "$model" --calib "$CALIB" --out "$TMP/out" --overwrite "$@" >/dev/null
  read -r wall peak < "$TMP/time"
  python3 -c "
import sys
label, wall, peak, base, ckpt = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print('| %s | %.1f | %d | %d | %.0f | %.2f | %.2f |' % (label, wall, peak // 1024, base // 1024, ckpt / 2**20,
      peak * 1024 / ckpt, (peak - base) * 1024 / ckpt))" "$label" "$wall" "$peak" "$base" "$ckpt"
}
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| run | wall s | peak RSS MiB | baseline RSS MiB | checkpoint MiB | peak / checkpoint | (peak − baseline) / checkpoint |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for m in hc-smoe kmeans m-smoe o-prune f-prune s-prune reap; do
  exact=()
  [[ $m == m-smoe ]] && exact=(--output exact)
  measure "tiny-qwen-moe $m 32→16" models/tiny-qwen-moe --method "$m" --experts 16 --seq-len 512 "${exact[@]}"
done
cat > "$TMP/olmoe.json" <<'JSON'
{"architectures": ["OlmoeForCausalLM"], "model_type": "olmoe", "hidden_size": 2048, "intermediate_size": 1024,
 "num_experts": 64, "num_experts_per_tok": 8, "num_hidden_layers": 6, "num_attention_heads": 16,
 "num_key_value_heads": 16, "vocab_size": 8192, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
 "norm_topk_prob": false, "tie_word_embeddings": false, "torch_dtype": "bfloat16"}
JSON
"$BIN" -q init --config "$TMP/olmoe.json" --out "$TMP/olmoe" --dtype bf16 --tokenizer models/tiny >/dev/null
measure "OLMoE-shaped hc-smoe 64→32" "$TMP/olmoe" --method hc-smoe --experts 32 --seq-len 1024 --blocks 2
rm -rf "$TMP"
