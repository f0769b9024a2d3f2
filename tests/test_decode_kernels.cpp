// The decode kernels (src/moe/kernels.cpp) on every instruction set this CPU has, against fp64
// products of the same values written in the test: each ISA path (scalar, AVX-512 widening bf16,
// AVX-512 BF16 dot products) must hold on its own, whatever the machine picks by default.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "moe/kernels.h"

using namespace mf::moe;

namespace {

// Runs f under each ISA the CPU offers, restoring the best one afterwards.
template <typename F>
void for_each_isa(F&& f) {
  const KernelIsa best = set_kernel_isa(KernelIsa::Avx512Bf16);
  for (KernelIsa isa : {KernelIsa::Scalar, KernelIsa::Avx512, KernelIsa::Avx512Bf16}) {
    if (static_cast<int>(isa) > static_cast<int>(best)) break;
    ASSERT_EQ(set_kernel_isa(isa), isa);
    f(isa);
  }
  set_kernel_isa(best);
}

double rel_err(const at::Tensor& got, const at::Tensor& want) {
  return ((got.to(at::kDouble) - want).abs().max() / want.abs().max()).item<double>();
}

}  // namespace

TEST(DecodeKernels, SmallBatchMatmulEveryIsa) {
  torch::manual_seed(3);
  for_each_isa([](KernelIsa isa) {
    for (at::ScalarType dt : {at::kBFloat16, at::kFloat})
      for (int64_t n : {77, 300})  // 300: the 128-wide main loop plus a masked tail
        for (int64_t T : {1, 3, 9}) {
          const int64_t R = 45;
          at::Tensor x = at::randn({T, n}).to(dt), w = at::randn({R, n}).to(dt), b = at::randn({R});
          at::Tensor want = at::linear(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble));
          at::Tensor y = at::empty({T, R});
          small_batch_matmul(x.data_ptr(), dt == at::kBFloat16, T, n, w.data_ptr(), dt == at::kBFloat16, R,
                             b.data_ptr<float>(), y.data_ptr(), false);
          // bf16 x bf16 products are exact in fp32: only fp32 summation error remains.
          EXPECT_LT(rel_err(y, want), 1e-5) << "isa " << int(isa) << " dtype " << dt << " n " << n << " T " << T;
        }
  });
}

TEST(DecodeKernels, FusedExpertsEveryIsa) {
  torch::manual_seed(5);
  const int64_t d = 150, f = 141, T = 3;
  for_each_isa([&](KernelIsa isa) {
    for (bool bf16 : {true, false}) {
      const at::ScalarType dt = bf16 ? at::kBFloat16 : at::kFloat;
      at::Tensor x = at::randn({T, d}).to(dt);
      std::vector<at::Tensor> w_in, w_out;
      std::vector<DecodeJob> jobs(2);
      const std::vector<std::vector<int64_t>> tokens = {{0, 2}, {1}};  // a shared and a batch-1 job
      const std::vector<std::vector<float>> gates = {{0.7f, 0.25f}, {1.5f}};
      for (int j = 0; j < 2; ++j) {
        w_in.push_back((at::randn({2 * f, d}) * 0.1).to(dt));
        w_out.push_back((at::randn({d, f}) * 0.1).to(dt));
        jobs[j].w_in = w_in[j].data_ptr();
        jobs[j].w_out = w_out[j].data_ptr();
        jobs[j].f = f;
        jobs[j].tokens = tokens[j];
        jobs[j].gates = gates[j];
      }
      at::Tensor y = at::zeros({T, d});
      fused_small_batch(x.data_ptr(), bf16, T, d, bf16, jobs, y.data_ptr<float>());
      at::Tensor want = at::zeros({T, d}, at::kDouble);
      for (int j = 0; j < 2; ++j)
        for (size_t i = 0; i < tokens[j].size(); ++i) {
          const int64_t t = tokens[j][i];
          at::Tensor h = at::mv(w_in[j].to(at::kDouble), x[t].to(at::kDouble));
          at::Tensor a = at::silu(h.narrow(0, 0, f)) * h.narrow(0, f, f);
          // With bf16 dot products the activations enter the down projection as bf16.
          if (bf16 && isa == KernelIsa::Avx512Bf16) a = a.to(at::kBFloat16).to(at::kDouble);
          want[t] += gates[j][i] * at::mv(w_out[j].to(at::kDouble), a);
        }
      // fp32 sums; a bf16 rounding of an activation may differ at a tie-near boundary (1e-3).
      EXPECT_LT(rel_err(y, want), bf16 && isa == KernelIsa::Avx512Bf16 ? 1e-3 : 1e-5)
          << "isa " << int(isa) << " bf16 " << bf16;
    }
  });
}
