// EMoE avg-k gating: the gate vector of expert e is the mean of its neurons' keys (rows of
// its gate / first projection), so logit_e = mean pre-activation of the expert's neurons.
// The gate is a buffer, never trained by gradient: refresh() recomputes it from the current
// expert weights and the trainer calls it after every optimizer step. Selected experts get
// weight 1 (GateMode::Ones), so k = E recovers the dense FFN.
#pragma once
#include "moe/routers/router.h"

namespace mf::moe {

struct AvgKOptions {
  bool normalize = false;  // L2-normalise each gate vector
  double momentum = 0.0;   // gate <- m * gate + (1 - m) * mean key
};

class AvgKRouterImpl : public RouterImpl {
 public:
  // sel.gate is normally Ones; noise Gauss with eps = gate_noise (EMoE: 1.0) in training.
  // The gate is zero until the first refresh().
  AvgKRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, RouterNoise noise = {}, AvgKOptions opt = {});
  AvgKRouterImpl(const ExpertBankImpl& bank, SelectionConfig sel, RouterNoise noise = {}, AvgKOptions opt = {});

  RouterOutput route(const at::Tensor& x, bool training) override;
  void after_optimizer_step(const ExpertBankImpl& bank) override { refresh(bank); }
  const char* kind() const override { return "avgk"; }
  void refresh(const ExpertBankImpl& bank);
  at::Tensor gate() const { return gate_; }

 private:
  AvgKOptions opt_;
  at::Tensor gate_;  // [E, d] fp32 buffer
};
TORCH_MODULE(AvgKRouter);

}  // namespace mf::moe
