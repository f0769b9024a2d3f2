// Optimisation pieces of the trainer: the learning-rate schedule, AdamW with state that can be
// saved and restored exactly, and gradient clipping by global norm. docs/training.md has the
// formulas.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mf {

// Linear warmup from 0 to `lr` over `warmup_steps`, then cosine decay to `min_lr` at
// `max_steps` (HF transformers' "cosine_with_min_lr"). `step` is the 0-based index of the
// optimizer step about to be taken, so the very first step runs at lr 0 when warmup > 0.
struct LrSchedule {
  double lr = 3e-4;
  double min_lr = 3e-5;
  int64_t warmup_steps = 0;
  int64_t max_steps = 1;
  double at(int64_t step) const;
};

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

// A parameter the optimizer updates, under a stable name (the checkpoint key of its state).
struct NamedParam {
  std::string name;
  at::Tensor param;
  bool decay = true;  // decoupled weight decay applies
};

// Splits a model's named parameters for AdamW: tensors shared under several names (tied
// embeddings) appear once, under their first name; frozen tensors (requires_grad false) are
// left out; with `no_decay_1d`, 1-D tensors (norm weights, biases) get no weight decay, and
// names containing any of `no_decay_names` get none either (e.g. "embed_tokens").
std::vector<NamedParam> select_params(const std::vector<std::pair<std::string, at::Tensor>>& named,
                                      bool no_decay_1d, const std::vector<std::string>& no_decay_names);

// AdamW (Loshchilov & Hutter), exactly torch.optim.AdamW's update in fp32 state:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p *= 1 - lr wd;
//   p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
// Parameters without a gradient are skipped (their step count still advances with the
// optimizer's, as all parameters share one t).
class AdamW {
 public:
  AdamW(std::vector<NamedParam> params, AdamWOptions options);

  void step(double lr);
  void zero_grad();
  int64_t steps_taken() const { return t_; }
  const std::vector<NamedParam>& params() const { return params_; }

  // State as named tensors ("exp_avg.<name>", "exp_avg_sq.<name>") plus the step count.
  std::vector<std::pair<std::string, at::Tensor>> state_tensors() const;
  // Restores what state_tensors() produced; throws mf::Error naming `origin` on a missing or
  // mis-shaped entry.
  void load_state(const std::vector<std::pair<std::string, at::Tensor>>& tensors, int64_t steps_taken,
                  const std::string& origin);

 private:
  std::vector<NamedParam> params_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  AdamWOptions opt_;
  int64_t t_ = 0;
};

// Scales all gradients so that their global L2 norm is at most `max_norm` (when max_norm > 0)
// and returns the norm before clipping, as torch.nn.utils.clip_grad_norm_ does
// (coefficient max_norm / (norm + 1e-6), applied only when below 1). `norm` >= 0: the global
// norm is given (gradients spread over ranks), not computed from `params`.
double clip_grad_norm(const std::vector<NamedParam>& params, double max_norm, double norm = -1.0);

}  // namespace mf
