// CPU kernels that libtorch has no fast op for: the fused expert activation of a grouped GEMM,
// the fused small-batch (decode) expert path that streams each selected expert's weights exactly
// once, and the small-batch matrix product behind every decode-time projection (libtorch 1.13's
// bf16 matrix-vector product streams weights at a few GB/s). Raw-pointer code; no torch.h.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "moe/config.h"

namespace mf::moe {

// a = act(h[:, :f] + b[:f]) * (h[:, f:] + b[f:]) (gated) or act(h + b); h [n, (1|2) f] of
// bf16/float/double, b fp32-convertible or undefined. Math in fp32 (fp64 for double).
at::Tensor expert_activation(const at::Tensor& h, const at::Tensor& b_in, int64_t f, bool gated, Act act);

// One selected expert in the fused small-batch path.
struct DecodeJob {
  const void* w_in = nullptr;   // [(gated ? 2 : 1) * f, d] row-major, bf16 or fp32 (as `bf16`)
  const void* w_up = nullptr;   // or, when set, w_in holds the gate's f rows and this the up's f
  const void* w_out = nullptr;  // [d, f] row-major
  const float* b_in = nullptr;  // [(gated ? 2 : 1) * f] or null
  const float* b_out = nullptr; // [d] or null
  int64_t f = 0;
  bool gated = true;
  Act act = Act::SiLU;
  std::vector<int64_t> tokens;  // tokens routed to this expert
  std::vector<float> gates;     // their combine weights
};

// y[t] += sum over jobs containing t of gate * expert(x[t]); x [T, d] bf16 (x_bf16) or fp32,
// y [T, d] fp32. Each weight row is read once per call for all of that expert's tokens
// (GEMV-style; the batch-1 bound is memory bandwidth, not FLOPs). Parallel over weight rows.
// With bf16 weights on an AVX512_BF16 CPU the inputs and the expert's activations are rounded
// to bf16 (as a bf16 model computes them); otherwise the math is fp32 throughout.
void fused_small_batch(const void* x, bool x_bf16, int64_t T, int64_t d, bool bf16, const std::vector<DecodeJob>& jobs,
                       float* y);

// y[t, r] = <w[r], x[t]> (+ b[r]) for t < T: w [R, n] row-major, bf16 (bf16 = true) or fp32;
// x [T, n] bf16 (x_bf16) or fp32; b [R] fp32 or null; y [T, R] fp32, or bf16 (rounded to nearest
// even) when y_bf16. Parallel over w's rows, each read once for all T rows of x: meant for
// T <= ~8, where the bound is memory bandwidth. Sums in fp32; bf16 weights on an AVX512_BF16 CPU
// take x rounded to bf16.
void small_batch_matmul(const void* x, bool x_bf16, int64_t T, int64_t n, const void* w, bool bf16, int64_t R,
                        const float* b, void* y, bool y_bf16);

// Up to this many rows of x the decode kernels replace libtorch's ops: the weight stream dominates.
constexpr int64_t kSmallBatchRows = 8;

// y = x Wᵀ + b: at::linear, except for inference on a few rows of bf16 or fp32 (decode): there
// small_batch_matmul replaces libtorch's GEMV, which streams weights slowly and, like every
// torch op, costs a visible fixed share of a batch-1 step. Used by every projection and router.
at::Tensor apply_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b = {});

// y[i] += w * x[i] for bf16 x, fp32 y (the combine's inner loop).
void axpy_bf16(float w, const void* x, float* y, int64_t n);

// Instruction sets of the kernels above, in increasing order: the best the CPU has unless lowered
// (tests cover every path on one machine; benchmarks compare them in one run).
enum class KernelIsa { Scalar = 0, Avx512 = 1, Avx512Bf16 = 2 };
KernelIsa kernel_isa();
// Never above what the CPU has; returns the ISA now in effect.
KernelIsa set_kernel_isa(KernelIsa isa);
// How far ahead (bytes) the GEMV kernels prefetch weight lines: 8 KB on AMD, 2 KB elsewhere,
// MOEFORGE_PREFETCH_BYTES to override; 0 on CPUs without the AVX-512 kernels.
int64_t prefetch_bytes();

}  // namespace mf::moe
