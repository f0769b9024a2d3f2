// MoEfication's MLP router: scores = W2 tanh(W1 x + b1) + b2 with W1 [E, d] initialised to the
// experts' (L2-normalised) centres and W2 [E, E] to the identity; top-k on the scores, unit
// combine weights by default. Trained with BCE against expert activation targets.
#pragma once
#include "moe/routers/router.h"

namespace mf::moe {

class MlpRouterImpl : public RouterImpl {
 public:
  // centres [E, d]: e.g. mean key of each expert (mlp_router_centres).
  MlpRouterImpl(const at::Tensor& centres, SelectionConfig sel);

  RouterOutput route(const at::Tensor& x, bool training) override;
  const char* kind() const override { return "mlp"; }

 private:
  at::Tensor w1_, b1_, w2_, b2_;
};
TORCH_MODULE(MlpRouter);

// L2-normalised mean key of each expert: the "centre" initialisation of MoEfication routers.
at::Tensor mlp_router_centres(const ExpertBankImpl& bank);

}  // namespace mf::moe
