// The offline MLP-router fit (mlp_router_fit.h).
#include "train/mlp_router_fit.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "util/error.h"
#include "util/rng.h"

namespace mf {

at::Tensor swiglu_expert_mass(const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w) {
  at::Tensor xf = x.to(at::kFloat);
  return (at::silu(at::linear(xf, gate_w.to(at::kFloat))) * at::linear(xf, up_w.to(at::kFloat))).abs().sum(1);
}

double topk_mass_recall(const at::Tensor& scores, const at::Tensor& mass, int64_t k) {
  at::Tensor idx = std::get<1>(scores.topk(k, 1));
  const double total = mass.sum().item<double>();
  return total > 0 ? mass.gather(1, idx).sum().item<double>() / total : 0.0;
}

namespace {

at::Tensor mlp_scores(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  at::Tensor xn = x / x.norm(2, 1, true).clamp_min(1e-12);
  return at::linear(at::tanh(at::linear(xn, w1)), w2);
}

at::Tensor batch_targets(const at::Tensor& mass) { return mass / std::get<0>(mass.max(0, true)).clamp_min(1e-12); }

}  // namespace

MlpRouterFit fit_mlp_router(at::Tensor& w1, at::Tensor& w2, const at::Tensor& x, const at::Tensor& mass, int64_t k,
                            const MlpRouterTrainOptions& options, uint64_t seed) {
  const int64_t n = x.size(0);
  if (n < 2) fail("mlp router: fewer than two tokens to fit on");
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  Rng rng(seed);
  for (size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng.below(i)]);
  const int64_t n_val = std::max<int64_t>(1, static_cast<int64_t>(std::floor(options.val_fraction * n)));
  const int64_t n_train = n - n_val;
  at::Tensor all = at::tensor(perm, at::kLong);
  at::Tensor xf = x.to(at::kFloat), mf_ = mass.to(at::kFloat);
  at::Tensor xt = xf.index_select(0, all.slice(0, 0, n_train)), mt = mf_.index_select(0, all.slice(0, 0, n_train));
  at::Tensor xv = xf.index_select(0, all.slice(0, n_train)), mv = mf_.index_select(0, all.slice(0, n_train));

  at::Tensor p1 = w1.detach().to(at::kFloat).clone().set_requires_grad(true);
  at::Tensor p2 = w2.detach().to(at::kFloat).clone().set_requires_grad(true);
  torch::optim::Adam adam({p1, p2}, torch::optim::AdamOptions(options.lr));
  auto val_recall = [&]() {
    at::NoGradGuard g;
    return topk_mass_recall(mlp_scores(xv, p1, p2), mv, k);
  };
  auto val_bce = [&]() {
    at::NoGradGuard g;
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t b = 0; b < xv.size(0); b += options.batch_tokens) {
      const int64_t e = std::min(xv.size(0), b + options.batch_tokens);
      at::Tensor s = mlp_scores(xv.slice(0, b, e), p1, p2);
      sum += at::binary_cross_entropy_with_logits(s, batch_targets(mv.slice(0, b, e))).item<double>() * (e - b);
      cnt += e - b;
    }
    return sum / static_cast<double>(cnt);
  };
  MlpRouterFit fit;
  fit.train_tokens = n_train;
  fit.val_tokens = n_val;
  fit.recall_before = fit.recall_after = val_recall();
  fit.val_bce = val_bce();
  at::Tensor best1 = p1.detach().clone(), best2 = p2.detach().clone();
  for (int64_t epoch = 1; epoch <= options.epochs; ++epoch) {
    std::vector<int64_t> order(static_cast<size_t>(n_train));
    for (int64_t i = 0; i < n_train; ++i) order[static_cast<size_t>(i)] = i;
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    at::Tensor ord = at::tensor(order, at::kLong);
    for (int64_t b = 0; b < n_train; b += options.batch_tokens) {
      at::Tensor idx = ord.slice(0, b, std::min(n_train, b + options.batch_tokens));
      at::Tensor s = mlp_scores(xt.index_select(0, idx), p1, p2);
      at::Tensor loss = at::binary_cross_entropy_with_logits(s, batch_targets(mt.index_select(0, idx)));
      adam.zero_grad();
      loss.backward();
      adam.step();
    }
    const double rec = val_recall();
    if (rec > fit.recall_after) {
      fit.recall_after = rec;
      fit.best_epoch = epoch;
      fit.val_bce = val_bce();
      best1 = p1.detach().clone();
      best2 = p2.detach().clone();
    }
  }
  at::NoGradGuard g;
  w1.copy_(best1.to(w1.scalar_type()));
  w2.copy_(best2.to(w2.scalar_type()));
  return fit;
}

}  // namespace mf
