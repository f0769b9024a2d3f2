// mf::single_query_attention (batch decode attention over the KV cache) against softmax(q kᵀ /
// sqrt(D)) v written with plain torch ops in fp64: fp32 and bf16, a head size with a partial
// 16-lane tail, GQA groups, KV views of a larger cache buffer, and non-unit strides (scalar path).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "model/decode_attention.h"

namespace {

// Query head h reads kv head h / (H / Hkv), as the expand in mf::attend does.
at::Tensor reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const int64_t rep = q.size(1) / k.size(1);
  const at::Tensor kd = k.to(at::kDouble).repeat_interleave(rep, 1), vd = v.to(at::kDouble).repeat_interleave(rep, 1);
  const at::Tensor s = at::matmul(q.to(at::kDouble), kd.transpose(2, 3)) / std::sqrt(static_cast<double>(q.size(3)));
  return at::matmul(at::softmax(s, -1), vd);
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace

TEST(DecodeAttention, MatchesFp64Reference) {
  torch::NoGradGuard ng;
  torch::manual_seed(5);
  const int64_t B = 2, Hkv = 2;
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16})
    for (int64_t D : {64, 80})
      for (int64_t rep : {1, 4})
        for (int64_t S : {1, 37}) {
          const int64_t H = Hkv * rep, cap = S + 5;
          // As the KV cache hands them out: the first S positions of a [B, Hkv, cap, D] buffer.
          const at::Tensor q = at::randn({B, H, 1, D}).to(dt);
          const at::Tensor k = at::randn({B, Hkv, cap, D}).to(dt).narrow(2, 0, S);
          const at::Tensor v = at::randn({B, Hkv, cap, D}).to(dt).narrow(2, 0, S);
          const at::Tensor got = mf::single_query_attention(q, k, v);
          std::ostringstream what;
          what << dt << " D=" << D << " rep=" << rep << " S=" << S;
          ASSERT_EQ(got.scalar_type(), dt) << what.str();
          ASSERT_EQ(got.sizes(), (std::vector<int64_t>{B, H, 1, D})) << what.str();
          // bf16: the fp64 result of the same bf16 inputs, up to the final rounding to bf16.
          EXPECT_LE(max_abs_diff(got, reference(q, k, v)), dt == at::kFloat ? 1e-5 : 1e-2) << what.str();
        }
}

TEST(DecodeAttention, NonUnitStridesMatchContiguous) {
  // stride(3) != 1 takes the scalar path; the same values in the cache layout take the vector
  // path where the CPU has AVX-512. Both must match the reference and each other.
  torch::NoGradGuard ng;
  torch::manual_seed(6);
  const int64_t B = 2, Hkv = 2, H = 8, S = 37, D = 80;
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    const at::Tensor q = at::randn({B, 1, H, D}).to(dt).transpose(1, 2);  // [B, H, 1, D], strided
    const at::Tensor k = at::randn({B, Hkv, S, D}).to(dt), v = at::randn({B, Hkv, S, D}).to(dt);
    const at::Tensor kt = k.transpose(2, 3).contiguous().transpose(2, 3);
    const at::Tensor vt = v.transpose(2, 3).contiguous().transpose(2, 3);
    ASSERT_NE(kt.stride(3), 1);
    const at::Tensor slow = mf::single_query_attention(q, kt, vt), fast = mf::single_query_attention(q, k, v);
    const double tol = dt == at::kFloat ? 1e-5 : 1e-2;
    EXPECT_LE(max_abs_diff(slow, reference(q, k, v)), tol) << dt;
    EXPECT_LE(max_abs_diff(slow, fast), tol) << dt;
  }
}
