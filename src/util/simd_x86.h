// AVX-512 building blocks shared by the CPU kernels (moe/kernels.cpp, model/decode_attention.cpp).
// The binary is built without -march flags (portable): callers choose these paths at run time
// through moe::kernel_isa().
#pragma once

#if defined(__x86_64__)
// GCC 12 reports false "uninitialized" warnings inside the AVX-512 reduce/convert intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>
#define MF_X86 1
#define MF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace mf::simd {

// The first min(left, 16) lanes.
inline __mmask16 tail_mask16(int64_t left) {
  return static_cast<__mmask16>(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
}

// exp(x) for fp32 lanes: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-7 Taylor polynomial, 2^n by
// scalef. Relative error ~1e-7 (fp32 rounding), inputs clamped to [-88, 88].
MF_AVX512 inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.f)), _mm512_set1_ps(-88.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// 16 lanes (masked) of bf16 (BF16: zero-extended and shifted into the top half of an fp32) or
// fp32 at p + i.
template <bool BF16>
MF_AVX512 inline __m512 load16(const void* p, int64_t i, __mmask16 m) {
  if (BF16) {
    __m256i raw = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
}

}  // namespace mf::simd

#endif
