// Reading (mergekit-moe YAML) and checking an upcycling config; docs/upcycle.md lists the keys.
#include <algorithm>
#include <set>

#include "model/config.h"
#include "model/model.h"
#include "upcycle/gate_init.h"
#include "upcycle/upcycle.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/str.h"
#include "util/yaml.h"

namespace mf {

namespace {

const std::vector<std::string> kFamilies = {"mixtral", "qwen2_moe", "olmoe", "moeforge"};
const std::vector<std::string> kRouters = {"linear", "noisy_topk"};  // moeforge's; the others are linear

bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

void check_keys(const json& obj, const std::vector<std::string>& known, const std::string& where, const std::string& path) {
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (!contains(known, it.key()))
      fail_file(path, cat("unsupported key '", where, it.key(), "' (supported: ", join(known, ", "), ")"));
}

std::vector<std::string> string_list(const json& obj, const std::string& key, const std::string& where,
                                     const std::string& path) {
  std::vector<std::string> out;
  if (!obj.contains(key) || obj[key].is_null()) return out;
  const json& v = obj[key];
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) fail_file(path, where + key + " must be a list of strings");
  for (const auto& s : v) {
    if (!s.is_string()) fail_file(path, where + key + " must be a list of strings");
    out.push_back(s.get<std::string>());
  }
  return out;
}

double number(const json& obj, const std::string& key, double fallback, const std::string& where, const std::string& path) {
  if (!obj.contains(key) || obj[key].is_null()) return fallback;
  if (!obj[key].is_number()) fail_file(path, where + key + " must be a number");
  return obj[key].get<double>();
}

UpcycleExpert parse_expert(const json& e, const std::string& where, const std::string& path) {
  if (!e.is_object() || !e.contains("source_model") || !e["source_model"].is_string())
    fail_file(path, where + " must be a mapping with a source_model path");
  check_keys(e, {"source_model", "positive_prompts", "negative_prompts", "noise_scale", "residual_scale"}, where + ".",
             path);
  UpcycleExpert x;
  x.source_model = e["source_model"].get<std::string>();
  x.positive_prompts = string_list(e, "positive_prompts", where + ".", path);
  x.negative_prompts = string_list(e, "negative_prompts", where + ".", path);
  x.noise_scale = number(e, "noise_scale", 0.0, where + ".", path);
  x.residual_scale = number(e, "residual_scale", 1.0, where + ".", path);
  if (x.noise_scale < 0) fail_file(path, where + ".noise_scale must be >= 0");
  return x;
}

int64_t integer(const json& obj, const std::string& key, int64_t fallback, const std::string& path) {
  if (!obj.contains(key) || obj[key].is_null()) return fallback;
  if (!obj[key].is_number_integer()) fail_file(path, key + " must be an integer");
  return obj[key].get<int64_t>();
}

// What identifies a tokenizer's vocabulary: the hash of its main file ("" when it has none).
std::string tokenizer_fingerprint(const std::string& dir) {
  for (const char* f : {"tokenizer.json", "tokenizer.model", "vocab.json"}) {
    const std::string p = path_join(dir, f);
    if (path_exists(p)) return std::string(f) + ":" + sha256_file(p);
  }
  return "";
}

}  // namespace

UpcycleConfig load_upcycle_yaml(const std::string& path) {
  const json root = json(read_yaml_file(path));
  if (!root.is_object()) fail_file(path, "expected a mapping with base_model and experts");
  check_keys(root,
             {"base_model", "gate_mode", "dtype", "experts_per_token", "experts", "shared_experts", "architecture",
              "granularity", "layers", "seed", "router"},
             "", path);
  UpcycleConfig c;
  c.origin = path;
  if (!root.contains("base_model") || !root["base_model"].is_string()) fail_file(path, "missing base_model (a path)");
  c.base_model = root["base_model"].get<std::string>();
  c.gate_mode = root.contains("gate_mode") ? root["gate_mode"].get<std::string>() : "hidden";  // mergekit's default
  if (root.contains("dtype") && !root["dtype"].is_null()) c.dtype = root["dtype"].get<std::string>();
  if (root.contains("router") && !root["router"].is_null()) {
    if (!root["router"].is_string()) fail_file(path, "router must be a string (" + join(kRouters, " or ") + ")");
    c.router = root["router"].get<std::string>();
  }
  c.top_k = integer(root, "experts_per_token", 2, path);
  c.granularity = integer(root, "granularity", 1, path);
  const int64_t seed = integer(root, "seed", 0, path);
  if (seed < 0) fail_file(path, "seed must be >= 0");
  c.seed = static_cast<uint64_t>(seed);
  if (root.contains("layers") && !root["layers"].is_null()) {
    if (!root["layers"].is_array()) fail_file(path, "layers must be a list of integers");
    for (const auto& l : root["layers"]) {
      if (!l.is_number_integer()) fail_file(path, "layers must be a list of integers");
      c.layers.push_back(l.get<int64_t>());
    }
  }
  if (!root.contains("experts") || !root["experts"].is_array() || root["experts"].empty())
    fail_file(path, "experts must be a non-empty list");
  for (size_t i = 0; i < root["experts"].size(); ++i)
    c.experts.push_back(parse_expert(root["experts"][i], cat("experts[", i, "]"), path));
  if (root.contains("shared_experts") && !root["shared_experts"].is_null()) {
    const json& s = root["shared_experts"];
    if (!s.is_array() || s.size() > 1) fail_file(path, "shared_experts must be a list of at most one expert");
    if (!s.empty()) c.shared_expert = parse_expert(s[0], "shared_experts[0]", path);
  }
  // mergekit's architecture names; moeforge also takes its own family names.
  std::string arch = root.contains("architecture") ? root["architecture"].get<std::string>() : "";
  if (arch.empty()) arch = c.shared_expert ? "qwen2_moe" : "mixtral";  // mergekit prefers Mixtral when it fits
  if (arch == "qwen") arch = "qwen2_moe";
  if (!contains(kFamilies, arch))
    fail_file(path, "architecture '" + arch + "' is not supported (supported: mixtral, qwen, qwen2_moe, olmoe, moeforge)");
  c.family = arch;
  return c;
}

void validate_upcycle(const UpcycleConfig& c) {
  const std::string& o = c.origin;
  if (!contains(kFamilies, c.family)) fail_file(o, "unknown family '" + c.family + "' (supported: " + join(kFamilies, ", ") + ")");
  if (!contains(gate_modes(), c.gate_mode))
    fail_file(o, "unknown gate mode '" + c.gate_mode + "' (supported: " + join(gate_modes(), ", ") + ")");
  if (!contains(kRouters, c.router))
    fail_file(o, "unknown router '" + c.router + "' (supported: " + join(kRouters, ", ") + ")");
  if (c.family != "moeforge" && c.router != "linear")
    fail_file(o, "router " + c.router + " is a moeforge router (--family moeforge, YAML architecture: moeforge); " +
                     c.family + " routers are linear");
  const int64_t N = static_cast<int64_t>(c.experts.size());
  if (N == 0) fail_file(o, "no experts");
  if (c.top_k < 1 || c.top_k > N) fail_file(o, cat("top-k ", c.top_k, " must be between 1 and the number of experts (", N, ")"));
  if (c.granularity < 1) fail_file(o, "granularity must be >= 1");
  if (N % c.granularity != 0)
    fail_file(o, cat("the number of experts (", N, ") is not divisible by the granularity (", c.granularity, ")"));
  if (!c.dtype.empty()) {
    try {
      parse_dtype(c.dtype);
    } catch (const Error&) {
      fail_file(o, "unknown dtype '" + c.dtype + "' (supported: float32, float16, bfloat16)");
    }
  }

  const std::string base_cfg_path = path_join(c.base_model, "config.json");
  if (!path_exists(base_cfg_path)) fail_file(c.base_model, "not a model directory: config.json is missing");
  const ModelConfig base = read_model_config(base_cfg_path);
  if (base.family != Family::llama && base.family != Family::mistral && base.family != Family::qwen2)
    fail_file(base_cfg_path, "model_type '" + base.model_type + "' cannot be upcycled (dense Llama, Mistral and Qwen2 models only)");
  if (base.mlp_bias) fail_file(base_cfg_path, "mlp_bias is set: the MoE families have no FFN biases");
  if (base.intermediate_size % c.granularity != 0)
    fail_file(o, cat("intermediate_size ", base.intermediate_size, " is not divisible by the granularity (", c.granularity, ")"));
  const bool qkv_bias_only = base.attention_bias && !base.attention_out_bias;
  if (c.family == "mixtral") {
    if (c.shared_expert) fail_file(o, "mixtral has no shared expert (use --family qwen2_moe)");
    if (base.attention_bias || base.attention_out_bias)
      fail_file(base_cfg_path, "Mixtral has no attention biases, this model has them (use --family qwen2_moe)");
  } else if (c.family == "qwen2_moe") {
    if (!c.shared_expert)
      fail_file(o, "qwen2_moe needs a shared expert (--shared-expert, or shared_experts in YAML): transformers' "
                   "Qwen2MoeSparseMoeBlock always has one");
    if (base.attention_out_bias) fail_file(base_cfg_path, "Qwen2-MoE has no o_proj bias, this model has one");
  } else if (c.family == "moeforge") {
    // Attention, norms and dense layers stay the base family's (base_model_type): any base fits.
    if (c.shared_expert) fail_file(o, "moeforge has no shared expert (use --family qwen2_moe)");
  } else {
    if (c.shared_expert) fail_file(o, "olmoe has no shared expert (use --family qwen2_moe)");
    if (qkv_bias_only) fail_file(base_cfg_path, "OLMoE has q/k/v biases only together with an o_proj bias");
    if (base.sliding_window > 0) fail_file(base_cfg_path, "OLMoE has no sliding-window attention, this model uses it");
  }
  std::set<int64_t> seen;
  for (int64_t l : c.layers) {
    if (l < 0 || l >= base.num_layers) fail_file(o, cat("layer ", l, " out of range (the model has ", base.num_layers, ")"));
    if (!seen.insert(l).second) fail_file(o, cat("layer ", l, " listed twice"));
  }
  if (c.family != "qwen2_moe" && c.family != "moeforge" && !c.layers.empty() &&
      static_cast<int64_t>(seen.size()) != base.num_layers)
    fail_file(o, c.family + " makes every layer sparse; only qwen2_moe (mlp_only_layers) and moeforge (moe_layers) keep "
                 "dense layers");

  // Donors: the base model's architecture, sizes and tokenizer.
  const std::string base_tok = tokenizer_fingerprint(c.base_model);
  std::vector<const UpcycleExpert*> all;
  for (const auto& e : c.experts) all.push_back(&e);
  if (c.shared_expert) all.push_back(&*c.shared_expert);
  std::set<std::string> checked = {c.base_model};
  for (const UpcycleExpert* e : all) {
    if (!checked.insert(e->source_model).second) continue;
    const std::string p = path_join(e->source_model, "config.json");
    if (!path_exists(p)) fail_file(e->source_model, "not a model directory: config.json is missing");
    const ModelConfig d = read_model_config(p);
    auto same = [&](const char* key, int64_t got, int64_t want) {
      if (got != want) fail_file(p, cat(key, " ", got, " differs from the base model's ", want));
    };
    if (d.family != base.family) fail_file(p, "model_type '" + d.model_type + "' differs from the base model's '" + base.model_type + "'");
    same("hidden_size", d.hidden_size, base.hidden_size);
    same("intermediate_size", d.intermediate_size, base.intermediate_size);
    same("num_hidden_layers", d.num_layers, base.num_layers);
    same("vocab_size", d.vocab_size, base.vocab_size);
    if (d.hidden_act != base.hidden_act) fail_file(p, "hidden_act '" + d.hidden_act + "' differs from the base model's '" + base.hidden_act + "'");
    if (d.mlp_bias) fail_file(p, "mlp_bias is set: the MoE families have no FFN biases");
    const std::string tok = tokenizer_fingerprint(e->source_model);
    if (!tok.empty() && !base_tok.empty() && tok != base_tok)
      fail_file(e->source_model, "tokenizer differs from the base model's (experts must share its vocabulary)");
  }
  if (is_prompt_gate_mode(c.gate_mode)) {
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i]->positive_prompts.empty())
        fail_file(o, cat(i < c.experts.size() ? cat("expert ", i) : std::string("the shared expert"), " (",
                         all[i]->source_model, ") has no positive_prompts, which gate_mode ", c.gate_mode, " needs"));
    bool all_same = c.experts.size() > 1;
    for (const auto& e : c.experts)
      all_same = all_same && e.positive_prompts == c.experts[0].positive_prompts &&
                 e.negative_prompts == c.experts[0].negative_prompts;
    if (all_same) fail_file(o, "every expert has the same prompts: their router rows would be identical");
  }
}

}  // namespace mf
