#!/usr/bin/env python3
"""Clean the text of extracted Debian packages into the moeforge reference corpus.

Input: a directory of extracted packages (one sub-directory per package, as made by
`dpkg-deb -x pkg.deb ROOT/<package>`), a packages.json describing them and, for the
scripture domain, a plain verse listing (`bible -f` output, one "Ge1:1 text" per line).
Output: train/validation/test JSONL, manifest.json and the multiple-choice task data (items
for each split, built from that split's documents).

Standard library only. Everything is deterministic: documents are processed in sorted
source order, splits and distractors are derived from sha256 hashes, and the output is
ordered by document hash. See docs/corpus.md for the layout and the choices made here.
"""

import argparse
import base64
import gzip
import hashlib
import json
import os
import random
import re
import sys
import unicodedata

DOMAINS = ["dictionary", "lexicon", "scripture", "computing", "humor", "code", "legal",
           "translation"]

# Documents: consecutive small units are merged until a document reaches MIN_DOC bytes;
# units longer than MAX_DOC bytes are split at paragraph boundaries.
MIN_DOC = 1000
MAX_DOC = 8000

# Per-domain caps on cleaned text (bytes). Units are kept by a hash threshold, so a cap
# thins a source evenly instead of cutting it off at some letter of the alphabet.
DOMAIN_CAPS = {
    "dictionary": 24_000_000,
    "translation": 10_000_000,
    "code": 12_000_000,
}

# Licences are few and long: smaller sections give the held-out splits some documents.
DOMAIN_MAX_DOC = {"legal": 3000}

# Multiple-choice task items per split. The test items are the evaluation tasks of
# tasks/reference-corpus.yaml; train and validation items (from the train and validation
# documents) are for fine-tuning recipes. Changing TASK_MAX_ITEMS changes the test items.
TASK_MAX_ITEMS = 1000
TASK_MAX_TRAIN_ITEMS = 4000
TASK_MAX_VALIDATION_ITEMS = TASK_MAX_ITEMS // 2
TASK_SPLIT_CAPS = {"train": TASK_MAX_TRAIN_ITEMS, "validation": TASK_MAX_VALIDATION_ITEMS,
                   "test": TASK_MAX_ITEMS}


class CorpusError(Exception):
    pass


def sha256_hex(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def norm_key(text):
    """Normalised text used for exact-duplicate detection."""
    return sha256_hex(" ".join(unicodedata.normalize("NFKC", text).lower().split()))


def split_of(text):
    """Deterministic split by document hash: 0-1 test, 2-3 validation, rest train."""
    b = int(sha256_hex(text)[:8], 16) % 100
    if b < 2:
        return "test"
    if b < 4:
        return "validation"
    return "train"


def hash_fraction(text):
    """A stable number in [0, 1) derived from the text, used for capping."""
    return int(sha256_hex("cap:" + text)[:12], 16) / float(16 ** 12)


def read_bytes(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz") or path.endswith(".dz"):
        data = gzip.decompress(data)
    return data


def read_text(path):
    return read_bytes(path).decode("utf-8", errors="replace")


def reflow(text):
    """Join hard-wrapped lines into paragraphs; paragraphs stay separated by a blank line."""
    paras = []
    for block in re.split(r"\n\s*\n", text):
        words = block.split()
        if words:
            paras.append(" ".join(words))
    return "\n\n".join(paras)


def strip_braces(text):
    # dictd cross references: {term} -> term (the brace may be wrapped onto the next line)
    return re.sub(r"\{\s*([^{}]*?)\s*\}", r"\1", text)


# ---------------------------------------------------------------------------------------
# dictd (.index + .dict.dz)

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
B64_VAL = {c: i for i, c in enumerate(B64)}


def b64num(s):
    n = 0
    for c in s:
        if c not in B64_VAL:
            raise ValueError("bad dictd base64 digit %r" % c)
        n = n * 64 + B64_VAL[c]
    return n


def dictd_entries(index_path, dict_path):
    """Yield (headword, text) in file order, one per distinct (offset, length)."""
    data = read_bytes(dict_path)  # offsets are byte offsets: no decoding before slicing
    seen = {}
    with open(index_path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) < 3:
                raise CorpusError("%s:%d: expected 'word<TAB>offset<TAB>length'" %
                                  (index_path, lineno))
            word = parts[0]
            if word.startswith("00-database") or word.startswith("00database"):
                continue
            try:
                off, length = b64num(parts[1]), b64num(parts[2])
            except ValueError as e:
                raise CorpusError("%s:%d: %s" % (index_path, lineno, e))
            if off + length > len(data):
                raise CorpusError("%s:%d: entry runs past the end of %s" %
                                  (index_path, lineno, dict_path))
            seen.setdefault((off, length), word)
    for (off, length) in sorted(seen):
        text = data[off:off + length].decode("utf-8", errors="replace")
        yield seen[(off, length)], text


# "[1913 Webster]", "[WordNet 1.5 +PJC]", ...: the source of the sense above it. Sometimes
# text follows on the same line. Usage labels such as "[Obs.]" are not source tags.
SOURCE_TAG = re.compile(r"^\s*\[([^\[\]]*(?:Webster|WordNet|PJC|Century Dict|RDH)[^\[\]]*)\]\s*(.*)$")


GCIDE_ACCENTS = {"'": "\u0301", "`": "\u0300", '"': "\u0308", "=": "\u0304", "~": "\u0303"}
GCIDE_SYMBOLS = {"ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "eth": "ð", "thorn": "þ",
                 "deg": "°", "sect": "§", ",c": "ç", "imac": "ī", "ntilde": "ñ", "frac12": "½"}


def gcide_chars(text):
    """GCIDE's ASCII codes for letters: ['e] -> é, [=a] -> ā, [ae] -> æ, [thorn] -> þ, ...
    Codes whose meaning is ambiguous here (breves, [a^]) are left as they are."""
    def sub(m):
        code = m.group(1)
        if code in GCIDE_SYMBOLS:
            return GCIDE_SYMBOLS[code]
        if len(code) == 2 and code[0] in GCIDE_ACCENTS and code[1].isalpha():
            return unicodedata.normalize("NFC", code[1] + GCIDE_ACCENTS[code[0]])
        return m.group(0)
    return re.sub(r"\[([^\[\]\s]{2,6})\]", sub, text)


def clean_gcide(text):
    """GCIDE entry: drop the WordNet-derived senses (the lexicon domain has WordNet 3.0),
    source tags like [1913 Webster], and the pronunciation markup \\Ar*rive"\\."""
    lines = text.rstrip("\n").split("\n")
    kept, block = [], []
    for i, line in enumerate(lines):
        m = SOURCE_TAG.match(line)
        if not m:
            block.append(line)
            continue
        if "wordnet" not in m.group(1).lower():
            kept.extend(block)
            kept.append("")
        block = []
        rest = m.group(2).strip()
        # a short remainder on the entry's last line is the next headword (a data glitch)
        if rest and not (i == len(lines) - 1 and len(rest) <= 40):
            block.append(rest)
    if block and kept:  # trailing untagged text belongs to the last kept sense
        kept.extend(block)
    body = "\n".join(kept)
    # pronunciation in parentheses on a (non-indented) headword line:
    # "Renal (r[=e]"nal), a." -> "Renal, a."
    body = re.sub(r"^([^\s(][^(\n]*?) \([^()\n]*[\"*`?\[][^()\n]*\)", r"\1", body, flags=re.M)
    body = gcide_chars(body)
    # headword line: "Arrive \\Ar*rive"\\, v. t." -> "Arrive, v. t."
    # (it may wrap onto the next line); keep a space when a word follows it
    body = re.sub(r"\s*\\[^\\]{1,80}\\(?=(.?))",
                  lambda m: " " if m.group(1).isalnum() else "", body)
    body = strip_braces(reflow(body))
    return body.strip()


FOLDOC_DATE = re.compile(r"\s*\(\d{4}-\d{2}-\d{2}\)\s*$")


def parse_foldoc(text):
    """FOLDOC entry -> (term, definition). The lines before the first blank line are the
    term and its aliases (the aliases reappear in the definition, so they are dropped)."""
    head, _, body = text.strip("\n").partition("\n\n")
    term = head.split("\n")[0].strip()
    body = reflow(body)
    body = FOLDOC_DATE.sub("", body)
    body = re.sub(r"<[a-z][a-z0-9 ,.&/-]*>\s*", "", body)  # category tags like <language>
    body = strip_braces(body).strip()
    return term, body


def clean_jargon(text):
    lines = text.strip("\n").split("\n")
    head = lines[0].strip()
    body = strip_braces(reflow("\n".join(lines[1:]))).strip()
    return head + "\n\n" + body if body else ""


def clean_freedict(text):
    lines = [l for l in text.strip("\n").split("\n") if not l.strip().startswith("see:")]
    if not lines:
        return ""
    head = re.sub(r"\s*/[^/]*/\s*$", "", lines[0].strip())  # IPA pronunciation
    body = strip_braces(reflow("\n".join(lines[1:])))
    return (head + ": " + body.replace("\n\n", "; ")).strip() if body else ""


# ---------------------------------------------------------------------------------------
# Sources. Each returns a list of units: dict(text=..., source=..., meta=..., group=...).
# Units with the same "group" key are never merged across groups.

def find(root, pkg, rel):
    p = os.path.join(root, pkg, rel)
    return p if os.path.exists(p) else None


def require(root, pkg, rel):
    p = find(root, pkg, rel)
    if p is None:
        raise CorpusError("%s: missing in the extracted package %s" %
                          (os.path.join(root, pkg, rel), pkg))
    return p


def src_gcide(root):
    idx = require(root, "dict-gcide", "usr/share/dictd/gcide.index")
    dz = require(root, "dict-gcide", "usr/share/dictd/gcide.dict.dz")
    units = []
    for word, text in dictd_entries(idx, dz):
        t = clean_gcide(text)
        if len(t) >= 20:
            units.append(dict(text=t, source="dict-gcide", group="gcide", meta=None))
    return units


POS_NAME = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def parse_wordnet_line(line):
    if line.startswith("  ") or " | " not in line:
        return None
    head, gloss = line.split(" | ", 1)
    f = head.split()
    ss_type = f[2]
    w_cnt = int(f[3], 16)
    words = []
    for i in range(w_cnt):
        w = f[4 + 2 * i]
        w = re.sub(r"\([a-z]+\)$", "", w)  # adjective markers: good(a), (p), (ip)
        words.append(w.replace("_", " "))
    gloss = gloss.strip()
    defs, examples = [], []
    for part in re.split(r';\s*', gloss):
        part = part.strip()
        if not part:
            continue
        if part.startswith('"'):
            examples.append(part.strip('"').strip())
        else:
            defs.append(part)
    return dict(offset=f[0], pos=POS_NAME[ss_type], words=words, definition="; ".join(defs),
                examples=examples)


def src_wordnet(root):
    units = []
    for pos in ["noun", "verb", "adj", "adv"]:
        path = require(root, "wordnet-base", "usr/share/wordnet/data." + pos)
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                s = parse_wordnet_line(line.rstrip("\n"))
                if s is None or not s["definition"]:
                    continue
                text = "%s (%s): %s." % (", ".join(s["words"]), s["pos"], s["definition"])
                if s["examples"]:
                    text += " Examples: " + "; ".join('"%s"' % e for e in s["examples"]) + "."
                units.append(dict(text=text, source="wordnet-base", group="wordnet-" + pos,
                                  meta=dict(kind="wordnet", **s)))
    return units


BOOKS = ["Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
         "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra",
         "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon",
         "Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos",
         "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah",
         "Malachi", "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians",
         "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
         "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon",
         "Hebrews", "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude",
         "Revelation"]

VERSE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")


def src_kjv(verses_path):
    """One document per chapter; each unit is a verse (never merged across chapters)."""
    abbrevs = []
    units = []
    with open(verses_path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            m = VERSE.match(line)
            if not m:
                raise CorpusError("%s:%d: expected 'Book1:1 text'" % (verses_path, lineno))
            ab, ch, vs, text = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4).strip()
            if not abbrevs or abbrevs[-1] != ab:
                abbrevs.append(ab)
            book = BOOKS[len(abbrevs) - 1] if len(abbrevs) <= len(BOOKS) else ab
            units.append(dict(text="%d %s" % (vs, text), source="bible-kjv-text",
                              group="%s %d" % (book, ch),
                              meta=dict(kind="verse", ref="%s %d:%d" % (book, ch, vs),
                                        verse=text)))
    if len(abbrevs) > len(BOOKS):
        raise CorpusError("%s: %d books, expected at most %d" %
                          (verses_path, len(abbrevs), len(BOOKS)))
    return units


def src_foldoc(root):
    idx = require(root, "dict-foldoc", "usr/share/dictd/foldoc.index")
    dz = require(root, "dict-foldoc", "usr/share/dictd/foldoc.dict.dz")
    units = []
    for word, text in dictd_entries(idx, dz):
        term, body = parse_foldoc(text)
        if len(body) < 20:
            continue
        units.append(dict(text=term + "\n\n" + body, source="dict-foldoc", group="foldoc",
                          meta=dict(kind="foldoc", term=term, definition=body,
                                    from_jargon="Jargon File" in text)))
    return units


def src_jargon(root):
    idx = require(root, "dict-jargon", "usr/share/dictd/jargon.index")
    dz = require(root, "dict-jargon", "usr/share/dictd/jargon.dict.dz")
    units = []
    for word, text in dictd_entries(idx, dz):
        t = clean_jargon(text)
        if len(t) >= 20:
            head, body = t.split("\n\n", 1) if "\n\n" in t else (t, "")
            paras = body.split("\n\n")
            if len(paras) > 1 and len(paras[0]) < 80 and (
                    paras[0].startswith("/") or re.match(r"^[a-z][a-z., ]*$", paras[0])):
                paras = paras[1:]  # pronunciation and part of speech: "/bler'gl/, n."
            units.append(dict(text=t, source="dict-jargon", group="jargon",
                              meta=dict(kind="jargon", term=head, definition="\n\n".join(paras),
                                        from_jargon=False)))
    return units


def src_fortunes(root):
    units = []
    for pkg in ["fortunes-min", "fortunes"]:
        d = find(root, pkg, "usr/share/games/fortunes")
        if d is None:
            continue
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if "." in name or os.path.islink(path) or not os.path.isfile(path):
                continue
            if name == "ascii-art":  # pictures, not text
                continue
            text = read_text(path)
            text = re.sub(r".\x08", "", text)  # overstrike (bold/underline) sequences
            for fortune in re.split(r"\n%\n", text):
                lines = [l.rstrip() for l in fortune.strip("\n%").split("\n")]
                t = "\n".join(lines).strip()
                if len(t) >= 10:
                    units.append(dict(text=t, source=pkg, group="fortunes-" + name,
                                      meta=None))
    return units


LICENCE_COMMENT = re.compile(r"^\s*/\*.*?\*/\s*", re.S)


def src_headers(root):
    units = []
    for pkg in ["libc6-dev", "linux-libc-dev"]:
        base = find(root, pkg, "usr/include")
        if base is None:
            continue
        paths = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for fn in filenames:
                if fn.endswith(".h"):
                    paths.append(os.path.join(dirpath, fn))
        for path in sorted(paths):
            if os.path.islink(path):
                continue
            text = read_text(path)
            # the leading licence boilerplate repeats in hundreds of headers
            m = LICENCE_COMMENT.match(text)
            if m and re.search(r"copyright|licen[cs]e", m.group(0), re.I):
                text = text[m.end():]
            text = "\n".join(l.rstrip() for l in text.split("\n"))
            text = re.sub(r"\n{3,}", "\n\n", text).strip()
            if len(text) < 40:
                continue
            rel = os.path.relpath(path, base)
            units.append(dict(text="/* %s */\n%s" % (rel, text), source=pkg, group="h:" + rel,
                              meta=None, code=True))
    return units


def src_legal(root, packages):
    units = []
    d = find(root, "base-files", "usr/share/common-licenses")
    if d is not None:
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            t = reflow(read_text(path))
            units.append(dict(text=t, source="base-files", group="lic:" + name, meta=None))
    # Software::License keeps the full text of ~30 licences in the __DATA__ section of its
    # modules, with the licence under __LICENSE__ and {{...}} template fields.
    d = find(root, "libsoftware-license-perl", "usr/share/perl5/Software/License")
    if d is not None:
        for name in sorted(os.listdir(d)):
            if not name.endswith(".pm"):
                continue
            data = read_text(os.path.join(d, name)).split("\n__DATA__\n", 1)
            if len(data) < 2:
                continue
            sections = re.split(r"^__([A-Z]+)__\s*$", data[1], flags=re.M)
            for title, body in zip(sections[1::2], sections[2::2]):
                if title != "LICENSE":
                    continue
                body = re.sub(r"\{\{\s*\$self->holder\s*\}\}", "the copyright holder", body)
                body = re.sub(r"\{\{\s*\$self->year\s*\}\}", "the year of publication", body)
                body = "\n".join(l for l in body.split("\n") if "{{" not in l)
                t = reflow(body)
                if len(t) >= 200:
                    units.append(dict(text=t, source="libsoftware-license-perl",
                                      group="perl:" + name, meta=None))
    for pkg in sorted(packages):
        path = find(root, pkg, "usr/share/doc/%s/copyright" % pkg)
        if path is None:
            continue
        # DEP-5 copyright files are structured (Field: value); keep their lines
        t = "\n".join(l.rstrip() for l in read_text(path).split("\n"))
        t = re.sub(r"\n{3,}", "\n\n", t).strip()
        if len(t) >= 40:
            units.append(dict(text=t, source=pkg, group="copyright:" + pkg, meta=None))
    return units


def src_freedict(root, packages):
    units = []
    for pkg in sorted(p for p in packages if p.startswith("dict-freedict-")):
        name = pkg[len("dict-"):]
        idx = find(root, pkg, "usr/share/dictd/%s.index" % name)
        dz = find(root, pkg, "usr/share/dictd/%s.dict.dz" % name)
        if idx is None or dz is None:
            raise CorpusError("%s: no dictd files for %s" % (os.path.join(root, pkg), name))
        for word, text in dictd_entries(idx, dz):
            t = clean_freedict(text)
            if len(t) >= 5:
                units.append(dict(text=t, source=pkg, group=name, meta=None))
    return units


# ---------------------------------------------------------------------------------------
# Units -> documents

def split_long(text, max_doc=None):
    """Split text longer than max_doc at paragraph (blank line) boundaries."""
    MAX_DOC = max_doc or globals()["MAX_DOC"]
    if len(text.encode("utf-8")) <= MAX_DOC:
        return [text]
    parts, cur, cur_len = [], [], 0
    for para in text.split("\n\n"):
        n = len(para.encode("utf-8")) + 2
        if cur and cur_len + n > MAX_DOC:
            parts.append("\n\n".join(cur))
            cur, cur_len = [], 0
        cur.append(para)
        cur_len += n
    if cur:
        parts.append("\n\n".join(cur))
    out = []
    for p in parts:  # a single paragraph longer than MAX_DOC: split at line boundaries
        if len(p.encode("utf-8")) <= 2 * MAX_DOC:
            out.append(p)
            continue
        lines, cur, cur_len = p.split("\n"), [], 0
        for line in lines:
            n = len(line.encode("utf-8")) + 1
            if cur and cur_len + n > MAX_DOC:
                out.append("\n".join(cur))
                cur, cur_len = [], 0
            cur.append(line)
            cur_len += n
        if cur:
            out.append("\n".join(cur))
    return out


def dedup_units(units):
    seen, out = set(), []
    for u in units:
        k = norm_key(u["text"])
        if k in seen:
            continue
        seen.add(k)
        out.append(u)
    return out


def cap_units(units, max_bytes):
    total = sum(len(u["text"].encode("utf-8")) for u in units)
    if max_bytes is None or total <= max_bytes:
        return units, total, total
    keep = max_bytes / float(total)
    kept = [u for u in units if hash_fraction(u["text"]) < keep]
    return kept, total, sum(len(u["text"].encode("utf-8")) for u in kept)


def group_units(units, domain, sep="\n\n", min_doc=None):
    """Merge consecutive units of one group into documents of at least min_doc bytes."""
    if min_doc is None:
        min_doc = MIN_DOC
    docs = []
    cur, cur_len, cur_group = [], 0, None

    def flush():
        nonlocal cur, cur_len
        if cur:
            docs.append(dict(text=sep.join(u["text"] for u in cur), domain=domain,
                             source=cur[0]["source"], units=[u["meta"] for u in cur]))
        cur, cur_len = [], 0

    for u in units:
        if u["group"] != cur_group:
            flush()
            cur_group = u["group"]
        cur.append(u)
        cur_len += len(u["text"].encode("utf-8")) + len(sep)
        if cur_len >= min_doc:
            flush()
    flush()
    return docs


def chapter_docs(units):
    docs, cur, cur_group = [], [], None
    for u in units + [None]:
        if u is None or u["group"] != cur_group:
            if cur:
                docs.append(dict(text=cur_group + "\n\n" + "\n".join(v["text"] for v in cur),
                                 domain="scripture", source="bible-kjv-text",
                                 units=[v["meta"] for v in cur]))
            if u is None:
                break
            cur, cur_group = [], u["group"]
        cur.append(u)
    return docs


def explode_long(units, max_doc=None):
    out = []
    for u in units:
        parts = split_long(u["text"], max_doc)
        if len(parts) == 1:
            out.append(u)
        else:
            for i, p in enumerate(parts):  # task metadata stays with the first part only
                out.append(dict(u, text=p, meta=u["meta"] if i == 0 else None))
    return out


# ---------------------------------------------------------------------------------------
# Multiple-choice tasks. The items of a split (train, validation, test) come from that
# split's documents only; the leakage filters below skip an item whose text also occurs in
# another split (parallel KJV passages, FOLDOC's copies of Jargon File entries). Distractors
# are drawn from the vocabulary of all splits. For split "test" this is the evaluation data.
# The splits are built test first: a validation or train candidate whose question is that of
# an item already made for another split (two WordNet senses with one gloss, "An early system
# on the IBM 650.") is skipped, so no question is in two splits; the test items stay as they
# were before the other splits existed.

def mask_term(definition, term):
    pat = re.compile(r"(?<![\w])" + re.escape(term) + r"(?![\w])", re.I)
    return pat.sub("___", definition)


def first_sentences(text, max_chars=400):
    text = text.split("\n\n")[0]
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    dot = cut.rfind(". ")
    return cut[:dot + 1] if dot > 80 else cut.rsplit(" ", 1)[0] + " ..."


class SimilarPool:
    """Words bucketed by an integer key, to draw distractors whose key is close to the gold's."""

    def __init__(self, words, key):
        self.key = key
        self.buckets = {}
        for w in sorted(set(words)):
            self.buckets.setdefault(key(w), []).append(w)
        self.keys = sorted(self.buckets)

    def pick(self, rng, gold, n, forbid):
        g = self.key(gold)
        out = []
        for k in sorted(self.keys, key=lambda k: (abs(k - g), k)):
            cands = [w for w in self.buckets[k] if w not in forbid and w not in out]
            rng.shuffle(cands)
            out.extend(cands[:n - len(out)])
            if len(out) == n:
                break
        return out


def make_item(rng, query, gold, distractors, extra):
    choices = distractors + [gold]
    rng.shuffle(choices)
    item = dict(id=extra.pop("id"), query=query, choices=choices, gold=choices.index(gold))
    item.update(extra)
    return item


def limit_candidates(cands, cap):
    """At most cap candidates, chosen by hash of their id (deterministic)."""
    cands.sort(key=lambda c: sha256_hex("order:" + c[0]))
    return sorted(cands[:cap], key=lambda c: c[0])


def task_wordnet_define(docs, split, taken):
    pools = {}
    for d in docs["all"]:
        if d["domain"] == "lexicon":
            for s in d["units"]:
                if not s:
                    continue
                w = s["words"][0]
                if w.isalpha():
                    pools.setdefault(s["pos"], []).append(w.lower())
    pools = {p: SimilarPool(ws, len) for p, ws in pools.items()}
    cands = []
    for d in docs[split]:
        if d["domain"] != "lexicon":
            continue
        for s in d["units"]:
            if not s:
                continue
            gold = s["words"][0].lower()
            if not gold.isalpha() or len(s["definition"]) < 15:
                continue  # single plain words only: multi-word choices are a giveaway
            if re.search(r"(?<![\w])" + re.escape(gold) + r"(?![\w])", s["definition"], re.I):
                continue  # the gloss gives the word away
            if s["definition"] in taken:
                continue  # the question of another split's item
            cands.append(("wn-%s-%s" % (s["pos"], s["offset"]), s, gold))
    items = []
    for cid, s, gold in limit_candidates(cands, TASK_SPLIT_CAPS[split]):
        rng = random.Random("wordnet_define:" + cid)
        forbid = set(w.lower() for w in s["words"])
        dis = pools[s["pos"]].pick(rng, gold, 3, forbid)
        if len(dis) == 3:
            items.append(make_item(rng, s["definition"], gold, dis, dict(id=cid, pos=s["pos"])))
    return items


def term_key(term):
    return " ".join(term.lower().split())


def task_foldoc_define(docs, split, taken):
    terms = sorted(set(m["term"] for d in docs["all"] if d["domain"] == "computing"
                       for m in d["units"] if m))
    pool = SimilarPool(terms, len)
    jargon_outside = set(term_key(m["term"]) for d in docs["all"]
                         if d["domain"] == "computing" and d["split"] != split
                         for m in d["units"] if m and m.get("kind") == "jargon")
    cands = []
    for d in docs[split]:
        if d["domain"] != "computing":
            continue
        for m in d["units"]:
            if not m:
                continue
            if m["from_jargon"] and term_key(m["term"]) in jargon_outside:
                continue  # FOLDOC's copy of a Jargon File entry that another split contains
            term = m["term"]
            if len(term) < 2 or len(term) > 40:
                continue
            q = first_sentences(mask_term(m["definition"], term))
            if len(q) < 20 or re.match(r"(see|synonym|abbreviation) ", q, re.I):
                continue  # "See ___." gives nothing to go on
            if q in taken:
                continue  # the question of another split's item
            cands.append(("%s-%s" % (m["kind"], sha256_hex(term)[:12]), term, q))
    items = []
    for cid, term, q in limit_candidates(cands, TASK_SPLIT_CAPS[split]):
        rng = random.Random("foldoc_define:" + cid)
        forbid = set(t for t in terms if t.lower() == term.lower())
        dis = pool.pick(rng, term, 3, forbid)
        if len(dis) == 3 and len(set(x.lower() for x in dis)) == 3:
            items.append(make_item(rng, q, term, dis, dict(id=cid, term=term)))
    return items


LAST_WORD = re.compile(r"^(.*\S)\s+([A-Za-z]+)([^A-Za-z\s]*)$")


def case_class(w):
    return "upper" if w.isupper() and len(w) > 1 else "title" if w[0].isupper() else "lower"


def task_kjv_cloze(docs, split, taken):
    freq = {}
    seen_outside = set()
    for d in docs["all"]:
        if d["domain"] != "scripture":
            continue
        for v in d["units"]:
            m = LAST_WORD.match(v["verse"]) if v else None
            if m:
                freq[m.group(2)] = freq.get(m.group(2), 0) + 1
                # A verse whose prefix also occurs outside this split (parallel passages)
                # would be answerable from another split's text, so it is skipped below.
                if d["split"] != split:
                    seen_outside.add(m.group(1))
    rank = {w: i for i, w in enumerate(sorted(freq, key=lambda w: (-freq[w], w)))}
    # distractors: verse-final words of the same capitalisation with the closest frequency
    # rank (and length as a tie-breaker)
    pools = {}
    for w in freq:
        pools.setdefault(case_class(w), []).append(w)
    pools = {c: SimilarPool(ws, lambda w: 4 * rank[w] + len(w)) for c, ws in pools.items()}
    cands = []
    for d in docs[split]:
        if d["domain"] != "scripture":
            continue
        for v in d["units"]:
            m = LAST_WORD.match(v["verse"]) if v else None
            if not m or len(m.group(2)) < 2:
                continue
            prefix, gold = m.group(1), m.group(2)
            if prefix in seen_outside or len(prefix) < 20 or prefix in taken:
                continue
            cands.append(("kjv-" + v["ref"].replace(" ", "_"), v["ref"], prefix, gold))
    items = []
    for cid, ref, prefix, gold in limit_candidates(cands, TASK_SPLIT_CAPS[split]):
        rng = random.Random("kjv_cloze:" + cid)
        dis = pools[case_class(gold)].pick(rng, gold, 3, {gold})
        if len(dis) == 3:
            items.append(make_item(rng, prefix, gold, dis, dict(id=cid, ref=ref)))
    return items


TASKS = {"wordnet_define": task_wordnet_define, "foldoc_define": task_foldoc_define,
         "kjv_cloze": task_kjv_cloze}


def task_file(name, split):
    """tasks/<name>.jsonl holds the test items (the evaluation data, as before train and
    validation items existed); the other splits are tasks/<name>.<split>.jsonl."""
    return "tasks/%s.jsonl" % name if split == "test" else "tasks/%s.%s.jsonl" % (name, split)


# ---------------------------------------------------------------------------------------
# Output

def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def licence_of(root, pkg):
    """Licence names from the package's copyright file (DEP-5 'License:' fields, else
    well-known phrases in the free-form text)."""
    path = find(root, pkg, "usr/share/doc/%s/copyright" % pkg)
    if path is None:
        return dict(licence=[], copyright_sha256=None)
    text = read_text(path)
    names = set()
    for m in re.finditer(r"^License:\s*(\S.*)$", text, re.M):
        names.add(m.group(1).strip())
    if not names:
        phrases = [("GNU Lesser General Public", "LGPL"), ("GNU Library General Public", "LGPL"),
                   ("GNU Free Documentation", "GFDL"), ("GNU General Public", "GPL"),
                   ("GPL version 2 or later", "GPL-2+"), ("public domain", "public-domain"),
                   ("University of California", "BSD"), ("Berkeley", "BSD")]
        for phrase, name in phrases:
            if phrase.lower() in text.lower():
                names.add(name)
    return dict(licence=sorted(names), copyright_sha256=sha256_hex(text.encode("utf-8")))


def build(args):
    with open(args.packages, encoding="utf-8") as f:
        pkginfo = json.load(f)
    packages = sorted(pkginfo)
    root = args.root

    raw = {
        "dictionary": lambda: src_gcide(root),
        "lexicon": lambda: src_wordnet(root),
        "scripture": lambda: src_kjv(args.kjv),
        "computing": lambda: src_foldoc(root) + src_jargon(root),
        "humor": lambda: src_fortunes(root),
        "code": lambda: src_headers(root),
        "legal": lambda: src_legal(root, packages),
        "translation": lambda: src_freedict(root, packages),
    }
    domains = [d for d in DOMAINS if args.domains is None or d in args.domains.split(",")]

    all_docs, stats = [], {}
    seen_docs = set()
    for domain in domains:
        units = raw[domain]()
        n_units = len(units)
        if domain != "scripture":  # repeated verses are part of their chapters
            units = dedup_units(units)
        n_dedup = len(units)
        units, before_cap, after_cap = cap_units(units, DOMAIN_CAPS.get(domain))
        units = explode_long(units, DOMAIN_MAX_DOC.get(domain))
        if domain == "scripture":
            docs = chapter_docs(units)
        elif domain == "code":
            docs = group_units(units, domain, sep="\n\n", min_doc=1)
        else:
            docs = group_units(units, domain)
        kept = []
        for d in docs:
            k = norm_key(d["text"])
            if k in seen_docs:
                continue
            seen_docs.add(k)
            d["id"] = sha256_hex(d["text"])[:16]
            d["split"] = split_of(d["text"])
            kept.append(d)
        all_docs.extend(kept)
        stats[domain] = dict(units=n_units, units_after_dedup=n_dedup,
                             bytes_before_cap=before_cap, bytes_after_cap=after_cap,
                             cap=DOMAIN_CAPS.get(domain),
                             sources=sorted(set(d["source"] for d in kept)))
        print("corpus: %-11s %7d units, %7d after dedup, %6d documents, %6.1f MB" %
              (domain, n_units, n_dedup, len(kept), after_cap / 1e6), file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    splits = ["train", "validation", "test"]
    by_split = {s: sorted((d for d in all_docs if d["split"] == s),
                          key=lambda d: (sha256_hex(d["text"]), d["domain"]))
                for s in splits}
    manifest = dict(format="moeforge-corpus-1", splits={}, domains={}, files={},
                    packages={}, tasks={},
                    settings=dict(min_doc_bytes=MIN_DOC, max_doc_bytes=MAX_DOC,
                                  domain_caps=DOMAIN_CAPS, domain_max_doc=DOMAIN_MAX_DOC,
                                  split_rule="int(sha256(text)[:8], 16) % 100: 0-1 test, "
                                             "2-3 validation, 4-99 train",
                                  task_max_items=TASK_MAX_ITEMS,
                                  task_max_items_train=TASK_MAX_TRAIN_ITEMS,
                                  task_max_items_validation=TASK_MAX_VALIDATION_ITEMS))
    for s in splits:
        lines = []
        for d in by_split[s]:
            lines.append(json.dumps(dict(text=d["text"], domain=d["domain"], source=d["source"],
                                         id=d["id"]), ensure_ascii=False))
        data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
        write_atomic(os.path.join(args.out, s + ".jsonl"), data)
        manifest["files"][s + ".jsonl"] = dict(bytes=len(data), sha256=sha256_hex(data),
                                               documents=len(lines))
        manifest["splits"][s] = {}
        for domain in domains:
            ds = [d for d in by_split[s] if d["domain"] == domain]
            manifest["splits"][s][domain] = dict(
                documents=len(ds), bytes=sum(len(d["text"].encode("utf-8")) for d in ds))
    for domain in domains:
        ds = [d for d in all_docs if d["domain"] == domain]
        manifest["domains"][domain] = dict(
            stats[domain], documents=len(ds),
            bytes=sum(len(d["text"].encode("utf-8")) for d in ds))
    used = set(d["source"] for d in all_docs)
    if "scripture" in domains:
        used.add("bible-kjv")  # its program decodes bible-kjv-text's compressed text
    for pkg in packages:
        if pkg in used:
            info = dict(pkginfo[pkg])
            info.update(licence_of(root, pkg))
            manifest["packages"][pkg] = info

    tdir = os.path.join(args.out, "tasks")
    os.makedirs(tdir, exist_ok=True)
    docs = dict(all=all_docs, **by_split)
    for name, fn in sorted(TASKS.items()):
        files, split_of_id, taken = {}, {}, set()
        for s in ["test", "validation", "train"]:  # test first: it must not change
            items = fn(docs, s, taken)
            for it in items:  # items of different splits come from different documents
                if split_of_id.setdefault(it["id"], s) != s:
                    raise CorpusError("task %s: item id %s in both the %s and the %s split" %
                                      (name, it["id"], split_of_id[it["id"]], s))
            taken.update(it["query"] for it in items)
            lines = [json.dumps(it, ensure_ascii=False) for it in items]
            data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
            write_atomic(os.path.join(args.out, task_file(name, s)), data)
            files[s] = dict(file=task_file(name, s), items=len(items), bytes=len(data),
                            sha256=sha256_hex(data))
        # the task's own keys describe the test items (the evaluation data)
        manifest["tasks"][name] = dict(files["test"], splits={s: files[s] for s in splits})
        print("corpus: task %-15s %5d train, %4d validation, %4d test items" %
              (name, files["train"]["items"], files["validation"]["items"],
               files["test"]["items"]), file=sys.stderr)

    data = (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    write_atomic(os.path.join(args.out, "manifest.json"), data)
    total = sum(v["bytes"] for v in manifest["domains"].values())
    print("corpus: %d documents, %.1f MB of text -> %s" % (len(all_docs), total / 1e6, args.out),
          file=sys.stderr)


def main():
    global MIN_DOC
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="directory of extracted packages")
    ap.add_argument("--packages", required=True, help="packages.json: name -> version info")
    ap.add_argument("--kjv", required=True, help="verse listing, one 'Ge1:1 text' per line")
    ap.add_argument("--out", required=True)
    ap.add_argument("--domains", default=None, help="comma-separated subset (default: all)")
    ap.add_argument("--min-doc-bytes", type=int, default=MIN_DOC,
                    help="merge consecutive small entries up to this size (default %(default)s)")
    args = ap.parse_args()
    MIN_DOC = max(1, args.min_doc_bytes)
    try:
        build(args)
    except (CorpusError, OSError, ValueError, KeyError) as e:
        print("error: %s" % e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
