// Mixtral (MixtralForCausalLM): the Llama graph with a sparse MoE FFN named
// `block_sparse_moe`: softmax over 8 experts -> top-2 -> renormalise (training: the router
// input jittered by router_jitter_noise); experts w1 (gate), w3 (up), w2 (down). Attention,
// norms and RoPE are the Llama ones (llama.cpp); the block is the shared MoE layer (moe_ffn.h).
#include "model/moe_ffn.h"
#include "moe/routers/linear_router.h"

namespace mf {

std::shared_ptr<MoeFFN> make_mixtral_ffn(const ModelConfig& cfg, int64_t l) {
  MoeFfnSpec s;
  s.hidden = cfg.hidden_size;
  s.widths = cfg.layer_expert_widths(l);
  s.act = cfg.hidden_act;
  s.gate_name = "w1";
  s.up_name = "w3";
  s.down_name = "w2";
  moe::SelectionConfig sel;
  sel.k = cfg.num_experts_per_tok;
  sel.gate = moe::GateMode::Renorm;
  moe::RouterNoise noise;
  if (cfg.router_jitter_noise > 0) noise = {moe::NoiseKind::Jitter, cfg.router_jitter_noise};
  s.router = std::make_shared<moe::LinearRouterImpl>(at::empty({cfg.num_experts, cfg.hidden_size}), sel,
                                                     moe::ScoreFn::Softmax, noise);
  return std::make_shared<MoeFFN>(s);
}

}  // namespace mf
