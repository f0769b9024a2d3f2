#include "moe/routers/noisy_router.h"

#include "moe/routers/registry.h"

namespace mf::moe {

NoisyTopKRouterImpl::NoisyTopKRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, double noise_epsilon)
    : RouterImpl(dim, num_experts, sel, ScoreFn::Softmax), noise_epsilon_(noise_epsilon) {
  weight_ = register_parameter("weight", at::zeros({num_experts, dim}, at::kFloat));
  noise_ = register_module("noise", torch::nn::Linear(torch::nn::LinearOptions(dim, num_experts).bias(false)));
  torch::NoGradGuard ng;
  noise_->weight.zero_();
}

RouterOutput NoisyTopKRouterImpl::route(const at::Tensor& x, bool training) {
  const at::ScalarType dt = routing_dtype(x);
  const at::Tensor xr = x.to(dt);
  at::Tensor clean = at::linear(xr, weight_.to(dt));
  if (!training) return finish(clean, false);
  at::Tensor std = at::softplus(at::linear(xr, noise_->weight.to(dt))) + noise_epsilon_;
  RouterOutput out = finish(clean + at::randn_like(clean) * std, false);
  out.clean_logits = clean;
  out.noise_stddev = std;
  return out;
}

RouterEntry noisy_topk_router_entry() {
  RouterEntry e;
  e.description = "noisy_topk: Shazeer noisy top-k with learned noise (GPT-2 MoE of HyperMoE), tensors weight, "
                  "noise.weight [E, d]";
  e.make = [](const RouterSpec& s) -> Router {
    return std::make_shared<NoisyTopKRouterImpl>(s.dim, s.num_experts, s.selection,
                                                 s.config.value("noise_epsilon", 0.01));
  };
  e.tensors = [](const RouterSpec& s) {
    return std::vector<std::pair<std::string, std::vector<int64_t>>>{{"weight", {s.num_experts, s.dim}},
                                                                      {"noise.weight", {s.num_experts, s.dim}}};
  };
  // The reference's initialisation: both matrices zero.
  e.init = [](const RouterSpec& s, const RouterInit&) {
    return std::vector<std::pair<std::string, at::Tensor>>{{"weight", at::zeros({s.num_experts, s.dim})},
                                                            {"noise.weight", at::zeros({s.num_experts, s.dim})}};
  };
  return e;
}

}  // namespace mf::moe
