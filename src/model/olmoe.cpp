// OLMoE (OlmoeForCausalLM): the Llama graph with QK-norm — an RMSNorm over the full q and k
// projection widths (not per head), applied before the split into heads, then optional
// clip_qkv — and an MoE FFN: softmax -> top-k (8 of 64), renormalised only if norm_topk_prob
// (false in the released model). The attention part lives in layers.cpp (cfg.qk_norm); the
// MoE block is the shared MoE layer (moe_ffn.h).
#include "model/moe_ffn.h"
#include "moe/routers/linear_router.h"

namespace mf {

std::shared_ptr<MoeFFN> make_olmoe_ffn(const ModelConfig& cfg, int64_t l) {
  MoeFfnSpec s;
  s.hidden = cfg.hidden_size;
  s.widths = cfg.layer_expert_widths(l);
  s.act = cfg.hidden_act;
  moe::SelectionConfig sel;
  sel.k = cfg.num_experts_per_tok;
  sel.gate = cfg.norm_topk_prob ? moe::GateMode::Renorm : moe::GateMode::Prob;
  s.router = std::make_shared<moe::LinearRouterImpl>(at::empty({cfg.num_experts, cfg.hidden_size}), sel);
  return std::make_shared<MoeFFN>(s);
}

}  // namespace mf
