// ZipIt merging (`--merge zipit`; spec merge_and_eval.md §A.6.3, the reference's default
// `zipit`, "zipit-same-rule-without-unmerge", adapted from MC-SMoE / ZipIt!): the members of a
// cluster, |C| experts of width m, are zipped into one expert of width m by merging their hidden
// neurons greedily by activation correlation — across experts and within one expert alike.
//
//   features  the |C|·m neurons of the concatenated FFN, member by member in the cluster's order
//             (ascending expert index): feature c·m + n is neuron n of member c;
//   A         = SiLU(X Gᵀ) ⊙ (X Uᵀ) ∈ R^{T'×|C|·m} on the cluster's routed tokens X (the same rows
//             as fix-dom: a token once per member routed to);
//   R         = Pearson correlation over those rows, cov(A[:,a], A[:,b]) / (σ_a σ_b + 1e-7), n−1
//             divisors (fix-dom's convention, the reference's FP32_EPS); diagonal −1;
//   greedy    while more than m features remain: take the most correlated pair (i, j), i < j —
//             ties: the first pair in row-major order, i.e. the lowest i, then the lowest j, as
//             torch.argmax over the reference's matrix; merge j into i (the reference keeps the
//             lower index in place and deletes the higher); then for every remaining k
//             r_ik = r_ki = α·min(r_ik, r_jk) with α = 0.1 (discourages merging a merged feature
//             again), and j takes no further part;
//   weights   rows of G and U and columns of D are combined by a running count-weighted average:
//             each feature starts with count 1, merging i and j gives (c_i w_i + c_j w_j)/(c_i + c_j)
//             with count c_i + c_j. That is exactly the plain mean of the original features of each
//             final group, which is how it is computed (one rounding instead of one per merge). The
//             down projection is averaged like gate and up (its column n belongs to neuron n), as
//             the spec and the reference do — not summed.
//   order     output neuron g is the group whose lowest feature is the g-th lowest of the survivors
//             (the reference's order after its deletions). An FFN does not depend on the order of its
//             hidden neurons; with it, a cluster of two exact copies zips back into the expert bit for
//             bit.
//
// Deviations from the reference: its running average divides by c_i + c_j + 1e-7 (shrinking each
// merged weight by about 5·10⁻⁸ relative per merge) — we divide by c_i + c_j; and its argmax can
// land on a diagonal −1 when no off-diagonal entry is above −1 — we merge only distinct features.
// A cluster with fewer than 2 routed rows cannot be correlated and is averaged plainly (identity
// maps), as fix-dom does.
//
// Cost, F = |C|·m features, T' routed rows: the activations T'·F and one F×F matrix, in fp32
// (fp64 when the inputs are fp64); F·F·4 bytes (Qwen1.5-MoE, 4 members: F = 5632, 127 MB;
// Mixtral-8x7B, 4 members: F = 57344, 13 GB). Time: the correlation O(T'·F²) (one matrix
// product); the greedy loop keeps each row's best partner and updates it incrementally, so a
// merge costs O(F) plus O(F) for every row whose best partner was one of the merged pair — O(F²)
// in all when few rows share a best partner, O(F³) in the worst case (a naive loop is O(F³)
// always: an argmax over F² entries per merge).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace mf::merge {

inline constexpr double kZipitAlpha = 0.1;  // the reference's alpha_for_repeated_merging

// One expert's weights: gate and up [m, d], down [d, m].
struct ExpertWeights {
  at::Tensor gate, up, down;
};

// R = the Pearson correlation matrix of the columns of `activations` [T, F] over its T ≥ 2 rows
// (cov / (σ_a σ_b + 1e-7), n−1 divisors), with the diagonal set to −1; in the activations' dtype.
at::Tensor activation_correlation(const at::Tensor& activations);

// The greedy zip on a correlation matrix `corr` [F, F] (fp32 or fp64; only its upper triangle is
// read, the lower one is made its mirror — a BLAS product need not be bit-symmetric; the diagonal
// is ignored), down to `width` features. `corr` is the working matrix: its contents are
// overwritten. Returns per feature the output neuron 0..width−1 it is averaged into.
std::vector<int64_t> zipit_groups(at::Tensor corr, int64_t width, double alpha = kZipitAlpha);

// Per member c and neuron n: the output neuron that neuron n of member c is averaged into, from
// the cluster's routed rows X [T', d] and the members' gate and up weights ([m, d] each, in the
// cluster's order). fp64 when X or a weight is fp64, else fp32. Fewer than 2 rows, or one member:
// the identity maps (a plain average).
std::vector<std::vector<int64_t>> zipit_maps(const at::Tensor& X, const std::vector<at::Tensor>& gates,
                                             const std::vector<at::Tensor>& ups, double alpha = kZipitAlpha);

// The zipped expert of width m (the mean of each group's gate and up rows and down columns), in
// fp64 when an input is fp64, else fp32. One member: that member, unchanged.
ExpertWeights zipit_merge(const std::vector<ExpertWeights>& members, const at::Tensor& routed_inputs,
                          double alpha = kZipitAlpha);

}  // namespace mf::merge
