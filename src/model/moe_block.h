// The routed-expert FFN of Mixtral, Qwen2-MoE and OLMoE, written plainly: router logits in
// fp32, softmax, top-k (ties go to the lower expert index), optional renormalisation, a loop
// over the experts that received tokens, index_add combine, and an optional shared expert
// with a per-token sigmoid gate (Qwen2-MoE). Semantics: shared/specs/moe_routing_training.md
// §1.2-1.3. The fast general MoE layer (src/moe/) replaces this in one place.
#pragma once
#include <torch/torch.h>

#include "model/layers.h"

namespace mf {

struct MoeBlockOptions {
  int64_t hidden = 0, expert_inner = 0, num_experts = 0, top_k = 0;
  bool renormalize = false;
  int64_t shared_inner = 0;  // 0 = no shared expert
  std::string act = "silu";
  // Expert sub-module names: Mixtral w1/w3/w2, others gate_proj/up_proj/down_proj.
  std::string gate_name = "gate_proj", up_name = "up_proj", down_name = "down_proj";
};

// Routing decision for N tokens: probabilities [N, E] fp32, chosen experts [N, k] int64 (in
// descending probability, ties to the lower index) and their combine weights [N, k] fp32.
struct Routing {
  at::Tensor probs, experts, weights;
};
Routing route_topk(const at::Tensor& router_logits, int64_t k, bool renormalize);

struct MoeBlock : torch::nn::Module {
  explicit MoeBlock(const MoeBlockOptions& o);
  // x [N, H] -> [N, H]. Fires router_logits, ffn_intermediate / expert_output per expert.
  at::Tensor forward(const at::Tensor& x, Hooks* hooks, int layer, const at::Tensor& valid);

  MoeBlockOptions opt;
  std::shared_ptr<Linear> gate;  // router [E, H]
  torch::nn::ModuleList experts_list;
  std::vector<std::shared_ptr<GatedMLP>> experts;
  std::shared_ptr<GatedMLP> shared_expert;
  std::shared_ptr<Linear> shared_expert_gate;  // [1, H]
};

// The MoE block of each family (one file each: mixtral.cpp, qwen2_moe.cpp, olmoe.cpp).
std::shared_ptr<MoeBlock> make_mixtral_moe(const ModelConfig& cfg);
std::shared_ptr<MoeBlock> make_qwen2_moe(const ModelConfig& cfg);
std::shared_ptr<MoeBlock> make_olmoe_moe(const ModelConfig& cfg);

}  // namespace mf
