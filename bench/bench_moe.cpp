// MoE layer benchmarks (issue 8). Results are ratios against baselines measured in the same
// run: the plain per-expert libtorch loop (moe_routing_training / perf spec §2.6), a dense
// SwiGLU FFN of the same active FLOPs, and the machine peaks of bench_machine.cpp
// (BM_GemmPeak/bf16, BM_MemoryReadBandwidth). scripts/bench_moe_report.py turns the JSON
// output into the table of docs/benchmarks.md.
//
//   ./build/moeforge_bench --benchmark_filter='BM_GemmPeak/bf16|BM_MemoryRead|BM_Moe|BM_Dense' \
//       --benchmark_format=json > moe.json && python3 scripts/bench_moe_report.py moe.json
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <chrono>
#include <numeric>

#include "moe/expert_bank.h"
#include "moe/kernels.h"
#include "moe/moe_layer.h"
#include "moe/routers/linear_router.h"
#include "peaks.h"

using namespace mf::moe;

namespace {

constexpr int64_t kD = 2048;

// OLMoE-shaped layer: d=2048, f=1024, E=64, k=8, bf16 experts, softmax top-8 without renorm.
struct Olmoe {
  static constexpr int64_t E = 64, F = 1024, K = 8;
  at::Tensor w_in, w_out, router;  // [E, 2F, d], [E, d, F], [E, d]
  MoELayer layer{nullptr};
  Olmoe() {
    torch::manual_seed(0);
    w_in = (at::randn({E, 2 * F, kD}) * 0.02).to(at::kBFloat16);
    w_out = (at::randn({E, kD, F}) * 0.02).to(at::kBFloat16);
    router = at::randn({E, kD}) * 0.02;
    SelectionConfig sel;  // OLMoE: softmax top-8, no renormalisation
    sel.k = K;
    sel.gate = GateMode::Prob;
    layer = MoELayer(expert_bank_from_fused(w_in, w_out), LinearRouter(router, sel).ptr());
    layer->eval();
  }
  static Olmoe& get() {
    static Olmoe o;
    return o;
  }
};

// HEMoE-shaped heterogeneous layer: d=2048, F=8192 split into 8 experts of 512..2048, k=4.
struct Hemoe {
  static constexpr int64_t E = 8, K = 4;
  std::vector<int64_t> sizes = {512, 512, 512, 2048, 2048, 1536, 512, 512};
  at::Tensor G, U, D;  // dense FFN [F, d], [F, d], [d, F] bf16
  at::Tensor dense_in;  // [2F, d] fused gate/up of the dense FFN
  MoELayer layer{nullptr};
  Hemoe() {
    torch::manual_seed(1);
    const int64_t F = 8192;
    G = (at::randn({F, kD}) * 0.02).to(at::kBFloat16);
    U = (at::randn({F, kD}) * 0.02).to(at::kBFloat16);
    D = (at::randn({kD, F}) * 0.02).to(at::kBFloat16);
    dense_in = at::cat({G, U}, 0);
    std::vector<std::vector<int64_t>> parts;
    int64_t o = 0;
    for (int64_t s : sizes) {
      std::vector<int64_t> p(s);
      std::iota(p.begin(), p.end(), o);
      o += s;
      parts.push_back(p);
    }
    SelectionConfig sel;
    sel.k = K;
    sel.gate = GateMode::UnitST;
    layer = MoELayer(expert_bank_from_partition(G, U, D, parts, Act::SiLU),
                     LinearRouter(kD, E, sel, ScoreFn::Softmax, RouterNoise{}, false, 0.02).ptr());
    layer->eval();
  }
  static Hemoe& get() {
    static Hemoe h;
    return h;
  }
};

// A pool of distinct inputs so consecutive iterations route differently.
at::Tensor inputs(int64_t tokens, int64_t pool) {
  torch::manual_seed(42);
  return at::randn({pool, tokens, kD}).to(at::kBFloat16);
}

int64_t touched_experts(const RoutingPlan& p) {
  int64_t n = 0;
  for (int64_t c : p.counts) n += c > 0;
  return n;
}

// The plain per-expert loop in libtorch (perf spec §2.6): router mm -> softmax -> topk ->
// sort -> bincount -> index_select -> per expert mm(gate), mm(up), silu*, mm(down) -> weight
// -> index_add_.
at::Tensor plain_loop(const at::Tensor& x, const at::Tensor& router, const at::Tensor& w_in, const at::Tensor& w_out,
                      int64_t k) {
  const int64_t E = w_in.size(0), F = w_out.size(2);
  at::Tensor probs = at::softmax(at::mm(x.to(at::kFloat), router.t()), -1);
  auto [wk, ik] = probs.topk(k, 1);
  at::Tensor flat = ik.reshape({-1});
  auto [sorted, order] = flat.sort();
  at::Tensor counts = at::bincount(sorted, {}, E);
  at::Tensor tok = order.div(k, "floor");
  at::Tensor xs = x.index_select(0, tok);
  at::Tensor ws = wk.reshape({-1}).index_select(0, order);
  at::Tensor y = at::zeros({x.size(0), x.size(1)}, at::kFloat);
  const int64_t* c = counts.data_ptr<int64_t>();
  int64_t off = 0;
  for (int64_t e = 0; e < E; ++e) {
    if (c[e] == 0) continue;
    at::Tensor xe = xs.narrow(0, off, c[e]);
    at::Tensor we = w_in[e];
    at::Tensor h = at::silu(at::mm(xe, we.narrow(0, 0, F).t())) * at::mm(xe, we.narrow(0, F, F).t());
    at::Tensor o = at::mm(h, w_out[e].t()).to(at::kFloat) * ws.narrow(0, off, c[e]).unsqueeze(1);
    y.index_add_(0, tok.narrow(0, off, c[e]), o);
    off += c[e];
  }
  return y.to(x.scalar_type());
}

// Dense SwiGLU FFN with fused gate/up: w_in [2F, d], w_out [d, F]. It uses the layer's own
// fused activation kernel (libtorch's bf16 silu(.) * (.) is slower), so the comparison is
// GEMM against GEMM.
at::Tensor dense_ffn(const at::Tensor& x, const at::Tensor& w_in, const at::Tensor& w_out) {
  const int64_t F = w_out.size(1);
  at::Tensor h = at::mm(x, w_in.t());
  return at::mm(expert_activation(h, {}, F, true, Act::SiLU), w_out.t());
}

void BM_MoeOlmoe(benchmark::State& state) {
  at::NoGradGuard ng;
  Olmoe& m = Olmoe::get();
  const int64_t T = state.range(0), pool = T == 1 ? 64 : 2;
  at::Tensor xs = inputs(T, pool);
  double bytes = 0, flops = 0, layer_s = 0, read_s = 0, pending = 0, read_bytes = 0;
  int64_t i = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    MoEOutput o = m.layer->forward_full(xs[i++ % pool]);
    benchmark::DoNotOptimize(o.y.data_ptr());
    layer_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double b = touched_experts(o.plan) * 3.0 * kD * Olmoe::F * 2;
    bytes += b;
    flops += o.plan.rows() * 6.0 * kD * Olmoe::F;
    pending += b;
    if (T <= 8 && i % 16 == 0) {  // bandwidth-bound: the same bytes streamed every 16 calls, untimed
      state.PauseTiming();
      read_s += mf::bench::timed_stream_read(static_cast<int64_t>(pending));
      read_bytes += pending;
      pending = 0;
      state.ResumeTiming();
    }
  }
  if (T <= 8 && pending > 0) {  // the remainder of a short run (after the timed loop)
    read_s += mf::bench::timed_stream_read(static_cast<int64_t>(pending));
    read_bytes += pending;
  }
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
  if (read_s > 0) {
    const double read_rate = read_bytes / read_s;
    state.counters["read_GB/s"] = read_rate * 1e-9;
    state.counters["of_bandwidth"] = bytes / layer_s / read_rate;  // the ratio to report
  }
}
BENCHMARK(BM_MoeOlmoe)->Arg(1)->Arg(8)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

void BM_MoeOlmoePlainLoop(benchmark::State& state) {
  at::NoGradGuard ng;
  Olmoe& m = Olmoe::get();
  const int64_t T = state.range(0), pool = T == 1 ? 64 : 2;
  at::Tensor xs = inputs(T, pool);
  double bytes = 0, flops = 0;
  int64_t i = 0;
  for (auto _ : state) {
    at::Tensor x = xs[i++ % pool];
    at::Tensor y = plain_loop(x, m.router, m.w_in, m.w_out, Olmoe::K);
    benchmark::DoNotOptimize(y.data_ptr());
    // Same routing as the layer (same router, same softmax top-k).
    at::Tensor ik = std::get<1>(at::softmax(at::mm(x.to(at::kFloat), m.router.t()), -1).topk(Olmoe::K, 1));
    bytes += std::get<0>(at::_unique(ik.reshape({-1}))).size(0) * 3.0 * kD * Olmoe::F * 2;
    flops += T * Olmoe::K * 6.0 * kD * Olmoe::F;
  }
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MoeOlmoePlainLoop)->Arg(1)->Arg(8)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// Dense FFN with the active FLOPs of the OLMoE layer (width k * f = 8192).
void BM_DenseOlmoeActive(benchmark::State& state) {
  at::NoGradGuard ng;
  const int64_t T = state.range(0), F = Olmoe::K * Olmoe::F;
  torch::manual_seed(3);
  at::Tensor w_in = (at::randn({2 * F, kD}) * 0.02).to(at::kBFloat16);
  at::Tensor w_out = (at::randn({kD, F}) * 0.02).to(at::kBFloat16);
  at::Tensor x = inputs(T, 1)[0];
  for (auto _ : state) {
    at::Tensor y = dense_ffn(x, w_in, w_out);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(T * 6.0 * kD * F * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DenseOlmoeActive)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

void BM_MoeHemoe(benchmark::State& state) {
  at::NoGradGuard ng;
  Hemoe& h = Hemoe::get();
  const int64_t T = state.range(0);
  at::Tensor xs = inputs(T, 2);
  double active = 0, n = 0;
  int64_t i = 0;
  for (auto _ : state) {
    MoEOutput o = h.layer->forward_full(xs[i++ % 2]);
    benchmark::DoNotOptimize(o.y.data_ptr());
    for (int64_t e = 0; e < Hemoe::E; ++e) active += double(o.plan.counts[e]) * h.sizes[e];
    n += 1;
  }
  // Activated-FLOP fraction: mean over tokens of the selected widths / F.
  state.counters["active_frac"] = active / (n * T * 8192.0);
  state.counters["GFLOP/s"] = benchmark::Counter(active * 6.0 * kD * 1e-9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_MoeHemoe)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

void BM_DenseHemoe(benchmark::State& state) {
  at::NoGradGuard ng;
  Hemoe& h = Hemoe::get();
  const int64_t T = state.range(0);
  at::Tensor x = inputs(T, 1)[0];
  for (auto _ : state) {
    at::Tensor y = dense_ffn(x, h.dense_in, h.D);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(T * 6.0 * kD * 8192 * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DenseHemoe)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

}  // namespace
