#!/usr/bin/env bash
# Communication of data and expert parallelism on loopback (docs/benchmarks.md, "Distributed").
#
#   scripts/bench-dist.sh [MODEL ...]   (default: models/tiny-mixtral models/tiny-qwen-moe; work files in runs/bench-dist)
#
# For each MoE model, continued pretraining (fp32, seq 256, 4 steps) three ways on this machine:
#   one   1 process, batch 8, 2 threads            (the baseline of the same run)
#   dp    2 ranks x batch 4, 1 thread each          (moeforge launch; gradients all-reduced)
#   ep    2 ranks x batch 4, 1 thread each, --expert-parallel (routed rows exchanged by all-to-all)
# and prints, from the JSON each run writes, the step time and what every collective cost per
# step: bytes this rank sent and seconds inside the call (rank 0's view; the final checkpoint's
# gathers are included in "broadcast").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in -h|--help) sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;; esac
bin="${MOEFORGE:-$root/build/moeforge}"
[ -x "$bin" ] || { echo "error: $bin: not built (run make build, or set MOEFORGE)" >&2; exit 1; }
cd "$root"
[ -f data/corpus/train.jsonl ] || scripts/build-corpus.sh --out data/corpus
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(models/tiny-mixtral models/tiny-qwen-moe)
work=runs/bench-dist
mkdir -p "$work"
steps=4
# A validation file too short for one window: no validation passes (their all-to-alls would count).
echo '{"text": "short"}' > "$work/no-validation.jsonl"

config() {  # config MODEL BATCH -> path
  local model="$1" batch="$2" path="$work/$(basename "$1")_b$2.json"
  cat > "$path" <<EOF
{"model": {"router_aux_loss_coef": 0.0},
 "training": {"seq_len": 256, "batch_size": $batch, "lr": 1e-4, "warmup_steps": 0, "max_steps": $steps,
              "bf16": false, "eval_every": 0, "eval_batches": 1, "save_every": 0, "seed": 1,
              "train_data": "$root/data/corpus/train.jsonl", "validation_data": "$root/$work/no-validation.jsonl",
              "init": "$root/$model"}}
EOF
  echo "$path"
}

for model in "${models[@]}"; do
  name=$(basename "$model")
  one=$(config "$model" 8)
  four=$(config "$model" 4)
  rm -rf "$work/$name"_{one,dp,ep}
  "$bin" -q --threads 2 train --recipe pretrain --config "$one" --output "$work/${name}_one" --json "$work/${name}_one.json" > /dev/null
  OMP_NUM_THREADS=1 "$bin" launch --nproc 2 --master-port 0 -- "$bin" -q train --recipe pretrain --config "$four" \
    --output "$work/${name}_dp" --json "$work/${name}_dp.json" > /dev/null
  OMP_NUM_THREADS=1 "$bin" launch --nproc 2 --master-port 0 -- "$bin" -q train --recipe pretrain --config "$four" \
    --output "$work/${name}_ep" --json "$work/${name}_ep.json" --expert-parallel > /dev/null
  python3 - "$work" "$name" "$steps" <<'EOF'
import json, sys
work, name, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
tokens_per_step = 8 * 256
print(f"\n{name}: {tokens_per_step} tokens per step, {steps} steps, loopback")
print("| run | step ms | op | MB/step sent | ms/step in op | share of step |")
print("|---|---|---|---|---|---|")
for run in ("one", "dp", "ep"):
    r = json.load(open(f"{work}/{name}_{run}.json"))
    step_ms = 1000.0 * tokens_per_step / r["tokens_per_s"]
    comm = r.get("communication") or {}
    if not comm:
        print(f"| {run} | {step_ms:.0f} | - | - | - | - |")
    for op, c in sorted(comm.items()):
        if c["bytes"] == 0 and op == "barrier":
            continue
        ms = 1000.0 * c["seconds_per_step"]
        print(f"| {run} | {step_ms:.0f} | {op} | {c['bytes_per_step'] / 1e6:.2f} | {ms:.1f} | {ms / step_ms:.0%} |")
EOF
done
