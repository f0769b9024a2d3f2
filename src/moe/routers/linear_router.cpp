#include "moe/routers/linear_router.h"

#include "moe/kernels.h"
#include "moe/routers/registry.h"
#include "util/rng.h"

namespace mf::moe {

LinearRouterImpl::LinearRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, ScoreFn score,
                                   RouterNoise noise, bool bias, double init_std)
    : RouterImpl(dim, num_experts, sel, score, noise) {
  weight_ = register_parameter("weight", at::randn({num_experts, dim}, at::kFloat) * init_std);
  if (bias) bias_ = register_parameter("bias", at::zeros({num_experts}, at::kFloat));
}

LinearRouterImpl::LinearRouterImpl(const at::Tensor& weight, SelectionConfig sel, ScoreFn score, RouterNoise noise,
                                   const at::Tensor& bias)
    : RouterImpl(weight.size(1), weight.size(0), sel, score, noise) {
  TORCH_CHECK(weight.dim() == 2, "router weight must be [E, d]");
  const at::ScalarType dt = weight.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  weight_ = register_parameter("weight", weight.detach().to(dt).clone());
  if (bias.defined()) bias_ = register_parameter("bias", bias.detach().to(dt).clone());
}

RouterOutput LinearRouterImpl::route(const at::Tensor& x, bool training) {
  const at::ScalarType dt = routing_dtype(x);
  at::Tensor xr = maybe_jitter(x.to(dt), training);
  at::Tensor logits = apply_linear(xr, weight_.to(dt), bias_.defined() ? bias_.to(dt) : at::Tensor());
  return finish(logits, training);
}

RouterEntry linear_router_entry() {
  RouterEntry e;
  e.description = "linear: logits = W x, tensor weight [E, d] (Switch, Mixtral, Qwen2-MoE, OLMoE, HEMoE)";
  e.make = [](const RouterSpec& s) -> Router {
    return std::make_shared<LinearRouterImpl>(at::empty({s.num_experts, s.dim}), s.selection, s.score, s.noise);
  };
  e.tensors = [](const RouterSpec& s) {
    return std::vector<std::pair<std::string, std::vector<int64_t>>>{{"weight", {s.num_experts, s.dim}}};
  };
  // HEMoE / MoEfication: N(0, 0.001), from the project's generator (reproducible across libtorch versions).
  e.init = [](const RouterSpec& s, const RouterInit& init) {
    uint64_t state = init.seed;
    Rng rng(splitmix64(state));
    at::Tensor w = at::empty({s.num_experts, s.dim}, at::kFloat);
    float* d = w.data_ptr<float>();
    for (int64_t i = 0; i < w.numel(); ++i) d[i] = static_cast<float>(0.001 * rng.normal());
    return std::vector<std::pair<std::string, at::Tensor>>{{"weight", w}};
  };
  return e;
}

}  // namespace mf::moe
