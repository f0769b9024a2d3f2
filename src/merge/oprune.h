// O-prune (Lu et al., ACL 2024, "Not All Experts are Equal"; spec merge_and_eval.md §A.8.2): per
// layer, the subset S of r experts whose layer output, with the other experts' logits set to −∞
// before the softmax and top-k, is closest to the original output on the calibration tokens.
//
// Without re-running the layer per subset: with a_t the original combine weights of token t
// (over N experts, k non-zero) and b_t(S) the pruned ones, the squared output error is
//   Σ_t (a_t − b_t)ᵀ G_t (a_t − b_t),   G_t[i][j] = <E_i(x_t), E_j(x_t)>,
// and a_t − b_t has at most 2k non-zero entries, so a subset costs O(T·(N + k²)) instead of a
// layer forward (the shared expert cancels). Exhaustive while C(N, r) ≤ max_subsets (Mixtral: 28
// or 70 subsets), otherwise a seeded uniform sample of max_subsets subsets (the paper's
// "O-prune (10⁵)"). The loss is the squared Frobenius norm over all tokens (the reference sums
// per-batch norms); ties keep the earlier subset.
#pragma once
#include <cstdint>
#include <vector>

namespace mf::merge {

struct OPruneInput {
  int64_t tokens = 0, experts = 0, k = 0;
  bool renormalize = false;   // Mixtral (and norm_topk_prob): top-k weights renormalised
  const float* logits = nullptr;  // [T, N] router logits
  const double* gram = nullptr;   // [T, N, N] Gram matrices of the experts' outputs per token
};

struct OPruneResult {
  std::vector<int64_t> kept;  // ascending
  double loss = 0.0;          // squared output error of `kept` (Σ over tokens)
  int64_t subsets = 0;        // subsets evaluated
  bool exhaustive = false;
};

OPruneResult o_prune(const OPruneInput& in, int64_t r, int64_t max_subsets = 100000, uint64_t seed = 0);

// The squared output error of one subset (`keep` has N entries, non-zero = kept).
double o_prune_loss(const OPruneInput& in, const std::vector<uint8_t>& keep);

}  // namespace mf::merge
