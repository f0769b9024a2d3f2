// moeforge MoE models ("model_type": "moeforge", docs/format.md): a Llama / Mistral / Qwen2
// model whose FFN on the layers in `moe_layers` was split into experts of possibly different
// widths (HEMoE, MoEfication, EMoE, MoEBERT, random splits). Attention, norms and the dense
// layers are the base family's (llama.cpp); the MoE block is the shared MoE block (moe_ffn.h)
// with the router of moe::router_registry() that `router.type` names (linear, mlp, avgk, or
// any registered one) and the auxiliary loss `router.aux_loss` names (hemoe, switch, none).
// base_model_type mixtral / qwen2_moe / olmoe wraps a stock MoE family with an extension: HyperMoE,
// or the merged expert map of `merge --output exact` (router.type merged, parse_stock_merged).
#include <algorithm>

#include "model/config_parse.h"
#include "model/family.h"
#include "model/model.h"
#include "model/hypermoe_ffn.h"
#include "model/moe_ffn.h"
#include "util/error.h"

namespace mf {

json merged_router_config(const ModelConfig& cfg, int64_t l) {
  // This layer's map from the original experts to the merged ones (router.expert_maps, one list
  // per MoE layer in moe_layers order).
  const size_t i = static_cast<size_t>(std::lower_bound(cfg.moe_layers.begin(), cfg.moe_layers.end(), l) -
                                       cfg.moe_layers.begin());
  const json& maps = cfg.router.config.value("expert_maps", json::array());
  if (!maps.is_array() || i >= maps.size()) fail_file(cfg.origin, "router.expert_maps needs one list per MoE layer");
  json rc = cfg.router.config;
  rc["expert_map"] = maps[i];
  return rc;
}

std::shared_ptr<MoeFFN> make_moeforge_ffn(const ModelConfig& cfg, int64_t l) {
  // A wrapped stock MoE family (base_model_type mixtral / qwen2_moe / olmoe): its own block.
  if (cfg.family != Family::moeforge)
    return std::dynamic_pointer_cast<MoeFFN>(family_registry().at(family_name(cfg.family)).moe_block(cfg, l));
  const MoeforgeRouter& r = cfg.router;
  MoeFfnSpec s = moe_ffn_spec(cfg, l);
  s.reference_width = cfg.intermediate_size;
  s.router_name = "router";
  s.router_type = r.type;
  moe::SelectionConfig& sel = s.router.selection;
  sel.max_k = cfg.num_experts_per_tok;
  sel.top_p = r.top_p;
  sel.dynk_tau = r.dynk_tau;
  sel.selection = moe::parse_selection(r.selection);
  sel.gate = moe::parse_gate_mode(r.gate);
  s.router.score = moe::parse_score_fn(r.score);
  s.router.config = r.config;
  if (r.type == "merged") s.router.config = merged_router_config(cfg, l);
  s.aux.kind = parse_aux_loss_kind(r.aux_loss);
  s.aux.coef = r.aux_loss_coef;
  s.aux.shazeer_reference_load = r.config.value("load_estimate", std::string("shazeer")) == "reference";
  if (!moe::router_registry().contains(r.type))
    fail_file(cfg.origin, "router.type \"" + r.type + "\" is not supported (supported: " +
                              moe::router_registry().known() + ")");
  return make_moe_block(cfg, l, std::move(s));
}

namespace {

// expert_sizes: one list per MoE layer (moe_layers order) of num_experts widths >= 1.
void parse_expert_sizes(const json& es, const std::string& o, ModelConfig& c) {
  using namespace config_parse;
  if (!es.is_array()) fail_file(o, "key 'expert_sizes' must be a list of lists of integers");
  if (es.size() != c.moe_layers.size())
    fail_file(o, "expert_sizes has " + std::to_string(es.size()) + " entries, moe_layers has " +
                     std::to_string(c.moe_layers.size()));
  for (size_t i = 0; i < es.size(); ++i) {
    const std::string key = "expert_sizes[" + std::to_string(i) + "]";
    std::vector<int64_t> sizes = int_list(es[i], key, o);
    if (static_cast<int64_t>(sizes.size()) != c.num_experts)
      fail_file(o, key + " has " + std::to_string(sizes.size()) + " entries, num_experts is " +
                       std::to_string(c.num_experts));
    for (size_t e = 0; e < sizes.size(); ++e)
      if (sizes[e] < 1)
        fail_file(o, key + "[" + std::to_string(e) + "] is " + std::to_string(sizes[e]) + ", must be >= 1");
    c.expert_sizes.push_back(std::move(sizes));
  }
}

// router.type merged: num_source_experts (N, the router's rows) and expert_maps, one list of N
// merged-expert indices per MoE layer.
void parse_expert_maps(const json& r, const std::string& o, ModelConfig& c) {
  using namespace config_parse;
  const int64_t n = require_int(r, "num_source_experts", o + ": router");
  if (n < 1) fail_file(o, "router.num_source_experts must be >= 1");
  c.router.num_source_experts = n;
  const json maps = r.value("expert_maps", json());
  if (!maps.is_array() || maps.size() != c.moe_layers.size())
    fail_file(o, "router.expert_maps must hold one list per MoE layer (" + std::to_string(c.moe_layers.size()) + ")");
  for (size_t i = 0; i < maps.size(); ++i) {
    const std::vector<int64_t> m = int_list(maps[i], "router.expert_maps[" + std::to_string(i) + "]", o);
    if (static_cast<int64_t>(m.size()) != n)
      fail_file(o, "router.expert_maps[" + std::to_string(i) + "] has " + std::to_string(m.size()) +
                       " entries, router.num_source_experts is " + std::to_string(n));
    for (int64_t e : m)
      if (e < 0 || e >= c.num_experts)
        fail_file(o, "router.expert_maps[" + std::to_string(i) + "] holds " + std::to_string(e) +
                         ", not an expert index (num_experts is " + std::to_string(c.num_experts) + ")");
  }
}

// A stock MoE family with the exact N -> r expert map of `moeforge merge --output exact`
// (docs/format.md): `router` {type merged, num_source_experts, expert_maps} and optionally
// `expert_sizes`; everything else stays the family's own — its router tensor `gate` (with N
// rows), softmax / top-k / norm_topk_prob, Qwen2-MoE's shared expert, OLMoE's QK-norm.
void parse_stock_merged(const json& j, const std::string& base, const std::string& o, ModelConfig& c) {
  auto rit = j.find("router");
  if (rit == j.end())
    fail_file(o, "key 'expert_sizes' needs a 'router' of type merged with base_model_type " + base);
  if (!rit->is_object()) fail_file(o, "key 'router' must be an object");
  if (!rit->contains("type")) fail_file(o, "missing key 'router.type'");
  const std::string type = json_get<std::string>(*rit, "type", o + ": router");
  if (type != "merged")
    fail_file(o, "router.type \"" + type + "\" is not supported with base_model_type " + base +
                     " (only merged: the family's own router with the expert map of moeforge merge --output exact)");
  if (j.contains("hypermoe")) fail_file(o, "router.type merged and 'hypermoe' together are not supported");
  for (int64_t l = 0; l < c.num_layers; ++l)  // num_hidden_layers is bounded by the base family's parse
    if (c.layer_is_moe(l)) c.moe_layers.push_back(l);
  if (j.contains("expert_sizes"))
    parse_expert_sizes(j["expert_sizes"], o, c);
  else
    c.expert_sizes.assign(c.moe_layers.size(),
                          std::vector<int64_t>(static_cast<size_t>(c.num_experts), c.moe_intermediate_size));
  MoeforgeRouter& rc = c.router;
  rc.type = "merged";
  rc.config = *rit;
  rc.score = "softmax";
  rc.selection = "top_k";
  rc.gate = c.norm_topk_prob ? "renorm" : "prob";
  rc.aux_loss = "none";
  parse_expert_maps(*rit, o, c);
}

// moeforge: the base family's config plus the MoE keys of docs/format.md.
void parse_moeforge(const json& j, const std::string& o, ModelConfig& c) {
  using namespace config_parse;
  const std::string base = json_get<std::string>(j, "base_model_type", o);
  if (base == "mixtral" || base == "qwen2_moe" || base == "olmoe") {
    // A stock MoE model with moeforge's extensions (hypermoe, or the merged expert map): the base
    // family's keys, tensors, blocks and losses; model_type moeforge so that no stock loader
    // silently drops the extras or misreads the router.
    json jb = j;
    jb["model_type"] = base;
    jb.erase("hypermoe");
    c = parse_model_config(jb, o);
    c.model_type = "moeforge";
    c.raw = j;
    if (j.contains("hypermoe")) moe::parse_hypermoe_options(j["hypermoe"], o);
    if (j.contains("router") || j.contains("expert_sizes")) parse_stock_merged(j, base, o, c);
    return;
  }
  if (base != "llama" && base != "mistral" && base != "qwen2")
    fail_file(o, "base_model_type \"" + base + "\" is not supported (supported: llama, mistral, qwen2, and with "
                     "extensions mixtral, qwen2_moe, olmoe)");
  json jb = j;
  jb["model_type"] = base;
  jb.erase("hypermoe");
  c = parse_model_config(jb, o);
  c.base_family = c.family;
  c.family = Family::moeforge;
  c.model_type = "moeforge";
  c.raw = j;
  if (c.mlp_bias) fail_file(o, "key 'mlp_bias': true is not supported by moeforge MoE models (experts have no biases)");

  c.num_experts = require_int(j, "num_experts", o);
  check_positive(c.num_experts, "num_experts", o);
  c.num_experts_per_tok = require_int(j, "num_experts_per_tok", o);
  if (c.num_experts_per_tok < 1 || c.num_experts_per_tok > c.num_experts)
    fail_file(o, "num_experts_per_tok is " + std::to_string(c.num_experts_per_tok) + ", must be in 1.." +
                     std::to_string(c.num_experts));

  if (!j.contains("moe_layers")) fail_file(o, "missing key 'moe_layers'");
  c.moe_layers = int_list(j["moe_layers"], "moe_layers", o);
  for (size_t i = 0; i < c.moe_layers.size(); ++i) {
    const int64_t l = c.moe_layers[i];
    if (l < 0 || l >= c.num_layers)
      fail_file(o, "moe_layers[" + std::to_string(i) + "] is " + std::to_string(l) + ", out of range (num_hidden_layers is " +
                       std::to_string(c.num_layers) + ")");
    if (i > 0 && l <= c.moe_layers[i - 1])
      fail_file(o, "moe_layers must be ascending without repeats (moe_layers[" + std::to_string(i) + "] is " +
                       std::to_string(l) + ")");
  }

  if (!j.contains("expert_sizes")) fail_file(o, "missing key 'expert_sizes'");
  parse_expert_sizes(j["expert_sizes"], o, c);

  auto rit = j.find("router");
  if (rit == j.end()) fail_file(o, "missing key 'router'");
  if (!rit->is_object()) fail_file(o, "key 'router' must be an object");
  const json& r = *rit;
  if (!r.contains("type")) fail_file(o, "missing key 'router.type'");
  MoeforgeRouter& rc = c.router;
  rc.type = json_get<std::string>(r, "type", o + ": router");
  if (!moe::router_registry().contains(rc.type))
    fail_file(o, "router.type \"" + rc.type + "\" is not supported (supported: " + moe::router_registry().known() + ")");
  rc.config = r;
  rc.score = one_of(r, "score", "softmax", {"softmax", "sigmoid"}, o);
  rc.selection = one_of(r, "selection", "top_k", {"top_k", "top_p", "dynk_max"}, o);
  rc.gate = one_of(r, "gate", "unit", {"unit", "renorm", "prob", "ones"}, o);
  rc.aux_loss = one_of(r, "aux_loss", "hemoe", {"hemoe", "switch", "shazeer", "none"}, o);
  rc.top_p = get_num(r, "top_p", 0.8, o + ": router");
  rc.dynk_tau = get_num(r, "dynk_tau", 0.5, o + ": router");
  rc.aux_loss_coef = get_num(r, "aux_loss_coef", 5e-4, o + ": router");
  if (!(rc.top_p > 0 && rc.top_p <= 1)) fail_file(o, "router.top_p must be in (0, 1]");
  if (!(rc.dynk_tau >= 0 && rc.dynk_tau <= 1)) fail_file(o, "router.dynk_tau must be in [0, 1]");
  if (rc.aux_loss_coef < 0) fail_file(o, "router.aux_loss_coef must be >= 0");
  if (rc.type == "avgk" && rc.score != "softmax")
    fail_file(o, "router.score \"" + rc.score + "\" is not supported with router.type avgk (softmax only)");
  if (rc.type == "noisy_topk") {
    if (rc.score != "softmax" || rc.selection != "top_k")
      fail_file(o, "router.type noisy_topk needs score softmax and selection top_k");
    if (get_num(r, "noise_epsilon", 0.01, o + ": router") < 0) fail_file(o, "router.noise_epsilon must be >= 0");
    one_of(r, "load_estimate", "shazeer", {"shazeer", "reference"}, o);
  }
  if (j.contains("hypermoe")) moe::parse_hypermoe_options(j["hypermoe"], o);  // validated here, used by the blocks
  // Each map lists the merged expert of every original expert (router.num_source_experts of them).
  if (rc.type == "merged") parse_expert_maps(r, o, c);
  c.router_aux_loss_coef = rc.aux_loss_coef;
  c.norm_topk_prob = rc.gate == "renorm";
}

}  // namespace

FamilyEntry moeforge_family() {
  return {"moeforge dense->MoE split of a Llama / Mistral / Qwen2 model (docs/format.md)", Family::moeforge,
          parse_moeforge, build_llama_family, make_moeforge_ffn};
}

}  // namespace mf
