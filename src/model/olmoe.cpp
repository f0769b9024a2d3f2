// OLMoE (OlmoeForCausalLM): the Llama graph with QK-norm — an RMSNorm over the full q and k
// projection widths (not per head), applied before the split into heads, then optional
// clip_qkv — and an MoE FFN: softmax -> top-k (8 of 64), renormalised only if norm_topk_prob
// (false in the released model). The attention part lives in layers.cpp (cfg.qk_norm); the
// MoE block is the shared MoE block (moe_ffn.h). Auxiliary loss: HF's load balancing,
// router_aux_loss_coef, pooled over layers.
#include "model/config_parse.h"
#include "model/family.h"
#include "model/model.h"
#include "model/moe_ffn.h"
#include "util/error.h"

namespace mf {

std::shared_ptr<MoeFFN> make_olmoe_ffn(const ModelConfig& cfg, int64_t l) {
  MoeFfnSpec s = moe_ffn_spec(cfg, l);
  s.aux.kind = MoeAuxLossConfig::Kind::LoadBalancing;
  s.aux.coef = cfg.router_aux_loss_coef;
  return make_moe_block(cfg, l, std::move(s));
}

namespace {

void parse_olmoe(const json& j, const std::string& o, ModelConfig& c) {
  using namespace config_parse;
  LlamaDefaults d;
  d.eps = 1e-5;
  d.max_pos = 4096;
  d.bos = {};
  d.eos = {50279};
  parse_llama_common(j, o, c, d);
  c.attention_bias = c.attention_out_bias = get_bool(j, "attention_bias", false, o);
  parse_moe_common(j, o, c, "num_experts", 8, 0.01);
  c.moe_intermediate_size = c.intermediate_size;
  c.norm_topk_prob = get_bool(j, "norm_topk_prob", false, o);
  c.qk_norm = true;
  c.clip_qkv = get_num(j, "clip_qkv", 0.0, o);
  if (c.clip_qkv < 0) fail_file(o, "key 'clip_qkv' must be positive");
}

}  // namespace

FamilyEntry olmoe_family() {
  return {"OLMoE (Llama graph, QK-norm, routed MoE)", Family::olmoe, parse_olmoe, build_llama_family, make_olmoe_ffn};
}

}  // namespace mf
