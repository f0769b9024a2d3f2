// Fixed-dominant merging (`--merge fix-dom`; spec merge_and_eval.md §A.6.2, the reference's
// `fix-dom-same`): the members of a cluster are merged neuron by neuron into its dominant
// expert δ after aligning their hidden neurons to δ's by activation correlation.
//
//   A_j = SiLU(X G_jᵀ) ⊙ (X U_jᵀ) ∈ R^{T'×m} on the cluster's routed tokens X (the rows of
//         the calibration tokens whose top-k contains a member, once per member: a token
//         routed to two members appears twice — the reference's concatenation);
//   R   = Pearson correlation over those rows: cov(A_δ[:,k], A_j[:,n]) / (σ_δ,k σ_j,n + 1e-7)
//         (n−1 divisors, the reference's FP32_EPS);
//   π_j(n) = argmax_k R[k, n] (ties: the lowest k): the dominant neuron neuron n of j joins;
//   P ∈ R^{m×(|C|·m)}: P[k, k] = c_δ, P[k, off_j + n] = c_j where π_j(n) = k, rows normalised;
//   G = P·[G_δ; G_j; …], U likewise, D = (P·[D_δᵀ; D_jᵀ; …])ᵀ.
// Each merged neuron is the average of a dominant neuron and the neurons matched to it; the
// coefficients c are 1 (the reference's default; its `input-weight` mode is not offered).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace mf::merge {

// A = SiLU(X Gᵀ) ⊙ (X Uᵀ) in fp64: X [T, d], G and U [m, d].
at::Tensor swiglu_activations(const at::Tensor& X, const at::Tensor& gate, const at::Tensor& up);

// π: for every neuron n of the member (column of `member` [T, m]) the dominant neuron k
// (column of `dominant` [T, m]) of largest Pearson correlation over the T rows. T ≥ 2.
std::vector<int64_t> align_neurons(const at::Tensor& dominant, const at::Tensor& member);

// One projection of the merged expert: tensors[i] is member i's weight ([m, d] with neuron_dim 0
// for gate/up, [d, m] with neuron_dim 1 for down), maps[i] its π (m targets; the dominant's map is
// the identity), coef[i] its c. Result in fp32.
at::Tensor fix_dom_combine(const std::vector<at::Tensor>& tensors, const std::vector<std::vector<int64_t>>& maps,
                           const std::vector<double>& coef, int64_t neuron_dim);

}  // namespace mf::merge
