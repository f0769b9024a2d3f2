#include "moe/routers/mlp_router.h"

#include "moe/expert_bank.h"

namespace mf::moe {

MlpRouterImpl::MlpRouterImpl(const at::Tensor& centres, SelectionConfig sel)
    : RouterImpl(centres.size(1), centres.size(0), sel, ScoreFn::Softmax, {}) {
  const int64_t E = centres.size(0);
  w1_ = register_parameter("w1", centres.detach().to(at::kFloat).clone());
  b1_ = register_parameter("b1", at::zeros({E}, at::kFloat));
  w2_ = register_parameter("w2", at::eye(E, at::kFloat));
  b2_ = register_parameter("b2", at::zeros({E}, at::kFloat));
}

RouterOutput MlpRouterImpl::route(const at::Tensor& x, bool training) {
  const at::ScalarType dt = routing_dtype(x);
  at::Tensor h = at::tanh(at::linear(x.to(dt), w1_.to(dt), b1_.to(dt)));
  return finish(at::linear(h, w2_.to(dt), b2_.to(dt)), training);
}

at::Tensor mlp_router_centres(const ExpertBankImpl& bank) {
  at::NoGradGuard ng;
  std::vector<at::Tensor> rows;
  for (int64_t e = 0; e < bank.num_experts(); ++e) rows.push_back(bank.keys(e).to(at::kFloat).mean(0));
  at::Tensor c = at::stack(rows);
  return c / c.norm(2, 1, true).clamp_min(1e-12);
}

}  // namespace mf::moe
