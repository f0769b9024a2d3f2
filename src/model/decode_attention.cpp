#include "model/decode_attention.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "moe/kernels.h"
#include "util/simd_x86.h"

namespace mf {

namespace {

struct Dims {
  int64_t B, H, Hkv, S, D, rep;
  float scale;
};

// Any strides, one query head at a time; the reference the vector path must match.
template <typename T>
void attend_scalar(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out, const Dims& n) {
  const T *qp = q.data_ptr<T>(), *kp = k.data_ptr<T>(), *vp = v.data_ptr<T>();
  T* op = out.data_ptr<T>();
  const auto qs = q.strides(), ks = k.strides(), vs = v.strides();
  const int64_t S = n.S, D = n.D;
  at::parallel_for(0, n.B * n.H, std::max<int64_t>(1, 8192 / std::max<int64_t>(S * D, 1)), [&](int64_t i0, int64_t i1) {
    std::vector<float> qf(D), p(S), acc(D);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / n.H, h = i % n.H, g = h / n.rep;
      for (int64_t d = 0; d < D; ++d) qf[d] = static_cast<float>(qp[b * qs[0] + h * qs[1] + d * qs[3]]);
      float mx = -INFINITY;
      for (int64_t j = 0; j < S; ++j) {
        const T* kr = kp + b * ks[0] + g * ks[1] + j * ks[2];
        float dot = 0.f;
        for (int64_t d = 0; d < D; ++d) dot += qf[d] * static_cast<float>(kr[d * ks[3]]);
        p[j] = dot * n.scale;
        mx = std::max(mx, p[j]);
      }
      float sum = 0.f;
      for (int64_t j = 0; j < S; ++j) sum += (p[j] = std::exp(p[j] - mx));
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j = 0; j < S; ++j) {
        const T* vr = vp + b * vs[0] + g * vs[1] + j * vs[2];
        const float w = p[j] / sum;
        for (int64_t d = 0; d < D; ++d) acc[d] += w * static_cast<float>(vr[d * vs[3]]);
      }
      for (int64_t d = 0; d < D; ++d) op[i * D + d] = static_cast<T>(acc[d]);
    }
  });
}

#ifdef MF_X86
using simd::exp512;
using simd::tail_mask16;

// D elements of one unit-stride row (E = uint16_t for bf16 bits, or float) to fp32, zero-padded
// to a multiple of 16 by the masked loads: the later loops then need no tail handling.
template <typename E>
MF_AVX512 inline void row_to_f32(const E* src, int64_t D, float* dst) {
  for (int64_t i = 0; i < D; i += 16) {
    const __mmask16 m = tail_mask16(D - i);
    const __m512 x = simd::load16<std::is_same_v<E, uint16_t>>(src, i, m);
    _mm512_storeu_ps(dst + i, x);
  }
}

// One GQA group: the rep query heads that share the K/V rows of one (batch, kv head), so each
// row is read and converted once for all of them. k/v point at the group's row 0, rows ks/vs
// elements apart. qf [rep, Dp] and the result o [rep, Dp] are fp32 padded to Dp = D rounded up
// to 16 (qf's pad zero); p [rep, S] and row [Dp] are scratch.
template <typename E>
MF_AVX512 void group_avx512(const E* k, int64_t ks, const E* v, int64_t vs, int64_t S, int64_t D, int64_t rep,
                            float scale, const float* qf, float* p, float* row, float* o) {
  const int64_t Dp = (D + 15) / 16 * 16;
  for (int64_t j = 0; j < S; ++j) {
    row_to_f32(k + j * ks, D, row);
    for (int64_t r = 0; r < rep; ++r) {
      __m512 acc = _mm512_setzero_ps();
      for (int64_t i = 0; i < Dp; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(row + i), _mm512_loadu_ps(qf + r * Dp + i), acc);
      p[r * S + j] = _mm512_reduce_add_ps(acc) * scale;
    }
  }
  for (int64_t r = 0; r < rep; ++r) {  // p[r] = softmax(p[r]), max-subtracted
    float* pr = p + r * S;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < S; j += 16) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(mx, tail_mask16(S - j), pr + j));
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < S; j += 16) {
      const __mmask16 t = tail_mask16(S - j);
      const __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, pr + j), m));
      _mm512_mask_storeu_ps(pr + j, t, e);
      sum = _mm512_mask_add_ps(sum, t, sum, e);
    }
    const __m512 total = _mm512_set1_ps(_mm512_reduce_add_ps(sum));
    for (int64_t j = 0; j < S; j += 16) {
      const __mmask16 t = tail_mask16(S - j);
      _mm512_mask_storeu_ps(pr + j, t, _mm512_div_ps(_mm512_maskz_loadu_ps(t, pr + j), total));
    }
  }
  std::fill(o, o + rep * Dp, 0.f);
  for (int64_t j = 0; j < S; ++j) {
    row_to_f32(v + j * vs, D, row);
    for (int64_t r = 0; r < rep; ++r) {
      const __m512 w = _mm512_set1_ps(p[r * S + j]);
      float* orow = o + r * Dp;
      for (int64_t i = 0; i < Dp; i += 16)
        _mm512_storeu_ps(orow + i, _mm512_fmadd_ps(w, _mm512_loadu_ps(row + i), _mm512_loadu_ps(orow + i)));
    }
  }
}

// k and v need stride(3) == 1; q any strides (it is copied into the fp32 scratch anyway).
template <typename T>
void attend_avx512(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out, const Dims& n) {
  using E = std::conditional_t<std::is_same_v<T, float>, float, uint16_t>;
  const T* qp = q.data_ptr<T>();
  const E* kp = reinterpret_cast<const E*>(k.data_ptr<T>());
  const E* vp = reinterpret_cast<const E*>(v.data_ptr<T>());
  T* op = out.data_ptr<T>();
  const auto qs = q.strides(), ks = k.strides(), vs = v.strides();
  const int64_t S = n.S, D = n.D, rep = n.rep, Dp = (D + 15) / 16 * 16;
  // Same work per task as the scalar path's grain: small problems stay on one thread.
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(rep * S * D, 1));
  at::parallel_for(0, n.B * n.Hkv, grain, [&](int64_t g0, int64_t g1) {
    std::vector<float> qf(rep * Dp, 0.f), p(rep * S), row(Dp), o(rep * Dp);
    for (int64_t bg = g0; bg < g1; ++bg) {
      const int64_t b = bg / n.Hkv, g = bg % n.Hkv, h0 = g * rep;
      for (int64_t r = 0; r < rep; ++r)
        for (int64_t d = 0; d < D; ++d)
          qf[r * Dp + d] = static_cast<float>(qp[b * qs[0] + (h0 + r) * qs[1] + d * qs[3]]);
      group_avx512(kp + b * ks[0] + g * ks[1], ks[2], vp + b * vs[0] + g * vs[1], vs[2], S, D, rep, n.scale,
                   qf.data(), p.data(), row.data(), o.data());
      for (int64_t r = 0; r < rep; ++r)
        for (int64_t d = 0; d < D; ++d) op[(b * n.H + h0 + r) * D + d] = static_cast<T>(o[r * Dp + d]);
    }
  });
}
#endif

template <typename T>
void run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out, const Dims& n) {
#ifdef MF_X86
  if (moe::kernel_isa() >= moe::KernelIsa::Avx512 && k.stride(3) == 1 && v.stride(3) == 1)
    return attend_avx512<T>(q, k, v, out, n);
#endif
  attend_scalar<T>(q, k, v, out, n);
}

}  // namespace

at::Tensor single_query_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.size(2) == 1 && k.sizes() == v.sizes() &&
                  k.size(0) == q.size(0) && k.size(3) == q.size(3) && k.size(1) > 0 && q.size(1) % k.size(1) == 0,
              "single_query_attention: want q [B, H, 1, D], k/v [B, Hkv, S, D] with Hkv dividing H");
  const at::ScalarType st = q.scalar_type();
  TORCH_CHECK((st == at::kFloat || st == at::kBFloat16) && k.scalar_type() == st && v.scalar_type() == st &&
                  q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(),
              "single_query_attention: q, k, v must be CPU tensors of one dtype, float or bfloat16");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), Hkv = k.size(1);
  const Dims n{B, H, Hkv, k.size(2), D, H / Hkv, 1.f / std::sqrt(static_cast<float>(D))};
  at::Tensor out = at::empty({B, H, 1, D}, q.options());
  if (st == at::kFloat)
    run<float>(q, k, v, out, n);
  else
    run<c10::BFloat16>(q, k, v, out, n);
  return out;
}

}  // namespace mf
