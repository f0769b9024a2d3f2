// Mixtral (MixtralForCausalLM): the Llama graph with a sparse MoE FFN named
// `block_sparse_moe`: softmax over 8 experts -> top-2 -> renormalise; experts w1 (gate),
// w3 (up), w2 (down). Attention, norms and RoPE are the Llama ones (llama.cpp).
#include "model/moe_block.h"

namespace mf {

std::shared_ptr<MoeBlock> make_mixtral_moe(const ModelConfig& cfg) {
  MoeBlockOptions o;
  o.hidden = cfg.hidden_size;
  o.expert_inner = cfg.moe_intermediate_size;
  o.num_experts = cfg.num_experts;
  o.top_k = cfg.num_experts_per_tok;
  o.renormalize = true;
  o.act = cfg.hidden_act;
  o.gate_name = "w1";
  o.up_name = "w3";
  o.down_name = "w2";
  return std::make_shared<MoeBlock>(o);
}

}  // namespace mf
