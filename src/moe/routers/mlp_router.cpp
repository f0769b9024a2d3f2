#include "moe/routers/mlp_router.h"

#include "moe/expert_bank.h"
#include "moe/routers/registry.h"

namespace mf::moe {

namespace {
// Parameters under the Sequential's names: "0.weight" (W1) and "2.weight" (W2).
struct SequentialLinear : torch::nn::Module {
  explicit SequentialLinear(at::Tensor w) { weight = register_parameter("weight", std::move(w)); }
  at::Tensor weight;
};
}  // namespace

MlpRouterImpl::MlpRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, ScoreFn score)
    : RouterImpl(dim, num_experts, sel, score) {
  w1_ = register_module("0", std::make_shared<SequentialLinear>(at::empty({num_experts, dim})))->weight;
  w2_ = register_module("2", std::make_shared<SequentialLinear>(at::empty({num_experts, num_experts})))->weight;
}

MlpRouterImpl::MlpRouterImpl(const at::Tensor& centres, SelectionConfig sel, ScoreFn score)
    : MlpRouterImpl(centres.size(1), centres.size(0), sel, score) {
  at::NoGradGuard ng;
  w1_.copy_(centres.detach().to(at::kFloat));
  w2_.copy_(at::eye(num_experts_, at::kFloat));
}

RouterOutput MlpRouterImpl::route(const at::Tensor& x, bool training) {
  const at::ScalarType dt = routing_dtype(x);
  at::Tensor xr = x.to(dt);
  xr = xr / xr.norm(2, -1, true).clamp_min(1e-12);
  at::Tensor h = at::tanh(at::linear(xr, w1_.to(dt)));
  return finish(at::linear(h, w2_.to(dt)), training);
}

at::Tensor mlp_router_centres(const ExpertBankImpl& bank) {
  at::NoGradGuard ng;
  const auto dense = bank.dense_equivalent();
  std::vector<at::Tensor> rows;
  for (int64_t e = 0; e < bank.num_experts(); ++e) rows.push_back(dense->keys(e).to(at::kFloat).mean(0));
  at::Tensor c = at::stack(rows);
  return c / c.norm(2, 1, true).clamp_min(1e-12);
}

RouterEntry mlp_router_entry() {
  RouterEntry e;
  e.description = "MoEfication MLP: W2 tanh(W1 x/|x|), tensors 0.weight [E, d], 2.weight [E, E]";
  e.make = [](const RouterSpec& s) -> Router {
    return std::make_shared<MlpRouterImpl>(s.dim, s.num_experts, s.selection, s.score);
  };
  e.tensors = [](const RouterSpec& s) {
    return std::vector<std::pair<std::string, std::vector<int64_t>>>{{"0.weight", {s.num_experts, s.dim}},
                                                                      {"2.weight", {s.num_experts, s.num_experts}}};
  };
  // MoEfication: W1 row e = mean of expert e's L2-normalised gate rows, W2 = I.
  e.init = [](const RouterSpec& s, const RouterInit& init) {
    at::Tensor w1 = at::empty({s.num_experts, s.dim}, at::kDouble);
    for (int64_t j = 0; j < s.num_experts; ++j) {
      at::Tensor rows = init.keys.at(static_cast<size_t>(j)).to(at::kDouble);
      w1[j] = (rows / rows.norm(2, {1}, true).clamp_min(1e-12)).mean(0);
    }
    return std::vector<std::pair<std::string, at::Tensor>>{{"0.weight", w1.to(at::kFloat)},
                                                            {"2.weight", at::eye(s.num_experts, at::kFloat)}};
  };
  return e;
}

}  // namespace mf::moe
