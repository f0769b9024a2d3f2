#!/usr/bin/env python3
"""Writes tiny random checkpoints of every family the moeforge runtime supports, made by
Hugging Face transformers itself, plus transformers' logits for fixed token ids.

    python3 scripts/hf_reference.py [--out tests/data/hf_reference]

Needs: torch, transformers (>= 4.45 for OLMoE; 5.x works), safetensors. Run it wherever such a
Python is installed, then commit the folder: tests/test_model_checkpoint.cpp
(ModelCheckpoint.LogitsEqualTransformers) loads each checkpoint with moeforge and requires
logits within 1e-4 of these (fp32). Without the folder that test is skipped.

Layout: OUT/<name>/{config.json, model.safetensors, reference.safetensors}; the reference
file holds, for case in {plain, padded}: <case>.input_ids (I64 [B,T]),
<case>.attention_mask (I64 [B,T]) and <case>.logits (F32 [B,T,V]). The padded case is
left-padded and passes position_ids = cumsum(mask) - 1 (what generate() does), which is
moeforge's convention; only real-token positions are compared.
"""
import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

VOCAB = 64

COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
              max_position_embeddings=128, bos_token_id=1, eos_token_id=2)


def families():
    t = transformers
    out = {
        "llama": (t.LlamaConfig, t.LlamaForCausalLM, dict(COMMON, rope_theta=10000.0)),
        "llama3_tied": (t.LlamaConfig, t.LlamaForCausalLM,
                        dict(COMMON, rope_theta=500000.0, tie_word_embeddings=True, eos_token_id=[2, 3],
                             rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                               high_freq_factor=4.0, original_max_position_embeddings=16))),
        "llama_bias": (t.LlamaConfig, t.LlamaForCausalLM,
                       dict(COMMON, attention_bias=True, mlp_bias=True, head_dim=16,
                            rope_scaling=dict(rope_type="linear", factor=2.0))),
        "mistral": (t.MistralConfig, t.MistralForCausalLM, dict(COMMON, sliding_window=5)),
        "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM, dict(COMMON, tie_word_embeddings=True, rope_theta=1e6)),
        "gpt2": (t.GPT2Config, t.GPT2LMHeadModel,
                 dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=48,
                      bos_token_id=1, eos_token_id=2)),
        "mixtral": (t.MixtralConfig, t.MixtralForCausalLM, dict(COMMON, num_local_experts=4, num_experts_per_tok=2)),
        "qwen2_moe": (t.Qwen2MoeConfig, t.Qwen2MoeForCausalLM,
                      dict(COMMON, num_hidden_layers=3, num_experts=4, num_experts_per_tok=2,
                           moe_intermediate_size=24, shared_expert_intermediate_size=40, norm_topk_prob=False,
                           decoder_sparse_step=1, mlp_only_layers=[1])),
        "qwen2_moe_norm": (t.Qwen2MoeConfig, t.Qwen2MoeForCausalLM,
                           dict(COMMON, num_hidden_layers=4, num_experts=4, num_experts_per_tok=3,
                                moe_intermediate_size=24, shared_expert_intermediate_size=40, norm_topk_prob=True,
                                decoder_sparse_step=2, mlp_only_layers=[])),
    }
    if hasattr(t, "OlmoeForCausalLM"):
        out["olmoe"] = (t.OlmoeConfig, t.OlmoeForCausalLM,
                        dict(COMMON, num_key_value_heads=4, num_experts=4, num_experts_per_tok=2,
                             norm_topk_prob=False))
        out["olmoe_clip"] = (t.OlmoeConfig, t.OlmoeForCausalLM,
                             dict(COMMON, num_key_value_heads=4, num_experts=4, num_experts_per_tok=2,
                                  norm_topk_prob=True, clip_qkv=0.5))
    else:
        print("transformers %s has no OLMoE; skipping it" % t.__version__, file=sys.stderr)
    return out


def randomize(model, seed):
    """Every parameter random (norm weights near 1), so a missing bias or norm shows up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            is_norm = ("norm" in name or "ln_" in name) and name.endswith(".weight")
            p.copy_(1.0 + 0.1 * r if is_norm else 0.1 * r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "hf_reference"))
    args = ap.parse_args()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    plain_ids = torch.randint(3, VOCAB, (2, 12), generator=g)
    padded_ids = torch.randint(3, VOCAB, (2, 9), generator=g)
    padded_mask = torch.ones_like(padded_ids)
    padded_mask[1, :4] = 0
    padded_ids[1, :4] = 0

    os.makedirs(args.out, exist_ok=True)
    for i, (name, (cfg_cls, model_cls, kwargs)) in enumerate(sorted(families().items())):
        cfg = cfg_cls(**kwargs)
        try:  # plain matmul attention: the most literal reference
            cfg._attn_implementation = "eager"
        except Exception:
            pass
        model = model_cls(cfg).eval().to(torch.float32)
        randomize(model, 100 + i)
        if cfg.tie_word_embeddings:
            model.tie_weights()
        d = os.path.join(args.out, name)
        model.save_pretrained(d, safe_serialization=True)
        tensors = {}
        with torch.no_grad():
            for case, ids, mask in (("plain", plain_ids, torch.ones_like(plain_ids)),
                                    ("padded", padded_ids, padded_mask)):
                pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
                logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
                tensors[case + ".input_ids"] = ids.contiguous()
                tensors[case + ".attention_mask"] = mask.contiguous()
                tensors[case + ".logits"] = logits.contiguous()
        save_file(tensors, os.path.join(d, "reference.safetensors"), metadata={"format": "pt"})
        print("%-16s %s" % (name, d))
    with open(os.path.join(args.out, "SOURCES.md"), "w") as f:
        f.write("Written by scripts/hf_reference.py with transformers %s, torch %s.\n"
                % (transformers.__version__, torch.__version__))


if __name__ == "__main__":
    main()
