// A LoRA expert bank: frozen dense base weights plus a low-rank delta per expert on each
// projection (gate / up / down):
//   G_e = G_b(e) + s B_g,e A_g,e,   U_e = U_b(e) + s B_u,e A_u,e,   D_e = D_b(e) + s B_d,e A_d,e
// The base holds either one expert per expert (LoRA on the experts of an MoE checkpoint) or a
// single expert that every expert shares (MixLoRA / LoRAMoE / MoLA: LoRA experts on one frozen
// FFN). With a shared base, forward_rows computes G_b x and U_b x once per token and gathers the
// rows, instead of once per (token, expert) pair. The low-rank path runs in the adapters' dtype
// (fp32 over bf16 base weights) with dropout on its input in training mode.
#pragma once
#include "moe/expert_bank.h"

namespace mf::moe {

struct LoraDelta {
  at::Tensor A, B;     // A [r, in], B [out, r]; undefined = no delta on this projection
  double scale = 1.0;  // alpha / r
  bool defined() const { return A.defined(); }
};
struct LoraExpertDeltas {
  LoraDelta gate, up, down;  // gate and up act on x [d]; down on the hidden [f]
};

class LoraExpertBankImpl : public ExpertBankImpl {
 public:
  // deltas: one entry per expert; base has deltas.size() experts or exactly one (shared). The
  // delta tensors are not registered here: they belong to the adapters that own them.
  LoraExpertBankImpl(DenseExpertBank base, std::vector<LoraExpertDeltas> deltas, double dropout = 0.0);

  at::ScalarType dtype() const override { return base_->dtype(); }
  int64_t expert_params(int64_t e) const override;
  const char* kind() const override { return "lora"; }
  at::Tensor forward_hidden(int64_t e, const at::Tensor& x) const override;
  at::Tensor forward_output(int64_t e, const at::Tensor& hidden) const override;
  at::Tensor forward_rows(const at::Tensor& x, const RoutingPlan& plan, const ExpertCallbacks* cb) const override;
  std::shared_ptr<const DenseExpertBankImpl> dense_equivalent() const override;

  bool shared_base() const { return shared_; }
  const DenseExpertBankImpl& base() const { return *base_; }
  const LoraExpertDeltas& deltas(int64_t e) const { return deltas_[e]; }

 private:
  int64_t base_expert(int64_t e) const { return shared_ ? 0 : e; }
  at::Tensor delta(const LoraDelta& d, const at::Tensor& x) const;
  // Expert e's hidden from its base pre-activation [n, n_in f] and its input x [n, d].
  at::Tensor hidden_from(int64_t e, at::Tensor pre, const at::Tensor& x) const;

  DenseExpertBank base_;
  std::vector<LoraExpertDeltas> deltas_;
  double dropout_;
  bool shared_;
};
using LoraExpertBank = std::shared_ptr<LoraExpertBankImpl>;

}  // namespace mf::moe
