// The machine's peaks, so every other benchmark can state its result as a fraction of them:
// fp32 and bf16 GEMM throughput (GFLOP/s) and memory read bandwidth (GB/s).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "peaks.h"

static void BM_GemmPeak(benchmark::State& state, at::ScalarType dtype) {
  const int64_t n = state.range(0);
  auto a = torch::randn({n, n}).to(dtype);
  auto b = torch::randn({n, n}).to(dtype);
  auto c = torch::mm(a, b);
  for (auto _ : state) {
    torch::mm_out(c, a, b);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  double flops = 2.0 * n * n * n;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_GemmPeak, fp32, at::kFloat)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_GemmPeak, bf16, at::kBFloat16)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

// Read bandwidth: sum a 1 GiB buffer (far beyond cache) with all intra-op threads.
static void BM_MemoryReadBandwidth(benchmark::State& state) {
  const int64_t bytes = int64_t(1) << 30;
  auto buf = torch::ones({bytes / 4}, torch::kFloat);
  for (auto _ : state) {
    auto s = buf.sum();
    benchmark::DoNotOptimize(s.data_ptr());
  }
  state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

// The same bytes streamed by peaks.h's plain read loop (what the bandwidth-bound benchmarks divide by).
static void BM_MemoryStreamRead(benchmark::State& state) {
  const int64_t bytes = int64_t(256) << 20;
  double seconds = 0;
  for (auto _ : state) seconds += mf::bench::timed_stream_read(bytes);
  state.counters["GB/s"] = bytes * 1e-9 * state.iterations() / seconds;
}
BENCHMARK(BM_MemoryStreamRead)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);
