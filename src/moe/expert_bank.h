// Expert banks: the experts of one MoE layer behind one interface (ExpertBankImpl), so the
// layer's autograd path works with any bank and its fast inference paths with dense ones.
//   * DenseExpertBankImpl: plain weights. Homogeneous banks keep stacked tensors ([E, n_in*f, d]
//     input projection with the gate rows first then the up rows, [E, d, f] output projection —
//     llama.cpp's ffn_gate_up_exps layout); heterogeneous banks (HEMoE: experts of 512..2048
//     neurons in one layer) keep one tensor per expert, so no FLOP or byte is spent on padding.
//   * LoraExpertBankImpl (moe/lora_expert_bank.h): frozen base weights plus per-expert low-rank
//     deltas (LoRA on expert projections, MixLoRA-style experts sharing one base FFN).
#pragma once
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <vector>

#include "moe/config.h"
#include "moe/routing_plan.h"

namespace mf::moe {

class DenseExpertBankImpl;

// Observers of one expert's computation (the runtime's hooks). Each returns the tensor the
// layer continues with: its argument or a replacement of the same shape. `expert` is -1 for
// the shared expert; `tokens` (int64 [n]) are the rows of x the expert processed (undefined for
// the shared expert: every row).
struct ExpertCallbacks {
  std::function<at::Tensor(int64_t expert, const at::Tensor& hidden, const at::Tensor& tokens)>
      expert_hidden;  // [n, f_e]: act(G x) * (U x)
  std::function<at::Tensor(int64_t expert, const at::Tensor& y, const at::Tensor& tokens)>
      expert_output;  // [n, d], before the combine weight
  bool per_expert() const { return static_cast<bool>(expert_hidden) || static_cast<bool>(expert_output); }
};

class ExpertBankImpl : public torch::nn::Module {
 public:
  ~ExpertBankImpl() override = default;

  int64_t num_experts() const { return num_experts_; }
  int64_t dim() const { return dim_; }
  int64_t width(int64_t e) const { return widths_[e]; }
  const std::vector<int64_t>& widths() const { return widths_; }
  int64_t total_width() const;
  bool gated() const { return gated_; }
  Act act() const { return act_; }
  // dtype the experts compute in (inputs are cast to it).
  virtual at::ScalarType dtype() const = 0;
  // Parameters one token routed to expert e uses.
  virtual int64_t expert_params(int64_t e) const = 0;
  virtual const char* kind() const = 0;

  // Expert e on x [n, d] with generic libtorch ops (autograd-capable); returns [n, d].
  at::Tensor forward_expert(int64_t e, const at::Tensor& x) const { return forward_output(e, forward_hidden(e, x)); }
  // The two halves of forward_expert, for observers of the intermediate activation:
  // hidden = act(G x + b) * (U x + b) (or act(W1 x + b1)) [n, f_e]; output = W2 hidden + b2 [n, d].
  virtual at::Tensor forward_hidden(int64_t e, const at::Tensor& x) const = 0;
  virtual at::Tensor forward_output(int64_t e, const at::Tensor& hidden) const = 0;
  // Every kept row of the plan through its expert, autograd-capable: x [T, d] -> [rows, d] in
  // plan order (dtype()). The default gathers the rows and runs each expert; a bank overrides
  // it to share work between experts (a LoRA bank's shared base projection once per token).
  virtual at::Tensor forward_rows(const at::Tensor& x, const RoutingPlan& plan, const ExpertCallbacks* cb) const;

  // The bank as plain weights, when it is one (the fused and grouped inference kernels read
  // raw weights); nullptr otherwise.
  virtual const DenseExpertBankImpl* as_dense() const { return nullptr; }
  // Plain weights that compute the same function (a copy for banks that are not dense, without
  // gradient): what avg-k gates and router initialisations read.
  virtual std::shared_ptr<const DenseExpertBankImpl> dense_equivalent() const = 0;

 protected:
  ExpertBankImpl() = default;
  int64_t num_experts_ = 0, dim_ = 0;
  Act act_ = Act::SiLU;
  bool gated_ = true;
  std::vector<int64_t> widths_;
};
using ExpertBank = std::shared_ptr<ExpertBankImpl>;

class DenseExpertBankImpl : public ExpertBankImpl {
 public:
  // Homogeneous: w_in [E, (gated ? 2 : 1) * f, d], w_out [E, d, f], optional b_in [E, n_in*f], b_out [E, d].
  DenseExpertBankImpl(at::Tensor w_in, at::Tensor w_out, Act act, bool gated, at::Tensor b_in = {},
                      at::Tensor b_out = {});
  // Heterogeneous (or any): one [(gated ? 2 : 1) * f_e, d] / [d, f_e] pair (+ biases) per expert.
  DenseExpertBankImpl(std::vector<at::Tensor> w_in, std::vector<at::Tensor> w_out, Act act, bool gated,
                      std::vector<at::Tensor> b_in = {}, std::vector<at::Tensor> b_out = {});

  at::ScalarType dtype() const override;
  int64_t expert_params(int64_t e) const override;
  const char* kind() const override { return "dense"; }
  bool homogeneous() const { return stacked_; }
  bool has_bias_in() const { return has_b_in_; }
  bool has_bias_out() const { return has_b_out_; }

  // Per-expert views (no copies).
  at::Tensor w_in(int64_t e) const;
  at::Tensor w_out(int64_t e) const;
  at::Tensor b_in(int64_t e) const;   // undefined when there is no input bias
  at::Tensor b_out(int64_t e) const;  // undefined when there is no output bias
  // Rows of the gate (or only) projection of expert e: [f_e, d] — the "keys" of its neurons.
  at::Tensor keys(int64_t e) const { return w_in(e).narrow(0, 0, widths_[e]); }

  at::Tensor forward_hidden(int64_t e, const at::Tensor& x) const override;
  at::Tensor forward_output(int64_t e, const at::Tensor& hidden) const override;
  // Inference (no autograd): writes expert e of x [n, d] into out [n, d] with out-variant GEMMs.
  void forward_expert_into(int64_t e, const at::Tensor& x, at::Tensor out) const;

  const DenseExpertBankImpl* as_dense() const override { return this; }
  std::shared_ptr<const DenseExpertBankImpl> dense_equivalent() const override;

 private:
  bool stacked_ = false, has_b_in_ = false, has_b_out_ = false;
  at::Tensor w_in_s_, w_out_s_, b_in_s_, b_out_s_;                  // stacked (homogeneous)
  std::vector<at::Tensor> w_in_l_, w_out_l_, b_in_l_, b_out_l_;     // per expert (heterogeneous)
};
using DenseExpertBank = std::shared_ptr<DenseExpertBankImpl>;

// act(h) with libtorch ops (autograd-capable).
at::Tensor apply_act(const at::Tensor& h, Act act);

// The expert nonlinearity applied to pre-activations h [n, (gated ? 2 : 1) f] (autograd ops).
at::Tensor expert_hidden_from_preact(const at::Tensor& h, int64_t f, bool gated, Act act);

// --- Builders from HF layouts --------------------------------------------------------------

// SwiGLU experts from stacked HF tensors: gate [E, f, d], up [E, f, d], down [E, d, f]
// (gate and up are fused into one [E, 2f, d] tensor).
DenseExpertBank expert_bank_from_stacked(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& down,
                                    Act act = Act::SiLU);
// Already fused gate_up [E, 2f, d] (gate half first) and down [E, d, f].
DenseExpertBank expert_bank_from_fused(const at::Tensor& gate_up, const at::Tensor& down, Act act = Act::SiLU);
// Per-expert lists (Mixtral w1/w3/w2, or heterogeneous widths): gate[e], up[e] [f_e, d], down[e] [d, f_e].
DenseExpertBank expert_bank_from_lists(const std::vector<at::Tensor>& gate, const std::vector<at::Tensor>& up,
                                  const std::vector<at::Tensor>& down, Act act = Act::SiLU);

// Experts from a partition of a dense FFN's neurons (dense_to_moe.md §0): SwiGLU when `up` is
// defined (gate/up [F, d], down [d, F]); else a 2-matrix FFN act(W1 x + b1) with W1 = gate,
// W2 = down. `parts[e]` lists expert e's neurons. b2 [d] (optional) is stored as b2 * b2_scale
// in every expert (EMoE: b2_scale = 1/k). A homogeneous partition gives a stacked bank.
DenseExpertBank expert_bank_from_partition(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& down,
                                      const std::vector<std::vector<int64_t>>& parts, Act act,
                                      const at::Tensor& b1 = {}, const at::Tensor& b2 = {},
                                      double b2_scale = 1.0);

}  // namespace mf::moe
