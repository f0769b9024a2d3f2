// Expert-merging benchmarks (issue 16), ratios against baselines measured in the same loop.
//   BM_MergeCalibrationPass: the calibration pass's every-expert-on-every-token step
//     (merge::every_expert_pass, as calibrate_merge runs it per layer and block) on an
//     OLMoE-shaped layer — d 2048, f 1024, 64 experts, bf16 — over 2048 tokens (6·T·E·d·f =
//     1.65 TFLOP), each iteration followed by a 2048³ bf16 GEMM timed in the same loop (the
//     machine's peak, BM_GemmPeak/bf16). Counters: pass GFLOP/s, peak GFLOP/s,
//     fraction_of_bf16_peak (acceptance: >= 0.70).
//   BM_OPruneSubsetCost/{olmoe,qwen}: O-prune's search (merge::o_prune on the cached logits and
//     per-token Gram matrices of the layer's calibration tokens) divided by the subsets it
//     evaluated, against one forward of the same layer (MoeFFN::forward, routed + shared experts)
//     on the same tokens, interleaved. olmoe: the layer above, 2048 tokens, top-8, 32 of 64 kept,
//     sampled subsets; qwen: models/tiny-qwen-moe's layer shape (d 256, 32 experts of 64, top-4,
//     renormalised, shared expert 1024, bf16) on merge's 4096 error tokens, 16 kept.
//     Counter: subset_over_forward (acceptance: <= 0.05).
//   ./build/moeforge_bench --benchmark_filter='MergeCalibrationPass|OPruneSubsetCost'
// The end-to-end time and peak memory of `moeforge merge` are measured by bench/merge_end_to_end.sh.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <chrono>
#include <memory>

#include "merge/calibrate.h"
#include "merge/oprune.h"
#include "model/moe_ffn.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct LayerShape {
  int64_t d, f, experts, k, shared, tokens;
  bool renormalize;
};
constexpr LayerShape kOlmoe{2048, 1024, 64, 8, 0, 2048, false};
constexpr LayerShape kTinyQwen{256, 64, 32, 4, 1024, 4096, true};

// A bf16 MoE block of `s` with N(0, 0.02) weights and bf16 N(0, 1) inputs.
struct MergeLayer {
  std::shared_ptr<mf::MoeFFN> block;
  at::Tensor x;
  explicit MergeLayer(const LayerShape& s) {
    torch::manual_seed(0);
    mf::MoeFfnSpec spec;
    spec.hidden = s.d;
    spec.widths.assign(static_cast<size_t>(s.experts), s.f);
    spec.shared_inner = s.shared;
    spec.router.selection.k = s.k;
    spec.router.selection.gate = s.renormalize ? mf::moe::GateMode::Renorm : mf::moe::GateMode::Prob;
    block = std::make_shared<mf::MoeFFN>(spec);
    at::NoGradGuard no_grad;
    for (auto& p : block->parameters()) p.normal_(0, 0.02);
    block->to(at::kBFloat16);
    block->eval();
    x = at::randn({s.tokens, s.d}).to(at::kBFloat16);
  }
};

void BM_MergeCalibrationPass(benchmark::State& state) {
  static MergeLayer layer(kOlmoe);
  const LayerShape& s = kOlmoe;
  const double flops = 6.0 * s.tokens * s.experts * s.d * s.f;
  const at::Tensor a = at::randn({2048, 2048}).to(at::kBFloat16), b = at::randn({2048, 2048}).to(at::kBFloat16);
  at::Tensor c = at::mm(a, b);
  at::NoGradGuard no_grad;
  double pass_s = 0, peak_s = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    const mf::ExpertPass p = mf::every_expert_pass(*layer.block, layer.x, 0);
    benchmark::DoNotOptimize(p.out_sum.data_ptr());
    pass_s += seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) at::mm_out(c, a, b);
    benchmark::DoNotOptimize(c.data_ptr());
    peak_s += seconds_since(t0) / 3;
  }
  const double n = static_cast<double>(state.iterations());
  const double pass_gflops = flops * n / pass_s * 1e-9, peak_gflops = 2.0 * 2048 * 2048 * 2048 * n / peak_s * 1e-9;
  state.counters["pass_ms"] = pass_s / n * 1e3;
  state.counters["pass_GFLOP/s"] = pass_gflops;
  state.counters["peak_GFLOP/s"] = peak_gflops;
  state.counters["fraction_of_bf16_peak"] = pass_gflops / peak_gflops;
}
BENCHMARK(BM_MergeCalibrationPass)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

void BM_OPruneSubsetCost(benchmark::State& state, LayerShape s, int64_t subsets) {
  MergeLayer layer(s);
  at::NoGradGuard no_grad;
  // What calibrate_merge keeps for O-prune: the tokens' router logits and the Gram matrices of
  // the experts' outputs per token.
  const at::Tensor logits = at::linear(layer.x, layer.block->router->named_parameters()["weight"]).to(at::kFloat);
  const mf::ExpertPass pass = mf::every_expert_pass(*layer.block, layer.x, s.tokens);
  const at::Tensor gram = at::bmm(pass.kept, pass.kept.transpose(1, 2)).contiguous();
  mf::merge::OPruneInput in;
  in.tokens = s.tokens;
  in.experts = s.experts;
  in.k = s.k;
  in.renormalize = s.renormalize;
  in.logits = logits.data_ptr<float>();
  in.gram = gram.data_ptr<double>();
  double search_s = 0, forward_s = 0;
  int64_t evaluated = 0;
  uint64_t seed = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    const mf::merge::OPruneResult r = mf::merge::o_prune(in, s.experts / 2, subsets, seed++);
    search_s += seconds_since(t0);
    evaluated += r.subsets;
    t0 = std::chrono::steady_clock::now();
    const at::Tensor y = layer.block->forward(layer.x, mf::FfnContext{});
    benchmark::DoNotOptimize(y.data_ptr());
    forward_s += seconds_since(t0);
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["subset_us"] = search_s / static_cast<double>(evaluated) * 1e6;
  state.counters["forward_ms"] = forward_s / n * 1e3;
  state.counters["subset_over_forward"] = (search_s / static_cast<double>(evaluated)) / (forward_s / n);
}
BENCHMARK_CAPTURE(BM_OPruneSubsetCost, olmoe, kOlmoe, 200)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK_CAPTURE(BM_OPruneSubsetCost, qwen, kTinyQwen, 2000)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace
