// Linear router: logits = W x (+ b), W [E, d] in fp32. Covers Switch top-1 (gate = max prob),
// Mixtral / Qwen2-MoE / OLMoE softmax top-k with or without renormalisation, sigmoid top-k,
// HEMoE's unit-weight straight-through top-k, top-p and dyn-k-max, Tutel's noisy top-k.
#pragma once
#include "moe/routers/router.h"

namespace mf::moe {

class LinearRouterImpl : public RouterImpl {
 public:
  // Random init N(0, init_std) (HEMoE / MoEfication 1e-3, mLoRA 0.02).
  LinearRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, ScoreFn score = ScoreFn::Softmax,
                   RouterNoise noise = {}, bool bias = false, double init_std = 0.02);
  // From a checkpoint weight [E, d] (and bias [E]); stored as fp32.
  LinearRouterImpl(const at::Tensor& weight, SelectionConfig sel, ScoreFn score = ScoreFn::Softmax,
                   RouterNoise noise = {}, const at::Tensor& bias = {});

  RouterOutput route(const at::Tensor& x, bool training) override;
  const char* kind() const override { return "linear"; }
  at::Tensor weight() const { return weight_; }
  at::Tensor bias() const { return bias_; }

 private:
  at::Tensor weight_, bias_;
};
TORCH_MODULE(LinearRouter);

}  // namespace mf::moe
