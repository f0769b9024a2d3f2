// Router interface: x [T, d] -> logits, scores, selected experts and combine weights.
// Routing runs in fp32 (fp64 when the input is fp64, for gradient checks) whatever the
// dtype of x. Noise and jitter are applied only when `training` is true.
#pragma once
#include <torch/torch.h>

#include "moe/config.h"

namespace mf::moe {

class ExpertBankImpl;

struct RouterOutput {
  at::Tensor logits;        // [T, E] the logits the selection used (noisy in training)
  at::Tensor clean_logits;  // [T, E] before additive Gauss noise (same tensor without it)
  double noise_std = 0.0;   // std of the additive logit noise (0 = none), for Shazeer's load
  at::Tensor noise_stddev;  // [T, E] learned per-entry noise std (noisy_topk in training), else undefined
  at::Tensor probs;         // [T, E] scores: softmax / sigmoid of `logits`
  at::Tensor idx;           // [T, K] int64 selected experts, -1 = empty slot
  at::Tensor gates;         // [T, K] combine weights (autograd as the gate mode says)
};

struct RouterNoise {
  NoiseKind kind = NoiseKind::None;
  double eps = 0.0;  // jitter half-width, or Tutel gate_noise (std = eps / E)
};

class RouterImpl : public torch::nn::Module {
 public:
  RouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, ScoreFn score = ScoreFn::Softmax,
             RouterNoise noise = {})
      : dim_(dim), num_experts_(num_experts), sel_(sel), score_(score), noise_(noise) {}
  virtual ~RouterImpl() = default;

  // x: [T, d] any floating dtype.
  virtual RouterOutput route(const at::Tensor& x, bool training) = 0;
  // Scores, selection and gates for given logits [T, E] (e.g. logits an observer replaced);
  // no noise is added.
  RouterOutput rescore(const at::Tensor& logits) const { return finish(logits, false); }
  // Hook called by the trainer after every optimizer step (EMoE avg-k gate refresh).
  virtual void after_optimizer_step(const ExpertBankImpl& bank) {}
  virtual const char* kind() const = 0;

  int64_t dim() const { return dim_; }
  int64_t num_experts() const { return num_experts_; }
  const SelectionConfig& selection() const { return sel_; }
  ScoreFn score_fn() const { return score_; }
  const RouterNoise& noise() const { return noise_; }
  int64_t param_count() const;

 protected:
  // Shared tail of every router: Gauss noise (training), scores, selection, gates.
  RouterOutput finish(at::Tensor logits, bool training) const;
  // Routing dtype for input x: fp64 stays fp64, everything else fp32.
  static at::ScalarType routing_dtype(const at::Tensor& x) {
    return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  }
  // Multiplicative input jitter (Switch), training only.
  at::Tensor maybe_jitter(const at::Tensor& x, bool training) const;

  int64_t dim_, num_experts_;
  SelectionConfig sel_;
  ScoreFn score_;
  RouterNoise noise_;
};

using Router = std::shared_ptr<RouterImpl>;

}  // namespace mf::moe
