#!/usr/bin/env python3
"""Turns moeforge_bench JSON output (BM_GemmPeak, BM_MemoryReadBandwidth, BM_Moe*, BM_Dense*)
into the ratio table of docs/benchmarks.md (issue 8). Usage: bench_moe_report.py moe.json"""
import json
import sys


def main():
    data = json.load(open(sys.argv[1]))
    # With --benchmark_repetitions=N use the medians, else the single runs.
    med = [x for x in data["benchmarks"] if x.get("aggregate_name") == "median"]
    rows = med if med else [x for x in data["benchmarks"] if x.get("run_type", "iteration") == "iteration"]
    b = {x["run_name"] if med else x["name"]: x for x in rows}

    def get(name, key):
        for n, x in b.items():
            if n.startswith(name):
                return x[key]
        raise KeyError(name)

    def ms(name):
        return get(name, "real_time")

    bw = get("BM_MemoryReadBandwidth", "GB/s")
    peak = get("BM_GemmPeak/bf16/2048", "GFLOP/s")
    print(f"machine: bf16 GEMM peak {peak:.0f} GFLOP/s (2048^3), read bandwidth {bw:.1f} GB/s, "
          f"{data['context'].get('num_cpus')} cpus, load average {data['context'].get('load_avg')}, "
          f"{'medians of repetitions' if med else 'single runs'}")
    print()
    print("| case | moeforge | plain loop | ratio to bound / peak | target |")
    print("|---|---|---|---|---|")
    for t in (1, 8):
        ours, plain = f"BM_MoeOlmoe/{t}/", f"BM_MoeOlmoePlainLoop/{t}/"
        g1, g2 = get(ours, "GB/s"), get(plain, "GB/s")
        # The layer benchmark streams the same bytes in its own loop (bench/peaks.h): that read rate,
        # taken minutes apart from nothing, is the bound to divide by.
        rbw = get(ours, "read_GB/s")
        tgt = ">= 75 %" if t == 1 else "-"
        print(f"| OLMoE layer, {t} token(s): ms, GB/s | {ms(ours):.2f} ms, {g1:.1f} GB/s | {ms(plain):.2f} ms, "
              f"{g2:.1f} GB/s | {100*g1/rbw:.0f} % of the interleaved read ({rbw:.1f} GB/s; plain loop "
              f"{100*g2/rbw:.0f} %) | {tgt} |")
    ours, plain = "BM_MoeOlmoe/2048/", "BM_MoeOlmoePlainLoop/2048/"
    f1, f2 = get(ours, "GFLOP/s"), get(plain, "GFLOP/s")
    fd = get("BM_DenseOlmoeActive/2048/", "GFLOP/s")
    print(f"| OLMoE layer, 2048 tokens: ms, active GFLOP/s | {ms(ours):.0f} ms, {f1:.0f} | {ms(plain):.0f} ms, {f2:.0f} | "
          f"{100*f1/peak:.0f} % of bf16 GEMM peak (plain loop {100*f2/peak:.0f} %, dense FFN of same active FLOPs "
          f"{100*fd/peak:.0f} %) | >= 65 % |")
    frac = get("BM_MoeHemoe/2048/", "active_frac")
    th, td = ms("BM_MoeHemoe/2048/"), ms("BM_DenseHemoe/2048/")
    print(f"| HEMoE layer (8 experts 512..2048, k=4), 2048 tokens | {th:.0f} ms, active fraction {frac:.3f} | "
          f"dense FFN {td:.0f} ms | time / (fraction x dense) = {th/(frac*td):.2f} | <= 1.1 |")


if __name__ == "__main__":
    main()
