#include "train/optim.h"

#include <cmath>
#include <unordered_map>
#include <unordered_set>

#include "util/error.h"

namespace mf {

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  int64_t decay_steps = max_steps - warmup_steps;
  if (decay_steps <= 0) return lr;
  double progress = static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps);
  if (progress > 1.0) progress = 1.0;
  return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

std::vector<NamedParam> select_params(const std::vector<std::pair<std::string, at::Tensor>>& named,
                                      bool no_decay_1d, const std::vector<std::string>& no_decay_names) {
  std::vector<NamedParam> out;
  std::unordered_set<const void*> seen;
  for (const auto& [name, t] : named) {
    if (!t.requires_grad()) continue;
    if (!seen.insert(t.unsafeGetTensorImpl()).second) continue;
    bool decay = !(no_decay_1d && t.dim() <= 1);
    for (const auto& pattern : no_decay_names)
      if (!pattern.empty() && name.find(pattern) != std::string::npos) decay = false;
    out.push_back({name, t, decay});
  }
  return out;
}

AdamW::AdamW(std::vector<NamedParam> params, AdamWOptions options) : params_(std::move(params)), opt_(options) {
  for (const auto& p : params_) {
    // Moments in fp32 whatever the parameter dtype, as mixed-precision training keeps them.
    exp_avg_.push_back(at::zeros(p.param.sizes(), p.param.options().dtype(at::kFloat)));
    exp_avg_sq_.push_back(at::zeros(p.param.sizes(), p.param.options().dtype(at::kFloat)));
  }
}

void AdamW::step(double lr) {
  at::NoGradGuard no_grad;
  ++t_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(t_));
  const double step_size = lr / bc1;
  const double bc2_sqrt = std::sqrt(bc2);
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor p = params_[i].param;
    const at::Tensor& g0 = p.grad();
    if (!g0.defined()) continue;
    at::Tensor g = g0.to(at::kFloat);
    at::Tensor& m = exp_avg_[i];
    at::Tensor& v = exp_avg_sq_[i];
    m.mul_(opt_.beta1).add_(g, 1.0 - opt_.beta1);
    v.mul_(opt_.beta2).addcmul_(g, g, 1.0 - opt_.beta2);
    at::Tensor denom = v.sqrt().div_(bc2_sqrt).add_(opt_.eps);
    if (p.scalar_type() == at::kFloat) {
      if (params_[i].decay && opt_.weight_decay != 0.0) p.mul_(1.0 - lr * opt_.weight_decay);
      p.addcdiv_(m, denom, -step_size);
    } else {
      // Low-precision parameter: update in fp32, round once.
      at::Tensor pf = p.to(at::kFloat);
      if (params_[i].decay && opt_.weight_decay != 0.0) pf.mul_(1.0 - lr * opt_.weight_decay);
      pf.addcdiv_(m, denom, -step_size);
      p.copy_(pf);
    }
  }
}

void AdamW::zero_grad() {
  // Dropped rather than zeroed: the next backward allocates fresh gradients.
  for (auto& p : params_) p.param.mutable_grad().reset();
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + params_[i].name, exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + params_[i].name, exp_avg_sq_[i]);
  }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t steps_taken,
                       const std::string& origin) {
  std::unordered_map<std::string, at::Tensor> by_name(tensors.begin(), tensors.end());
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (auto [prefix, dst] : {std::pair<const char*, at::Tensor*>{"exp_avg.", &exp_avg_[i]},
                               std::pair<const char*, at::Tensor*>{"exp_avg_sq.", &exp_avg_sq_[i]}}) {
      std::string key = prefix + params_[i].name;
      auto it = by_name.find(key);
      if (it == by_name.end()) fail_file(origin, "optimizer state has no tensor '" + key + "'");
      if (it->second.sizes() != dst->sizes()) fail_file(origin, "optimizer tensor '" + key + "' has the wrong shape");
      dst->copy_(it->second);
    }
  }
  if (steps_taken < 0) fail_file(origin, "negative optimizer step count");
  t_ = steps_taken;
}

double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm, double norm) {
  at::NoGradGuard no_grad;
  // Sum of squares in double: the norm is logged and compared across runs.
  double total_sq = 0.0;
  for (const auto& p : params) {
    const at::Tensor& g = p.param.grad();
    if (norm >= 0.0 || !g.defined()) continue;
    double n = g.to(at::kFloat).norm().item<double>();
    total_sq += n * n;
  }
  const double total = norm >= 0.0 ? norm : std::sqrt(total_sq);
  if (max_norm > 0.0) {
    double coef = max_norm / (total + 1e-6);
    if (coef < 1.0)
      for (const auto& p : params)
        if (p.param.grad().defined()) p.param.mutable_grad().mul_(coef);
  }
  return total;
}

}  // namespace mf
