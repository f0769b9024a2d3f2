#!/usr/bin/env bash
# HC-SMoE's comparison transposed to a bundled MoE model (docs/merge.md "Fidelity"): every method
# of `moeforge merge` at the given expert counts, calibrated on the reference corpus's validation
# split, scored on every item of the reference-corpus tasks (accuracy ± stderr) and on every domain's
# test text (bits per byte). Merging methods use the exact output (the paper's routing); the
# models run in fp32 (--dtype float32), as the tables in docs/merge.md were made.
#   bash scripts/merge_fidelity.sh MODEL R [R...]   e.g. models/tiny-qwen-moe 24 16  (needs data/corpus)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MOEFORGE_BIN:-build/moeforge}
MODEL=$1
shift
NAME=$(basename "$MODEL")
OUT=runs/merge-fidelity/$NAME
METHODS=(hc-smoe kmeans m-smoe o-prune f-prune s-prune reap)
DOMAINS=(dictionary lexicon scripture computing humor code legal translation)
TASKS=wordnet_define,foldoc_define,kjv_cloze
for d in "${DOMAINS[@]}"; do TASKS+=,corpus_ppl_$d; done
mkdir -p "$OUT"
evaluate() {  # evaluate MODEL_DIR RESULT_JSON
  [[ -f $2 ]] || "$BIN" -q eval "$1" --include tasks/reference-corpus.yaml --data-dir data/corpus --tasks "$TASKS" \
    --output "$2" > /dev/null
}
evaluate "$MODEL" "$OUT/original.json"
for r in "$@"; do
  for m in "${METHODS[@]}"; do
    dir=$OUT/$m-$r
    exact=""
    case $m in hc-smoe|kmeans|m-smoe) exact="--output exact" ;; esac
    [[ -f $dir/merge_report.json ]] || "$BIN" -q merge "$MODEL" --method "$m" --experts "$r" $exact \
      --calib data/corpus/validation.jsonl --seq-len 512 --dtype float32 --out "$dir" --overwrite > /dev/null
    evaluate "$dir" "$OUT/$m-$r.json"
  done
done
python3 - "$OUT" "${METHODS[*]}" "$*" "${DOMAINS[*]}" <<'PY'
import json, sys
out, methods, rs, domains = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4].split()
tasks = ["wordnet_define", "foldoc_define", "kjv_cloze"]
def row(label, path):
    res = json.load(open(path))["results"]
    accs = [res[t]["acc,none"] for t in tasks]
    cells = ["%.3f ± %.3f" % (res[t]["acc,none"], res[t]["acc_stderr,none"]) for t in tasks]
    bpb = [res["corpus_ppl_" + d]["bits_per_byte,none"] for d in domains]
    return "| %s | %s | %.3f | %s | %.4f |" % (label, " | ".join(cells), sum(accs) / len(accs),
                                               " | ".join("%.4f" % b for b in bpb), sum(bpb) / len(bpb))
print("| model / method | " + " | ".join(tasks) + " | mean acc | " + " | ".join(domains) + " | mean bits/byte |")
print("|---|" + "---:|" * (len(tasks) + 2 + len(domains)))
print(row("original", "%s/original.json" % out))
for r in rs:
    print("| **r = %s** |" % r + " |" * (len(tasks) + 2 + len(domains)))
    for m in methods:
        print(row(m, "%s/%s-%s.json" % (out, m, r)))
PY
