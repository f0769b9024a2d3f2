#include "model/config.h"

#include <algorithm>
#include <set>

#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf {

const char* family_name(Family f) {
  switch (f) {
    case Family::llama: return "llama";
    case Family::mistral: return "mistral";
    case Family::qwen2: return "qwen2";
    case Family::gpt2: return "gpt2";
    case Family::mixtral: return "mixtral";
    case Family::qwen2_moe: return "qwen2_moe";
    case Family::olmoe: return "olmoe";
    case Family::moeforge: return "moeforge";
  }
  return "?";
}

std::string supported_model_types() { return "llama, mistral, qwen2, gpt2, mixtral, qwen2_moe, olmoe, moeforge"; }

bool ModelConfig::layer_is_moe(int64_t l) const {
  if (num_experts <= 0) return false;
  if (family == Family::moeforge) return std::binary_search(moe_layers.begin(), moe_layers.end(), l);
  if (family != Family::qwen2_moe) return true;
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), l) != mlp_only_layers.end()) return false;
  return decoder_sparse_step > 0 && (l + 1) % decoder_sparse_step == 0;
}

int64_t ModelConfig::layer_sliding_window(int64_t l) const {
  return (sliding_window > 0 && l >= sliding_window_first_layer) ? sliding_window : 0;
}

std::vector<int64_t> ModelConfig::layer_expert_widths(int64_t l) const {
  if (!layer_is_moe(l)) return {};
  if (family == Family::moeforge) {
    const auto pos = std::lower_bound(moe_layers.begin(), moe_layers.end(), l) - moe_layers.begin();
    return expert_sizes.at(static_cast<size_t>(pos));
  }
  return std::vector<int64_t>(static_cast<size_t>(num_experts), moe_intermediate_size);
}

std::string ModelConfig::ffn_module_name() const { return family == Family::mixtral ? "block_sparse_moe" : "mlp"; }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

// Typed optional lookup; null counts as absent (HF writes "sliding_window": null).
int64_t get_int(const json& j, const std::string& key, int64_t fallback, const std::string& origin) {
  return json_get_or<int64_t>(j, key, fallback, origin);
}
double get_num(const json& j, const std::string& key, double fallback, const std::string& origin) {
  return json_get_or<double>(j, key, fallback, origin);
}
bool get_bool(const json& j, const std::string& key, bool fallback, const std::string& origin) {
  return json_get_or<bool>(j, key, fallback, origin);
}
int64_t require_int(const json& j, const std::string& key, const std::string& origin) {
  return json_get<int64_t>(j, key, origin);
}

// bos/eos ids: an integer, a list of integers, or null.
std::vector<int64_t> get_ids(const json& j, const std::string& key, std::vector<int64_t> fallback,
                             const std::string& origin) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (it->is_null()) return {};
  if (it->is_number_integer()) return {it->get<int64_t>()};
  if (it->is_array()) {
    std::vector<int64_t> ids;
    for (const auto& v : *it) {
      if (!v.is_number_integer()) fail_file(origin, "key '" + key + "' must be an integer or a list of integers");
      ids.push_back(v.get<int64_t>());
    }
    return ids;
  }
  fail_file(origin, "key '" + key + "' must be an integer or a list of integers");
}

void check_positive(int64_t v, const std::string& key, const std::string& origin) {
  if (v <= 0) fail_file(origin, "key '" + key + "' must be positive (got " + std::to_string(v) + ")");
}

void check_activation(const std::string& act, const std::string& key, const std::string& origin) {
  static const std::set<std::string> ok = {"silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu"};
  if (!ok.count(act))
    fail_file(origin, "key '" + key + "': unsupported activation \"" + act +
                          "\" (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu)");
}

// Rotary scaling from `key` (transformers < 5: "rope_scaling"; >= 5: "rope_parameters", which also
// holds rope_theta and says "default" when there is no scaling).
RopeScaling parse_rope_scaling(const json& r, const std::string& key, const std::string& origin) {
  RopeScaling rs;
  const std::string o = origin + ": " + key;
  std::string type;
  if (r.contains("rope_type") && !r["rope_type"].is_null()) type = json_get<std::string>(r, "rope_type", o);
  else if (r.contains("type") && !r["type"].is_null()) type = json_get<std::string>(r, "type", o);
  else fail_file(origin, "key '" + key + "' has no 'rope_type'");
  if (type == "default") return rs;
  if (type != "linear" && type != "llama3")
    fail_file(origin, "key '" + key + "': unsupported rope_type \"" + type + "\" (supported: default, linear, llama3)");
  rs.type = type;
  rs.factor = json_get<double>(r, "factor", o);
  if (rs.factor < 1.0) fail_file(origin, "key '" + key + ".factor' must be >= 1");
  if (type == "llama3") {
    rs.low_freq_factor = json_get<double>(r, "low_freq_factor", o);
    rs.high_freq_factor = json_get<double>(r, "high_freq_factor", o);
    rs.original_max_position_embeddings = json_get<int64_t>(r, "original_max_position_embeddings", o);
    if (rs.high_freq_factor <= rs.low_freq_factor)
      fail_file(origin, "key '" + key + ".high_freq_factor' must be greater than low_freq_factor");
  }
  return rs;
}

void parse_rope(const json& j, const std::string& o, double default_theta, ModelConfig& c) {
  c.rope_theta = get_num(j, "rope_theta", default_theta, o);
  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_object()) fail_file(o, std::string("key '") + key + "' must be an object or null");
    if (it->contains("rope_theta")) c.rope_theta = get_num(*it, "rope_theta", c.rope_theta, o + ": " + key);
    c.rope_scaling = parse_rope_scaling(*it, key, o);
    return;
  }
}

// Keys shared by every Llama-type family, with the per-family defaults of transformers' classes.
struct LlamaDefaults {
  int64_t kv_heads = -1;  // -1: num_attention_heads
  double eps = 1e-6;
  double theta = 10000.0;
  int64_t max_pos = 2048;
  std::vector<int64_t> bos = {1}, eos = {2};
  bool intermediate_required = true;
};

void parse_llama_common(const json& j, const std::string& o, ModelConfig& c, const LlamaDefaults& d) {
  c.vocab_size = require_int(j, "vocab_size", o);
  c.hidden_size = require_int(j, "hidden_size", o);
  c.num_layers = require_int(j, "num_hidden_layers", o);
  c.num_heads = require_int(j, "num_attention_heads", o);
  c.intermediate_size = d.intermediate_required ? require_int(j, "intermediate_size", o)
                                                : get_int(j, "intermediate_size", 5632, o);
  check_positive(c.vocab_size, "vocab_size", o);
  check_positive(c.hidden_size, "hidden_size", o);
  check_positive(c.num_layers, "num_hidden_layers", o);
  check_positive(c.num_heads, "num_attention_heads", o);
  c.num_kv_heads = get_int(j, "num_key_value_heads", d.kv_heads > 0 ? d.kv_heads : c.num_heads, o);
  check_positive(c.num_kv_heads, "num_key_value_heads", o);
  if (c.num_heads % c.num_kv_heads != 0)
    fail_file(o, "key 'num_key_value_heads' (" + std::to_string(c.num_kv_heads) +
                     ") must divide num_attention_heads (" + std::to_string(c.num_heads) + ")");
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    c.head_dim = require_int(j, "head_dim", o);
    check_positive(c.head_dim, "head_dim", o);
  } else {
    if (c.hidden_size % c.num_heads != 0)
      fail_file(o, "key 'hidden_size' (" + std::to_string(c.hidden_size) + ") is not divisible by num_attention_heads (" +
                       std::to_string(c.num_heads) + ")");
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0) fail_file(o, "head_dim must be even for rotary embeddings");
  c.norm_eps = get_num(j, "rms_norm_eps", d.eps, o);
  parse_rope(j, o, d.theta, c);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", d.max_pos, o);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, o);
  c.hidden_act = json_get_or<std::string>(j, "hidden_act", "silu", o);
  check_activation(c.hidden_act, "hidden_act", o);
  c.bos_token_ids = get_ids(j, "bos_token_id", d.bos, o);
  c.eos_token_ids = get_ids(j, "eos_token_id", d.eos, o);
  auto pad = get_ids(j, "pad_token_id", {}, o);
  c.pad_token_id = pad.empty() ? -1 : pad[0];
}

// Qwen2 / Qwen2-MoE: use_sliding_window + sliding_window + max_window_layers.
void parse_qwen_window(const json& j, const std::string& o, ModelConfig& c) {
  if (get_bool(j, "use_sliding_window", false, o)) {
    c.sliding_window = get_int(j, "sliding_window", 4096, o);
    c.sliding_window_first_layer = get_int(j, "max_window_layers", 28, o);
  }
}

void parse_moe_common(const json& j, const std::string& o, ModelConfig& c, const std::string& experts_key,
                      int64_t default_k, double default_aux) {
  c.num_experts = require_int(j, experts_key, o);
  check_positive(c.num_experts, experts_key, o);
  c.num_experts_per_tok = get_int(j, "num_experts_per_tok", default_k, o);
  check_positive(c.num_experts_per_tok, "num_experts_per_tok", o);
  if (c.num_experts_per_tok > c.num_experts)
    fail_file(o, "key 'num_experts_per_tok' (" + std::to_string(c.num_experts_per_tok) + ") exceeds " + experts_key +
                     " (" + std::to_string(c.num_experts) + ")");
  c.router_aux_loss_coef = get_num(j, "router_aux_loss_coef", default_aux, o);
  c.router_jitter_noise = get_num(j, "router_jitter_noise", 0.0, o);
}

// A list of integers under `key` ("<origin>: key 'moe_layers' must be a list of integers").
std::vector<int64_t> int_list(const json& v, const std::string& key, const std::string& origin) {
  if (!v.is_array()) fail_file(origin, "key '" + key + "' must be a list of integers");
  std::vector<int64_t> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_number_integer()) fail_file(origin, key + "[" + std::to_string(i) + "] must be an integer");
    out.push_back(v[i].get<int64_t>());
  }
  return out;
}

std::string one_of(const json& r, const std::string& key, const std::string& fallback,
                   const std::vector<std::string>& allowed, const std::string& origin) {
  const std::string v = json_get_or<std::string>(r, key, fallback, origin + ": router");
  if (std::find(allowed.begin(), allowed.end(), v) == allowed.end())
    fail_file(origin, "router." + key + " \"" + v + "\" is not supported (supported: " + join(allowed, ", ") + ")");
  return v;
}

// moeforge: the base family's config plus the MoE keys of docs/format.md.
void parse_moeforge(const json& j, const std::string& o, ModelConfig& c) {
  const std::string base = json_get<std::string>(j, "base_model_type", o);
  if (base != "llama" && base != "mistral" && base != "qwen2")
    fail_file(o, "base_model_type \"" + base + "\" is not supported (supported: llama, mistral, qwen2)");
  json jb = j;
  jb["model_type"] = base;
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
  const json& es = j["expert_sizes"];
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

  auto rit = j.find("router");
  if (rit == j.end()) fail_file(o, "missing key 'router'");
  if (!rit->is_object()) fail_file(o, "key 'router' must be an object");
  const json& r = *rit;
  if (!r.contains("type")) fail_file(o, "missing key 'router.type'");
  MoeforgeRouter& rc = c.router;
  rc.type = one_of(r, "type", "linear", {"linear", "mlp", "avgk"}, o);
  rc.score = one_of(r, "score", "softmax", {"softmax", "sigmoid"}, o);
  rc.selection = one_of(r, "selection", "top_k", {"top_k", "top_p", "dynk_max"}, o);
  rc.gate = one_of(r, "gate", "unit", {"unit", "renorm", "prob", "ones"}, o);
  rc.aux_loss = one_of(r, "aux_loss", "hemoe", {"hemoe", "switch", "none"}, o);
  rc.top_p = get_num(r, "top_p", 0.8, o + ": router");
  rc.dynk_tau = get_num(r, "dynk_tau", 0.5, o + ": router");
  rc.aux_loss_coef = get_num(r, "aux_loss_coef", 5e-4, o + ": router");
  if (!(rc.top_p > 0 && rc.top_p <= 1)) fail_file(o, "router.top_p must be in (0, 1]");
  if (!(rc.dynk_tau >= 0 && rc.dynk_tau <= 1)) fail_file(o, "router.dynk_tau must be in [0, 1]");
  if (rc.aux_loss_coef < 0) fail_file(o, "router.aux_loss_coef must be >= 0");
  if (rc.type == "avgk" && rc.score != "softmax")
    fail_file(o, "router.score \"" + rc.score + "\" is not supported with router.type avgk (softmax only)");
  c.router_aux_loss_coef = rc.aux_loss_coef;
  c.norm_topk_prob = rc.gate == "renorm";
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& origin) {
  const std::string& o = origin;
  if (!j.is_object()) fail_file(o, "expected a JSON object");
  ModelConfig c;
  c.origin = origin;
  c.raw = j;
  c.model_type = json_get<std::string>(j, "model_type", o);
  const std::string& mt = c.model_type;

  if (mt == "llama") {
    c.family = Family::llama;
    parse_llama_common(j, o, c, LlamaDefaults{});
    c.attention_bias = c.attention_out_bias = get_bool(j, "attention_bias", false, o);
    c.mlp_bias = get_bool(j, "mlp_bias", false, o);
  } else if (mt == "mistral") {
    c.family = Family::mistral;
    LlamaDefaults d;
    d.kv_heads = 8;
    d.max_pos = 4096 * 32;
    parse_llama_common(j, o, c, d);
    c.sliding_window = get_int(j, "sliding_window", 4096, o);
  } else if (mt == "qwen2") {
    c.family = Family::qwen2;
    LlamaDefaults d;
    d.max_pos = 32768;
    d.bos = {};
    d.eos = {};
    parse_llama_common(j, o, c, d);
    c.attention_bias = true;  // Qwen2 always has q/k/v biases, never an o_proj bias
    parse_qwen_window(j, o, c);
  } else if (mt == "mixtral") {
    c.family = Family::mixtral;
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
  } else if (mt == "qwen2_moe") {
    c.family = Family::qwen2_moe;
    LlamaDefaults d;
    d.max_pos = 32768;
    d.bos = {};
    d.eos = {};
    d.intermediate_required = false;
    parse_llama_common(j, o, c, d);
    c.attention_bias = true;
    parse_qwen_window(j, o, c);
    parse_moe_common(j, o, c, "num_experts", 4, 0.001);
    c.moe_intermediate_size = require_int(j, "moe_intermediate_size", o);
    check_positive(c.moe_intermediate_size, "moe_intermediate_size", o);
    c.shared_expert_intermediate_size = get_int(j, "shared_expert_intermediate_size", 5632, o);
    if (c.shared_expert_intermediate_size < 0) fail_file(o, "key 'shared_expert_intermediate_size' must be >= 0");
    c.norm_topk_prob = get_bool(j, "norm_topk_prob", false, o);
    c.decoder_sparse_step = get_int(j, "decoder_sparse_step", 1, o);
    check_positive(c.decoder_sparse_step, "decoder_sparse_step", o);
    auto it = j.find("mlp_only_layers");
    if (it != j.end() && !it->is_null()) {
      if (!it->is_array()) fail_file(o, "key 'mlp_only_layers' must be a list of integers");
      for (const auto& v : *it) {
        if (!v.is_number_integer()) fail_file(o, "key 'mlp_only_layers' must be a list of integers");
        c.mlp_only_layers.push_back(v.get<int64_t>());
      }
    }
    bool any_dense = false;
    for (int64_t l = 0; l < c.num_layers; ++l) any_dense |= !c.layer_is_moe(l);
    if (any_dense && !j.contains("intermediate_size"))
      fail_file(o, "missing key 'intermediate_size' (needed by the dense layers)");
    check_positive(c.intermediate_size, "intermediate_size", o);
  } else if (mt == "olmoe") {
    c.family = Family::olmoe;
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
  } else if (mt == "moeforge") {
    parse_moeforge(j, o, c);
    return c;
  } else if (mt == "gpt2") {
    c.family = Family::gpt2;
    c.vocab_size = require_int(j, "vocab_size", o);
    c.hidden_size = require_int(j, "n_embd", o);
    c.num_layers = require_int(j, "n_layer", o);
    c.num_heads = require_int(j, "n_head", o);
    check_positive(c.vocab_size, "vocab_size", o);
    check_positive(c.hidden_size, "n_embd", o);
    check_positive(c.num_layers, "n_layer", o);
    check_positive(c.num_heads, "n_head", o);
    if (c.hidden_size % c.num_heads != 0)
      fail_file(o, "key 'n_embd' (" + std::to_string(c.hidden_size) + ") is not divisible by n_head (" +
                       std::to_string(c.num_heads) + ")");
    c.num_kv_heads = c.num_heads;
    c.head_dim = c.hidden_size / c.num_heads;
    c.intermediate_size = get_int(j, "n_inner", 4 * c.hidden_size, o);
    check_positive(c.intermediate_size, "n_inner", o);
    c.max_position_embeddings = get_int(j, "n_positions", 1024, o);
    check_positive(c.max_position_embeddings, "n_positions", o);
    c.norm_eps = get_num(j, "layer_norm_epsilon", 1e-5, o);
    c.hidden_act = json_get_or<std::string>(j, "activation_function", "gelu_new", o);
    check_activation(c.hidden_act, "activation_function", o);
    c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", true, o);
    c.attention_bias = c.attention_out_bias = c.mlp_bias = true;
    c.bos_token_ids = get_ids(j, "bos_token_id", {50256}, o);
    c.eos_token_ids = get_ids(j, "eos_token_id", {50256}, o);
    auto pad = get_ids(j, "pad_token_id", {}, o);
    c.pad_token_id = pad.empty() ? -1 : pad[0];
    if (!get_bool(j, "scale_attn_weights", true, o)) fail_file(o, "key 'scale_attn_weights': false is not supported");
    if (get_bool(j, "scale_attn_by_inverse_layer_idx", false, o))
      fail_file(o, "key 'scale_attn_by_inverse_layer_idx': true is not supported");
  } else {
    fail_file(o, "unsupported model_type \"" + mt + "\" (supported: " + supported_model_types() + ")");
  }
  if (c.max_position_embeddings <= 0) c.max_position_embeddings = 2048;
  return c;
}

ModelConfig read_model_config(const std::string& path) { return parse_model_config(read_json_file(path), path); }

namespace {

void add(std::vector<TensorSpec>& v, std::string name, std::vector<int64_t> shape, bool required = true) {
  v.push_back(TensorSpec{std::move(name), std::move(shape), required});
}

void add_swiglu(std::vector<TensorSpec>& v, const std::string& p, int64_t h, int64_t i, const std::string& gate,
                const std::string& up, const std::string& down, bool bias) {
  add(v, p + gate + ".weight", {i, h});
  if (bias) add(v, p + gate + ".bias", {i});
  add(v, p + up + ".weight", {i, h});
  if (bias) add(v, p + up + ".bias", {i});
  add(v, p + down + ".weight", {h, i});
  if (bias) add(v, p + down + ".bias", {h});
}

std::vector<TensorSpec> gpt2_tensors(const ModelConfig& c) {
  std::vector<TensorSpec> v;
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  add(v, "transformer.wte.weight", {c.vocab_size, h});
  add(v, "transformer.wpe.weight", {c.max_position_embeddings, h});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    add(v, p + "ln_1.weight", {h});
    add(v, p + "ln_1.bias", {h});
    // Conv1D stores weights as [in, out].
    add(v, p + "attn.c_attn.weight", {h, 3 * h});
    add(v, p + "attn.c_attn.bias", {3 * h});
    add(v, p + "attn.c_proj.weight", {h, h});
    add(v, p + "attn.c_proj.bias", {h});
    add(v, p + "ln_2.weight", {h});
    add(v, p + "ln_2.bias", {h});
    add(v, p + "mlp.c_fc.weight", {h, i});
    add(v, p + "mlp.c_fc.bias", {i});
    add(v, p + "mlp.c_proj.weight", {i, h});
    add(v, p + "mlp.c_proj.bias", {h});
  }
  add(v, "transformer.ln_f.weight", {h});
  add(v, "transformer.ln_f.bias", {h});
  add(v, "lm_head.weight", {c.vocab_size, h}, !c.tie_word_embeddings);
  return v;
}

}  // namespace

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  if (c.family == Family::gpt2) return gpt2_tensors(c);
  std::vector<TensorSpec> v;
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  add(v, "model.embed_tokens.weight", {c.vocab_size, h});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    add(v, a + "q_proj.weight", {q, h});
    if (c.attention_bias) add(v, a + "q_proj.bias", {q});
    add(v, a + "k_proj.weight", {kv, h});
    if (c.attention_bias) add(v, a + "k_proj.bias", {kv});
    add(v, a + "v_proj.weight", {kv, h});
    if (c.attention_bias) add(v, a + "v_proj.bias", {kv});
    add(v, a + "o_proj.weight", {h, q});
    if (c.attention_out_bias) add(v, a + "o_proj.bias", {h});
    if (c.qk_norm) {
      add(v, a + "q_norm.weight", {q});
      add(v, a + "k_norm.weight", {kv});
    }
    const std::string f = p + c.ffn_module_name() + ".";
    if (!c.layer_is_moe(l)) {
      add_swiglu(v, f, h, c.intermediate_size, "gate_proj", "up_proj", "down_proj", c.mlp_bias);
    } else if (c.family == Family::moeforge) {
      const int64_t E = c.num_experts;
      if (c.router.type == "linear") {
        add(v, f + "router.weight", {E, h});
      } else if (c.router.type == "mlp") {
        add(v, f + "router.0.weight", {E, h});
        add(v, f + "router.2.weight", {E, E});
      }  // avgk: the gate is computed from the experts
      const std::vector<int64_t> widths = c.layer_expert_widths(l);
      for (int64_t e = 0; e < E; ++e) {
        const std::string ep = f + "experts." + std::to_string(e) + ".";
        add_swiglu(v, ep, h, widths[e], "gate_proj", "up_proj", "down_proj", false);
        add(v, ep + "neurons", {widths[e]}, /*required=*/false);
      }
    } else {
      add(v, f + "gate.weight", {c.num_experts, h});
      const bool mixtral = c.family == Family::mixtral;
      for (int64_t e = 0; e < c.num_experts; ++e) {
        const std::string ep = f + "experts." + std::to_string(e) + ".";
        if (mixtral) add_swiglu(v, ep, h, c.moe_intermediate_size, "w1", "w3", "w2", false);
        else add_swiglu(v, ep, h, c.moe_intermediate_size, "gate_proj", "up_proj", "down_proj", false);
      }
      if (c.shared_expert_intermediate_size > 0) {
        add_swiglu(v, f + "shared_expert.", h, c.shared_expert_intermediate_size, "gate_proj", "up_proj", "down_proj",
                   false);
        add(v, f + "shared_expert_gate.weight", {1, h});
      }
    }
    add(v, p + "input_layernorm.weight", {h});
    add(v, p + "post_attention_layernorm.weight", {h});
  }
  add(v, "model.norm.weight", {h});
  add(v, "lm_head.weight", {c.vocab_size, h}, !c.tie_word_embeddings);
  return v;
}

bool is_ignorable_tensor(const ModelConfig& c, const std::string& name) {
  if (ends_with(name, "rotary_emb.inv_freq")) return true;
  if (c.family == Family::gpt2 && (ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias"))) return true;
  return false;
}

std::string canonical_tensor_name(const ModelConfig& c, const std::string& n) {
  if (c.family == Family::gpt2 && !starts_with(n, "transformer.") && !starts_with(n, "lm_head.")) return "transformer." + n;
  return n;
}

void validate_tensors(const ModelConfig& c, const std::map<std::string, std::vector<int64_t>>& present,
                      const std::string& origin, const std::map<std::string, std::string>& file_of) {
  auto where = [&](const std::string& stored) {
    auto it = file_of.find(stored);
    return it == file_of.end() ? origin : it->second;
  };
  std::map<std::string, std::string> canonical;  // canonical name -> stored name
  for (const auto& [name, shape] : present) {
    if (is_ignorable_tensor(c, name)) continue;
    std::string cn = canonical_tensor_name(c, name);
    if (canonical.count(cn)) fail_file(where(name), "tensor " + name + " is stored twice (as " + canonical[cn] + ")");
    canonical[cn] = name;
  }
  std::set<std::string> known;
  const std::string cfg_name = c.origin.empty() ? "config.json" : base_name(c.origin);
  for (const auto& spec : expected_tensors(c)) {
    known.insert(spec.name);
    auto it = canonical.find(spec.name);
    if (it == canonical.end()) {
      if (spec.required) fail_file(origin, "missing tensor " + spec.name);
      continue;
    }
    const auto& shape = present.at(it->second);
    if (shape != spec.shape)
      fail_file(where(it->second), "tensor " + it->second + " has shape " + shape_string(shape) + " but " + cfg_name +
                                       " implies " + shape_string(spec.shape));
  }
  for (const auto& [cn, stored] : canonical)
    if (!known.count(cn)) fail_file(where(stored), "unexpected tensor " + stored);
}

int64_t total_parameters(const ModelConfig& c) {
  int64_t n = 0;
  for (const auto& s : expected_tensors(c)) {
    if (!s.required) continue;  // tied lm_head shares the embedding
    int64_t k = 1;
    for (int64_t d : s.shape) k *= d;
    n += k;
  }
  return n;
}

namespace {
// Routed-expert parameters of MoE layer l, per expert (SwiGLU, no biases), sorted ascending.
std::vector<int64_t> sorted_expert_params(const ModelConfig& c, int64_t l) {
  std::vector<int64_t> p;
  for (int64_t w : c.layer_expert_widths(l)) p.push_back(3 * c.hidden_size * w);
  std::sort(p.begin(), p.end());
  return p;
}
int64_t sum_range(const std::vector<int64_t>& v, size_t from, size_t to) {
  int64_t s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s;
}
}  // namespace

int64_t active_parameters_per_token(const ModelConfig& c) {
  int64_t n = total_parameters(c);
  if (!c.is_moe()) return n;
  const int64_t E = c.num_experts, k = c.num_experts_per_tok;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe(l)) continue;
    const int64_t all = sum_range(sorted_expert_params(c, l), 0, static_cast<size_t>(E));
    n -= all - all * k / E;  // exact for equal widths; the uniform-routing expectation otherwise
  }
  return n;
}

ActiveParameterRange active_parameter_range(const ModelConfig& c) {
  ActiveParameterRange r{total_parameters(c), total_parameters(c)};
  if (!c.is_moe()) return r;
  const size_t E = static_cast<size_t>(c.num_experts), k = static_cast<size_t>(c.num_experts_per_tok);
  const bool variable_k = c.family == Family::moeforge && c.router.selection != "top_k";
  const size_t kmin = variable_k ? 1 : k;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe(l)) continue;
    const auto p = sorted_expert_params(c, l);
    const int64_t all = sum_range(p, 0, E);
    r.min -= all - sum_range(p, 0, kmin);
    r.max -= all - sum_range(p, E - k, E);
  }
  return r;
}

}  // namespace mf
