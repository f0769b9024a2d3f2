#include <cstdlib>
#include "util/threads.h"

#include <ATen/Parallel.h>
#include <malloc.h>

#include <climits>
#include <thread>

namespace mf {

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

namespace {

// glibc serves blocks above its mmap threshold (128 KiB, growing to at most 32 MiB) with mmap and
// unmaps them on free, so the [tokens x width] temporaries every training step and long forward
// allocates came back as fresh pages to fault in and zero: about a quarter of an MoE
// pretraining step was spent in the kernel (perf). All blocks now come from the heap for reuse
// (mmap off: glibc refuses thresholds above 32 MiB, and a [2048 x 8192] fp32 logits gradient
// is 64 MiB) and the heap is not trimmed (docs/benchmarks.md); the cost is that the process
// keeps its peak heap until it exits.
void keep_large_blocks() {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

}  // namespace

int setup_threads(int n) {
  static const bool tuned = (keep_large_blocks(), true);
  (void)tuned;
  // Default: OMP_NUM_THREADS when set (torchrun sets it per rank), else every core.
  if (n <= 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    n = omp ? std::atoi(omp) : 0;
  }
  if (n <= 0) n = hardware_threads();
  at::set_num_threads(n);
  return at::get_num_threads();
}

}  // namespace mf
