// The routed-expert FFN block of every MoE family of the runtime — Mixtral, Qwen2-MoE, OLMoE and
// moeforge's own dense→MoE splits. Parameters live under their checkpoint names (router
// `gate` / `router`, `experts.{e}.<gate>/<up>/<down>`, `shared_expert`, `shared_expert_gate`),
// so named_parameters() are the HF tensor names; the computation is src/moe's MoE layer (routing
// plan, expert banks, grouped expert GEMMs, fused decode path, custom autograd) with a router
// from src/moe's router table.
//
// The MoE layer wants each expert's gate and up rows fused in one [2 f_e, d] tensor. For
// inference the block builds that layer once and points the gate / up parameters at views
// of the fused tensors (no second copy of the weights); it rebuilds when a parameter's data
// or version changes (loading, .to(), an optimizer step). When gradients flow into expert
// weights, every forward builds the fused tensors with differentiable ops instead. LoRA
// adapters attached to expert projections (Linear::lora) turn the bank into a LoRA expert bank
// over the same weights, so they act in the forward pass and receive gradients.
//
// In training mode with autograd on, the block keeps its routing and reports its auxiliary
// loss (aux_losses(); the HF load-balancing loss, pooled over layers, is Model::aux_losses()).
#pragma once
#include <torch/torch.h>

#include "model/ffn_block.h"
#include "model/layers.h"
#include "moe/moe_layer.h"
#include "moe/routers/registry.h"

namespace mf {

// The auxiliary loss of an MoE block (docs/moe.md). Hemoe: coef * S * sum_j f_j r_j P_j with
// r_j = f_e / reference width, S = tokens incl. padding (or E); Switch: coef * E * sum_j f_j P_j;
// for both f_j is the straight-through fraction routed, P_j the mean score (real tokens).
// LoadBalancing: HF's load_balancing_loss_func (Mixtral, Qwen2-MoE, OLMoE), pooled over all
// MoE layers by Model::aux_losses(). z_coef > 0 adds coef * ST-MoE z-loss per layer.
struct MoeAuxLossConfig {
  // Shazeer: coef * (cv^2(importance) + cv^2(load)) per layer (unbiased variances, as the MEO /
  // HyperMoE code), importance = sum of the combine weights, load = Shazeer's smooth estimate
  // under the noisy_topk router's learned noise (shazeer_reference_load: the reference's variant).
  enum class Kind { None, Hemoe, Switch, LoadBalancing, Shazeer };
  Kind kind = Kind::None;
  double coef = 0.0;
  bool scale_by_tokens = true;
  double z_coef = 0.0;
  bool shazeer_reference_load = false;
};
// "hemoe" | "switch" | "load_balancing" | "shazeer" | "none" (mf::Error otherwise).
MoeAuxLossConfig::Kind parse_aux_loss_kind(const std::string& name);

struct MoeFfnSpec {
  int64_t hidden = 0;
  std::vector<int64_t> widths;  // f_e per routed expert
  int64_t reference_width = 0;  // denominator of active_ffn_fraction and of HEMoE's r_j (0 = sum of widths)
  std::string act = "silu";
  // Expert sub-module names: Mixtral w1/w3/w2, others gate_proj/up_proj/down_proj.
  std::string gate_name = "gate_proj", up_name = "up_proj", down_name = "down_proj";
  int64_t shared_inner = 0;  // Qwen2-MoE shared expert width (0 = none)
  // The router: an entry of moe::router_registry(), registered under `router_name` (its
  // parameters are checkpoint tensors).
  std::string router_name = "gate", router_type = "linear";
  moe::RouterSpec router;
  MoeAuxLossConfig aux;
};

// The parts of a spec every family shares, from the config for MoE layer `l`: widths,
// activation, router shape and top-k (softmax, renormalised as norm_topk_prob says). A stock
// family wrapped as moeforge with the merged expert map (cfg.router.type merged; `merge --output
// exact` of Qwen2-MoE / OLMoE) gets the merged router under the family's router name.
MoeFfnSpec moe_ffn_spec(const ModelConfig& cfg, int64_t l);

// The merged router's spec config for MoE layer `l` (router.type merged): the config's `router`
// object plus `expert_map`, that layer's entry of router.expert_maps (moe_layers order).
// Defined in moeforge_moe.cpp.
json merged_router_config(const ModelConfig& cfg, int64_t l);

class MoeFFN : public FfnBlock {
 public:
  explicit MoeFFN(MoeFfnSpec spec);

  // x [N, H] -> [N, H]. Fires router_logits, ffn_intermediate and expert_output (per expert,
  // with `tokens`; the shared expert as expert -2), forward and backward.
  at::Tensor forward(const at::Tensor& x, const FfnContext& ctx) override;
  // Rebuilds what is derived from the expert weights (and recomputes an avg-k gate).
  void after_optimizer_step() override;
  std::vector<AuxLoss> aux_losses() const override;
  std::optional<MoeLayerStats> moe_stats() const override;

  // All routed experts of the block (also when only some live in this process).
  int64_t num_experts() const { return static_cast<int64_t>(spec_.widths.size()); }

  // Expert parallelism (dist/expert_parallel.h): the block keeps experts [first, first + count)
  // (`experts` then holds only those; the others' modules are removed and their weights
  // released), and every MoE layer it builds computes its routed rows through
  // make_remote(bank of the local experts).
  void distribute_experts(int64_t first, int64_t count,
                          std::function<moe::RemoteExperts(const moe::ExpertBank& local)> make_remote);
  bool experts_distributed() const { return static_cast<bool>(make_remote_); }
  int64_t first_local_expert() const { return first_local_; }
  const MoeFfnSpec& spec() const { return spec_; }
  MoeAuxLossConfig& aux_config() { return spec_.aux; }
  // Router logits [N, E] (with autograd) and valid mask of the last training forward, for the
  // pooled HF load-balancing loss (undefined when none was kept).
  const at::Tensor& last_logits() const { return last_logits_; }
  const at::Tensor& last_valid() const { return last_valid_; }
  // Experts selected in the last forward [N, K] (int64, -1 = empty slot; detached).
  const at::Tensor& last_selection() const { return last_selection_; }
  // The MoE layer the next inference forward uses (built from the current parameters).
  moe::MoELayer inference_layer();

  std::vector<std::shared_ptr<GatedMLP>> experts;
  std::shared_ptr<GatedMLP> shared_expert;
  std::shared_ptr<Linear> shared_expert_gate;  // [1, H]
  moe::Router router;

 private:
  std::vector<at::Tensor> expert_tensors() const;  // gate, up, down of every expert, then the shared ones
  bool has_lora() const;
  // Dense banks of the routed and the shared experts over the current weights: cached views
  // for inference (rebuilt when a weight changes), differentiable ops when the experts train.
  std::pair<moe::DenseExpertBank, moe::DenseExpertBank> dense_banks(bool differentiable);
  moe::MoELayer build(bool differentiable);
  bool fingerprint_matches() const;

  MoeFfnSpec spec_;
  moe::Act act_;
  bool router_from_experts_ = false;
  moe::DenseExpertBank base_, base_shared_;
  moe::MoELayer cached_{nullptr};
  std::vector<std::pair<const void*, int64_t>> fingerprint_;  // (data_ptr, version) per expert tensor
  // Last forward: routing for telemetry (detached), and for the auxiliary losses (training).
  int layer_ = 0;
  moe::RoutingPlan last_plan_;
  at::Tensor last_probs_, last_valid_, last_logits_, last_idx_, last_selection_;
  moe::RouterOutput last_route_;  // training with autograd only (Shazeer loss)
  std::vector<int64_t> expert_params_;
  int64_t always_active_params_ = 0;
  int64_t first_local_ = 0;
  std::function<moe::RemoteExperts(const moe::ExpertBank&)> make_remote_;
};

// The block for MoE layer `l` with `spec`: a HyperMoE block when the config has a "hypermoe"
// object (model/hypermoe_ffn.h), else the plain MoE block. Every family's MoE block comes here.
std::shared_ptr<MoeFFN> make_moe_block(const ModelConfig& cfg, int64_t l, MoeFfnSpec spec);

// The MoE block of each family (one file each: mixtral.cpp, qwen2_moe.cpp, olmoe.cpp,
// moeforge_moe.cpp) for MoE layer `l`.
std::shared_ptr<MoeFFN> make_mixtral_ffn(const ModelConfig& cfg, int64_t l);
std::shared_ptr<MoeFFN> make_qwen2_moe_ffn(const ModelConfig& cfg, int64_t l);
std::shared_ptr<MoeFFN> make_olmoe_ffn(const ModelConfig& cfg, int64_t l);
std::shared_ptr<MoeFFN> make_moeforge_ffn(const ModelConfig& cfg, int64_t l);

// The runtime's hooks of MoE layer `layer` as the MoE layer's callbacks (router_logits,
// ffn_intermediate and expert_output per expert); *observed = whether any is set.
moe::MoECallbacks hook_callbacks(Hooks* hooks, int layer, const at::Tensor& valid, bool* observed);

// The expert activation for a config's hidden_act.
moe::Act moe_activation(const std::string& hidden_act);

}  // namespace mf
