// Qwen2 / Qwen2.5 (Qwen2ForCausalLM): the Llama graph (llama.cpp) with q/k/v biases and an
// optional sliding window from max_window_layers on. Only the config differs, so this file holds
// the parser and the family entry.
#include "model/config_parse.h"
#include "model/family.h"
#include "model/model.h"

namespace mf {
void config_parse::parse_qwen2_common(const json& j, const std::string& o, ModelConfig& c, bool intermediate_required) {
  LlamaDefaults d;
  d.max_pos = 32768;
  d.bos = {};
  d.eos = {};
  d.intermediate_required = intermediate_required;
  parse_llama_common(j, o, c, d);
  c.attention_bias = true;  // Qwen2 always has q/k/v biases, never an o_proj bias
  parse_qwen_window(j, o, c);
}

namespace {

void parse_qwen2(const json& j, const std::string& o, ModelConfig& c) { config_parse::parse_qwen2_common(j, o, c, true); }

}  // namespace

FamilyEntry qwen2_family() {
  return {"Qwen2/2.5 (Llama graph, q/k/v biases, optional sliding window)", Family::qwen2, parse_qwen2,
          build_llama_family, nullptr};
}

}  // namespace mf
