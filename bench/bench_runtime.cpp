// Runtime throughput of a ~100M-parameter Llama-shaped model in bf16 (hidden 768, 12 layers,
// FFN 2048, 12 heads / 4 KV heads, vocab 32000), stated as fractions of the machine's peaks
// measured in the same process (same method as bench_machine.cpp):
//   prefill: matmul FLOP/s / bf16 GEMM peak (BM_GemmPeak/bf16, n = 2048)
//   decode (batch 1): time to stream the token's weight bytes (peaks.h, interleaved) / time per token
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <chrono>

#include "model/model.h"
#include "moe/kernels.h"
#include "util/huge_pages.h"
#include "peaks.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Best of several timed repetitions of f, after one warm-up call.
template <typename F>
double best_time(F&& f, int reps) {
  f();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    f();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

double gemm_peak_bf16() {
  static double peak = [] {
    const int64_t n = 2048;
    auto a = torch::randn({n, n}).to(at::kBFloat16), b = torch::randn({n, n}).to(at::kBFloat16);
    auto c = torch::mm(a, b);
    double t = best_time([&] { torch::mm_out(c, a, b); }, 5);
    return 2.0 * n * n * n / t;
  }();
  return peak;
}

mf::ModelConfig bench_config() {
  mf::json j = {{"model_type", "llama"},       {"vocab_size", 32000},     {"hidden_size", 768},
                {"intermediate_size", 2048},   {"num_hidden_layers", 12}, {"num_attention_heads", 12},
                {"num_key_value_heads", 4},    {"max_position_embeddings", 4096}};
  return mf::parse_model_config(j, "bench");
}

std::shared_ptr<mf::Model> bench_model() {
  static std::shared_ptr<mf::Model> m = [] {
    auto model = mf::Model::create(bench_config());
    model->init_random(1, 0.02);
    model->to(at::kBFloat16);
    model->eval();
    return model;
  }();
  return m;
}

// Parameters of the per-layer projections (what a token multiplies with), without embeddings.
int64_t layer_matmul_params(const mf::ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  return c.num_layers * (h * q * 2 + h * kv * 2 + 3 * h * c.intermediate_size);
}

void BM_RuntimePrefill(benchmark::State& state) {
  torch::NoGradGuard ng;
  auto m = bench_model();
  const auto& c = m->config();
  const int64_t B = state.range(0), T = state.range(1);
  auto ids = torch::randint(3, c.vocab_size, {B, T}, torch::kLong);
  const double peak = gemm_peak_bf16();
  for (auto _ : state) {
    at::Tensor h = m->forward_hidden(ids);
    at::Tensor logits = m->lm_head(h.narrow(1, T - 1, 1));  // next-token logits, as generation needs
    benchmark::DoNotOptimize(logits.data_ptr());
  }
  // Weight GEMMs + attention score/value products (SDPA's math path computes the full T x T).
  const double weight_flops = 2.0 * B * T * layer_matmul_params(c) + 2.0 * B * c.hidden_size * c.vocab_size;
  const double attn_flops = 2.0 * 2.0 * B * c.num_layers * c.num_heads * T * T * c.head_dim;
  const double flops = weight_flops + attn_flops;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_GFLOP/s"] = peak * 1e-9;
  state.counters["tok/s"] = benchmark::Counter(double(B * T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["attn_share"] = attn_flops / flops;
  state.SetLabel("GFLOP/s / bf16 GEMM peak is the ratio to report");
}
BENCHMARK(BM_RuntimePrefill)->Args({1, 512})->Args({4, 256})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

void BM_RuntimeDecode(benchmark::State& state) {
  torch::NoGradGuard ng;
  auto m = bench_model();
  const auto& c = m->config();
  const int64_t prompt = state.range(0);
  auto ids = torch::randint(3, c.vocab_size, {1, prompt}, torch::kLong);
  mf::KvCache cache = m->make_cache(prompt + 4096);
  m->forward_hidden(ids, {}, &cache);
  auto tok = torch::full({1, 1}, 7, torch::kLong);
  // Bytes a token must stream: every projection weight plus the output projection (bf16).
  const double bytes = 2.0 * (layer_matmul_params(c) + c.hidden_size * c.vocab_size);
  int64_t steps = 0;
  double token_s = 0, read_s = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    at::Tensor h = m->forward_hidden(tok, {}, &cache);
    at::Tensor logits = m->lm_head(h);
    benchmark::DoNotOptimize(logits.data_ptr());
    token_s += seconds_since(t0);
    if (++steps % 32 == 0) {  // the same bytes streamed after every 32 tokens (untimed)
      state.PauseTiming();
      for (int i = 0; i < 32; ++i) read_s += mf::bench::timed_stream_read(static_cast<int64_t>(bytes));
      if (steps % 256 == 0) {  // keep the context length near `prompt`
        cache.clear();
        m->forward_hidden(ids, {}, &cache);
      }
      state.ResumeTiming();
    }
  }
  token_s *= static_cast<double>(steps / 32 * 32) / steps;  // compare whole blocks only
  state.counters["tok/s"] = benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate);
  const double read_tokens = steps / 32 * 32.0;
  state.counters["bound_tok/s"] = read_tokens / read_s;
  state.counters["read_GB/s"] = bytes * read_tokens / read_s * 1e-9;
  state.counters["of_bandwidth"] = read_s / token_s;  // the ratio to report
}
BENCHMARK(BM_RuntimeDecode)->Arg(128)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);

}  // namespace

namespace {

// One projection of the benchmark model's shape (768 -> 2048) in bf16: the building block of
// both numbers above. M = 1 is decode (bandwidth-bound), M = 512 prefill (compute-bound).
void BM_RuntimeLinearBf16(benchmark::State& state) {
  torch::NoGradGuard ng;
  const int64_t M = state.range(0);
  auto w = (torch::randn({2048, 768}) * 0.02).to(at::kBFloat16);
  auto x = torch::randn({M, 768}).to(at::kBFloat16);
  const int64_t variant = state.range(1);  // 0: linear, 1: mm(W, x^T), 2: mv
  for (auto _ : state) {
    at::Tensor y = variant == 0 ? at::linear(x, w) : variant == 1 ? at::mm(w, x.t()) : at::mv(w, x[0]);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  const double flops = 2.0 * M * 2048 * 768, bytes = 2.0 * 2048 * 768;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_RuntimeLinearBf16)->Args({1, 0})->Args({1, 1})->Args({1, 2})->Args({512, 0})->UseRealTime();

}  // namespace

namespace {

// The decode GEMV kernel alone (moe::small_batch_matmul, batch 1) on weights far beyond the
// caches, as a fraction of the plain read of the same bytes in the same run. Args: dtype (0 bf16,
// 1 fp32), kernel ISA (2 avx512-bf16 dot products, 1 avx512 widening, 0 scalar).
void BM_DecodeGemv(benchmark::State& state) {
  const bool bf16 = state.range(0) == 0;
  const auto isa = static_cast<mf::moe::KernelIsa>(state.range(1));
  if (mf::moe::set_kernel_isa(isa) != isa) {
    mf::moe::set_kernel_isa(mf::moe::KernelIsa::Avx512Bf16);
    state.SkipWithError("the CPU lacks this ISA");
    return;
  }
  const int64_t R = 4096, n = 1024, mats = bf16 ? 64 : 32;  // 512 MiB of weights
  std::vector<at::Tensor> ws;
  mf::HugePageWeights as_a_model_loads_them;
  for (int64_t i = 0; i < mats; ++i) ws.push_back((torch::randn({R, n}) * 0.02).to(bf16 ? at::kBFloat16 : at::kFloat));
  auto x = torch::randn({1, n}).to(bf16 ? at::kBFloat16 : at::kFloat);
  auto y = torch::empty({1, R}, x.options());
  const double bytes = static_cast<double>(ws[0].nbytes());
  int64_t i = 0;
  double gemv_s = 0, read_s = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    mf::moe::small_batch_matmul(x.data_ptr(), bf16, 1, n, ws[i++ % mats].data_ptr(), bf16, R, nullptr, y.data_ptr(),
                                bf16);
    gemv_s += seconds_since(t0);
    state.PauseTiming();
    read_s += mf::bench::timed_stream_read(static_cast<int64_t>(bytes));
    state.ResumeTiming();
  }
  mf::moe::set_kernel_isa(mf::moe::KernelIsa::Avx512Bf16);
  state.counters["weight_GB/s"] = bytes * state.iterations() / gemv_s * 1e-9;
  state.counters["read_GB/s"] = bytes * state.iterations() / read_s * 1e-9;
  state.counters["of_read"] = read_s / gemv_s;
  state.SetLabel("prefetch " + std::to_string(mf::moe::prefetch_bytes()) + " B");
}
BENCHMARK(BM_DecodeGemv)->Args({0, 2})->Args({0, 1})->Args({1, 1})->Unit(benchmark::kMicrosecond)->UseRealTime()->MinTime(2.0);

}  // namespace
