// Every difference between Debian's libtorch 1.13 and a pip PyTorch 2.x wheel lives here.
#pragma once
#include <ATen/ATen.h>
#include <torch/version.h>

#include <optional>

namespace mf {

#if TORCH_VERSION_MAJOR >= 2
template <typename T>
using topt = std::optional<T>;
#else
template <typename T>
using topt = c10::optional<T>;
#endif

// Scaled dot-product attention, q/k/v [B, H, T, D]. `mask` is additive (0 / -inf) or boolean
// (true = attend) and broadcastable to [B, H, Tq, Tk]. 1.13 exposes only the private
// `_scaled_dot_product_attention` (returning a tuple, math kernel on CPU); 2.x the public op.
inline at::Tensor sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                       const at::Tensor& mask, bool is_causal) {
  topt<at::Tensor> m;
  if (mask.defined()) m = mask;
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, m, 0.0, is_causal);
#else
  return std::get<0>(at::_scaled_dot_product_attention(q, k, v, m, 0.0, false, is_causal));
#endif
}

inline const char* torch_version_string() { return TORCH_VERSION; }

}  // namespace mf
