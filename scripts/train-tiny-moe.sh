#!/usr/bin/env bash
# Reproduce the bundled sparse-MoE models from models/tiny (model cards: models/tiny-mixtral/README.md,
# models/tiny-qwen-moe/README.md) and the dense baseline they are compared with.
#
#   scripts/train-tiny-moe.sh [mixtral|qwen-moe|dense|all]   (default: all; work files in runs/tiny-moe)
#
# mixtral:  upcycle models/tiny to 8 experts (full FFN copies, N(0, 0.01²) weight noise, about 30 % of the weights’ std), top-2,
#           Mixtral layout; continued pretraining with configs/pretrain-tiny-mixtral.json
#           -> models/tiny-mixtral (bf16)
# qwen-moe: fine-grained upcycle: each FFN cut into 16 slices of 64 neurons, each slice twice
#           (32 experts), top-4, plus a shared expert (the whole FFN, sigmoid-gated), routed and
#           expert down-projections at half scale (the shared one is gated by sigmoid ≈ 0.5 at first); configs/pretrain-tiny-qwen-moe.json -> models/tiny-qwen-moe
# dense:    models/tiny trained on the same tokens with the same schedule (the equal-token baseline;
#           runs/tiny-moe/dense/final, not bundled)
# Each MoE model is then evaluated on tasks/reference-corpus.yaml and its experts measured with
# `moeforge experts` on the validation split. Runs resume from their newest checkpoint.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:-all}"
case "$what" in mixtral|qwen-moe|dense|all) ;; -h|--help) sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "error: unknown model '$what' (mixtral, qwen-moe, dense, all)" >&2; exit 2 ;; esac
bin="${MOEFORGE:-$root/build/moeforge}"
[ -x "$bin" ] || { echo "error: $bin: not built (run make build, or set MOEFORGE)" >&2; exit 1; }
cd "$root"
[ -f data/corpus/train.jsonl ] || scripts/build-corpus.sh --out data/corpus
mkdir -p runs/tiny-moe
tasks=wordnet_define,foldoc_define,kjv_cloze,corpus_ppl_dictionary,corpus_ppl_lexicon,corpus_ppl_scripture,corpus_ppl_computing,corpus_ppl_humor,corpus_ppl_code,corpus_ppl_legal,corpus_ppl_translation

finish() {  # finish NAME RUN_DIR OUT_DIR
  local name="$1" run="$2" out="$3"
  "$bin" convert "$run/final" --out "$out" --dtype bf16
  cp "$run/final/train_record.json" "$out/train_record.json"
  cp "$run/metrics.jsonl" "$out/metrics.jsonl"
  [ "$name" = dense ] && return 0  # the baseline is compared by validation loss only
  "$bin" eval "$out" --include tasks/reference-corpus.yaml --data-dir data/corpus --tasks "$tasks" \
    --output "$out/eval_results.json"
  "$bin" experts "$out" --data data/corpus/validation.jsonl --max-tokens 65536 --json "$out/expert_stats.json"
}

if [ "$what" = mixtral ] || [ "$what" = all ]; then
  [ -d runs/tiny-moe/mixtral-upcycled ] || "$bin" upcycle models/tiny --experts 8 --top-k 2 --family mixtral \
    --gate-mode uniform_random --noise-scale 0.01 --seed 0 --dtype fp32 --out runs/tiny-moe/mixtral-upcycled
  "$bin" train --recipe pretrain --config configs/pretrain-tiny-mixtral.json --json runs/tiny-moe/mixtral-result.json
  finish mixtral runs/tiny-moe/mixtral runs/tiny-moe/tiny-mixtral
fi
if [ "$what" = qwen-moe ] || [ "$what" = all ]; then
  [ -d runs/tiny-moe/qwen-moe-upcycled ] || "$bin" upcycle models/tiny --experts 32 --granularity 16 --top-k 4 \
    --shared-expert --family qwen2_moe --gate-mode uniform_random --residual-scale 0.5 --seed 0 --dtype fp32 \
    --out runs/tiny-moe/qwen-moe-upcycled
  "$bin" train --recipe pretrain --config configs/pretrain-tiny-qwen-moe.json --json runs/tiny-moe/qwen-moe-result.json
  finish qwen-moe runs/tiny-moe/qwen-moe runs/tiny-moe/tiny-qwen-moe
fi
if [ "$what" = dense ] || [ "$what" = all ]; then
  "$bin" train --recipe pretrain --config configs/pretrain-tiny-dense-continued.json --json runs/tiny-moe/dense-result.json
  finish dense runs/tiny-moe/dense runs/tiny-moe/tiny-dense-continued
fi
echo "done: runs/tiny-moe/tiny-mixtral, runs/tiny-moe/tiny-qwen-moe (copy to models/ with their README.md)"
