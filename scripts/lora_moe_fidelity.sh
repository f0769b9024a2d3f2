#!/usr/bin/env bash
# GMoE's Table 1 transposed to models/tiny (docs/lora-moe.md "Fidelity on models/tiny"): plain
# LoRA, MixLoRA, LoRAMoE, MoLA, MING-MoE and GMoE fine-tuned with the same recipe settings
# (configs/lora-moe-tiny.json: the three reference-corpus tasks trained jointly) over the same seeds;
# test accuracy under mLoRA's protocol and lm-eval's, mean ± std over seeds, GMoE's "avg std",
# trainable parameters; plus the base model under both protocols.
#   bash scripts/lora_moe_fidelity.sh [SEEDS]   (default 5; needs data/corpus from build-corpus.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOEFORGE_BIN:-build/moeforge}
OUT=runs/lora-moe
SEEDS=${1:-5}
ROUTINGS=(lora mixlora loramoe mola ming-moe gmoe)
TASKS=wordnet_define,foldoc_define,kjv_cloze
mkdir -p "$OUT"
for routing in "${ROUTINGS[@]}"; do
  [[ -f $OUT/$routing/summary.json ]] && continue
  # Next to the original: its relative paths resolve from configs/.
  sed "s/\"routing\": \"mixlora\"/\"routing\": \"$routing\"/" configs/lora-moe-tiny.json > configs/.lora-moe-run.json
  "$BIN" -q train --recipe lora-moe --config configs/.lora-moe-run.json --seeds "$SEEDS" --output "$OUT/$routing" \
    > "$OUT/$routing.log"
  rm -f configs/.lora-moe-run.json
done
for proto in lm-eval mlora; do
  [[ -f $OUT/base-$proto.json ]] || "$BIN" -q eval models/tiny --include tasks/reference-corpus.yaml \
    --data-dir data/corpus --tasks $TASKS --protocol $proto --output "$OUT/base-$proto.json" > /dev/null
done
python3 - "$OUT" "${ROUTINGS[@]}" <<'PY'
import json, sys
out, routings = sys.argv[1], sys.argv[2:]
tasks = ["wordnet_define", "foldoc_define", "kjv_cloze"]
names = {"lora": "LoRA", "mixlora": "MixLoRA", "loramoe": "LoRAMoE", "mola": "MoLA", "ming-moe": "MING-MoE",
         "gmoe": "GMoE"}
for proto, title in (("mlora", "mLoRA protocol"), ("lm_eval", "lm-eval protocol")):
    print("\n%s: test accuracy %%, mean ± std over seeds\n" % title)
    print("| method | trainable params | " + " | ".join(tasks) + " | avg | avg std |")
    print("|---|---:|" + "---|" * len(tasks) + "---|---|")
    base = json.load(open("%s/base-%s.json" % (out, proto.replace("_", "-"))))["results"]
    print("| base model (no fine-tuning) | 0 | " +
          " | ".join("%.2f" % (100 * base[t]["acc,none"]) for t in tasks) +
          " | %.2f | - |" % (100 * sum(base[t]["acc,none"] for t in tasks) / len(tasks)))
    for r in routings:
        s = json.load(open("%s/%s/summary.json" % (out, r)))
        cells = ["%.2f ± %.2f" % (100 * s["tasks"][t][proto]["mean"], 100 * s["tasks"][t][proto]["std"]) for t in tasks]
        avg = s["average"][proto]
        print("| %s | %s | %s | %.2f | %.2f |" % (names[r], format(s["trainable_params"], ","), " | ".join(cells),
                                                 100 * avg["mean"], 100 * avg["avg_std"]))
n = json.load(open("%s/%s/summary.json" % (out, routings[0])))
print("\nseeds: %s; test items: %s" % (n["seeds"], {t: n["tasks"][t]["n_test"] for t in tasks}))
PY
