#include "model/config.h"

#include <algorithm>
#include <set>

#include "model/config_parse.h"
#include "model/family.h"
#include "model/size_limits.h"
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

bool ModelConfig::layer_is_moe(int64_t l) const {
  if (num_experts <= 0) return false;
  if (family == Family::moeforge) return std::binary_search(moe_layers.begin(), moe_layers.end(), l);
  if (family != Family::qwen2_moe) return true;
  // Sorted without repeats by the Qwen2-MoE parser (qwen2_moe.cpp): no linear scan per layer.
  if (std::binary_search(mlp_only_layers.begin(), mlp_only_layers.end(), l)) return false;
  return decoder_sparse_step > 0 && (l + 1) % decoder_sparse_step == 0;
}

int64_t ModelConfig::layer_sliding_window(int64_t l) const {
  return (sliding_window > 0 && l >= sliding_window_first_layer) ? sliding_window : 0;
}

std::vector<int64_t> ModelConfig::layer_expert_widths(int64_t l) const {
  if (!layer_is_moe(l)) return {};
  if (family == Family::moeforge || !expert_sizes.empty()) {
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

namespace config_parse {

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

}  // namespace config_parse

ModelConfig parse_model_config(const json& j, const std::string& origin) {
  const std::string& o = origin;
  if (!j.is_object()) fail_file(o, "expected a JSON object");
  ModelConfig c;
  c.origin = origin;
  c.raw = j;
  c.model_type = json_get<std::string>(j, "model_type", o);
  const std::string& mt = c.model_type;

  // Each family reads its own keys (model/family.h, one file per family).
  const FamilyEntry* family = family_registry().find(mt);
  if (!family) fail_file(o, "unsupported model_type \"" + mt + "\" (supported: " + supported_model_types() + ")");
  c.family = family->family;  // set first: parsers may ask layer_is_moe()
  family->parse(j, o, c);
  if (mt != "moeforge" && j.contains("hypermoe"))
    fail_file(o, "key 'hypermoe' needs \"model_type\": \"moeforge\" with \"base_model_type\": \"" + mt +
                     "\" (a " + mt + " loader would silently drop the HyperMoE tensors)");
  // moeforge parses its base family through this function, so for it this already ran (a no-op).
  if (c.max_position_embeddings <= 0) c.max_position_embeddings = 2048;
  // Before anything is sized by it: every dimension, and the tensors and parameters they imply.
  check_model_size_limits(c);
  return c;
}

ModelConfig read_model_config(const std::string& path) { return parse_model_config(read_json_file(path), path); }

}  // namespace mf
