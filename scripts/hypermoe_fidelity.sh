#!/usr/bin/env bash
# HyperMoE's LM experiment transposed to models/tiny (docs/hypermoe.md): upcycle to 8 experts,
# k = 1, Shazeer noisy top-k router at zero; train MoE and HyperMoE with the same config
# (configs/hypermoe-tiny.json), same seeds; report validation loss per domain and WikiText-2 test
# perplexity, mean ± std over seeds.
#   bash scripts/hypermoe_fidelity.sh [SEEDS...]   (default 0 1 2; needs data/corpus)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOEFORGE_BIN:-build/moeforge}
OUT=runs/hypermoe
SEEDS=("$@")
[[ ${#SEEDS[@]} -eq 0 ]] && SEEDS=(0 1 2)
WIKI=tests/data/benchmarks/wikitext2/wiki.test.raw
[[ -f ../shared/data/benchmarks/wikitext2/wiki.test.raw ]] && WIKI=../shared/data/benchmarks/wikitext2/wiki.test.raw
mkdir -p "$OUT"
[[ -d $OUT/upcycled ]] || "$BIN" -q upcycle models/tiny --experts 8 --top-k 1 --family moeforge --router noisy_topk \
  --gate-mode zeros --dtype float32 --out "$OUT/upcycled"
for seed in "${SEEDS[@]}"; do
  for variant in moe hypermoe; do
    run=$OUT/$variant-seed$seed
    [[ -f $run/final/train_record.json ]] && continue
    flag=""; [[ $variant == hypermoe ]] && flag=--hypermoe
    # Next to the original: its relative paths resolve from configs/.
    sed "s/\"seed\": 0/\"seed\": $seed/" configs/hypermoe-tiny.json > configs/.hypermoe-run.json
    "$BIN" -q train --recipe pretrain --config configs/.hypermoe-run.json --output "$run" $flag > /dev/null
    rm -f configs/.hypermoe-run.json
  done
done
for seed in "${SEEDS[@]}"; do
  for variant in moe hypermoe; do
    run=$OUT/$variant-seed$seed
    [[ -f $run/wikitext2.json ]] || "$BIN" -q perplexity "$run/final" --text "$WIKI" --context 512 --stride 512 \
      --dtype bfloat16 --json > "$run/wikitext2.json"
  done
done
python3 - "$OUT" "${SEEDS[@]}" <<'PY'
import json, math, sys
out, seeds = sys.argv[1], sys.argv[2:]
def stats(xs):
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd
rows = {}
for v in ("moe", "hypermoe"):
    recs = [json.load(open(f"{out}/{v}-seed{s}/final/train_record.json")) for s in seeds]
    wiki = [json.load(open(f"{out}/{v}-seed{s}/wikitext2.json"))["perplexity"] for s in seeds]
    rows[v] = {d: [math.exp(r["val_loss"][d]) for r in recs] for d in recs[0]["val_loss"]}
    rows[v]["wikitext2 (test)"] = wiki
result = {"seeds": seeds, "perplexity": {v: {d: stats(x) for d, x in r.items()} for v, r in rows.items()},
          "per_seed": rows}
json.dump(result, open(f"{out}/fidelity.json", "w"), indent=1)
print(f"| domain | MoE ppl | HyperMoE ppl | HyperMoE better in |")
print("|---|---|---|---|")
for d in rows["moe"]:
    a, b = stats(rows["moe"][d]), stats(rows["hypermoe"][d])
    wins = sum(h < m for h, m in zip(rows["hypermoe"][d], rows["moe"][d]))
    print(f"| {d} | {a[0]:.3f} ± {a[1]:.3f} | {b[0]:.3f} ± {b[1]:.3f} | {wins}/{len(seeds)} seeds |")
PY
