// A 2-layer random Llama saved with the llama2-spm tokenizer (vocab 32000): the smallest model the
// CLI tests can tokenize real text for. Shared by the profile and PEFT tests.
#pragma once
#include <string>

#include "io/checkpoint.h"
#include "model/model.h"

namespace mf::testing_fixtures {

// Returns the model it saved.
inline std::shared_ptr<Model> save_tiny_spm_llama(const std::string& dir) {
  json cfg = {{"model_type", "llama"},     {"architectures", {"LlamaForCausalLM"}},
              {"vocab_size", 32000},       {"hidden_size", 16},
              {"intermediate_size", 24},   {"num_hidden_layers", 2},
              {"num_attention_heads", 2},  {"num_key_value_heads", 1},
              {"rms_norm_eps", 1e-5},      {"max_position_embeddings", 256},
              {"bos_token_id", 1},         {"eos_token_id", 2},
              {"tie_word_embeddings", true}};
  auto m = Model::create(parse_model_config(cfg, "tiny"));
  m->init_random(11, 0.3);
  SaveOptions so;
  so.copy_aux_from = std::string(MOEFORGE_TEST_DATA) + "/tokenizers/llama2-spm";
  save_checkpoint(dir, cfg, m->hf_tensors(), so);
  return m;
}

}  // namespace mf::testing_fixtures
