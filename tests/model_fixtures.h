// Tiny configs of every supported family, as Hugging Face config.json objects, shared by the
// model tests. Sizes are small enough that a forward pass takes milliseconds.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"
#include "model/model.h"
#include "util/json.h"

namespace mf::testing_fixtures {

inline std::vector<std::string> tiny_families() {
  return {"llama", "llama3_tied", "mistral", "qwen2", "gpt2", "mixtral", "qwen2_moe", "olmoe"};
}

inline json tiny_config_json(const std::string& name) {
  json base = {{"vocab_size", 64},        {"hidden_size", 32},       {"intermediate_size", 48},
               {"num_hidden_layers", 2},  {"num_attention_heads", 4}, {"num_key_value_heads", 2},
               {"rms_norm_eps", 1e-5},    {"max_position_embeddings", 128}, {"bos_token_id", 1},
               {"eos_token_id", 2}};
  if (name == "llama") {
    base["model_type"] = "llama";
    base["architectures"] = {"LlamaForCausalLM"};
    base["rope_theta"] = 10000.0;
  } else if (name == "llama3_tied") {  // Llama-3.2 style: llama3 rope scaling, tied embeddings, eos list
    base["model_type"] = "llama";
    base["architectures"] = {"LlamaForCausalLM"};
    base["rope_theta"] = 500000.0;
    base["tie_word_embeddings"] = true;
    base["eos_token_id"] = {2, 3};
    base["rope_scaling"] = {{"rope_type", "llama3"},
                            {"factor", 32.0},
                            {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0},
                            {"original_max_position_embeddings", 16}};
  } else if (name == "mistral") {
    base["model_type"] = "mistral";
    base["architectures"] = {"MistralForCausalLM"};
    base["sliding_window"] = 5;
  } else if (name == "qwen2") {
    base["model_type"] = "qwen2";
    base["architectures"] = {"Qwen2ForCausalLM"};
    base["tie_word_embeddings"] = true;
    base["rope_theta"] = 1000000.0;
  } else if (name == "gpt2") {
    base = {{"model_type", "gpt2"}, {"architectures", {"GPT2LMHeadModel"}},
            {"vocab_size", 64},     {"n_embd", 32},
            {"n_layer", 2},         {"n_head", 4},
            {"n_positions", 64},    {"n_inner", 48},
            {"bos_token_id", 1},    {"eos_token_id", 2}};
  } else if (name == "mixtral") {
    base["model_type"] = "mixtral";
    base["architectures"] = {"MixtralForCausalLM"};
    base["num_local_experts"] = 4;
    base["num_experts_per_tok"] = 2;
  } else if (name == "qwen2_moe") {
    base["model_type"] = "qwen2_moe";
    base["architectures"] = {"Qwen2MoeForCausalLM"};
    base["num_hidden_layers"] = 3;
    base["num_experts"] = 4;
    base["num_experts_per_tok"] = 2;
    base["moe_intermediate_size"] = 24;
    base["shared_expert_intermediate_size"] = 40;
    base["norm_topk_prob"] = false;
    base["decoder_sparse_step"] = 1;
    base["mlp_only_layers"] = {1};
  } else if (name == "olmoe") {
    base["model_type"] = "olmoe";
    base["architectures"] = {"OlmoeForCausalLM"};
    base["num_key_value_heads"] = 4;
    base["num_experts"] = 4;
    base["num_experts_per_tok"] = 2;
    base["norm_topk_prob"] = false;
    base["clip_qkv"] = nullptr;
  }
  return base;
}

inline ModelConfig tiny_config(const std::string& name) {
  return parse_model_config(tiny_config_json(name), name + "/config.json");
}

inline std::shared_ptr<Model> tiny_model(const std::string& name, uint64_t seed = 1, double std = 0.1) {
  auto m = Model::create(tiny_config(name));
  m->init_random(seed, std);
  m->eval();
  return m;
}

}  // namespace mf::testing_fixtures
