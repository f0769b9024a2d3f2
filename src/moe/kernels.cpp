#include "moe/kernels.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
// GCC 12 reports false "uninitialized" warnings inside the AVX-512 reduce/convert intrinsics.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define MF_X86 1
#endif

namespace mf::moe {

namespace {

template <typename A>
inline A act_scalar(A v, Act act) {
  switch (act) {
    case Act::SiLU: return v / (A(1) + std::exp(-v));
    case Act::GELU: return A(0.5) * v * (A(1) + std::erf(v * A(0.70710678118654752440)));
    case Act::GELUTanh: {
      const A c = A(0.79788456080286535588);  // sqrt(2/pi)
      return A(0.5) * v * (A(1) + std::tanh(c * (v + A(0.044715) * v * v * v)));
    }
    case Act::ReLU: return v > A(0) ? v : A(0);
  }
  return v;
}

}  // namespace

at::Tensor expert_activation(const at::Tensor& h, const at::Tensor& b_in, int64_t f, bool gated, Act act) {
  TORCH_CHECK(h.size(1) == (gated ? 2 : 1) * f, "expert_activation: width mismatch");
  // libtorch's elementwise kernels are vectorized (Sleef exp/erf/tanh, bf16 <-> fp32 in
  // registers); act() of the strided gate half writes a fresh contiguous [n, f] tensor that the
  // up half is multiplied into in place: two passes, no further temporaries.
  at::Tensor g = h.narrow(1, 0, f);
  at::Tensor bg, bu;
  if (b_in.defined()) {
    bg = b_in.narrow(0, 0, f).to(h.scalar_type());
    g = g + bg;
  }
  at::Tensor a;
  switch (act) {
    case Act::SiLU: a = at::silu(g); break;
    case Act::GELU: a = at::gelu(g); break;
    case Act::GELUTanh: a = at::gelu(g, "tanh"); break;
    case Act::ReLU: a = at::relu(g); break;
  }
  if (!a.is_contiguous()) a = a.contiguous();
  if (gated) {
    at::Tensor u = h.narrow(1, f, f);
    if (b_in.defined()) {
      a.mul_(u + b_in.narrow(0, f, f).to(h.scalar_type()));
    } else {
      a.mul_(u);
    }
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// Dot products of one weight row against NX fp32 vectors.

namespace {

inline float bf16_to_float(uint16_t v) {
  uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <bool BF16>
void dot_rows_scalar(const void* wrow, int64_t n, const float* const* xs, int nx, float* out) {
  for (int v = 0; v < nx; ++v) out[v] = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const float wv = BF16 ? bf16_to_float(static_cast<const uint16_t*>(wrow)[i]) : static_cast<const float*>(wrow)[i];
    for (int v = 0; v < nx; ++v) out[v] += wv * xs[v][i];
  }
}

#ifdef MF_X86
template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 load_w(const void* w, int64_t i) {
  if (BF16) {
    __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  return _mm512_loadu_ps(static_cast<const float*>(w) + i);
}

template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 load_w_masked(const void* w, int64_t i,
                                                                                   __mmask16 m) {
  if (BF16) {
    __m256i raw = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  return _mm512_maskz_loadu_ps(m, static_cast<const float*>(w) + i);
}

template <bool BF16, int NX>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void dot_rows_avx512(const void* w, int64_t n,
                                                                            const float* const* xs, float* out) {
  __m512 a0[NX], a1[NX];
  for (int v = 0; v < NX; ++v) {
    a0[v] = _mm512_setzero_ps();
    a1[v] = _mm512_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 w0 = load_w<BF16>(w, i);
    const __m512 w1 = load_w<BF16>(w, i + 16);
    for (int v = 0; v < NX; ++v) {
      a0[v] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xs[v] + i), a0[v]);
      a1[v] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xs[v] + i + 16), a1[v]);
    }
  }
  for (; i < n; i += 16) {
    const int64_t rem = std::min<int64_t>(16, n - i);
    const __mmask16 m = static_cast<__mmask16>((1u << rem) - 1u);
    const __m512 w0 = load_w_masked<BF16>(w, i, m);
    for (int v = 0; v < NX; ++v) a0[v] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, xs[v] + i), a0[v]);
  }
  for (int v = 0; v < NX; ++v) out[v] = _mm512_reduce_add_ps(_mm512_add_ps(a0[v], a1[v]));
}
#endif

bool detect_avx512() {
#ifdef MF_X86
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

const bool kAvx512 = detect_avx512();

// out[v] = <row, xs[v]> for v < nx, any nx.
template <bool BF16>
inline void dot_rows(const void* w, int64_t n, const float* const* xs, int64_t nx, float* out) {
#ifdef MF_X86
  if (kAvx512) {
    int64_t v = 0;
    for (; v + 4 <= nx; v += 4) dot_rows_avx512<BF16, 4>(w, n, xs + v, out + v);
    switch (nx - v) {
      case 3: dot_rows_avx512<BF16, 3>(w, n, xs + v, out + v); break;
      case 2: dot_rows_avx512<BF16, 2>(w, n, xs + v, out + v); break;
      case 1: dot_rows_avx512<BF16, 1>(w, n, xs + v, out + v); break;
      default: break;
    }
    return;
  }
#endif
  for (int64_t v = 0; v < nx; v += 4) dot_rows_scalar<BF16>(w, n, xs + v, static_cast<int>(std::min<int64_t>(4, nx - v)), out + v);
}

template <bool BF16>
void fused_impl(const float* x, int64_t T, int64_t d, const std::vector<DecodeJob>& jobs, float* y) {
  const size_t J = jobs.size();
  constexpr int64_t esz = BF16 ? 2 : 4;
  // Row ranges of stage 1 (all jobs' input rows) and buffer offsets.
  std::vector<int64_t> row_begin(J + 1, 0), h_off(J + 1, 0), a_off(J + 1, 0);
  for (size_t j = 0; j < J; ++j) {
    const int64_t nin = (jobs[j].gated ? 2 : 1) * jobs[j].f;
    const int64_t nt = static_cast<int64_t>(jobs[j].tokens.size());
    row_begin[j + 1] = row_begin[j] + nin;
    h_off[j + 1] = h_off[j] + nin * nt;
    a_off[j + 1] = a_off[j] + jobs[j].f * nt;
  }
  std::vector<float> h(h_off[J]), a(a_off[J]);

  // Stage 1: h[job][token] = W_in x[token] (each input row of each job read once).
  at::parallel_for(0, row_begin[J], 16, [&](int64_t r0, int64_t r1) {
    std::vector<const float*> xs;
    std::vector<float> tmp;
    size_t j = std::upper_bound(row_begin.begin(), row_begin.end(), r0) - row_begin.begin() - 1;
    for (int64_t r = r0; r < r1;) {
      while (r >= row_begin[j + 1]) ++j;
      const DecodeJob& job = jobs[j];
      const int64_t nt = static_cast<int64_t>(job.tokens.size());
      const int64_t nin = row_begin[j + 1] - row_begin[j];
      xs.resize(nt);
      tmp.resize(nt);
      for (int64_t i = 0; i < nt; ++i) xs[i] = x + job.tokens[i] * d;
      const int64_t rend = std::min(r1, row_begin[j + 1]);
      for (; r < rend; ++r) {
        const int64_t lr = r - row_begin[j];
        dot_rows<BF16>(static_cast<const char*>(job.w_in) + lr * d * esz, d, xs.data(), nt, tmp.data());
        for (int64_t i = 0; i < nt; ++i) h[h_off[j] + i * nin + lr] = tmp[i];
      }
    }
  });

  // Stage 2: activation per (job, token).
  std::vector<int64_t> pair_begin(J + 1, 0);
  for (size_t j = 0; j < J; ++j) pair_begin[j + 1] = pair_begin[j] + static_cast<int64_t>(jobs[j].tokens.size());
  at::parallel_for(0, pair_begin[J], 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const size_t j = std::upper_bound(pair_begin.begin(), pair_begin.end(), p) - pair_begin.begin() - 1;
      const DecodeJob& job = jobs[j];
      const int64_t i = p - pair_begin[j], f = job.f, nin = (job.gated ? 2 : 1) * f;
      const float* hr = h.data() + h_off[j] + i * nin;
      float* ar = a.data() + a_off[j] + i * f;
      for (int64_t c = 0; c < f; ++c) {
        float v = act_scalar(hr[c] + (job.b_in ? job.b_in[c] : 0.f), job.act);
        if (job.gated) v *= hr[f + c] + (job.b_in ? job.b_in[f + c] : 0.f);
        ar[c] = v;
      }
    }
  });

  // Stage 3: y[t, r] += gate * (W_out[r] . a + b_out[r]), each output row owned by one thread.
  at::parallel_for(0, d, 16, [&](int64_t r0, int64_t r1) {
    std::vector<const float*> as;
    std::vector<float> tmp;
    for (size_t j = 0; j < J; ++j) {
      const DecodeJob& job = jobs[j];
      const int64_t nt = static_cast<int64_t>(job.tokens.size());
      if (nt == 0) continue;
      as.resize(nt);
      tmp.resize(nt);
      for (int64_t i = 0; i < nt; ++i) as[i] = a.data() + a_off[j] + i * job.f;
      for (int64_t r = r0; r < r1; ++r) {
        dot_rows<BF16>(static_cast<const char*>(job.w_out) + r * job.f * esz, job.f, as.data(), nt, tmp.data());
        const float b = job.b_out ? job.b_out[r] : 0.f;
        for (int64_t i = 0; i < nt; ++i) y[job.tokens[i] * d + r] += job.gates[i] * (tmp[i] + b);
      }
    }
  });
}

}  // namespace

void fused_small_batch(const float* x, int64_t T, int64_t d, bool bf16, const std::vector<DecodeJob>& jobs,
                       float* y) {
  if (bf16)
    fused_impl<true>(x, T, d, jobs, y);
  else
    fused_impl<false>(x, T, d, jobs, y);
}

bool fused_kernels_use_avx512() { return kAvx512; }

#ifdef MF_X86
namespace {
__attribute__((target("avx512f,avx512bw,avx512vl"))) void axpy_bf16_avx512(float w, const uint16_t* x, float* y,
                                                                             int64_t n) {
  const __m512 wv = _mm512_set1_ps(w);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(wv, load_w<true>(x, i), _mm512_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += w * bf16_to_float(x[i]);
}
}  // namespace
#endif

void axpy_bf16(float w, const void* x, float* y, int64_t n) {
  const uint16_t* xb = static_cast<const uint16_t*>(x);
#ifdef MF_X86
  if (kAvx512) return axpy_bf16_avx512(w, xb, y, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] += w * bf16_to_float(xb[i]);
}

}  // namespace mf::moe
