// Mistral (MistralForCausalLM): the Llama graph (llama.cpp) with sliding-window attention on
// every layer. Only the config differs, so this file holds the parser and the family entry.
#include "model/config_parse.h"
#include "model/family.h"
#include "model/model.h"

namespace mf {
namespace {

void parse_mistral(const json& j, const std::string& o, ModelConfig& c) {
  using namespace config_parse;
  LlamaDefaults d;
  d.kv_heads = 8;
  d.max_pos = 4096 * 32;
  parse_llama_common(j, o, c, d);
  c.sliding_window = get_int(j, "sliding_window", 4096, o);
}

}  // namespace

FamilyEntry mistral_family() {
  return {"Mistral (Llama graph, sliding-window attention)", Family::mistral, parse_mistral, build_llama_family,
          nullptr};
}

}  // namespace mf
