// Shazeer et al.'s noisy top-k gating with a learned noise scale, as the GPT-2 MoE of HyperMoE
// (MEO code) runs it (moe_routing_training.md §3.3): clean logits W_g x; in training the logits
// are clean + N(0, 1) * (softplus(W_n x) + noise_epsilon); softmax over all experts, top-k,
// combine weights per the selection's gate mode (renormalised in the reference). Tensors
// weight [E, d] (W_g transposed) and noise.weight [E, d]; the reference starts both at zero.
// The per-(token, expert) noise std is reported (RouterOutput::noise_stddev) for Shazeer's load
// estimate (moe/losses.h).
#pragma once
#include "moe/routers/router.h"

namespace mf::moe {

class NoisyTopKRouterImpl : public RouterImpl {
 public:
  // Zero-initialised weights.
  NoisyTopKRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, double noise_epsilon = 0.01);

  RouterOutput route(const at::Tensor& x, bool training) override;
  const char* kind() const override { return "noisy_topk"; }
  at::Tensor weight() const { return weight_; }
  at::Tensor noise_weight() const { return noise_->weight; }

 private:
  at::Tensor weight_;
  torch::nn::Linear noise_{nullptr};
  double noise_epsilon_;
};
TORCH_MODULE(NoisyTopKRouter);

}  // namespace mf::moe
