#!/usr/bin/env python3
"""Scaling model on paper for data and expert parallelism on 8 GPUs x N nodes (docs/benchmarks.md).

    scripts/dist_scaling_model.py [--tokens-per-gpu 8192] [--nodes 1 2 4 8]

Per optimizer step and GPU: the bytes each collective moves and the time they take at the link
bandwidths below, against the step's compute time, for the bundled MoE models and an
OLMoE-1B-7B-shaped model. No overlap of communication with compute is assumed (an upper bound
on its cost). Assumptions, stated once:
  * bf16 gradients and activations on the wire (2 bytes); routing spread uniformly over experts.
  * Data parallel: hierarchical all-reduce of every gradient: reduce-scatter + all-gather inside
    the node over NVLink (2 x 7/8 of the bytes), then a ring across nodes on each GPU's 1/8 shard
    (2 x (N-1)/N of it) over that GPU's own InfiniBand NIC.
  * Expert parallel over all W = 8N GPUs (each expert on one GPU while E >= W; with E < W the
    experts are replicated W/E times and their gradients all-reduced among the replicas): four
    all-to-alls per MoE layer and step (dispatch and combine, forward and backward), each moving
    T*k*d*2 bytes per GPU, of which a fraction 7/W stays in the node and (W-8)/W crosses it;
    the dense (replicated) gradients are all-reduced as above. Also the hybrid: experts spread
    over the 8 GPUs of a node (all-to-all on NVLink only), nodes as data-parallel replicas.
  * Links per GPU and direction: NVLink 4 (H100 SXM) 450 GB/s, InfiniBand NDR 400 Gb/s = 50 GB/s.
  * Compute: 6 x active parameters x tokens at 989 TFLOP/s bf16 peak x 40 % MFU.
"""
import argparse
import json
import os

NVLINK = 450e9
IB = 50e9
FLOPS = 989e12 * 0.40
WIRE = 2  # bytes per value


def shape_from_config(path):
    c = json.load(open(path))
    d, L, V = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    heads, kv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    hd = d // heads
    E = c.get("num_local_experts") or c.get("num_experts")
    k = c["num_experts_per_tok"]
    f = c.get("moe_intermediate_size") or c["intermediate_size"]
    shared = c.get("shared_expert_intermediate_size") or 0
    tied = c.get("tie_word_embeddings", False)
    return dict(d=d, L=L, V=V, attn=d * hd * (2 * heads + 2 * kv), E=E, k=k, f=f, shared=shared, tied=tied)


OLMOE = dict(d=2048, L=16, V=50304, attn=4 * 2048 * 2048, E=64, k=8, f=1024, shared=0, tied=False)


def params(s):
    expert = 3 * s["d"] * s["f"]
    dense_layer = s["attn"] + s["E"] * s["d"] + 3 * s["d"] * s["shared"] + 2 * s["d"]
    embed = s["V"] * s["d"] * (1 if s["tied"] else 2)
    dense = s["L"] * dense_layer + embed
    experts = s["L"] * s["E"] * expert
    active = dense + s["L"] * s["k"] * expert
    return dense, experts, active


def allreduce_seconds(nbytes, nodes):
    intra = 2 * nbytes * 7 / 8 / NVLINK
    inter = 2 * (nbytes / 8) * (nodes - 1) / nodes / IB if nodes > 1 else 0.0
    return intra + inter


def row(name, s, T, nodes):
    dense, experts, active = params(s)
    W = 8 * nodes
    compute = 6 * active * T / FLOPS
    dp_bytes = (dense + experts) * WIRE
    dp = allreduce_seconds(dp_bytes, nodes)
    a2a = 4 * s["L"] * T * s["k"] * s["d"] * WIRE
    a2a_t = a2a * 7 / W / NVLINK + a2a * (W - 8) / W / IB
    replicas = max(1, W // s["E"])
    expert_ar = allreduce_seconds(experts * WIRE / W * replicas, nodes) if replicas > 1 else 0.0
    ep = allreduce_seconds(dense * WIRE, nodes) + a2a_t + expert_ar
    # Hybrid: experts spread over the 8 GPUs of a node only (all-to-all on NVLink), each node a
    # data-parallel replica; a GPU's 1/8 of the expert gradients is all-reduced across nodes on IB.
    ep8 = allreduce_seconds(dense * WIRE, nodes) + a2a * 7 / 8 / NVLINK
    if nodes > 1:
        ep8 += 2 * (experts * WIRE / 8) * (nodes - 1) / nodes / IB
    return (f"| {name} | {nodes} x 8 | {compute * 1e3:.1f} | {dp_bytes / 1e9:.3f} | {dp * 1e3:.1f} ({dp / compute:.0%}) | "
            f"{a2a / 1e9:.3f} | {ep * 1e3:.1f} ({ep / compute:.0%}) | {ep8 * 1e3:.1f} ({ep8 / compute:.0%}) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens-per-gpu", type=int, default=8192)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4, 8])
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    models = [("tiny-mixtral", shape_from_config(os.path.join(root, "models/tiny-mixtral/config.json"))),
              ("tiny-qwen-moe", shape_from_config(os.path.join(root, "models/tiny-qwen-moe/config.json"))),
              ("OLMoE-1B-7B shape", OLMOE)]
    print(f"{a.tokens_per_gpu} tokens per GPU per step; per GPU and step; (x%) = share of the compute time")
    print("| model | GPUs | compute ms | DP all-reduce GB | DP comm ms | EP all-to-all GB | EP over all GPUs, comm ms "
          "| EP in node + DP across, comm ms |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in models:
        for n in a.nodes:
            print(row(name, s, a.tokens_per_gpu, n))


if __name__ == "__main__":
    main()
