// Helpers the family parsers (FamilyEntry::parse, model/family.h) share to read config.json.
// Every error is one line "<origin>: ..." naming the key; the messages are part of the CLI's
// behaviour (tests compare them), so families reuse these rather than writing their own.
// Defined in config.cpp.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace mf::config_parse {

// Typed optional lookup; null counts as absent (HF writes "sliding_window": null).
int64_t get_int(const json& j, const std::string& key, int64_t fallback, const std::string& origin);
double get_num(const json& j, const std::string& key, double fallback, const std::string& origin);
bool get_bool(const json& j, const std::string& key, bool fallback, const std::string& origin);
int64_t require_int(const json& j, const std::string& key, const std::string& origin);

// bos/eos ids: an integer, a list of integers, or null.
std::vector<int64_t> get_ids(const json& j, const std::string& key, std::vector<int64_t> fallback,
                             const std::string& origin);

void check_positive(int64_t v, const std::string& key, const std::string& origin);
void check_activation(const std::string& act, const std::string& key, const std::string& origin);

// Rotary scaling from `key` (transformers < 5: "rope_scaling"; >= 5: "rope_parameters", which also
// holds rope_theta and says "default" when there is no scaling).
RopeScaling parse_rope_scaling(const json& r, const std::string& key, const std::string& origin);
// rope_theta and the scaling object, whichever of the two keys is present.
void parse_rope(const json& j, const std::string& o, double default_theta, ModelConfig& c);

// Keys shared by every Llama-type family, with the per-family defaults of transformers' classes.
struct LlamaDefaults {
  int64_t kv_heads = -1;  // -1: num_attention_heads
  double eps = 1e-6;
  double theta = 10000.0;
  int64_t max_pos = 2048;
  std::vector<int64_t> bos = {1}, eos = {2};
  bool intermediate_required = true;
};
void parse_llama_common(const json& j, const std::string& o, ModelConfig& c, const LlamaDefaults& d);

// Qwen2 / Qwen2-MoE: use_sliding_window + sliding_window + max_window_layers.
void parse_qwen_window(const json& j, const std::string& o, ModelConfig& c);
// The Qwen2 graph's keys (defined in qwen2.cpp; Qwen2-MoE reads the same, its dense
// intermediate_size optional).
void parse_qwen2_common(const json& j, const std::string& o, ModelConfig& c, bool intermediate_required);

// num_experts (under `experts_key`), num_experts_per_tok, router_aux_loss_coef, router_jitter_noise.
void parse_moe_common(const json& j, const std::string& o, ModelConfig& c, const std::string& experts_key,
                      int64_t default_k, double default_aux);

// A list of integers under `key` ("<origin>: key 'moe_layers' must be a list of integers").
std::vector<int64_t> int_list(const json& v, const std::string& key, const std::string& origin);

// The string r[key] (default `fallback`), which must be one of `allowed` (moeforge router keys).
std::string one_of(const json& r, const std::string& key, const std::string& fallback,
                   const std::vector<std::string>& allowed, const std::string& origin);

}  // namespace mf::config_parse
