// MoEfication's MLP router: logits = W2 tanh(W1 x̂), x̂ = x / |x|, W1 [E, d], W2 [E, E], as
// PyTorch's Sequential(Linear(d, E, bias=False), Tanh, Linear(E, E, bias=False)) — so its
// checkpoint tensors are named 0.weight and 2.weight. Top-k on the logits; trained offline with
// BCE against expert activation targets (train/mlp_router_fit.h), W1 starting from the experts'
// L2-normalised mean keys and W2 from the identity.
#pragma once
#include "moe/routers/router.h"

namespace mf::moe {

class MlpRouterImpl : public RouterImpl {
 public:
  // Uninitialised weights (a checkpoint fills them).
  MlpRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, ScoreFn score = ScoreFn::Softmax);
  // W1 = centres [E, d] (e.g. mlp_router_centres), W2 = I.
  MlpRouterImpl(const at::Tensor& centres, SelectionConfig sel, ScoreFn score = ScoreFn::Softmax);

  RouterOutput route(const at::Tensor& x, bool training) override;
  const char* kind() const override { return "mlp"; }
  at::Tensor w1() const { return w1_; }
  at::Tensor w2() const { return w2_; }

 private:
  at::Tensor w1_, w2_;
};

// L2-normalised mean key of each expert: the "centre" initialisation of MoEfication routers.
at::Tensor mlp_router_centres(const ExpertBankImpl& bank);

}  // namespace mf::moe
