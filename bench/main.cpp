// moeforge_bench: Google Benchmark micro-benchmarks. Threads = all cores unless --threads=N.
#include <benchmark/benchmark.h>

#include <cstring>
#include <string>

#include "util/threads.h"

int main(int argc, char** argv) {
  int threads = 0;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--threads=", 10) == 0) threads = std::stoi(argv[i] + 10);
  mf::setup_threads(threads);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
