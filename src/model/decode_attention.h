// Attention of one new token per sequence over its KV cache (batch decode without padding):
// replaces the expand copies of k/v and the SDPA op chain, whose fixed costs dominate at batch 1.
#pragma once
#include <ATen/ATen.h>

namespace mf {

// out[b, h] = softmax_j(q[b, h] · k[b, g, j] / sqrt(D)) · v[b, g, j], g = h / (H / Hkv) (GQA).
//   q [B, H, 1, D], k and v [B, Hkv, S, D], H a multiple of Hkv; all three float or all bfloat16,
//   any strides (the KV cache hands out narrow views of a contiguous [B, Hkv, cap, D] buffer, so
//   in practice stride(3) == 1 and stride(2) == D: that case takes an AVX-512 path where the CPU
//   has one). Math in fp32 with a max-subtracted softmax; returns a contiguous [B, H, 1, D] in
//   q's dtype, rounded once at the end. S == 0 gives zeros. No autograd.
at::Tensor single_query_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

}  // namespace mf
