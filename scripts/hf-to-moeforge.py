#!/usr/bin/env python3
"""Turn a benchmark download into the files `moeforge eval` reads (python3 standard library only).

    python3 scripts/hf-to-moeforge.py TASK INPUT [INPUT ...] --data-dir DIR

writes DIR/<task>/<split>.jsonl (docs/eval.md lists the file of every task) in the field layout of
the Hugging Face dataset lm-eval uses, with the dataset's column order (lm-eval's doc_hash in
--log-samples depends on it). INPUT may be

  * a Hugging Face `datasets` export: JSON Lines (`Dataset.to_json(path)`), a JSON array, or the
    `{"rows": [{"row": {...}}, ...]}` answer of the dataset viewer API;
  * CSV / TSV: GLUE's RTE `dev.tsv`, MMLU's original header-less `data/test/<subject>_test.csv`
    (question, A, B, C, D, answer letter), or a CSV with a header naming the fields (MMLU:
    question, A..D or a JSON choices list, answer); list columns written by pandas cannot be read
    back, export JSON Lines for those;
  * the original releases named in docs/eval.md (ARC / OpenBookQA with question.stem, PIQA and
    Social IQa with a separate labels .lst file, Social IQa with correct: "A", BoolQ with answer:
    true/false, HellaSwag's hellaswag_val.jsonl, OpenAI's lambada_test.jsonl, wiki.test.raw).

Parquet files (what the Hugging Face Hub serves for most datasets) cannot be read without pyarrow.
Export them to JSON Lines once with the `datasets` package, e.g.

    python3 -c "import datasets; datasets.load_dataset('allenai/ai2_arc', 'ARC-Easy', split='test').to_json('arc_easy.jsonl')"

and convert that file. `--commands` prints the export + convert command of every task.
"""

import argparse
import ast
import csv
import io
import json
import os
import sys

# task -> (split file moeforge reads, HF dataset, config, split, column order of the HF dataset)
TASKS = {
    "arc_easy": ("test", "allenai/ai2_arc", "ARC-Easy", "test", ["id", "question", "choices", "answerKey"]),
    "arc_challenge": ("test", "allenai/ai2_arc", "ARC-Challenge", "test", ["id", "question", "choices", "answerKey"]),
    "piqa": ("validation", "baber/piqa", None, "validation", ["goal", "sol1", "sol2", "label"]),
    "openbookqa": ("test", "allenai/openbookqa", "main", "test", ["id", "question_stem", "choices", "answerKey"]),
    "winogrande": ("validation", "allenai/winogrande", "winogrande_xl", "validation",
                   ["sentence", "option1", "option2", "answer"]),
    "sciq": ("test", "allenai/sciq", None, "test",
             ["question", "distractor3", "distractor1", "distractor2", "correct_answer", "support"]),
    "social_iqa": ("validation", "lighteval/siqa", None, "validation",
                   ["context", "question", "answerA", "answerB", "answerC", "label"]),
    "boolq": ("validation", "aps/super_glue", "boolq", "validation", ["question", "passage", "idx", "label"]),
    "hellaswag": ("validation", "Rowan/hellaswag", None, "validation",
                  ["ind", "activity_label", "ctx_a", "ctx_b", "ctx", "endings", "source_id", "split", "split_type",
                   "label"]),
    "rte": ("validation", "nyu-mll/glue", "rte", "validation", ["sentence1", "sentence2", "label", "idx"]),
    "mmlu": ("test", "cais/mmlu", "all", "test", ["question", "subject", "choices", "answer"]),
    "lambada_openai": ("test", "EleutherAI/lambada_openai", "default", "test", ["text"]),
    "wikitext": ("test", "EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test", ["page"]),
}


class InputError(Exception):
    pass


def fail(where, what):
    raise InputError(f"{where}: {what}")


# ---------------------------------------------------------------------------------------------
# Reading


def read_rows(path):
    """Rows of one input file as (origin, dict) pairs; origin is "<file>:<line>" where known."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PAR1":
        fail(path, "is a parquet file, which needs pyarrow; export it to JSON Lines with `datasets` "
                   "(python3 scripts/hf-to-moeforge.py --commands shows how)")
    try:
        text = open(path, encoding="utf-8-sig").read()
    except UnicodeDecodeError as e:
        fail(path, f"not UTF-8 text ({e.reason} at byte {e.start})")
    lower = path.lower()
    if lower.endswith((".csv", ".tsv")):
        return read_table(path, text, "\t" if lower.endswith(".tsv") else ",")
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSON Lines: read line by line below
        if isinstance(data, dict) and isinstance(data.get("rows"), list):  # the dataset viewer API
            data = [r["row"] if isinstance(r, dict) and "row" in r else r for r in data["rows"]]
        if isinstance(data, dict):
            return [(f"{path}:1", data)]  # a one-line JSON Lines file
        if isinstance(data, list):
            out = []
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    fail(f"{path}: item {i}", "expected a JSON object")
                out.append((f"{path}: item {i}", row))
            return out
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            fail(f"{path}:{n}", f"invalid JSON: {e.msg} (column {e.colno})")
        if not isinstance(row, dict):
            fail(f"{path}:{n}", "expected a JSON object")
        out.append((f"{path}:{n}", row))
    return out


def read_table(path, text, delimiter):
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
    rows = list(reader)
    if not rows:
        fail(path, "empty file")
    header = rows[0]
    known = {"question", "sentence1", "goal", "text", "page", "subject", "choices", "answer", "label", "context"}
    if not known.intersection(header):
        # MMLU's original CSV: question, A, B, C, D, answer letter, no header.
        header = ["question", "A", "B", "C", "D", "answer"]
        body, first = rows, 1
    else:
        body, first = rows[1:], 2
    out = []
    for n, r in enumerate(body, first):
        if not r:
            continue
        if len(r) != len(header):
            fail(f"{path}:{n}", f"{len(r)} columns, expected {len(header)} ({', '.join(header)})")
        out.append((f"{path}:{n}", dict(zip(header, r))))
    return out


def read_labels(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


# ---------------------------------------------------------------------------------------------
# Field mapping, one function per task: a row in any accepted layout -> the HF row


def need(origin, row, key):
    if key not in row or row[key] is None:
        fail(origin, f"missing field '{key}' (fields: {', '.join(row)})")
    return row[key]


def ordered(task, row):
    """The row with exactly the HF dataset's columns, in its order (what lm-eval's doc holds)."""
    return {k: row[k] for k in TASKS[task][4] if k in row}


def parse_list(origin, value, key):
    if isinstance(value, str):  # a list column in a CSV file
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                fail(origin, f"field '{key}' is not a list; export the dataset to JSON Lines instead")
    return value


def map_arc(origin, row, _label):
    q = need(origin, row, "question")
    if isinstance(q, dict):  # original ARC / OpenBookQA release: question.stem, question.choices
        choices = need(origin, q, "choices")
        row = {"id": row.get("id"), "question": need(origin, q, "stem"),
               "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
               "answerKey": need(origin, row, "answerKey")}
    choices = parse_list(origin, need(origin, row, "choices"), "choices")
    if not isinstance(choices, dict) or "text" not in choices or "label" not in choices:
        fail(origin, "field 'choices' must be {\"text\": [...], \"label\": [...]}")
    row["choices"] = choices
    need(origin, row, "answerKey")
    return row


def map_openbookqa(origin, row, label):
    if "question_stem" not in row and isinstance(row.get("question"), dict):
        row = map_arc(origin, row, label)
        row["question_stem"] = row.pop("question")
    for k in ("question_stem", "choices", "answerKey"):
        need(origin, row, k)
    return row


def map_piqa(origin, row, label):
    if label is not None:
        row["label"] = int(label)
    for k in ("goal", "sol1", "sol2"):
        need(origin, row, k)
    row["label"] = int(need(origin, row, "label"))
    return row


def map_winogrande(origin, row, label):
    if label is not None:
        row["answer"] = str(label)
    for k in ("sentence", "option1", "option2"):
        need(origin, row, k)
    row["answer"] = str(need(origin, row, "answer"))
    if row["answer"] not in ("1", "2"):
        fail(origin, f"answer must be \"1\" or \"2\" (got {row['answer']!r})")
    return row


def map_sciq(origin, row, _label):
    for k in ("question", "distractor1", "distractor2", "distractor3", "correct_answer", "support"):
        need(origin, row, k)
    return row


def map_social_iqa(origin, row, label):
    if label is not None:
        row["label"] = str(label)
    elif "label" not in row and "correct" in row:  # {"correct": "A"} releases
        letter = str(row.pop("correct")).strip()
        if letter not in ("A", "B", "C"):
            fail(origin, f"field 'correct' must be A, B or C (got {letter!r})")
        row["label"] = str("ABC".index(letter) + 1)
    for k in ("context", "question", "answerA", "answerB", "answerC"):
        need(origin, row, k)
    row["label"] = str(need(origin, row, "label")).strip()
    if row["label"] not in ("1", "2", "3"):
        fail(origin, f"label must be \"1\", \"2\" or \"3\" (got {row['label']!r})")
    return row


def map_boolq(origin, row, _label, index=0):
    if "label" not in row:  # google/boolq and the original release: answer true/false
        answer = need(origin, row, "answer")
        if isinstance(answer, str):
            answer = {"true": True, "false": False}.get(answer.lower(), answer)
        if not isinstance(answer, bool):
            fail(origin, "field 'answer' must be true or false")
        row["label"] = int(answer)
        row.pop("answer")
    need(origin, row, "question")
    need(origin, row, "passage")
    row["label"] = int(row["label"])
    row.setdefault("idx", index)  # super_glue's idx: the row's position in the split
    return row


def map_hellaswag(origin, row, _label):
    if "ctx_a" not in row or "ctx_b" not in row:
        fail(origin, "needs ctx_a and ctx_b (lm-eval builds the context from ctx_a + ' ' + "
                     "ctx_b.capitalize(); a copy with only 'ctx' cannot be split back exactly)")
    for k in ("activity_label", "endings", "label"):
        need(origin, row, k)
    row["endings"] = parse_list(origin, row["endings"], "endings")
    row["label"] = str(row["label"])  # a string in Rowan/hellaswag
    return row


def map_rte(origin, row, _label):
    for k in ("sentence1", "sentence2", "label"):
        need(origin, row, k)
    label = str(row["label"]).strip()
    names = {"entailment": 0, "not_entailment": 1, "0": 0, "1": 1}
    if label not in names:
        fail(origin, f"label must be entailment / not_entailment or 0 / 1 (got {label!r})")
    row["label"] = names[label]
    if "index" in row and "idx" not in row:
        row["idx"] = int(row.pop("index"))
    return row


def map_mmlu(origin, row, _label, subject=None):
    if "choices" not in row and all(k in row for k in ("A", "B", "C", "D")):
        letter = str(need(origin, row, "answer")).strip()
        if letter not in ("A", "B", "C", "D"):
            fail(origin, f"answer must be A, B, C or D (got {letter!r})")
        row = {"question": row["question"], "subject": row.get("subject", subject),
               "choices": [row["A"], row["B"], row["C"], row["D"]], "answer": "ABCD".index(letter)}
    row["choices"] = parse_list(origin, need(origin, row, "choices"), "choices")
    if not isinstance(row["choices"], list) or len(row["choices"]) != 4:
        fail(origin, "field 'choices' must be a list of 4 strings")
    row["answer"] = int(need(origin, row, "answer"))
    if not row.get("subject"):
        if not subject:
            fail(origin, "no 'subject' field and the file name is not <subject>_test.csv")
        row["subject"] = subject
    need(origin, row, "question")
    return row


def map_lambada(origin, row, _label):
    need(origin, row, "text")
    return row


def map_wikitext(origin, row, _label):
    need(origin, row, "page")
    return row


MAPPERS = {
    "arc_easy": map_arc, "arc_challenge": map_arc, "piqa": map_piqa, "openbookqa": map_openbookqa,
    "winogrande": map_winogrande, "sciq": map_sciq, "social_iqa": map_social_iqa, "boolq": map_boolq,
    "hellaswag": map_hellaswag, "rte": map_rte, "mmlu": map_mmlu, "lambada_openai": map_lambada,
    "wikitext": map_wikitext,
}


# ---------------------------------------------------------------------------------------------
# Writing


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def convert(task, inputs, data_dir):
    split_file = TASKS[task][0]
    if task == "wikitext" and len(inputs) == 1 and inputs[0].endswith(".raw"):
        dest = os.path.join(data_dir, "wikitext2", "wiki.test.raw")  # moeforge splits the raw file itself
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(inputs[0], "rb") as src, open(dest + ".tmp", "wb") as out:
            out.write(src.read())
        os.replace(dest + ".tmp", dest)
        return [dest]
    data_files = [p for p in inputs if not p.endswith(".lst")]
    label_files = [p for p in inputs if p.endswith(".lst")]
    if len(label_files) > 1 or (label_files and len(data_files) != 1):
        fail(inputs[0], "give one data file and at most one labels .lst file")
    by_subject = {}
    rows = []
    for path in data_files:
        src = read_rows(path)
        labels = read_labels(label_files[0]) if label_files else None
        if labels is not None and len(labels) != len(src):
            fail(label_files[0], f"{len(labels)} labels for {len(src)} rows of {path}")
        subject = None
        base = os.path.basename(path)
        for suffix in ("_test.csv", "_val.csv", "_dev.csv"):
            if base.endswith(suffix):
                subject = base[: -len(suffix)]
        for i, (origin, row) in enumerate(src):
            label = labels[i] if labels is not None else None
            if task == "mmlu":
                row = map_mmlu(origin, dict(row), label, subject)
                by_subject.setdefault(row["subject"], []).append(ordered(task, row))
            elif task == "boolq":
                rows.append(ordered(task, map_boolq(origin, dict(row), label, len(rows))))
            else:
                rows.append(ordered(task, MAPPERS[task](origin, dict(row), label)))
    written = []
    if task == "mmlu":
        if not by_subject:
            fail(inputs[0], "no rows")
        for subject, subject_rows in sorted(by_subject.items()):
            dest = os.path.join(data_dir, "mmlu", subject, split_file + ".jsonl")
            write_jsonl(dest, subject_rows)
            written.append(dest)
        return written
    if not rows:
        fail(inputs[0], "no rows")
    dest = os.path.join(data_dir, task, split_file + ".jsonl")
    write_jsonl(dest, rows)
    return [dest]


def commands():
    lines = ["# 1. Export with the `datasets` package (any Python that has it, e.g. a throw-away venv:",
             "#      python3 -m venv /tmp/hf && /tmp/hf/bin/pip install datasets)",
             "# 2. Convert with python3 alone; the files land under --data-dir (here: data/)."]
    for task, (_, dataset, config, split, _) in TASKS.items():
        cfg = f", '{config}'" if config else ""
        out = f"{task}.{split}.jsonl"
        lines.append("")
        lines.append(f"python3 -c \"import datasets; datasets.load_dataset('{dataset}'{cfg}, split='{split}')"
                     f".to_json('{out}')\"")
        lines.append(f"python3 scripts/hf-to-moeforge.py {task} {out} --data-dir data")
    return "\n".join(lines)


def main(argv):
    ap = argparse.ArgumentParser(
        prog="hf-to-moeforge.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    ap.add_argument("task", nargs="?", choices=sorted(TASKS), metavar="TASK", help=", ".join(TASKS))
    ap.add_argument("inputs", nargs="*", metavar="INPUT", help="downloaded file(s); a .lst file holds labels")
    ap.add_argument("--data-dir", default="data", help="moeforge eval --data-dir (default: data)")
    ap.add_argument("--commands", action="store_true", help="print the export + convert command of every task")
    args = ap.parse_args(argv)
    if args.commands:
        print(commands())
        return 0
    if not args.task or not args.inputs:
        ap.error("TASK and at least one INPUT are required (or --commands)")
    try:
        for path in args.inputs:
            if not os.path.isfile(path):
                fail(path, "no such file")
        for dest in convert(args.task, args.inputs, args.data_dir):
            print(dest)
    except InputError as e:
        print(f"hf-to-moeforge.py: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"hf-to-moeforge.py: error: {e.filename or args.inputs[0]}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
