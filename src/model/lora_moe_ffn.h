// The LoRA-MoE FFN block (moe_routing_training.md §4.1, §4.2, §4.5): a dense model's SwiGLU FFN
// becomes a mixture of LoRA experts that share its frozen weights,
//   E_e(x) = (D + s B_d,e A_d,e) [ act((G + s B_g,e A_g,e) x) * ((U + s B_u,e A_u,e) x) ],  s = alpha / r,
//   y      = sum over the token's selected experts of w_e E_e(x)   (it REPLACES the FFN output).
// The computation is src/moe's: a LoRA expert bank over ONE shared base expert (G x and U x are
// computed once per token, MixLoRA's trick) in an MoE layer with the block's router. LoRA math
// runs in the adapters' dtype (fp32; fp64 over an fp64 base) over base weights of any dtype, with
// dropout on the LoRA input in training mode.
//
// Tensor names, relative to the FFN slot ("model.layers.{l}.mlp."); they are the adapter layout:
//   gate_proj.weight, up_proj.weight, down_proj.weight     the frozen base (the dense model's names)
//   experts.{e}.{gate_proj|up_proj|down_proj}.lora_A.weight [r, in]   per targeted projection
//   experts.{e}.{gate_proj|up_proj|down_proj}.lora_B.weight [out, r]
//   router.weight [E, d]                                   linear router (every routing but gmoe)
//   router.{mlp,mlp_struct,proj}.weight, router.convs.{l}.lin.weight,
//   router.poisson_lambda, router.normal_sigma             graph router (gmoe; parameters)
//   router.X, router.edges                                 graph router buffers (frozen, not trained)
// The expert tensors always use gate_proj / up_proj / down_proj, whatever the base calls them.
//
// Trainable: the LoRA tensors and the router's parameters. convert_to_lora_moe freezes every
// parameter the model had before (attention LoRA, if any, is added later by the recipe).
//
// Auxiliary losses (training mode with autograd on) are reported per block with the layer's share
// 1 / L applied, so that their sum over the L layers (Model::aux_losses) is the mean over layers,
// as mLoRA and GMoE pool theirs. For the Mixtral load-balancing loss this is the mean of the
// per-layer losses (mLoRA concatenates the layers' logits first: the two agree when every layer
// routes alike).
#pragma once
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/ffn_block.h"
#include "model/layers.h"
#include "moe/config.h"
#include "moe/expert_bank.h"
#include "moe/gmoe_losses.h"
#include "moe/moe_layer.h"
#include "moe/routers/graph_router.h"

namespace mf {

class Model;

struct LoraMoeOptions {
  // mixlora | mixlora-switch | mixlora-dynamic | loramoe | mola | ming-moe | gmoe
  std::string routing = "mixlora";
  int64_t experts = 8;
  // One expert count per decoder layer (MoLA). Empty: `experts` everywhere, except for mola,
  // whose default is mola_layer_experts(L).
  std::vector<int64_t> layer_experts;
  int64_t top_k = 2;    // 0 = every expert of the layer (dense soft routing, LoRAMoE)
  double top_p = 0.0;   // > 0: top-p selection (mixlora-dynamic) instead of top-k, up to E experts
  moe::GateMode gate = moe::GateMode::Renorm;
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.05;  // on the LoRA input, training mode only
  // Subset of gate_proj, up_proj, down_proj (Mixtral's w1, w3, w2 are accepted as aliases).
  std::vector<std::string> targets = {"gate_proj", "up_proj", "down_proj"};
  double router_init_std = 0.02;  // linear router: N(0, std)
  double jitter = 0.0;            // multiplicative router-input jitter U(1-j, 1+j), training only
  moe::GraphRouterOptions graph;  // gmoe; its activation is always the base FFN's
  // Load balancing (coefficient; 0 = off): Switch's for mixlora-switch, the selection-count form
  // E sum_e f_e P_e for top-p routing (mLoRA's dynamic loss), the Mixtral / HF loss otherwise.
  double aux_coef = 0.0;
  double z_coef = 0.0;        // ST-MoE router z-loss
  double poisson_coef = 0.0;  // gmoe: Poisson distinction loss
  double normal_coef = 0.0;   // gmoe: Normal balance loss
  int64_t capacity = 0;        // tokens per expert and capacity group (0 = dropless)
  int64_t capacity_group = 0;  // tokens per capacity group (0 = the whole micro-batch); mLoRA: one sequence
  // The references' loss numerics, for comparison only (docs/lora-moe.md "Reference compatibility"):
  // padding tokens count in every loss and in GMoE's running counts; the Mixtral load-balancing
  // loss takes the softmax of the probabilities again (the GMoE fork's double softmax); GMoE's
  // Normal target is normalised over the whole [layers x E] tensor (the §4.3 bug), which couples
  // the layers, so the blocks then report no Normal loss and lora_moe_reference_normal_loss()
  // gives it for the whole model.
  bool reference_compat = false;
};

// The routings, in documentation order.
const std::vector<std::string>& lora_moe_routings();
// The defaults of a routing as GMoE configures its baselines (§4.5; docs/lora-moe.md has the
// table). Unknown routing: a one-line mf::Error listing the known ones.
LoraMoeOptions lora_moe_defaults(const std::string& routing);
// Validates `opt` (one-line mf::Error naming the bad field) and returns it with canonical,
// de-duplicated targets in gate, up, down order.
LoraMoeOptions checked_lora_moe_options(const LoraMoeOptions& opt);
// MoLA's "more experts in higher layers": the layers in four quarters with 5, 7, 9, 11 experts
// (exactly GMoE's 48-layer list [5]x12, [7]x12, [9]x12, [11]x12 for Yi-9B).
std::vector<int64_t> mola_layer_experts(int64_t num_layers);
// The expert count of every layer; a per-layer list of another length than num_layers is a
// one-line mf::Error naming the expected count (the reference indexes past its end).
std::vector<int64_t> lora_moe_layer_experts(const LoraMoeOptions& opt, int64_t num_layers);

class LoraMoeFFN : public FfnBlock {
 public:
  // Wraps `base` (its Linear modules stay registered under their names; their weights are never
  // trained here) as layer `layer` of `num_layers`. LoRA A ~ Kaiming-uniform(a = sqrt 5), i.e.
  // U(-1/sqrt(in), 1/sqrt(in)), B = 0, and the router initialised from generators seeded by
  // (seed, layer, expert, projection): the block starts out computing the base FFN's function
  // (exactly for renormalised gates).
  LoraMoeFFN(std::shared_ptr<GatedMLP> base, const LoraMoeOptions& opt, int64_t layer, int64_t num_layers,
             uint64_t seed);

  // x [N, H] -> [N, H]. Fires router_logits, ffn_intermediate and expert_output (per expert).
  at::Tensor forward(const at::Tensor& x, const FfnContext& ctx) override;
  std::vector<AuxLoss> aux_losses() const override;
  std::optional<MoeLayerStats> moe_stats() const override;

  int64_t num_experts() const { return num_experts_; }
  int64_t layer() const { return layer_; }
  const LoraMoeOptions& options() const { return opt_; }
  double lora_scale() const { return opt_.alpha / static_cast<double>(opt_.r); }
  const GatedMLP& base() const { return *base_; }
  // Expert e's LoRA factors on `target` (gate_proj, up_proj, down_proj); undefined when the
  // projection is not a target.
  const at::Tensor& lora_A(int64_t e, const std::string& target) const;
  const at::Tensor& lora_B(int64_t e, const std::string& target) const;
  // The graph router (gmoe), else null.
  std::shared_ptr<moe::GraphRouterImpl> graph_router() const { return graph_; }

  // Last forward: router logits and probabilities [N, E] (with autograd in training mode with
  // autograd on, else detached), selected experts [N, K] (-1 = empty slot), the padding mask,
  // and (gmoe, training) this layer's activation counts c [E] of the Normal balance loss.
  const at::Tensor& last_logits() const { return last_logits_; }
  const at::Tensor& last_probs() const { return last_probs_; }
  const at::Tensor& last_selection() const { return last_selection_; }
  const at::Tensor& last_valid() const { return last_valid_; }
  const at::Tensor& last_counts() const { return last_counts_; }
  // Running counts of the Normal balance loss (reset at construction, like the reference's).
  void reset_balance_counts() { balance_.reset(); }
  // The running counts (undefined before the first training forward) and their restoration, for
  // checkpoints of a training run (exact resume).
  const at::Tensor& balance_counts() const { return balance_.running(0); }
  void set_balance_counts(const at::Tensor& counts) { balance_.set_running(0, counts); }
  // Tokens per capacity group (mixlora-switch: the recipe sets the padded sequence length).
  void set_capacity_group(int64_t tokens);

  moe::Router router;

 private:
  void init_parameters(uint64_t seed);
  void check_no_plain_lora() const;
  // The frozen base as a one-expert dense bank (gate and up rows fused; the base Linear weights
  // become views of the fused tensor, so the weights exist once). Rebuilt when they change.
  moe::DenseExpertBank base_bank();
  bool fingerprint_matches() const;
  moe::MoELayer build_layer();

  LoraMoeOptions opt_;
  std::shared_ptr<GatedMLP> base_;
  moe::Act act_ = moe::Act::SiLU;
  int64_t layer_ = 0, num_layers_ = 1, num_experts_ = 0, k_ = 0;
  bool targeted_[3] = {false, false, false};      // gate, up, down
  std::vector<std::array<at::Tensor, 3>> A_, B_;  // [expert][gate, up, down]
  std::shared_ptr<moe::GraphRouterImpl> graph_;
  moe::DenseExpertBank base_bank_;
  std::vector<std::pair<const void*, int64_t>> fingerprint_;
  moe::GmoeBalanceState balance_{1};
  // Last forward.
  moe::RoutingPlan last_plan_;
  at::Tensor last_logits_, last_probs_, last_selection_, last_valid_, last_counts_;
  bool kept_for_loss_ = false;
  std::vector<int64_t> expert_params_;
};

// Replaces every layer's FFN by a LoraMoeFFN (Model::set_ffn) after freezing every parameter of
// the model. Only dense gated (SwiGLU) FFNs: any other block, and invalid options, are one-line
// mf::Errors raised before the model is changed.
void convert_to_lora_moe(Model& model, const LoraMoeOptions& opt, uint64_t seed);

// With reference_compat: the GMoE reference's Normal balance loss of the model's last training
// forward, coefficient applied (normal_balance_loss over every block's counts and sigma with the
// whole-tensor normalisation); 0 when no block has counts.
at::Tensor lora_moe_reference_normal_loss(const Model& model);

// Trainable parameters of a converted model: per layer E_l * r * (d + f) per targeted projection,
// plus the router (linear: E_l * d; graph: 2 d g + L_g g^2 + g + 2 — X is frozen, lambda and
// sigma are trained).
int64_t lora_moe_trainable_params(const ModelConfig& cfg, const LoraMoeOptions& opt);

}  // namespace mf
