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
// pretraining step was spent in the kernel (perf). Blocks up to 1 GiB now stay on the heap for
// reuse and the heap is not trimmed. Dense pretraining +50 % and MoE +23 % tokens/s
// (docs/benchmarks.md); the cost is that the process keeps its peak heap until it exits.
void keep_large_blocks() {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

}  // namespace

int setup_threads(int n) {
  static const bool tuned = (keep_large_blocks(), true);
  (void)tuned;
  if (n <= 0) n = hardware_threads();
  at::set_num_threads(n);
  return at::get_num_threads();
}

}  // namespace mf
