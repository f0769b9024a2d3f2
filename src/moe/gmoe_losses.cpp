#include "moe/gmoe_losses.h"

#include <cmath>

#include "moe/routers/selection.h"

namespace mf::moe {

namespace {

// Per-token weights [T] in the dtype and device of `like`: 1 for real tokens.
at::Tensor token_weights(const at::Tensor& mask, int64_t tokens, const at::Tensor& like) {
  if (!mask.defined()) return at::ones({tokens}, like.options());
  TORCH_CHECK(mask.numel() == tokens, "GMoE loss: mask has ", mask.numel(), " entries for ", tokens, " tokens");
  return mask.reshape({-1}).to(like.options());
}

at::Tensor sorted_descending(const at::Tensor& t) { return std::get<0>(t.sort(-1, /*descending=*/true)); }

at::Tensor scalar_of(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.defined() && t.numel() == 1, "GMoE loss: ", what, " must have one element");
  return t.reshape({});
}

}  // namespace

at::Tensor poisson_target(int64_t num_experts, const at::Tensor& lambda) {
  TORCH_CHECK(num_experts >= 1, "poisson_target: num_experts must be >= 1");
  const at::Tensor lam = scalar_of(lambda, "lambda").clamp(1.0, 2.0);
  const at::Tensor rank = at::arange(1, num_experts + 1, lam.options()).clamp_max(static_cast<double>(kGmoePoissonCap));
  const at::Tensor pmf = at::exp(rank * at::log(lam) - lam - at::lgamma(rank + 1.0));
  return pmf / pmf.sum();
}

at::Tensor poisson_distinction_loss(const std::vector<at::Tensor>& probs_per_layer,
                                    const std::vector<at::Tensor>& lambdas, const at::Tensor& mask) {
  TORCH_CHECK(!probs_per_layer.empty(), "poisson_distinction_loss: no layers");
  TORCH_CHECK(probs_per_layer.size() == lambdas.size(), "poisson_distinction_loss: one lambda per layer");
  at::Tensor total, tokens;
  for (size_t l = 0; l < probs_per_layer.size(); ++l) {
    const at::Tensor& p = probs_per_layer[l];
    TORCH_CHECK(p.dim() == 2, "poisson_distinction_loss: probs must be [T, E]");
    const at::Tensor q = poisson_target(p.size(1), lambdas[l]).to(p.scalar_type());
    const at::Tensor per_token = (q * at::log(q / (sorted_descending(p) + 1e-16)).abs()).sum(-1);  // [T]
    const at::Tensor w = token_weights(mask, p.size(0), per_token);
    const at::Tensor layer_sum = (per_token * w).sum();
    total = total.defined() ? total + layer_sum : layer_sum;
    tokens = tokens.defined() ? tokens + w.sum() : w.sum();
  }
  return total / tokens.clamp_min(1.0);
}

at::Tensor normal_target(int64_t num_experts, const at::Tensor& sigma) {
  TORCH_CHECK(num_experts >= 1, "normal_target: num_experts must be >= 1");
  const at::Tensor s = scalar_of(sigma, "sigma");
  const at::Tensor i = at::arange(0, num_experts, s.options());
  const double mu = num_experts / 2.0;
  return sorted_descending(at::softmax(-(i - mu).pow(2) / (s * s * 2.0), 0));
}

at::Tensor normal_targets(int64_t num_experts, const std::vector<at::Tensor>& sigmas, bool reference_compat) {
  TORCH_CHECK(!sigmas.empty(), "normal_targets: no layers");
  std::vector<at::Tensor> rows;
  if (!reference_compat) {
    for (const auto& s : sigmas) rows.push_back(normal_target(num_experts, s));
    return at::stack(rows);
  }
  // The reference: Normal(mu, sigma).log_prob(i).exp() of every layer, divided by the sum over
  // all layers and experts.
  const double mu = num_experts / 2.0;
  for (const auto& sigma : sigmas) {
    const at::Tensor s = scalar_of(sigma, "sigma");
    const at::Tensor i = at::arange(0, num_experts, s.options());
    rows.push_back(at::exp(-(i - mu).pow(2) / (s * s * 2.0)) / (s * std::sqrt(2.0 * M_PI)));
  }
  const at::Tensor pdf = at::stack(rows);
  return sorted_descending(pdf / pdf.sum());
}

at::Tensor gmoe_batch_counts(const at::Tensor& probs, const at::Tensor& idx, const at::Tensor& mask) {
  TORCH_CHECK(probs.dim() == 2 && idx.dim() == 2 && idx.size(0) == probs.size(0),
              "gmoe_batch_counts: probs [T, E] and idx [T, k] expected");
  const at::Tensor slots = idx.to(at::kLong);
  const at::Tensor selected = probs.gather(1, slots.clamp_min(0));                    // [T, k], pre-renormalisation
  const at::Tensor dense = dense_from_slots(slots, selected, probs.size(1));          // empty slots dropped
  const at::Tensor w = token_weights(mask, probs.size(0), dense).unsqueeze(1);
  return (dense * w).sum(0) * static_cast<double>(idx.size(1));
}

at::Tensor normal_balance_loss(const std::vector<at::Tensor>& counts_per_layer, const std::vector<at::Tensor>& sigmas,
                               bool reference_compat) {
  TORCH_CHECK(!counts_per_layer.empty(), "normal_balance_loss: no layers");
  TORCH_CHECK(counts_per_layer.size() == sigmas.size(), "normal_balance_loss: one sigma per layer");
  std::vector<at::Tensor> rows;
  for (const auto& c : counts_per_layer) rows.push_back(c.reshape({-1}));
  const at::Tensor counts = at::stack(rows);  // [layers, E]
  const at::Tensor target = normal_targets(counts.size(1), sigmas, reference_compat).to(counts.scalar_type());
  const at::Tensor sorted = sorted_descending(counts);
  // The floor only keeps an all-zero count (no token seen yet) from dividing 0 by 0.
  const at::Tensor actual = sorted / sorted.sum(-1, true).clamp_min(1e-30);
  const at::Tensor per_layer = (target * at::log(target / (actual + 1e-8)).abs()).sum(-1);
  return per_layer.mean();
}

GmoeBalanceState::GmoeBalanceState(int64_t num_layers) {
  TORCH_CHECK(num_layers >= 1, "GmoeBalanceState: num_layers must be >= 1");
  running_.resize(static_cast<size_t>(num_layers));
}

at::Tensor GmoeBalanceState::update(int64_t layer, const at::Tensor& probs, const at::Tensor& idx,
                                    const at::Tensor& mask) {
  TORCH_CHECK(layer >= 0 && layer < num_layers(), "GmoeBalanceState: layer ", layer, " out of range");
  const at::Tensor batch = gmoe_batch_counts(probs, idx, mask);
  at::Tensor& running = running_[static_cast<size_t>(layer)];
  const at::Tensor count = running.defined() ? running.to(batch.options()) + batch : batch;
  running = count.detach();
  return count;
}

const at::Tensor& GmoeBalanceState::running(int64_t layer) const {
  TORCH_CHECK(layer >= 0 && layer < num_layers(), "GmoeBalanceState: layer ", layer, " out of range");
  return running_[static_cast<size_t>(layer)];
}

void GmoeBalanceState::set_running(int64_t layer, const at::Tensor& counts) {
  TORCH_CHECK(layer >= 0 && layer < num_layers(), "GmoeBalanceState: layer ", layer, " out of range");
  running_[static_cast<size_t>(layer)] = counts.detach().clone();
}

void GmoeBalanceState::reset() {
  for (auto& r : running_) r = at::Tensor();
}

}  // namespace mf::moe
