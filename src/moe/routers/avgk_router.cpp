#include "moe/routers/avgk_router.h"

#include "moe/expert_bank.h"
#include "moe/kernels.h"
#include "moe/routers/registry.h"

namespace mf::moe {

AvgKRouterImpl::AvgKRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, RouterNoise noise,
                               AvgKOptions opt)
    : RouterImpl(dim, num_experts, sel, ScoreFn::Softmax, noise), opt_(opt) {
  gate_ = register_buffer("gate", at::zeros({num_experts, dim}, at::kFloat));
}

AvgKRouterImpl::AvgKRouterImpl(const ExpertBankImpl& bank, SelectionConfig sel, RouterNoise noise, AvgKOptions opt)
    : AvgKRouterImpl(bank.dim(), bank.num_experts(), sel, noise, opt) {
  const double m = opt_.momentum;
  opt_.momentum = 0.0;  // the first refresh sets the gate outright
  refresh(bank);
  opt_.momentum = m;
}

void AvgKRouterImpl::refresh(const ExpertBankImpl& bank) {
  at::NoGradGuard ng;
  const auto dense = bank.dense_equivalent();
  std::vector<at::Tensor> rows;
  for (int64_t e = 0; e < bank.num_experts(); ++e) rows.push_back(dense->keys(e).to(at::kFloat).mean(0));
  at::Tensor g = at::stack(rows);
  if (opt_.normalize) g = g / g.norm(2, 1, true).clamp_min(1e-12);
  if (opt_.momentum > 0) g = gate_ * opt_.momentum + g * (1.0 - opt_.momentum);
  gate_.copy_(g);
}

RouterOutput AvgKRouterImpl::route(const at::Tensor& x, bool training) {
  const at::ScalarType dt = routing_dtype(x);
  at::Tensor logits = apply_linear(x.to(dt), gate_.to(dt));
  return finish(logits, training);
}

RouterEntry avgk_router_entry() {
  RouterEntry e;
  e.description = "EMoE avg-k: logit_e = mean key of expert e . x, computed from the experts (no tensor)";
  e.make = [](const RouterSpec& s) -> Router {
    return std::make_shared<AvgKRouterImpl>(s.dim, s.num_experts, s.selection, s.noise);
  };
  e.tensors = [](const RouterSpec&) { return std::vector<std::pair<std::string, std::vector<int64_t>>>{}; };
  e.init = [](const RouterSpec&, const RouterInit&) { return std::vector<std::pair<std::string, at::Tensor>>{}; };
  e.from_experts = true;
  return e;
}

}  // namespace mf::moe
