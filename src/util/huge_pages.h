// Large CPU tensors on transparent huge pages. Batch-1 decoding streams every weight once per
// token; with 4 KB pages a core walks the page table every 4 KB and its hardware prefetcher stops
// at each page boundary. Measured on the Mixtral-shaped bench model: +20-45 % decode tokens/s
// (docs/benchmarks.md).
#pragma once

#include <cstddef>

namespace mf {

// While one of these lives on a thread, CPU tensors of >= 2 MiB that thread allocates get
// 2 MiB-aligned storage marked MADV_HUGEPAGE: for weights (the model loader and the MoE layer's
// fused expert copies open one), not for temporaries, whose fresh huge pages the kernel would
// zero on every allocation (measured: prefill lost a third to clear_page when all large blocks
// took huge pages). Smaller blocks, and everything outside a scope, come from libtorch's
// default allocator. Where the kernel has no transparent huge pages the advice is ignored.
class HugePageWeights {
 public:
  HugePageWeights();
  ~HugePageWeights();
  HugePageWeights(const HugePageWeights&) = delete;
  HugePageWeights& operator=(const HugePageWeights&) = delete;
};

constexpr size_t kHugePageBytes = size_t(2) << 20;

}  // namespace mf
