#include "moe/routers/avgk_router.h"

#include "moe/expert_bank.h"

namespace mf::moe {

AvgKRouterImpl::AvgKRouterImpl(const ExpertBankImpl& bank, SelectionConfig sel, RouterNoise noise, AvgKOptions opt)
    : RouterImpl(bank.dim(), bank.num_experts(), sel, ScoreFn::Softmax, noise), opt_(opt) {
  gate_ = register_buffer("gate", at::zeros({bank.num_experts(), bank.dim()}, at::kFloat));
  const double m = opt_.momentum;
  opt_.momentum = 0.0;  // the first refresh sets the gate outright
  refresh(bank);
  opt_.momentum = m;
}

void AvgKRouterImpl::refresh(const ExpertBankImpl& bank) {
  at::NoGradGuard ng;
  std::vector<at::Tensor> rows;
  for (int64_t e = 0; e < bank.num_experts(); ++e) rows.push_back(bank.keys(e).to(at::kFloat).mean(0));
  at::Tensor g = at::stack(rows);
  if (opt_.normalize) g = g / g.norm(2, 1, true).clamp_min(1e-12);
  if (opt_.momentum > 0) g = gate_ * opt_.momentum + g * (1.0 - opt_.momentum);
  gate_.copy_(g);
}

RouterOutput AvgKRouterImpl::route(const at::Tensor& x, bool training) {
  const at::ScalarType dt = routing_dtype(x);
  at::Tensor logits = at::linear(x.to(dt), gate_.to(dt));
  return finish(logits, training);
}

}  // namespace mf::moe
