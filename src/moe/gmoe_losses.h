// GMoE's two coordination losses (moe_routing_training.md §4.3, §6.3), in the reference code's
// |log-ratio| form. Total training loss = CE + kGmoePoissonLossCoef * L_poisson +
// kGmoeNormalLossCoef * L_normal (each divided by the grad-accumulation steps like CE).
//
// Where the pieces live:
//   * lambda and sigma (one learnable scalar each per MoE layer) are parameters of the layer's
//     graph router (GraphRouterImpl::poisson_lambda / normal_sigma), so they are trained and
//     saved with it, as the reference saves them with its gate.
//   * the running expert counts of the Normal loss live in a GmoeBalanceState that the trainer
//     owns (one per model, not saved: the reference starts them at zero on every run). The
//     trainer calls update() once per MoE layer per training micro-batch, with that layer's
//     router output, and passes the returned counts to normal_balance_loss().
//
// Every tensor argument may be fp32 or fp64 (fp64 passes through, for gradient checks).
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace mf::moe {

inline constexpr double kGmoePoissonLossCoef = 0.005;  // `router_route_loss_coef_`
inline constexpr double kGmoeNormalLossCoef = 8.0;     // `router_count_loss_coef_`
inline constexpr double kGmoeInitialLambda = 1.5;      // Poisson rate at init (sigma starts at E / 2)
inline constexpr int64_t kGmoePoissonCap = 32;         // ranks beyond this repeat the 32nd value

// Poisson target q [E] (dtype of lambda): q_i = Pois(i; clamp(lambda, 1, 2)) for ranks
// i = 1..E, L1-normalised; differentiable in lambda strictly inside the clamp. For E > 32 the
// ranks beyond 32 take the 32nd rank's value BEFORE normalisation (as the reference does:
// pois[..., 32:] = pois[..., 31:32], then divide by the sum). lambda: one element.
at::Tensor poisson_target(int64_t num_experts, const at::Tensor& lambda);

// Poisson distinction loss: mean over (layer, real token) of
//   sum_i q_i |log(q_i / (p_sorted,i + 1e-16))|,  p_sorted = the token's probs sorted descending,
// q = poisson_target(E, lambda of the layer). probs_per_layer: [T, E] softmax probabilities of
// every layer (same T); mask [T] (true / 1 = real token; undefined = every token, which is what
// the reference does: it includes padding). Gradient w.r.t. probs flows through the sort.
at::Tensor poisson_distinction_loss(const std::vector<at::Tensor>& probs_per_layer,
                                    const std::vector<at::Tensor>& lambdas, const at::Tensor& mask = {});

// Normal target of one layer [E]: N(i; mu = E/2, sigma) at i = 0..E-1, normalised over the
// layer, sorted descending. Computed as softmax(-(i - mu)^2 / (2 sigma^2)) (the 1/(sigma
// sqrt(2 pi)) factor cancels), so any sigma != 0 is valid; the sign of sigma does not matter.
at::Tensor normal_target(int64_t num_experts, const at::Tensor& sigma);

// The targets of all layers [layers, E], each row sorted descending. reference_compat = the
// reference code's normalisation over the whole [layers x E] tensor of Gaussian pdf values
// (1/(sigma sqrt(2 pi)) kept, so sigma must be > 0): each row then sums to about 1/layers
// (exactly when all sigmas are equal), which makes the loss reward imbalance (§4.3 "bug").
at::Tensor normal_targets(int64_t num_experts, const std::vector<at::Tensor>& sigmas, bool reference_compat = false);

// This micro-batch's term of a layer's activation count [E]: k * sum over real tokens of the
// pre-renormalisation top-k probabilities, k = idx.size(1). probs [T, E] (the router's softmax),
// idx [T, k] the selected experts (-1 = empty slot, ignored), mask [T] optional.
at::Tensor gmoe_batch_counts(const at::Tensor& probs, const at::Tensor& idx, const at::Tensor& mask = {});

// Normal balance loss: mean over layers of sum_i v_n,i |log(v_n,i / (v_a,i + 1e-8))| with
// v_a = sort_desc(c) / sum(c) for the layer's counts c [E], v_n = its row of normal_targets.
at::Tensor normal_balance_loss(const std::vector<at::Tensor>& counts_per_layer, const std::vector<at::Tensor>& sigmas,
                               bool reference_compat = false);

// The running counts of the Normal balance loss, one [E] row per MoE layer, detached.
class GmoeBalanceState {
 public:
  explicit GmoeBalanceState(int64_t num_layers);

  // Once per MoE layer per training micro-batch (also under grad accumulation): returns this
  // layer's count c = running + gmoe_batch_counts(probs, idx, mask), whose gradient flows only
  // through the current batch's term, and advances running to c (detached). Meant for training
  // forwards; the reference also advances its count in validation forwards (call it there too
  // only to reproduce that).
  at::Tensor update(int64_t layer, const at::Tensor& probs, const at::Tensor& idx, const at::Tensor& mask = {});

  // The running count of a layer (undefined before its first update).
  const at::Tensor& running(int64_t layer) const;
  int64_t num_layers() const { return static_cast<int64_t>(running_.size()); }
  void reset();  // back to zero (undefined) for every layer
  // Restores a layer's running count (a resumed training run; detached copy).
  void set_running(int64_t layer, const at::Tensor& counts);

 private:
  std::vector<at::Tensor> running_;
};

}  // namespace mf::moe
