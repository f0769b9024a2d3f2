#!/usr/bin/env bash
# Reproduce models/tiny from nothing but Debian packages (model card: models/tiny/README.md).
#
#   scripts/train-tiny.sh [--out DIR]      (default DIR: models/tiny; work files in runs/tiny)
#
# 1. the reference corpus (scripts/build-corpus.sh -> data/corpus, skipped when present);
# 2. the training text as plain UTF-8 (documents separated by a blank line) -> BPE tokenizer, 8192 tokens;
# 3. pretraining with configs/pretrain-tiny.json (about an hour on 2 idle cores; resumes when
#    runs/tiny/run exists, so an interrupted run is continued with the same command);
# 4. the final weights in bf16 -> DIR, then the evaluation tasks of tasks/reference-corpus.yaml.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/models/tiny"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "error: --out needs a directory" >&2; exit 2; }; out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
bin="${MOEFORGE:-$root/build/moeforge}"
[ -x "$bin" ] || { echo "error: $bin: not built (run make build, or set MOEFORGE)" >&2; exit 1; }
cd "$root"

[ -f data/corpus/train.jsonl ] || scripts/build-corpus.sh --out data/corpus
mkdir -p runs/tiny
if [ ! -f runs/tiny/tokenizer/tokenizer.json ]; then
  python3 -c '
import json, sys
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for line in open(sys.argv[1], encoding="utf-8"):
        f.write(json.loads(line)["text"]); f.write("\n\n")
' data/corpus/train.jsonl runs/tiny/corpus-train.txt
  "$bin" tokenizer train --vocab-size 8192 --input runs/tiny/corpus-train.txt --out runs/tiny/tokenizer
fi
"$bin" train --recipe pretrain --config configs/pretrain-tiny.json --json runs/tiny/train-result.json
"$bin" convert runs/tiny/run/final --out "$out" --dtype bf16
cp runs/tiny/run/final/train_record.json "$out/train_record.json"
"$bin" eval "$out" --include tasks/reference-corpus.yaml --data-dir data/corpus \
  --tasks wordnet_define,foldoc_define,kjv_cloze,corpus_ppl_dictionary,corpus_ppl_lexicon,corpus_ppl_scripture,corpus_ppl_computing,corpus_ppl_humor,corpus_ppl_code,corpus_ppl_legal,corpus_ppl_translation \
  --output "$out/eval_results.json"
