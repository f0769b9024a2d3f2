// `--router fit`: the r-row router of a stock checkpoint whose experts were merged (spec
// merge_and_eval.md §A.7, "fit the r-row router by least squares … to the cluster-summed
// distribution"). The paper's router gives cluster C the mass q_C(x) = Σ_{i∈C} softmax(z(x))_i
// of the original logits z = W x. With one row per cluster, softmax over the r logits equals q
// exactly when the row of C outputs ℓ_C(x) = log Σ_{i∈C} exp(z_i(x)) (then softmax_C = q_C,
// the common normaliser cancels). A singleton's ℓ is its own logit, so its row stays the
// original one (r = N gives the router back bit for bit), and each merged cluster's row is the
// least-squares fit of ℓ_C on the calibration tokens kept for the fit:
//   w_C = argmin_w Σ_t (w·x_t − ℓ_C(x_t))²,
// solved as w_C = w0_C + Δ with Δ the minimum-norm least-squares solution (LAPACK gelsd) of
// X Δ = ℓ_C − X w0_C, w0_C the merge-weighted mean of the members' rows (the `weighted` router):
// the unique fit when X has full column rank, otherwise the fit closest to the weighted row.
// Linear fit in logit space, not a softmax/KL fit: it is exact whenever an exact r-row router
// exists on those tokens (test: Merge.RouterFitReproducesAnExactSolution).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace mf::merge {

struct RouterFit {
  at::Tensor rows;        // [r, d] fp32 (singletons: the original rows)
  double residual = 0.0;  // ‖X W_Cᵀ − ℓ‖_F / ‖ℓ − mean over tokens of ℓ‖_F over the merged clusters (0: none)
  int64_t tokens = 0;
};

// gate [N, d]; inputs [S, d] and logits [S, N] of the same S tokens (z = gate·x as the model
// computed it); members/weights per output expert (weights sum to 1).
RouterFit fit_router(const at::Tensor& gate, const at::Tensor& inputs, const at::Tensor& logits,
                     const std::vector<std::vector<int64_t>>& members, const std::vector<std::vector<double>>& weights);

}  // namespace mf::merge
