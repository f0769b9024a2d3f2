// Mixtral (MixtralForCausalLM): the Llama graph with a sparse MoE FFN named
// `block_sparse_moe`: softmax over 8 experts -> top-2 -> renormalise (training: the router
// input jittered by router_jitter_noise); experts w1 (gate), w3 (up), w2 (down). Attention,
// norms and RoPE are the Llama ones (llama.cpp); the block is the shared MoE block (moe_ffn.h).
// Auxiliary loss: HF's load balancing, router_aux_loss_coef, pooled over layers.
#include "model/config_parse.h"
#include "model/family.h"
#include "model/model.h"
#include "model/moe_ffn.h"

namespace mf {

std::shared_ptr<MoeFFN> make_mixtral_ffn(const ModelConfig& cfg, int64_t l) {
  MoeFfnSpec s = moe_ffn_spec(cfg, l);
  s.gate_name = "w1";
  s.up_name = "w3";
  s.down_name = "w2";
  s.router.selection.gate = moe::GateMode::Renorm;
  s.aux.kind = MoeAuxLossConfig::Kind::LoadBalancing;
  s.aux.coef = cfg.router_aux_loss_coef;
  return make_moe_block(cfg, l, std::move(s));
}

namespace {

void parse_mixtral(const json& j, const std::string& o, ModelConfig& c) {
  using namespace config_parse;
  LlamaDefaults d;
  d.kv_heads = 8;
  d.eps = 1e-5;
  d.theta = 1e6;
  d.max_pos = 4096 * 32;
  parse_llama_common(j, o, c, d);
  c.sliding_window = get_int(j, "sliding_window", 0, o);
  parse_moe_common(j, o, c, "num_local_experts", 2, 0.001);
  c.moe_intermediate_size = c.intermediate_size;
  c.norm_topk_prob = true;  // Mixtral always renormalises the top-k weights
}

}  // namespace

FamilyEntry mixtral_family() {
  return {"Mixtral (Llama graph, block_sparse_moe)", Family::mixtral, parse_mixtral, build_llama_family,
          make_mixtral_ffn};
}

}  // namespace mf
