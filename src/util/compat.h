// Every difference between Debian's libtorch 1.13 and a pip PyTorch 2.x wheel lives here.
#pragma once
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
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

// CPU autocast (mixed precision) for one forward/backward region. 1.13 and 2.0-2.3 have the
// CPU-specific setters; 2.4+ the device-generic ones. The destructor restores the previous
// state and clears the cast cache when the outermost region ends (as Python's autocast does):
// a cached bf16 copy of a weight must not outlive the optimizer step that changes the weight.
class CpuAutocast {
 public:
  CpuAutocast(bool enabled, at::ScalarType dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    prev_enabled_ = at::autocast::is_autocast_enabled(at::kCPU);
    prev_dtype_ = at::autocast::get_autocast_dtype(at::kCPU);
    at::autocast::set_autocast_enabled(at::kCPU, enabled);
    at::autocast::set_autocast_dtype(at::kCPU, dtype);
#else
    prev_enabled_ = at::autocast::is_cpu_enabled();
    prev_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
#endif
    at::autocast::increment_nesting();
  }
  ~CpuAutocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCPU, prev_enabled_);
    at::autocast::set_autocast_dtype(at::kCPU, prev_dtype_);
#else
    at::autocast::set_cpu_enabled(prev_enabled_);
    at::autocast::set_autocast_cpu_dtype(prev_dtype_);
#endif
  }
  CpuAutocast(const CpuAutocast&) = delete;
  CpuAutocast& operator=(const CpuAutocast&) = delete;

 private:
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

inline const char* torch_version_string() { return TORCH_VERSION; }

}  // namespace mf
