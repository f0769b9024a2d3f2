// OLMoE (OlmoeForCausalLM): the Llama graph with QK-norm — an RMSNorm over the full q and k
// projection widths (not per head), applied before the split into heads, then optional
// clip_qkv — and an MoE FFN: softmax -> top-k (8 of 64), renormalised only if norm_topk_prob
// (false in the released model). The attention part lives in layers.cpp (cfg.qk_norm).
#include "model/moe_block.h"

namespace mf {

std::shared_ptr<MoeBlock> make_olmoe_moe(const ModelConfig& cfg) {
  MoeBlockOptions o;
  o.hidden = cfg.hidden_size;
  o.expert_inner = cfg.moe_intermediate_size;
  o.num_experts = cfg.num_experts;
  o.top_k = cfg.num_experts_per_tok;
  o.renormalize = cfg.norm_topk_prob;
  o.act = cfg.hidden_act;
  return std::make_shared<MoeBlock>(o);
}

}  // namespace mf
