// HyperMoE benchmarks (issue 18) at the reference's GPT-2 shape: d = 768, adapter a = 64, E = 8
// experts (SwiGLU f = 2048: the FLOPs of GPT-2's 768 -> 3072 GELU MLP), k = 1, 2048 tokens, fp32,
// noisy top-k router in training mode. Ratios against baselines measured in the same run:
//   BM_HyperMoeStep: one training step (forward + backward) of the MoE layer alone, and of the
//     MoE layer + HyperExpert on the grouped and the factorised path, interleaved per iteration;
//     counters are medians and their ratios to the MoE step.
//   BM_HyperExpertMemory: bytes the HyperExpert holds for its backward (allocated after the
//     forward, output excluded) and its peak during forward + backward, for the grouped, the
//     factorised and the naive per-token-weight form (the reference's), measured by a counting
//     CPU allocator; ratios to the naive form.
//   ./build/moeforge_bench --benchmark_filter='HyperMoe|HyperExpert'
#include <benchmark/benchmark.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/torch.h>

#include <atomic>
#include <chrono>

#include "moe/expert_bank.h"
#include "moe/hyper_expert.h"
#include "moe/moe_layer.h"
#include "moe/routers/noisy_router.h"

using namespace mf::moe;

namespace {

constexpr int64_t kD = 768, kF = 2048, kE = 8, kT = 2048;

struct Setup {
  at::Tensor w_in, w_out, x, R;
  NoisyTopKRouter router{nullptr};
  HyperExpert expert{nullptr};
  HyperGenerator gen{nullptr};
  Setup() {
    torch::manual_seed(0);
    w_in = (at::randn({kE, 2 * kF, kD}) * 0.02).requires_grad_();
    w_out = (at::randn({kE, kD, kF}) * 0.02).requires_grad_();
    SelectionConfig sel;
    sel.k = 1;
    sel.gate = GateMode::Renorm;
    router = NoisyTopKRouter(kD, kE, sel);
    router->train();
    expert = HyperExpert(kE, HyperMoeOptions{});
    gen = HyperGenerator(kD, 12, HyperMoeOptions{});
    x = at::randn({kT, kD}).requires_grad_();
    R = at::randn({kT, kD});
  }
  // One training step; hyper: -1 none, else the HyperExpert path.
  void step(int hyper) {
    MoELayer layer(expert_bank_from_fused(w_in, w_out), router.ptr());
    layer->train();
    MoEOutput out = layer->forward_full(x);
    at::Tensor y = out.y;
    if (hyper >= 0) y = y + hyper_expert_output(*expert, *gen, 3, x, out.route.idx, static_cast<HyperPath>(hyper));
    (y * R).sum().backward();
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void BM_HyperMoeStep(benchmark::State& state) {
  static Setup s;
  std::vector<double> t[3];
  const int paths[3] = {-1, static_cast<int>(HyperPath::Grouped), static_cast<int>(HyperPath::Factorised)};
  for (auto _ : state) {
    for (int i = 0; i < 3; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      s.step(paths[i]);
      t[i].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  const double moe = median(t[0]);
  state.counters["moe_step_ms"] = moe * 1e3;
  state.counters["grouped_step_ms"] = median(t[1]) * 1e3;
  state.counters["factorised_step_ms"] = median(t[2]) * 1e3;
  state.counters["ratio_grouped"] = median(t[1]) / moe;
  state.counters["ratio_factorised"] = median(t[2]) / moe;
}
BENCHMARK(BM_HyperMoeStep)->Iterations(5)->Unit(benchmark::kSecond)->UseRealTime();

// Counting CPU allocator: current and peak bytes of every CPU allocation made while installed.
std::atomic<int64_t> g_current{0}, g_peak{0};
struct Block {
  void* data;
  int64_t bytes;
};
void free_counted(void* ctx) {
  auto* b = static_cast<Block*>(ctx);
  c10::free_cpu(b->data);
  g_current -= b->bytes;
  delete b;
}
struct CountingAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) const override {
    void* data = c10::alloc_cpu(n);
    const int64_t now = g_current += static_cast<int64_t>(n);
    int64_t p = g_peak.load();
    while (now > p && !g_peak.compare_exchange_weak(p, now)) {
    }
    return {data, new Block{data, static_cast<int64_t>(n)}, &free_counted, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }
};

// The reference's HyperExpert: both adapter matrices generated for every token.
at::Tensor naive_output(HyperExpertImpl& ex, HyperGeneratorImpl& gen, int64_t layer, const at::Tensor& x,
                        const at::Tensor& idx) {
  at::Tensor sel = at::zeros({x.size(0), kE}).scatter_(1, idx, 1.0);
  at::Tensor h = gen.hidden(ex.process(sel), layer);  // [T, m]
  const int64_t a = gen.adapter_dim();
  at::Tensor Wd = gen.down_weight->forward(h).view({-1, kD, a});
  at::Tensor Wu = gen.up_weight->forward(h).view({-1, a, kD});
  at::Tensor act = at::relu(at::bmm(x.unsqueeze(1), Wd).squeeze(1) + gen.down_bias->forward(h));
  return at::bmm(act.unsqueeze(1), Wu).squeeze(1) + gen.up_bias->forward(h);
}

void BM_HyperExpertMemory(benchmark::State& state) {
  static Setup s;
  static CountingAllocator counting;
  c10::SetCPUAllocator(&counting, /*priority=*/100);
  at::Tensor idx = at::randint(0, kE, {kT, 1}, at::kLong);
  double held[3] = {0, 0, 0}, peak[3] = {0, 0, 0};
  for (auto _ : state) {
    for (int i = 0; i < 3; ++i) {  // 0 grouped, 1 factorised, 2 naive
      const int64_t base = g_current.load();
      g_peak = base;
      at::Tensor y = i == 2 ? naive_output(*s.expert, *s.gen, 3, s.x, idx)
                            : hyper_expert_output(*s.expert, *s.gen, 3, s.x, idx,
                                                  i == 0 ? HyperPath::Grouped : HyperPath::Factorised);
      held[i] = static_cast<double>(g_current.load() - base) - static_cast<double>(y.nbytes());
      (y * s.R).sum().backward();
      peak[i] = static_cast<double>(g_peak.load() - base);
      y = at::Tensor();
      s.x.mutable_grad() = at::Tensor();
      for (auto& p : s.expert->parameters()) p.mutable_grad() = at::Tensor();
      for (auto& p : s.gen->parameters()) p.mutable_grad() = at::Tensor();
    }
  }
  const double MB = 1.0 / (1 << 20);
  state.counters["held_grouped_MB"] = held[0] * MB;
  state.counters["held_factorised_MB"] = held[1] * MB;
  state.counters["held_naive_MB"] = held[2] * MB;
  state.counters["peak_grouped_MB"] = peak[0] * MB;
  state.counters["peak_factorised_MB"] = peak[1] * MB;
  state.counters["peak_naive_MB"] = peak[2] * MB;
  state.counters["held_ratio_grouped"] = held[0] / held[2];
  state.counters["held_ratio_factorised"] = held[1] / held[2];
  state.counters["peak_ratio_grouped"] = peak[0] / peak[2];
  state.counters["peak_ratio_factorised"] = peak[1] / peak[2];
}
BENCHMARK(BM_HyperExpertMemory)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace
