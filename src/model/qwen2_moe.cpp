// Qwen1.5-MoE / Qwen2-MoE (Qwen2MoeForCausalLM): the Qwen2 graph (q/k/v biases) whose FFN is,
// on layers with (l+1) % decoder_sparse_step == 0 and l not in mlp_only_layers, a routed MoE:
// softmax -> top-k, renormalised only if norm_topk_prob, plus a shared expert scaled per token
// by sigmoid(shared_expert_gate(x)). Other layers keep a dense MLP of intermediate_size.
#include "model/moe_ffn.h"
#include "moe/routers/linear_router.h"

namespace mf {

std::shared_ptr<MoeFFN> make_qwen2_moe_ffn(const ModelConfig& cfg, int64_t l) {
  MoeFfnSpec s;
  s.hidden = cfg.hidden_size;
  s.widths = cfg.layer_expert_widths(l);
  s.act = cfg.hidden_act;
  s.shared_inner = cfg.shared_expert_intermediate_size;
  moe::SelectionConfig sel;
  sel.k = cfg.num_experts_per_tok;
  sel.gate = cfg.norm_topk_prob ? moe::GateMode::Renorm : moe::GateMode::Prob;
  s.router = std::make_shared<moe::LinearRouterImpl>(at::empty({cfg.num_experts, cfg.hidden_size}), sel);
  return std::make_shared<MoeFFN>(s);
}

}  // namespace mf
