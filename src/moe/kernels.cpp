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

bool detect_avx512() {
#ifdef MF_X86
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

const bool kAvx512 = detect_avx512();

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

namespace {

#ifdef MF_X86
// exp(x) for fp32 lanes: x = n ln2 + r, |r| <= ln2/2, e^r by a degree-7 Taylor polynomial, 2^n by
// scalef. Relative error ~1e-7 (fp32 rounding), inputs clamped to [-88, 88].
__attribute__((target("avx512f"))) inline __m512 exp512(__m512 x) {
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

template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 load16(const void* p, int64_t i, __mmask16 m) {
  if (BF16) {
    __m256i raw = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
}

// fp32 -> bf16 with round-to-nearest-even (finite inputs), masked store.
template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline void store16(void* p, int64_t i, __m512 v, __mmask16 m) {
  if (BF16) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    u = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    _mm256_mask_storeu_epi16(static_cast<uint16_t*>(p) + i, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(u, 16)));
  } else {
    _mm512_mask_storeu_ps(static_cast<float*>(p) + i, m, v);
  }
}

// One row: out[c] = act(g[c] + bg[c]) * (u[c] + bu[c]); u == null for ungated experts.
template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void act_row_avx512(const void* g, const void* u, const float* bg,
                                                                           const float* bu, void* out, int64_t f,
                                                                           Act act) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < f; i += 16) {
    const int64_t rem = std::min<int64_t>(16, f - i);
    const __mmask16 m = static_cast<__mmask16>((1u << rem) - 1u);
    __m512 x = load16<BF16>(g, i, m);
    if (bg) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, bg + i));
    __m512 v;
    if (act == Act::SiLU) {
      v = _mm512_div_ps(x, _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    } else if (act == Act::GELUTanh) {
      // 0.5 x (1 + tanh(y)) = x * sigmoid(2y), y = sqrt(2/pi) (x + 0.044715 x^3)
      const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
      const __m512 y = _mm512_mul_ps(_mm512_set1_ps(0.79788456080286535588f),
                                     _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
      v = _mm512_div_ps(x, _mm512_add_ps(one, exp512(_mm512_mul_ps(_mm512_set1_ps(-2.f), y))));
    } else {  // ReLU
      v = _mm512_max_ps(x, _mm512_setzero_ps());
    }
    if (u) {
      __m512 w = load16<BF16>(u, i, m);
      if (bu) w = _mm512_add_ps(w, _mm512_maskz_loadu_ps(m, bu + i));
      v = _mm512_mul_ps(v, w);
    }
    store16<BF16>(out, i, v, m);
  }
}
#endif

}  // namespace

at::Tensor expert_activation(const at::Tensor& h_in, const at::Tensor& b_in, int64_t f, bool gated, Act act) {
  const at::Tensor h = h_in.contiguous();
  const int64_t n = h.size(0), w = h.size(1);
  TORCH_CHECK(w == (gated ? 2 : 1) * f, "expert_activation: width mismatch");
  at::Tensor out = at::empty({n, f}, h.options());
  const bool dbl = h.scalar_type() == at::kDouble;
  at::Tensor b;
  if (b_in.defined()) b = b_in.to(dbl ? at::kDouble : at::kFloat).contiguous();
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(f, 1));
#ifdef MF_X86
  const bool bf16 = h.scalar_type() == at::kBFloat16;
  if (kAvx512 && act != Act::GELU && (bf16 || h.scalar_type() == at::kFloat)) {
    const int64_t esz = bf16 ? 2 : 4;
    const char* hp = static_cast<const char*>(h.data_ptr());
    char* op = static_cast<char*>(out.data_ptr());
    const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
    at::parallel_for(0, n, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const char* hr = hp + r * w * esz;
        const void* u = gated ? hr + f * esz : nullptr;
        const float* bu = (gated && bp) ? bp + f : nullptr;
        if (bf16)
          act_row_avx512<true>(hr, u, bp, bu, op + r * f * esz, f, act);
        else
          act_row_avx512<false>(hr, u, bp, bu, op + r * f * esz, f, act);
      }
    });
    return out;
  }
#endif
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, h.scalar_type(), "expert_activation", [&] {
    using A = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    const scalar_t* hp = h.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const A* bp = b.defined() ? b.data_ptr<A>() : nullptr;
    at::parallel_for(0, n, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* hr = hp + r * w;
        scalar_t* o = op + r * f;
        for (int64_t c = 0; c < f; ++c) {
          A v = act_scalar(static_cast<A>(hr[c]) + (bp ? bp[c] : A(0)), act);
          if (gated) v *= static_cast<A>(hr[f + c]) + (bp ? bp[f + c] : A(0));
          o[c] = static_cast<scalar_t>(v);
        }
      }
    });
  });
  return out;
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

// Four independent accumulators per vector: with two, the FMA latency chain held one core below
// its share of the memory bandwidth (measured 0.94 vs 0.88 of a plain read on two cores).
template <bool BF16, int NX>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void dot_rows_avx512(const void* w, int64_t n,
                                                                            const float* const* xs, float* out) {
  __m512 acc[NX][4];
  for (int v = 0; v < NX; ++v)
    for (int u = 0; u < 4; ++u) acc[v][u] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    __m512 wv[4];
    for (int u = 0; u < 4; ++u) wv[u] = load_w<BF16>(w, i + 16 * u);
    for (int v = 0; v < NX; ++v)
      for (int u = 0; u < 4; ++u) acc[v][u] = _mm512_fmadd_ps(wv[u], _mm512_loadu_ps(xs[v] + i + 16 * u), acc[v][u]);
  }
  for (; i < n; i += 16) {
    const int64_t rem = std::min<int64_t>(16, n - i);
    const __mmask16 m = static_cast<__mmask16>((1u << rem) - 1u);
    const __m512 w0 = load_w_masked<BF16>(w, i, m);
    for (int v = 0; v < NX; ++v) acc[v][0] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, xs[v] + i), acc[v][0]);
  }
  for (int v = 0; v < NX; ++v)
    out[v] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[v][0], acc[v][1]), _mm512_add_ps(acc[v][2], acc[v][3])));
}

#endif


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

// out[r - r0] = <w[r], x> for r in [r0, r1): the batch-1 case, written contiguously. (Four rows
// per pass sharing the loads of x was tried: 30 % slower, the interleaved streams defeat the
// prefetcher.)
template <bool BF16>
void dot_rows_one_x(const void* w, int64_t n, int64_t r0, int64_t r1, const float* x, float* out) {
  constexpr int64_t esz = BF16 ? 2 : 4;
  for (int64_t r = r0; r < r1; ++r)
    dot_rows<BF16>(static_cast<const char*>(w) + r * n * esz, n, &x, 1, out + (r - r0));
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
      if (nt == 1) {  // h of a single token is contiguous in the row index
        const int64_t lr = r - row_begin[j];
        dot_rows_one_x<BF16>(job.w_in, d, lr, lr + (rend - r), xs[0], h.data() + h_off[j] + lr);
        r = rend;
        continue;
      }
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
#ifdef MF_X86
      if (kAvx512 && job.act != Act::GELU) {
        act_row_avx512<false>(hr, job.gated ? hr + f : nullptr, job.b_in, job.gated && job.b_in ? job.b_in + f : nullptr,
                              ar, f, job.act);
        continue;
      }
#endif
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
      if (nt == 1) {
        tmp.resize(r1 - r0);
        dot_rows_one_x<BF16>(job.w_out, job.f, r0, r1, as[0], tmp.data());
        float* yt = y + job.tokens[0] * d;
        for (int64_t r = r0; r < r1; ++r) yt[r] += job.gates[0] * (tmp[r - r0] + (job.b_out ? job.b_out[r] : 0.f));
        continue;
      }
      for (int64_t r = r0; r < r1; ++r) {
        dot_rows<BF16>(static_cast<const char*>(job.w_out) + r * job.f * esz, job.f, as.data(), nt, tmp.data());
        const float b = job.b_out ? job.b_out[r] : 0.f;
        for (int64_t i = 0; i < nt; ++i) y[job.tokens[i] * d + r] += job.gates[i] * (tmp[i] + b);
      }
    }
  });
}

template <bool BF16>
void small_batch_matmul_impl(const float* x, int64_t T, int64_t n, const void* w, int64_t R, const float* b, void* y,
                             bool y_bf16) {
  std::vector<const float*> xs(T);
  for (int64_t t = 0; t < T; ++t) xs[t] = x + t * n;
  constexpr int64_t esz = BF16 ? 2 : 4;
  // One contiguous block of rows per thread (static halves). Dynamic hand-out of 32 KB chunks
  // was tried: 45 % slower, interleaving the two threads' streams.
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(n * esz, 1));
  at::parallel_for(0, R, grain, [&](int64_t r0, int64_t r1) {
    std::vector<float> out((r1 - r0) * T);  // out[(r - r0) * T + t]
    for (int64_t r = r0; r < r1; ++r)
      dot_rows<BF16>(static_cast<const char*>(w) + r * n * esz, n, xs.data(), T, out.data() + (r - r0) * T);
    for (int64_t r = r0; r < r1; ++r) {
      const float br = b ? b[r] : 0.f;
      for (int64_t t = 0; t < T; ++t) {
        const float v = out[(r - r0) * T + t] + br;
        if (y_bf16)
          static_cast<c10::BFloat16*>(y)[t * R + r] = c10::BFloat16(v);
        else
          static_cast<float*>(y)[t * R + r] = v;
      }
    }
  });
}

}  // namespace

void small_batch_matmul(const float* x, int64_t T, int64_t n, const void* w, bool bf16, int64_t R, const float* b,
                        void* y, bool y_bf16) {
  if (bf16)
    small_batch_matmul_impl<true>(x, T, n, w, R, b, y, y_bf16);
  else
    small_batch_matmul_impl<false>(x, T, n, w, R, b, y, y_bf16);
}

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
