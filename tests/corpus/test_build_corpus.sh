#!/usr/bin/env bash
# Offline test of the corpus cleaning step (scripts/corpus/build_corpus.py) on the small
# samples in tests/data/corpus (see its SOURCES.md). No network, no apt; a few seconds.
#
#   tests/corpus/test_build_corpus.sh        exit 0 when every check passes
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
data="$src/tests/data/corpus"
builder="$src/scripts/corpus/build_corpus.py"
command -v python3 >/dev/null || { echo "error: test_build_corpus.sh needs python3" >&2; exit 1; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/moeforge-corpus-test.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# The samples keep dictd data as plain text; the packages ship it dictzip'ed (gzip).
cp -r "$data/root" "$tmp/root"
for f in "$tmp"/root/*/usr/share/dictd/*.dict; do
  gzip -n -c "$f" >"$f.dz" && rm "$f"
done

build() {  # build OUT [extra env]
  python3 "$builder" --root "$tmp/root" --packages "$data/packages.json" \
    --kjv "$data/kjv.txt" --out "$1" --min-doc-bytes 1 2>"$1.log" ||
    { cat "$1.log" >&2; fail "build into $1 failed"; }
}

# 1. Two builds (different Python hash seeds) must be byte-identical.
mkdir -p "$tmp/a" "$tmp/b"
PYTHONHASHSEED=1 build "$tmp/a"
PYTHONHASHSEED=2 build "$tmp/b"
diff -r "$tmp/a" "$tmp/b" >/dev/null || fail "two builds of the same input differ"
echo "ok: deterministic output"

# 2. Content checks, written independently of the builder.
python3 - "$tmp/a" <<'EOF' || fail "content checks"
import hashlib, json, os, sys
out = sys.argv[1]
DOMAINS = {"dictionary", "lexicon", "scripture", "computing", "humor", "code", "legal",
           "translation"}
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

docs = {}
for split in ["train", "validation", "test"]:
    path = os.path.join(out, split + ".jsonl")
    docs[split] = []
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        try:
            d = json.loads(line)
        except ValueError:
            errors.append("%s:%d: not JSON" % (path, n))
            continue
        check(set(d) == {"text", "domain", "source", "id"}, "%s:%d: fields %s" % (path, n, sorted(d)))
        check(d.get("domain") in DOMAINS, "%s:%d: domain %r" % (path, n, d.get("domain")))
        check(isinstance(d.get("text"), str) and d["text"].strip(), "%s:%d: empty text" % (path, n))
        h = hashlib.sha256(d["text"].encode("utf-8")).hexdigest()
        b = int(h[:8], 16) % 100
        want = "test" if b < 2 else "validation" if b < 4 else "train"
        check(want == split, "%s:%d: document belongs to %s (bucket %d)" % (path, n, want, b))
        check(d["id"] == h[:16], "%s:%d: id is not sha256(text)[:16]" % (path, n))
        docs[split].append(d)
alld = [d for s in docs for d in docs[s]]
check(set(d["domain"] for d in alld) == DOMAINS, "domains present: %s" % sorted(set(d["domain"] for d in alld)))
check(len(docs["test"]) > 0 and len(docs["validation"]) > 0, "empty held-out split")

# dedup: the fortune that both fortune packages carry appears once
norm = [" ".join(d["text"].lower().split()) for d in alld]
check(len(norm) == len(set(norm)), "duplicate documents")
check(sum("it must appear only once" in d["text"] for d in alld) == 1, "duplicate fortune kept")

text = "\n".join(d["text"] for d in alld)
# cleaning
for bad in ["[1913 Webster]", "[WordNet 1.5]", "\\Ar*rive", "{Cogent}", "\b", "00-database",
            "Copyright (C) 1991-2022 Free Software Foundation"]:
    check(bad not in text, "markup left in output: %r" % bad)
check("moving inward or toward a center" not in text, "WordNet-derived GCIDE entry kept")
check("thickened mass" not in text, "WordNet-derived GCIDE sense kept")
check("Arrive, v. i." in text and "See Cogent." in text, "GCIDE entry text missing")
check("To reach the shore; to land. [Obs.]" in text, "GCIDE usage label lost")
check("Renal, a. [L. renalis" in text and "cf. F. rénal." in text and "the Phœnix of" in text,
      "GCIDE pronunciation in parentheses or letter codes")
check("2. To come (\ufffd\ufffd); said of time" in text, "invalid UTF-8 not replaced")
check(not any(w in d["text"] for d in alld if d["domain"] == "dictionary"
              for w in ["Webster", "WordNet", "[19"]), "GCIDE source tag (or misaligned entry)")
check("British sovereign. --Wharton." in text and "--Wharton. Knight service" not in text,
      "GCIDE: next headword after a source tag kept")
check("Knight service Also Knight's service n. 1. (Feud. Law)" in text,
      "GCIDE: pronunciation wrapped over two lines not removed")
check("This one is underlined and BOLD." in text, "overstrike not removed")
check("In the beginning God created the heaven and the earth." in text, "KJV verse missing")
check(any(d["text"].startswith("Genesis 1\n") for d in alld), "KJV chapter heading missing")
check("extern int sample_max (int __a, int __b);" in text, "header code missing")
check(not any(d["text"].startswith("not a fortune") for d in alld), ".dat file read as fortunes")

man = json.load(open(os.path.join(out, "manifest.json")))
for split in docs:
    f = os.path.join(out, split + ".jsonl")
    data = open(f, "rb").read()
    check(man["files"][split + ".jsonl"]["sha256"] == hashlib.sha256(data).hexdigest(),
          "manifest sha256 of %s" % split)
    check(sum(v["documents"] for v in man["splits"][split].values()) == len(docs[split]),
          "manifest document count of %s" % split)
check(man["packages"]["wordnet-base"]["licence"] == ["GPL-2+"], "DEP-5 licence of wordnet-base: %s" % man["packages"]["wordnet-base"])
check("GFDL" in man["packages"]["dict-foldoc"]["licence"], "free-form licence of dict-foldoc")

# tasks: 4 distinct choices, gold in range, built only from test documents
held = {s: "\n".join(d["text"] for d in docs[s]) for s in docs}
for task in ["wordnet_define", "foldoc_define", "kjv_cloze"]:
    path = os.path.join(out, "tasks", task + ".jsonl")
    items = [json.loads(l) for l in open(path, encoding="utf-8")]
    check(len(items) > 0, "%s: no items" % task)
    check(man["tasks"][task]["items"] == len(items), "%s: manifest item count" % task)
    for it in items:
        check(isinstance(it["query"], str) and it["query"], "%s %s: query" % (task, it["id"]))
        ch = it["choices"]
        check(len(ch) == 4 and len(set(ch)) == 4, "%s %s: choices %s" % (task, it["id"], ch))
        check(isinstance(it["gold"], int) and 0 <= it["gold"] < 4, "%s %s: gold" % (task, it["id"]))
        gold = ch[it["gold"]]
        if task == "kjv_cloze":
            verse = it["query"] + " " + gold
            check(verse in held["test"], "kjv_cloze %s: verse not in a test document" % it["id"])
            check(verse not in held["train"] and verse not in held["validation"],
                  "kjv_cloze %s: verse also in training text" % it["id"])
        elif task == "wordnet_define":
            check(("%s (%s): %s." % (gold, it["pos"], it["query"])).lower() in held["test"].lower()
                  or (" (%s): %s." % (it["pos"], it["query"])) in held["test"],
                  "wordnet_define %s: gloss not in a test document" % it["id"])
            check(gold.lower() not in it["query"].lower().split(), "wordnet_define %s: word in gloss" % it["id"])
        else:
            check(any(d["text"].startswith(gold + "\n\n") or ("\n\n" + gold + "\n\n") in d["text"]
                      for d in docs["test"]), "foldoc_define %s: term not in a test document" % it["id"])
            check("___" in it["query"] or gold.lower() not in it["query"].lower(),
                  "foldoc_define %s: term not masked" % it["id"])
for e in errors[:20]:
    print("  " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
echo "ok: documents, splits, dedup, cleaning, manifest, tasks"

# 3. Bad input: one-line error naming the file, exit status 1, no traceback.
rm -rf "$tmp/root/dict-jargon"
if python3 "$builder" --root "$tmp/root" --packages "$data/packages.json" --kjv "$data/kjv.txt" \
     --out "$tmp/c" 2>"$tmp/err"; then
  fail "missing package did not fail"
fi
[ "$(wc -l <"$tmp/err" | tr -d ' ')" -ge 1 ] || fail "no error message"
grep -q "^error: .*dict-jargon.*jargon.index" "$tmp/err" || { cat "$tmp/err" >&2; fail "error does not name the file"; }
grep -q Traceback "$tmp/err" && fail "traceback instead of an error line"
printf 'Ge1:1 In the beginning\nnot a verse line\n' >"$tmp/bad-kjv.txt"
if python3 "$builder" --root "$tmp/root" --packages "$data/packages.json" \
     --kjv "$tmp/bad-kjv.txt" --out "$tmp/d" --domains scripture 2>"$tmp/err"; then
  fail "malformed verse listing did not fail"
fi
grep -q "^error: .*bad-kjv.txt:2: " "$tmp/err" || { cat "$tmp/err" >&2; fail "bad verse line not reported"; }
echo "ok: bad input gives one-line errors"

# 4. The driver script's argument handling (no download).
"$src/scripts/build-corpus.sh" --help | grep -q "build-corpus.sh" || fail "--help"
set +e
"$src/scripts/build-corpus.sh" --bogus 2>"$tmp/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q "^error: unknown argument" "$tmp/err" || fail "unknown argument handling"
echo "ok: build-corpus.sh arguments"
echo "PASS"
