#include "moe/routers/router.h"

#include "moe/routers/selection.h"

namespace mf::moe {

int64_t RouterImpl::param_count() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

at::Tensor RouterImpl::maybe_jitter(const at::Tensor& x, bool training) const {
  if (!training || noise_.kind != NoiseKind::Jitter || noise_.eps <= 0) return x;
  return x * at::empty_like(x).uniform_(1.0 - noise_.eps, 1.0 + noise_.eps);
}

RouterOutput RouterImpl::finish(at::Tensor logits, bool training) const {
  RouterOutput out;
  out.clean_logits = logits;
  if (training && noise_.kind == NoiseKind::Gauss && noise_.eps > 0) {
    out.noise_std = noise_.eps / static_cast<double>(num_experts_);
    logits = logits + at::randn_like(logits) * out.noise_std;
  }
  out.logits = logits;
  out.probs = score_ == ScoreFn::Softmax ? at::softmax(logits, -1) : at::sigmoid(logits);
  {
    at::NoGradGuard ng;
    out.idx = select_experts(out.probs.detach(), sel_);
  }
  out.gates = gate_values(out.probs, out.idx, sel_.gate);
  return out;
}

}  // namespace mf::moe
