#include "util/huge_pages.h"

#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace mf {

namespace {

thread_local int weight_scopes = 0;

void free_block(void* p) { std::free(p); }  // c10's CPU allocator frees with free() as well

class HugePageAllocator final : public c10::Allocator {
 public:
  explicit HugePageAllocator(c10::Allocator* small) : small_(small) {}

  c10::DataPtr allocate(size_t n) const override {
    if (n < kHugePageBytes || weight_scopes == 0) return small_->allocate(n);
    void* p = nullptr;
    if (posix_memalign(&p, kHugePageBytes, n) != 0) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    // Whole huge pages only; fails harmlessly where THP is unavailable.
    madvise(p, n / kHugePageBytes * kHugePageBytes, MADV_HUGEPAGE);
#endif
    return {p, p, &free_block, c10::Device(c10::DeviceType::CPU)};
  }

  // raw_allocate/raw_deallocate: both kinds of block are freed with free().
  c10::DeleterFnPtr raw_deleter() const override { return &free_block; }

 private:
  c10::Allocator* small_;
};

}  // namespace

HugePageWeights::HugePageWeights() {
  static const bool installed = [] {
    static HugePageAllocator allocator(c10::GetDefaultCPUAllocator());
    c10::SetCPUAllocator(&allocator, /*priority=*/1);
    return true;
  }();
  (void)installed;
  ++weight_scopes;
}

HugePageWeights::~HugePageWeights() { --weight_scopes; }

}  // namespace mf
