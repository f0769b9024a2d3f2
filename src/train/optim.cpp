#include "train/optim.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
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

namespace {

// The scalars of one AdamW update, in the precision the update runs in.
struct AdamWStep {
  float b1, b2, one_minus_b1, one_minus_b2;
  float grad_scale;  // clipping coefficient, folded in instead of a pass over the gradients
  float decay_mul;   // 1 - lr wd (1 without decay)
  float step_size;   // lr / (1 - b1^t)
  float bc2_sqrt;    // sqrt(1 - b2^t)
  float eps;
};

inline void adamw_scalar(float* p, const float* g, float* m, float* v, int64_t i0, int64_t i1, const AdamWStep& s) {
  for (int64_t i = i0; i < i1; ++i) {
    const float gi = g[i] * s.grad_scale;
    const float mi = m[i] * s.b1 + gi * s.one_minus_b1;
    const float vi = v[i] * s.b2 + gi * gi * s.one_minus_b2;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * s.decay_mul - s.step_size * (mi / (std::sqrt(vi) / s.bc2_sqrt + s.eps));
  }
}

__attribute__((target("avx512f"))) void adamw_avx512(float* p, const float* g, float* m, float* v, int64_t i0,
                                                     int64_t i1, const AdamWStep& s) {
  const __m512 b1 = _mm512_set1_ps(s.b1), b2 = _mm512_set1_ps(s.b2), c1 = _mm512_set1_ps(s.one_minus_b1),
               c2 = _mm512_set1_ps(s.one_minus_b2), gs = _mm512_set1_ps(s.grad_scale),
               dm = _mm512_set1_ps(s.decay_mul), ss = _mm512_set1_ps(s.step_size), bc = _mm512_set1_ps(s.bc2_sqrt),
               eps = _mm512_set1_ps(s.eps);
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    const __m512 gi = _mm512_mul_ps(_mm512_loadu_ps(g + i), gs);
    const __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(m + i), b1), _mm512_mul_ps(gi, c1));
    const __m512 vi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(v + i), b2), _mm512_mul_ps(_mm512_mul_ps(gi, gi), c2));
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc), eps);
    const __m512 upd = _mm512_mul_ps(ss, _mm512_div_ps(mi, denom));
    _mm512_storeu_ps(p + i, _mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(p + i), dm), upd));
  }
  adamw_scalar(p, g, m, v, i, i1, s);
}

const bool kAdamWAvx512 = __builtin_cpu_supports("avx512f");

// One pass over parameter, gradient and both moments (the tensor-op form makes ten): on an MoE
// with 3x the parameters of its dense peer the optimizer step was a fifth of a training step.
void adamw_fused(const at::Tensor& p, const at::Tensor& g, const at::Tensor& m, const at::Tensor& v,
                 const AdamWStep& s) {
  float* pp = p.data_ptr<float>();
  const float* gp = g.data_ptr<float>();
  float* mp = m.data_ptr<float>();
  float* vp = v.data_ptr<float>();
  at::parallel_for(0, p.numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
    if (kAdamWAvx512)
      adamw_avx512(pp, gp, mp, vp, i0, i1, s);
    else
      adamw_scalar(pp, gp, mp, vp, i0, i1, s);
  });
}

}  // namespace

void AdamW::step(double lr, double grad_scale) {
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
    at::Tensor& m = exp_avg_[i];
    at::Tensor& v = exp_avg_sq_[i];
    const bool decay = params_[i].decay && opt_.weight_decay != 0.0;
    if (p.scalar_type() == at::kFloat && g0.scalar_type() == at::kFloat && p.is_contiguous() &&
        g0.is_contiguous() && p.device().is_cpu() && g0.device().is_cpu()) {
      const AdamWStep s{static_cast<float>(opt_.beta1),       static_cast<float>(opt_.beta2),
                        static_cast<float>(1.0 - opt_.beta1), static_cast<float>(1.0 - opt_.beta2),
                        static_cast<float>(grad_scale),       static_cast<float>(decay ? 1.0 - lr * opt_.weight_decay : 1.0),
                        static_cast<float>(step_size),        static_cast<float>(bc2_sqrt),
                        static_cast<float>(opt_.eps)};
      adamw_fused(p, g0, m, v, s);
      continue;
    }
    at::Tensor g = g0.to(at::kFloat);
    if (grad_scale != 1.0) g = g * grad_scale;
    m.mul_(opt_.beta1).add_(g, 1.0 - opt_.beta1);
    v.mul_(opt_.beta2).addcmul_(g, g, 1.0 - opt_.beta2);
    at::Tensor denom = v.sqrt().div_(bc2_sqrt).add_(opt_.eps);
    if (p.scalar_type() == at::kFloat) {
      if (decay) p.mul_(1.0 - lr * opt_.weight_decay);
      p.addcdiv_(m, denom, -step_size);
    } else {
      // Low-precision parameter: update in fp32, round once.
      at::Tensor pf = p.to(at::kFloat);
      if (decay) pf.mul_(1.0 - lr * opt_.weight_decay);
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

double global_grad_norm(const std::vector<NamedParam>& params) {
  at::NoGradGuard no_grad;
  // Sum of squares in double: the norm is logged and compared across runs.
  double total_sq = 0.0;
  for (const auto& p : params) {
    const at::Tensor& g = p.param.grad();
    if (!g.defined()) continue;
    double n = g.to(at::kFloat).norm().item<double>();
    total_sq += n * n;
  }
  return std::sqrt(total_sq);
}

double clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0.0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm) {
  at::NoGradGuard no_grad;
  const double total = global_grad_norm(params);
  const double coef = clip_coefficient(total, max_norm);
  if (coef < 1.0)
    for (const auto& p : params)
      if (p.param.grad().defined()) p.param.mutable_grad().mul_(coef);
  return total;
}

}  // namespace mf
