// Qwen1.5-MoE / Qwen2-MoE (Qwen2MoeForCausalLM): the Qwen2 graph (q/k/v biases) whose FFN is,
// on layers with (l+1) % decoder_sparse_step == 0 and l not in mlp_only_layers, a routed MoE:
// softmax -> top-k, renormalised only if norm_topk_prob, plus a shared expert scaled per token
// by sigmoid(shared_expert_gate(x)). Other layers keep a dense MLP of intermediate_size.
#include "model/moe_block.h"

namespace mf {

std::shared_ptr<MoeBlock> make_qwen2_moe(const ModelConfig& cfg) {
  MoeBlockOptions o;
  o.hidden = cfg.hidden_size;
  o.expert_inner = cfg.moe_intermediate_size;
  o.num_experts = cfg.num_experts;
  o.top_k = cfg.num_experts_per_tok;
  o.renormalize = cfg.norm_topk_prob;
  o.shared_inner = cfg.shared_expert_intermediate_size;
  o.act = cfg.hidden_act;
  return std::make_shared<MoeBlock>(o);
}

}  // namespace mf
