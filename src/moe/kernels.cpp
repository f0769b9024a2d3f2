#include "moe/kernels.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "util/simd_x86.h"

namespace mf::moe {

#ifdef MF_X86
using simd::exp512;
using simd::load16;
using simd::tail_mask16;
#endif

namespace {

KernelIsa detect_isa() {
#ifdef MF_X86
  if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")))
    return KernelIsa::Scalar;
  return __builtin_cpu_supports("avx512bf16") ? KernelIsa::Avx512Bf16 : KernelIsa::Avx512;
#else
  return KernelIsa::Scalar;
#endif
}

const KernelIsa kCpuIsa = detect_isa();

// MOEFORGE_KERNEL_ISA=scalar|avx512 caps the kernels below what the CPU has (A/B measurements,
// as ONEDNN_MAX_CPU_ISA does for oneDNN); unknown values are ignored.
KernelIsa initial_isa() {
  const char* env = std::getenv("MOEFORGE_KERNEL_ISA");
  const std::string cap = env ? env : "";
  const KernelIsa want = cap == "scalar" ? KernelIsa::Scalar : cap == "avx512" ? KernelIsa::Avx512 : kCpuIsa;
  return std::min(want, kCpuIsa);
}

std::atomic<int> g_isa{static_cast<int>(initial_isa())};

inline bool use_avx512() { return g_isa.load(std::memory_order_relaxed) >= static_cast<int>(KernelIsa::Avx512); }
// vdpbf16ps: bf16 pairs multiplied exactly and summed in fp32, 32 products per instruction where
// widening bf16 weights for fp32 FMAs takes three instructions per 16: fewer instructions per
// streamed byte, which matters most when two threads share a core's memory pipeline.
inline bool use_dpbf16() {
  return g_isa.load(std::memory_order_relaxed) >= static_cast<int>(KernelIsa::Avx512Bf16);
}

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

// One row: out[c] = act(g[c] + bg[c]) * (u[c] + bu[c]); u == null for ungated experts. Inputs
// are bf16 or fp32 as BF16, the output as OUT_BF16.
template <bool BF16, bool OUT_BF16 = BF16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void act_row_avx512(const void* g, const void* u, const float* bg,
                                                                           const float* bu, void* out, int64_t f,
                                                                           Act act) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < f; i += 16) {
    const __mmask16 m = tail_mask16(f - i);
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
    store16<OUT_BF16>(out, i, v, m);
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
  if (use_avx512() && act != Act::GELU && (bf16 || h.scalar_type() == at::kFloat)) {
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
// Dot products of one weight row against NX activation vectors. The activations are fp32
// (XT = float), or bf16 (XT = uint16_t) for bf16 weights when vdpbf16ps is in use: bf16 x bf16
// products are exact in fp32 and summed in fp32, as libtorch's and llama.cpp's bf16 GEMMs do.

namespace {

inline float bf16_to_float(uint16_t v) {
  uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float to_float(float v) { return v; }
inline float to_float(uint16_t v) { return bf16_to_float(v); }

template <bool BF16, typename XT>
void dot_rows_scalar(const void* wrow, int64_t n, const XT* const* xs, int nx, float* out) {
  for (int v = 0; v < nx; ++v) out[v] = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    const float wv = BF16 ? bf16_to_float(static_cast<const uint16_t*>(wrow)[i]) : static_cast<const float*>(wrow)[i];
    for (int v = 0; v < nx; ++v) out[v] += wv * to_float(xs[v][i]);
  }
}

#ifdef MF_X86
// Weight lines are prefetched this far ahead: one core's hardware prefetcher alone keeps too few
// lines in flight. The best distance depends on the core (docs/runtime.md, "Decode kernels"):
// on AMD Zen 4, 8 KB beat 2, 4, 12, 16 and 32 KB (1 thread ~22 -> ~27 GB/s); on Intel Sapphire
// Rapids 2 KB beat 8 KB by 8-17 % (8 KB fell below no prefetch at all for bf16 on two threads).
// MOEFORGE_PREFETCH_BYTES overrides it (0: no software prefetch), for A/B runs on other CPUs.
int64_t initial_prefetch_bytes() {
  if (const char* env = std::getenv("MOEFORGE_PREFETCH_BYTES"))
    return std::max<int64_t>(0, std::atoll(env)) & ~int64_t(63);  // whole cache lines
  return __builtin_cpu_is("amd") ? 8192 : 2048;
}
const int64_t kPrefetchBytes = initial_prefetch_bytes();

__attribute__((target("avx512f"))) inline void prefetch_lines(const void* p, int lines) {
  if (kPrefetchBytes == 0) return;
  for (int l = 0; l < lines; ++l) _mm_prefetch(static_cast<const char*>(p) + kPrefetchBytes + 64 * l, _MM_HINT_T0);
}
template <bool BF16>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 load_w(const void* w, int64_t i) {
  if (BF16) {
    __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  return _mm512_loadu_ps(static_cast<const float*>(w) + i);
}

__attribute__((target("avx512f"))) inline float sum_of_four(const __m512 (&acc)[4]) {
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
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
    prefetch_lines(static_cast<const char*>(w) + i * (BF16 ? 2 : 4), BF16 ? 2 : 4);
    for (int u = 0; u < 4; ++u) wv[u] = load_w<BF16>(w, i + 16 * u);
    for (int v = 0; v < NX; ++v)
      for (int u = 0; u < 4; ++u) acc[v][u] = _mm512_fmadd_ps(wv[u], _mm512_loadu_ps(xs[v] + i + 16 * u), acc[v][u]);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    const __m512 w0 = load16<BF16>(w, i, m);
    for (int v = 0; v < NX; ++v) acc[v][0] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, xs[v] + i), acc[v][0]);
  }
  for (int v = 0; v < NX; ++v) out[v] = sum_of_four(acc[v]);
}

template <int NX>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void dot_rows_dpbf16(const uint16_t* w, int64_t n,
                                                                                       const uint16_t* const* xs,
                                                                                       float* out) {
  __m512 acc[NX][4];
  for (int v = 0; v < NX; ++v)
    for (int u = 0; u < 4; ++u) acc[v][u] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 128 <= n; i += 128) {
    __m512i wv[4];
    prefetch_lines(w + i, 4);
    for (int u = 0; u < 4; ++u) wv[u] = _mm512_loadu_si512(w + i + 32 * u);
    for (int v = 0; v < NX; ++v)
      for (int u = 0; u < 4; ++u)
        acc[v][u] = _mm512_dpbf16_ps(acc[v][u], (__m512bh)wv[u], (__m512bh)_mm512_loadu_si512(xs[v] + i + 32 * u));
  }
  for (; i < n; i += 32) {
    const int64_t rem = std::min<int64_t>(32, n - i);
    const __mmask32 m = rem == 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << rem) - 1u);
    const __m512i w0 = _mm512_maskz_loadu_epi16(m, w + i);
    for (int v = 0; v < NX; ++v)
      acc[v][0] = _mm512_dpbf16_ps(acc[v][0], (__m512bh)w0, (__m512bh)_mm512_maskz_loadu_epi16(m, xs[v] + i));
  }
  for (int v = 0; v < NX; ++v) out[v] = sum_of_four(acc[v]);
}

__attribute__((target("avx512f,avx512bw,avx512vl"))) void to_bf16_avx512(const float* v, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask16(n - i);
    store16<true>(out, i, _mm512_maskz_loadu_ps(m, v + i), m);
  }
}
#endif

// Calls f(integral_constant<int, NX>, first) over [0, nx) in groups of at most four vectors.
template <typename F>
inline void in_groups_of_four(int64_t nx, F&& f) {
  int64_t v = 0;
  for (; v + 4 <= nx; v += 4) f(std::integral_constant<int, 4>(), v);
  switch (nx - v) {
    case 3: f(std::integral_constant<int, 3>(), v); break;
    case 2: f(std::integral_constant<int, 2>(), v); break;
    case 1: f(std::integral_constant<int, 1>(), v); break;
    default: break;
  }
}

// out[v] = <row, xs[v]> for v < nx, any nx. XT = uint16_t only when use_dpbf16().
template <bool BF16, typename XT>
inline void dot_rows(const void* w, int64_t n, const XT* const* xs, int64_t nx, float* out) {
#ifdef MF_X86
  if constexpr (std::is_same_v<XT, uint16_t>) {
    static_assert(BF16, "bf16 activations go with bf16 weights");
    const uint16_t* wb = static_cast<const uint16_t*>(w);
    in_groups_of_four(nx, [&](auto k, int64_t v) { dot_rows_dpbf16<decltype(k)::value>(wb, n, xs + v, out + v); });
    return;
  } else if (use_avx512()) {
    in_groups_of_four(nx, [&](auto k, int64_t v) { dot_rows_avx512<BF16, decltype(k)::value>(w, n, xs + v, out + v); });
    return;
  }
#endif
  for (int64_t v = 0; v < nx; v += 4)
    dot_rows_scalar<BF16>(w, n, xs + v, static_cast<int>(std::min<int64_t>(4, nx - v)), out + v);
}

// out[r - r0] = <w[r], x> for r in [r0, r1): the batch-1 case, written contiguously. (Four rows
// per pass sharing the loads of x was tried: 30 % slower, the interleaved streams defeat the
// prefetcher.)
template <bool BF16, typename XT>
void dot_rows_one_x(const void* w, int64_t n, int64_t r0, int64_t r1, const XT* x, float* out) {
  constexpr int64_t esz = BF16 ? 2 : 4;
  for (int64_t r = r0; r < r1; ++r)
    dot_rows<BF16>(static_cast<const char*>(w) + r * n * esz, n, &x, 1, out + (r - r0));
}

// fp32 values as the activation type XT (bf16: round to nearest even).
template <typename XT>
void store_activations(const float* v, int64_t n, XT* out) {
  if constexpr (std::is_same_v<XT, float>) {
    std::memcpy(out, v, n * sizeof(float));
  } else {
#ifdef MF_X86
    if (use_avx512()) return to_bf16_avx512(v, n, out);
#endif
    for (int64_t i = 0; i < n; ++i) out[i] = c10::BFloat16(v[i]).x;
  }
}

// The n values at x (bf16 when x_bf16, else fp32) as XT: x itself when the types agree.
template <typename XT>
const XT* activations_as(const void* x, bool x_bf16, int64_t n, std::vector<XT>& buf) {
  if (x_bf16 == std::is_same_v<XT, uint16_t>) return static_cast<const XT*>(x);
  buf.resize(n);
  if constexpr (std::is_same_v<XT, float>) {
    const uint16_t* xb = static_cast<const uint16_t*>(x);
    for (int64_t i = 0; i < n; ++i) buf[i] = bf16_to_float(xb[i]);
  } else {
    store_activations(static_cast<const float*>(x), n, buf.data());
  }
  return buf.data();
}

template <bool BF16, typename XT>
void fused_impl(const XT* x, int64_t T, int64_t d, const std::vector<DecodeJob>& jobs, float* y) {
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
  std::vector<float> h(h_off[J]);
  std::vector<XT> a(a_off[J]);

  // Stage 1: h[job][token] = W_in x[token] (each input row of each job read once).
  at::parallel_for(0, row_begin[J], 16, [&](int64_t r0, int64_t r1) {
    std::vector<const XT*> xs;
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
      // The job's input rows [0, f) are w_in's and [f, 2f) w_up's when the up matrix is separate.
      const int64_t lr0 = r - row_begin[j];
      const bool from_up = job.w_up && lr0 >= job.f;
      const int64_t first = from_up ? job.f : 0;  // the job's row that is row 0 of matrix w
      const char* w = static_cast<const char*>(from_up ? job.w_up : job.w_in);
      const int64_t rend = std::min({r1, row_begin[j + 1], row_begin[j] + (job.w_up && !from_up ? job.f : nin)});
      if (nt == 1) {  // h of a single token is contiguous in the row index
        dot_rows_one_x<BF16>(w, d, lr0 - first, rend - row_begin[j] - first, xs[0], h.data() + h_off[j] + lr0);
        r = rend;
        continue;
      }
      for (; r < rend; ++r) {
        const int64_t lr = r - row_begin[j];
        dot_rows<BF16>(w + (lr - first) * d * esz, d, xs.data(), nt, tmp.data());
        for (int64_t i = 0; i < nt; ++i) h[h_off[j] + i * nin + lr] = tmp[i];
      }
    }
  });

  // Stage 2: activation per (job, token).
  std::vector<int64_t> pair_begin(J + 1, 0);
  for (size_t j = 0; j < J; ++j) pair_begin[j + 1] = pair_begin[j] + static_cast<int64_t>(jobs[j].tokens.size());
  at::parallel_for(0, pair_begin[J], 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> row;
    for (int64_t p = p0; p < p1; ++p) {
      const size_t j = std::upper_bound(pair_begin.begin(), pair_begin.end(), p) - pair_begin.begin() - 1;
      const DecodeJob& job = jobs[j];
      const int64_t i = p - pair_begin[j], f = job.f, nin = (job.gated ? 2 : 1) * f;
      const float* hr = h.data() + h_off[j] + i * nin;
      XT* ar = a.data() + a_off[j] + i * f;
#ifdef MF_X86
      if (use_avx512() && job.act != Act::GELU) {
        act_row_avx512<false, std::is_same_v<XT, uint16_t>>(hr, job.gated ? hr + f : nullptr, job.b_in,
                                                             job.gated && job.b_in ? job.b_in + f : nullptr, ar, f,
                                                             job.act);
        continue;
      }
#endif
      row.resize(f);
      for (int64_t c = 0; c < f; ++c) {
        float v = act_scalar(hr[c] + (job.b_in ? job.b_in[c] : 0.f), job.act);
        if (job.gated) v *= hr[f + c] + (job.b_in ? job.b_in[f + c] : 0.f);
        row[c] = v;
      }
      store_activations(row.data(), f, ar);
    }
  });

  // Stage 3: y[t, r] += gate * (W_out[r] . a + b_out[r]), each output row owned by one thread.
  at::parallel_for(0, d, 16, [&](int64_t r0, int64_t r1) {
    std::vector<const XT*> as;
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

template <bool BF16, typename XT>
void small_batch_matmul_impl(const XT* x, int64_t T, int64_t n, const void* w, int64_t R, const float* b, void* y,
                             bool y_bf16) {
  std::vector<const XT*> xs(T);
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

void small_batch_matmul(const void* x, bool x_bf16, int64_t T, int64_t n, const void* w, bool bf16, int64_t R,
                        const float* b, void* y, bool y_bf16) {
  if (bf16 && use_dpbf16()) {
    std::vector<uint16_t> buf;
    small_batch_matmul_impl<true>(activations_as(x, x_bf16, T * n, buf), T, n, w, R, b, y, y_bf16);
    return;
  }
  std::vector<float> buf;
  const float* xf = activations_as(x, x_bf16, T * n, buf);
  if (bf16)
    small_batch_matmul_impl<true>(xf, T, n, w, R, b, y, y_bf16);
  else
    small_batch_matmul_impl<false>(xf, T, n, w, R, b, y, y_bf16);
}

void fused_small_batch(const void* x, bool x_bf16, int64_t T, int64_t d, bool bf16, const std::vector<DecodeJob>& jobs,
                       float* y) {
  if (bf16 && use_dpbf16()) {
    std::vector<uint16_t> buf;
    fused_impl<true>(activations_as(x, x_bf16, T * d, buf), T, d, jobs, y);
    return;
  }
  std::vector<float> buf;
  const float* xf = activations_as(x, x_bf16, T * d, buf);
  if (bf16)
    fused_impl<true>(xf, T, d, jobs, y);
  else
    fused_impl<false>(xf, T, d, jobs, y);
}

KernelIsa kernel_isa() { return static_cast<KernelIsa>(g_isa.load()); }

int64_t prefetch_bytes() {
#ifdef MF_X86
  return use_avx512() ? kPrefetchBytes : 0;
#else
  return 0;
#endif
}

KernelIsa set_kernel_isa(KernelIsa isa) {
  g_isa.store(std::min(static_cast<int>(isa), static_cast<int>(kCpuIsa)));
  return kernel_isa();
}

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
  if (use_avx512()) return axpy_bf16_avx512(w, xb, y, n);
#endif
  for (int64_t i = 0; i < n; ++i) y[i] += w * bf16_to_float(xb[i]);
}

at::Tensor apply_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const int64_t n = w.size(-1);
  const bool needs_grad =
      at::GradMode::is_enabled() && (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
  const at::ScalarType wt = w.scalar_type();
  const bool small = !needs_grad && x.device().is_cpu() && w.device().is_cpu() && w.dim() == 2 &&
                     (wt == at::kBFloat16 || wt == at::kFloat) && x.scalar_type() == wt && w.is_contiguous() &&
                     x.numel() > 0 && x.numel() <= kSmallBatchRows * n;
  if (!small) return at::linear(x, w, b);
  // The kernel reads bf16 or fp32 x as it is and writes y directly: at batch 1 each torch op's
  // fixed cost is a visible share of the ~100 us a projection takes. fp32 too: libtorch's fp32
  // GEMV reaches well under half the memory bandwidth at batch 1.
  const bool bf16 = wt == at::kBFloat16;
  const at::Tensor xc = x.contiguous();
  const int64_t T = x.numel() / n, R = w.size(0);
  std::vector<float> bf;
  if (b.defined()) {
    const at::Tensor bc = b.to(at::kFloat).contiguous();
    bf.assign(bc.data_ptr<float>(), bc.data_ptr<float>() + R);
  }
  auto shape = x.sizes().vec();
  shape.back() = R;
  at::Tensor y = at::empty(shape, x.options());
  small_batch_matmul(xc.data_ptr(), bf16, T, n, w.data_ptr(), bf16, R, bf.empty() ? nullptr : bf.data(), y.data_ptr(),
                     bf16);
  return y;
}

}  // namespace mf::moe
