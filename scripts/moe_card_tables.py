#!/usr/bin/env python3
"""Markdown tables for the model cards of the bundled MoE models (models/tiny-*/README.md).

    python3 scripts/moe_card_tables.py MODEL_DIR [MODEL_DIR ...]

Each MODEL_DIR has train_record.json (val_loss per domain), eval_results.json (moeforge eval) and,
for MoE models, expert_stats.json (moeforge experts). Prints: validation loss per domain, task
accuracy, bits per byte per domain for all models side by side; then per MoE model the share of
routed tokens per expert per domain (mean over layers) and the expert-output cosine per layer.
"""
import json
import math
import os
import sys

TASKS = ["wordnet_define", "foldoc_define", "kjv_cloze"]


def load(path):
    return json.load(open(path)) if os.path.exists(path) else None


def main(dirs):
    names = [os.path.basename(os.path.normpath(d)) for d in dirs]
    recs = [load(os.path.join(d, "train_record.json")) for d in dirs]
    evals = [load(os.path.join(d, "eval_results.json")) for d in dirs]
    domains = sorted(next(r for r in recs if r)["val_loss"].keys())
    print("| domain | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for dom in domains:
        print(f"| {dom} | " + " | ".join(f"{r['val_loss'][dom]:.3f}" if r else "–" for r in recs) + " |")
    mean = [sum(r["val_loss"].values()) / len(r["val_loss"]) if r else float("nan") for r in recs]
    print("| **mean** | " + " | ".join(f"**{m:.3f}**" for m in mean) + " |\n")

    print("| task | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for t in TASKS:
        cells = []
        for e in evals:
            r = e["results"].get(t) if e else None
            cells.append(f"{r['acc,none']:.4f} ± {r['acc_stderr,none']:.4f}" if r else "–")
        print(f"| {t} | " + " | ".join(cells) + " |")
    print()
    print("| bits per byte | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for dom in domains:
        key = "corpus_ppl_" + dom
        cells = [f"{e['results'][key]['bits_per_byte,none']:.3f}" if e and key in e["results"] else "–" for e in evals]
        print(f"| {dom} | " + " | ".join(cells) + " |")
    print()

    for d, name in zip(dirs, names):
        s = load(os.path.join(d, "expert_stats.json"))
        if not s:
            continue
        print(f"### {name}: routed tokens per expert per domain (% of the domain's routed tokens, mean over {len(s['layers'])} layers; {s['tokens']} validation tokens)\n")
        E = len(s["layers"][0]["cosine"])
        doms = sorted(s["layers"][0]["tokens_per_expert"].keys())
        print("| domain | " + " | ".join(str(e) for e in range(E)) + " |")
        print("|---|" + "---:|" * E)
        for dom in doms:
            share = [0.0] * E
            for layer in s["layers"]:
                c = layer["tokens_per_expert"].get(dom, [0] * E)
                tot = sum(c) or 1
                for e in range(E):
                    share[e] += 100.0 * c[e] / tot / len(s["layers"])
            print(f"| {dom} | " + " | ".join(f"{v:.1f}" for v in share) + " |")
        print()
        print("| layer | mean pairwise cosine of expert outputs | min | max | routed-token share of the busiest expert | of the two busiest |")
        print("|---|---:|---:|---:|---:|---:|")
        for layer in s["layers"]:
            off = [layer["cosine"][i][j] for i in range(E) for j in range(i + 1, E)]
            tot = [sum(c[e] for c in layer["tokens_per_expert"].values()) for e in range(E)]
            top = sorted(tot, reverse=True)
            share = [100.0 * t / (sum(tot) or 1) for t in top]
            print(f"| {layer['layer']} | {layer['mean_pairwise_cosine']:.4f} | {min(off):.4f} | {max(off):.4f} | "
                  f"{share[0]:.1f} % | {share[0] + share[1]:.1f} % |")
        print(f"| **all** | **{s['mean_pairwise_cosine']:.4f}** | | | | |\n")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    main(sys.argv[1:])
