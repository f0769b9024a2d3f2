// HEMoE placement (issue 9): the fast alternating solver against CBC on the linearised MIP,
// on random instances with log-normal module scores, M=128, N=8, D=8, R=4, l=2.
//   BM_HemoePlacementFast — time + objective + gap of the fast solver (default options).
//   BM_HemoeCbc300s       — CBC with a 300 s CPU-time limit (CBC's own time mode, so a loaded
//                           machine does not shortchange it) and the fast solver on the same instance;
//                           counter `fast_over_cbc` = objective ratio. Runs only when named:
//                           --benchmark_filter=BM_HemoeCbc300s (MOEFORGE_BENCH_CBC_SECONDS
//                           overrides the limit for a shorter run; the counter cbc_limit_s says which).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include <ATen/ATen.h>

#include "split/hemoe_placement.h"
#include "split/split.h"
#include "util/rng.h"

namespace {

mf::PlacementProblem instance(uint64_t seed) {
  mf::Rng rng(seed);
  std::vector<double> s(128 * 8);
  for (double& x : s) x = std::exp(rng.normal());
  return mf::PlacementProblem::make(s, 128, 8, 8, 4, 2);
}

bool named_on_command_line(const std::string& what) {
  std::ifstream f("/proc/self/cmdline");
  std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return cmd.find(what) != std::string::npos;
}

void BM_HemoePlacementFast(benchmark::State& state) {
  auto p = instance(static_cast<uint64_t>(state.range(0)));
  mf::PlacementReport r;
  for (auto _ : state) r = mf::solve_placement_fast(p, {});
  state.counters["objective"] = r.best.objective;
  state.counters["upper_bound"] = r.upper_bound;
  state.counters["gap"] = r.gap;
  state.counters["seconds"] = r.seconds;
  state.counters["cpu_seconds"] = r.cpu_seconds;
  state.counters["starts"] = static_cast<double>(r.iterations);
}
BENCHMARK(BM_HemoePlacementFast)->Arg(1)->Arg(2)->Arg(3)->Iterations(1)->Unit(benchmark::kSecond);

void BM_HemoeCbc300s(benchmark::State& state) {
  if (!named_on_command_line("HemoeCbc")) {
    state.SkipWithError("runs only with --benchmark_filter=BM_HemoeCbc300s (takes 300 s per instance)");
    for (auto _ : state) {
    }
    return;
  }
  double limit = 300;
  if (const char* e = std::getenv("MOEFORGE_BENCH_CBC_SECONDS")) limit = std::atof(e);
  auto p = instance(static_cast<uint64_t>(state.range(0)));
  mf::PlacementReport cbc, fast;
  for (auto _ : state) {
    mf::CbcPlacementOptions o;
    o.time_limit_s = limit;
    o.cpu_time = true;
    cbc = mf::solve_placement_cbc(p, o);
  }
  fast = mf::solve_placement_fast(p, {});
  state.counters["cbc_limit_s"] = limit;
  state.counters["cbc_objective"] = cbc.best.objective;
  state.counters["cbc_cpu_s"] = cbc.cpu_seconds;
  state.counters["fast_cpu_s"] = fast.cpu_seconds;
  state.counters["cbc_bound"] = cbc.solver_bound;
  state.counters["fast_objective"] = fast.best.objective;
  state.counters["fast_seconds"] = fast.seconds;
  state.counters["fast_over_cbc"] = fast.best.objective / cbc.best.objective;
  state.counters["upper_bound"] = fast.upper_bound;
  state.counters["fast_gap"] = fast.gap;
  state.counters["cbc_gap"] = (fast.upper_bound - cbc.best.objective) / fast.upper_bound;
}
BENCHMARK(BM_HemoeCbc300s)->Arg(1)->Arg(2)->Arg(3)->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace

namespace {

// HEMoE step (e) on the bundled reference-model shape (F=1024, H=256 → M=128 modules of 8) and
// MoEfication's k=8 split of the same rows: balanced k-means to convergence (max 100 iterations).
void BM_HemoeModulesKMeans(benchmark::State& state) {
  const int64_t F = state.range(0), H = state.range(1), k = state.range(2);
  at::Tensor rows = at::randn({F, H}, at::detail::createCPUGenerator(1)).to(at::kDouble);
  rows = rows / rows.norm(2, {1}, true);
  mf::BalancedKMeansResult r;
  for (auto _ : state) r = mf::balanced_kmeans(rows, std::vector<int64_t>(k, F / k), 42, 100);
  state.counters["iterations"] = r.iterations;
}
BENCHMARK(BM_HemoeModulesKMeans)->Args({1024, 256, 128})->Args({1024, 256, 8})->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace
