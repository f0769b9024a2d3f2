// The routed-expert FFN of every MoE family of the runtime — Mixtral, Qwen2-MoE, OLMoE and
// moeforge's own dense→MoE splits. Parameters live under their checkpoint names (router
// `gate` / `router`, `experts.{e}.<gate>/<up>/<down>`, `shared_expert`, `shared_expert_gate`),
// so named_parameters() are the HF tensor names; the computation is the shared MoE layer of
// src/moe (routing plan, grouped expert GEMMs, fused decode path, custom autograd).
//
// The MoE layer wants each expert's gate and up rows fused in one [2 f_e, d] tensor. For
// inference the block builds that layer once and points the gate / up parameters at views
// of the fused tensors (no second copy of the weights); it rebuilds when a parameter's data
// or version changes (loading, .to(), an optimizer step). When gradients flow into expert
// weights, every forward builds the fused tensors with differentiable ops instead.
#pragma once
#include <torch/torch.h>

#include "model/layers.h"
#include "moe/moe_layer.h"

namespace mf {

// What the last forward of one MoE block did (Model::moe_stats()).
struct MoeLayerStats {
  int layer = 0;
  int64_t tokens = 0;                      // real (unpadded) tokens
  std::vector<int64_t> tokens_per_expert;  // routed tokens per expert (real tokens only)
  // Mean over real tokens of sum over its selected experts of f_e, divided by the block's
  // reference width (moeforge: the dense intermediate_size; other families: sum of f_e).
  double active_ffn_fraction = 0.0;
  // Mean over real tokens of the routed-expert parameters it used.
  double active_expert_params = 0.0;
};

struct MoeFfnSpec {
  int64_t hidden = 0;
  std::vector<int64_t> widths;  // f_e per routed expert
  int64_t reference_width = 0;  // denominator of active_ffn_fraction (0 = sum of widths)
  std::string act = "silu";
  // Expert sub-module names: Mixtral w1/w3/w2, others gate_proj/up_proj/down_proj.
  std::string gate_name = "gate_proj", up_name = "up_proj", down_name = "down_proj";
  int64_t shared_inner = 0;  // Qwen2-MoE shared expert width (0 = none)
  // The router, registered under `router_name` (its parameters are checkpoint tensors).
  // Leave `router` null and set `avgk` for EMoE's avg-k gate, which is computed from the
  // experts (a buffer, no checkpoint tensor).
  std::string router_name = "gate";
  moe::Router router;
  bool avgk = false;
  moe::SelectionConfig avgk_selection;
};

class MoeFFN : public torch::nn::Module {
 public:
  explicit MoeFFN(MoeFfnSpec spec);

  // x [N, H] -> [N, H]. Fires router_logits, ffn_intermediate and expert_output (per expert,
  // with `tokens`; the shared expert as expert -2), forward and backward.
  at::Tensor forward(const at::Tensor& x, Hooks* hooks, int layer, const at::Tensor& valid);

  // EMoE: recompute the avg-k gate from the current expert weights (after an optimizer step).
  void after_optimizer_step();
  MoeLayerStats last_stats() const;

  int64_t num_experts() const { return static_cast<int64_t>(experts.size()); }
  const MoeFfnSpec& spec() const { return spec_; }
  // The MoE layer the next inference forward uses (built from the current parameters).
  moe::MoELayer inference_layer();

  std::vector<std::shared_ptr<GatedMLP>> experts;
  std::shared_ptr<GatedMLP> shared_expert;
  std::shared_ptr<Linear> shared_expert_gate;  // [1, H]
  moe::Router router;

 private:
  std::vector<at::Tensor> expert_tensors() const;  // gate, up, down of every expert, then the shared ones
  moe::MoELayer build(bool differentiable);
  bool fingerprint_matches() const;

  MoeFfnSpec spec_;
  moe::Act act_;
  moe::MoELayer cached_{nullptr};
  std::vector<std::pair<const void*, int64_t>> fingerprint_;  // (data_ptr, version) per expert tensor
  // Last forward, for last_stats().
  int layer_ = 0;
  at::Tensor last_idx_, last_valid_;
};

// The MoE block of each family (one file each: mixtral.cpp, qwen2_moe.cpp, olmoe.cpp,
// moeforge_moe.cpp) for MoE layer `l`.
std::shared_ptr<MoeFFN> make_mixtral_ffn(const ModelConfig& cfg, int64_t l);
std::shared_ptr<MoeFFN> make_qwen2_moe_ffn(const ModelConfig& cfg, int64_t l);
std::shared_ptr<MoeFFN> make_olmoe_ffn(const ModelConfig& cfg, int64_t l);
std::shared_ptr<MoeFFN> make_moeforge_ffn(const ModelConfig& cfg, int64_t l);

// The expert activation for a config's hidden_act.
moe::Act moe_activation(const std::string& hidden_act);

}  // namespace mf
