// util/huge_pages: weight-sized blocks allocated inside a HugePageWeights scope start on a 2 MiB
// boundary (the precondition for the kernel to back them with huge pages); small blocks and
// blocks outside any scope keep libtorch's allocator. Whether the kernel grants huge pages is
// the machine's business (THP may be "never"), so only the allocation contract is tested.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>

#include "util/huge_pages.h"

namespace {

bool huge_aligned(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % mf::kHugePageBytes == 0;
}

}  // namespace

TEST(HugePages, WeightBlocksInsideAScopeAreHugePageAligned) {
  const int64_t big = static_cast<int64_t>(mf::kHugePageBytes / 4) + 123;  // just over 2 MiB of fp32
  std::vector<at::Tensor> inside;
  {
    mf::HugePageWeights outer;
    {
      mf::HugePageWeights nested;  // scopes nest
      inside.push_back(at::arange(big, at::kFloat));
    }
    inside.push_back(at::empty({3, big}, at::kFloat));
    EXPECT_FALSE(huge_aligned(at::empty({1000}, at::kFloat)) && huge_aligned(at::empty({1000}, at::kFloat)))
        << "small blocks are not padded to huge pages";
  }
  for (const auto& t : inside) EXPECT_TRUE(huge_aligned(t));
  EXPECT_EQ(inside[0][big - 1].item<float>(), static_cast<float>(big - 1));  // usable memory
  // After the scopes: a run of large blocks is not all huge-page aligned (libtorch's 64-byte alignment).
  int aligned = 0;
  std::vector<at::Tensor> outside;
  for (int i = 0; i < 8; ++i) {
    outside.push_back(at::empty({big + 16 * i}, at::kFloat));
    aligned += huge_aligned(outside.back());
  }
  EXPECT_LT(aligned, 8);
  inside.clear();  // freed through the allocator's deleter without complaint
}
