// Typed model configs: HF defaults, one-line errors, expected tensor lists and parameter
// counts (checked against the published sizes of real models).
#include <gtest/gtest.h>

#include <cmath>

#include "model/config.h"
#include "model_fixtures.h"
#include "util/error.h"

using namespace mf;
using mf::testing_fixtures::tiny_config;
using mf::testing_fixtures::tiny_config_json;

namespace {

std::string error_of(const json& j) {
  try {
    parse_model_config(j, "m/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::map<std::string, std::vector<int64_t>> shapes_of(const ModelConfig& c) {
  std::map<std::string, std::vector<int64_t>> m;
  for (const auto& s : expected_tensors(c))
    if (s.required) m[s.name] = s.shape;
  return m;
}

std::string validate_error(const ModelConfig& c, const std::map<std::string, std::vector<int64_t>>& present) {
  try {
    validate_tensors(c, present, "m");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ModelConfig, ParsesEveryFamily) {
  for (const auto& name : mf::testing_fixtures::tiny_families()) {
    ModelConfig c = tiny_config(name);
    EXPECT_EQ(c.hidden_size, 32) << name;
    EXPECT_EQ(c.head_dim, 8) << name;
    EXPECT_GT(total_parameters(c), 0) << name;
  }
  ModelConfig q = tiny_config("qwen2_moe");
  EXPECT_TRUE(q.layer_is_moe(0));
  EXPECT_FALSE(q.layer_is_moe(1));  // mlp_only_layers
  EXPECT_TRUE(q.layer_is_moe(2));
  EXPECT_TRUE(q.attention_bias);
  EXPECT_FALSE(q.attention_out_bias);
  ModelConfig l3 = tiny_config("llama3_tied");
  EXPECT_EQ(l3.rope_scaling.type, "llama3");
  EXPECT_EQ(l3.eos_token_ids, (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(l3.tie_word_embeddings);
  EXPECT_EQ(tiny_config("mistral").layer_sliding_window(1), 5);
  EXPECT_TRUE(tiny_config("mixtral").norm_topk_prob);
  EXPECT_TRUE(tiny_config("olmoe").qk_norm);
}

TEST(ModelConfig, HfDefaults) {
  // Values from transformers' config classes (4.4x) when the key is absent.
  json j = {{"model_type", "mixtral"}, {"vocab_size", 10}, {"hidden_size", 64}, {"intermediate_size", 8},
            {"num_hidden_layers", 1}, {"num_attention_heads", 8}, {"num_local_experts", 8}};
  ModelConfig c = parse_model_config(j, "x");
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.router_aux_loss_coef, 0.001);
  EXPECT_EQ(c.sliding_window, 0);
  j = {{"model_type", "gpt2"}, {"vocab_size", 10}, {"n_embd", 16}, {"n_layer", 1}, {"n_head", 2}};
  c = parse_model_config(j, "x");
  EXPECT_EQ(c.intermediate_size, 64);  // 4 * n_embd
  EXPECT_EQ(c.max_position_embeddings, 1024);
  EXPECT_EQ(c.hidden_act, "gelu_new");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{50256}));
}

TEST(ModelConfig, TransformersV5RopeParameters) {
  // transformers >= 5 writes rope_theta and the scaling into one "rope_parameters" object.
  json j = tiny_config_json("llama");
  j.erase("rope_theta");
  j.erase("rope_scaling");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 123456.0}};
  ModelConfig c = parse_model_config(j, "x");
  EXPECT_DOUBLE_EQ(c.rope_theta, 123456.0);
  EXPECT_EQ(c.rope_scaling.type, "");  // no scaling
  j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 5e5}, {"factor", 2.0}};
  c = parse_model_config(j, "x");
  EXPECT_DOUBLE_EQ(c.rope_theta, 5e5);
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 5e5}, {"factor", 4.0}};
  EXPECT_EQ(error_of(j), "m/config.json: key 'rope_parameters': unsupported rope_type \"yarn\" (supported: default, linear, llama3)");
}

TEST(ModelConfig, OneLineErrorsNameFileAndKey) {
  json j = tiny_config_json("llama");
  j.erase("hidden_size");
  EXPECT_EQ(error_of(j), "m/config.json: missing key 'hidden_size'");
  j = tiny_config_json("llama");
  j["num_hidden_layers"] = "two";
  EXPECT_EQ(error_of(j), "m/config.json: key 'num_hidden_layers' must be an integer");
  j["model_type"] = "bert";
  EXPECT_EQ(error_of(j), "m/config.json: unsupported model_type \"bert\" (supported: " + supported_model_types() + ")");
  j = tiny_config_json("llama");
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_NE(error_of(j).find("unsupported rope_type \"yarn\""), std::string::npos);
  j = tiny_config_json("llama");
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(j).find("'num_key_value_heads' (3) must divide"), std::string::npos);
  j = tiny_config_json("mixtral");
  j.erase("num_local_experts");
  EXPECT_EQ(error_of(j), "m/config.json: missing key 'num_local_experts'");
  j = tiny_config_json("llama");
  j["hidden_act"] = "swiglu";
  EXPECT_NE(error_of(j).find("unsupported activation \"swiglu\""), std::string::npos);
}

TEST(ModelConfig, Gpt2Conv1DTensorsAreInOut) {
  ModelConfig c = tiny_config("gpt2");
  auto m = shapes_of(c);
  EXPECT_EQ(m.at("transformer.h.0.attn.c_attn.weight"), (std::vector<int64_t>{32, 96}));
  EXPECT_EQ(m.at("transformer.h.1.mlp.c_fc.weight"), (std::vector<int64_t>{32, 48}));
  EXPECT_EQ(m.at("transformer.h.1.mlp.c_proj.weight"), (std::vector<int64_t>{48, 32}));
  EXPECT_EQ(m.count("lm_head.weight"), 0u);  // tied
  // The original GPT-2 export has no "transformer." prefix and keeps attn.bias buffers.
  std::map<std::string, std::vector<int64_t>> bare;
  for (const auto& [k, v] : m) bare[k.substr(std::string("transformer.").size())] = v;
  bare["h.0.attn.bias"] = {1, 1, 64, 64};
  EXPECT_EQ(validate_error(c, bare), "");
}

TEST(ModelConfig, PerExpertTensorNames) {
  auto mx = shapes_of(tiny_config("mixtral"));
  EXPECT_EQ(mx.at("model.layers.1.block_sparse_moe.gate.weight"), (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(mx.at("model.layers.1.block_sparse_moe.experts.3.w1.weight"), (std::vector<int64_t>{48, 32}));
  EXPECT_EQ(mx.at("model.layers.1.block_sparse_moe.experts.3.w2.weight"), (std::vector<int64_t>{32, 48}));
  EXPECT_EQ(mx.at("model.layers.1.block_sparse_moe.experts.3.w3.weight"), (std::vector<int64_t>{48, 32}));
  auto qm = shapes_of(tiny_config("qwen2_moe"));
  EXPECT_EQ(qm.at("model.layers.0.mlp.experts.0.gate_proj.weight"), (std::vector<int64_t>{24, 32}));
  EXPECT_EQ(qm.at("model.layers.0.mlp.shared_expert.down_proj.weight"), (std::vector<int64_t>{32, 40}));
  EXPECT_EQ(qm.at("model.layers.0.mlp.shared_expert_gate.weight"), (std::vector<int64_t>{1, 32}));
  EXPECT_EQ(qm.at("model.layers.1.mlp.gate_proj.weight"), (std::vector<int64_t>{48, 32}));  // dense layer
  EXPECT_EQ(qm.at("model.layers.0.self_attn.q_proj.bias"), (std::vector<int64_t>{32}));
  EXPECT_EQ(qm.count("model.layers.0.self_attn.o_proj.bias"), 0u);
  auto om = shapes_of(tiny_config("olmoe"));
  EXPECT_EQ(om.at("model.layers.0.self_attn.q_norm.weight"), (std::vector<int64_t>{32}));  // full width
  EXPECT_EQ(om.at("model.layers.0.self_attn.k_norm.weight"), (std::vector<int64_t>{32}));
}

TEST(ModelConfig, ValidationErrorsNameTheTensor) {
  ModelConfig c = tiny_config("llama");
  auto m = shapes_of(c);
  EXPECT_EQ(validate_error(c, m), "");
  auto bad = m;
  bad["model.layers.0.self_attn.k_proj.weight"] = {32, 32};
  EXPECT_EQ(validate_error(c, bad),
            "m: tensor model.layers.0.self_attn.k_proj.weight has shape [32, 32] but config.json implies [16, 32]");
  bad = m;
  bad.erase("model.norm.weight");
  EXPECT_EQ(validate_error(c, bad), "m: missing tensor model.norm.weight");
  bad = m;
  bad["model.layers.0.mlp.extra.weight"] = {1};
  EXPECT_EQ(validate_error(c, bad), "m: unexpected tensor model.layers.0.mlp.extra.weight");
  bad = m;
  bad["model.layers.0.self_attn.rotary_emb.inv_freq"] = {4};  // old transformers buffer: ignored
  EXPECT_EQ(validate_error(c, bad), "");
  // Tied models may carry lm_head.weight or not.
  ModelConfig t = tiny_config("qwen2");
  auto tm = shapes_of(t);
  EXPECT_EQ(validate_error(t, tm), "");
  tm["lm_head.weight"] = {64, 32};
  EXPECT_EQ(validate_error(t, tm), "");
}

TEST(ModelConfig, ParameterCountsMatchPublishedSizes) {
  // Hand count for the tiny Llama: embed 64*32; per layer q 32*32, k,v 16*32, o 32*32,
  // mlp 3*32*48, two norms 2*32; final norm 32; untied lm_head 64*32.
  const int64_t per_layer = 1024 + 512 + 512 + 1024 + 3 * 32 * 48 + 64;
  EXPECT_EQ(total_parameters(tiny_config("llama")), 2048 + 2 * per_layer + 32 + 2048);
  // Llama-3.2-1B: 1,235,814,400 parameters (tied embeddings).
  json l = {{"model_type", "llama"},        {"vocab_size", 128256},     {"hidden_size", 2048},
            {"intermediate_size", 8192},    {"num_hidden_layers", 16},  {"num_attention_heads", 32},
            {"num_key_value_heads", 8},     {"tie_word_embeddings", true}, {"eos_token_id", 128001}};
  EXPECT_EQ(total_parameters(parse_model_config(l, "x")), 1235814400);
  // Mixtral-8x7B: 46.7B total, 12.9B active (Mistral AI's announcement).
  json mx = {{"model_type", "mixtral"},     {"vocab_size", 32000},      {"hidden_size", 4096},
             {"intermediate_size", 14336},  {"num_hidden_layers", 32},  {"num_attention_heads", 32},
             {"num_key_value_heads", 8},    {"num_local_experts", 8},   {"num_experts_per_tok", 2}};
  ModelConfig mc = parse_model_config(mx, "x");
  EXPECT_NEAR(total_parameters(mc) / 1e9, 46.7, 0.05);
  EXPECT_NEAR(active_parameters_per_token(mc) / 1e9, 12.9, 0.05);
  // OLMoE-1B-7B: 6.9B total, 1.3B active (OLMoE paper).
  json om = {{"model_type", "olmoe"},       {"vocab_size", 50304},      {"hidden_size", 2048},
             {"intermediate_size", 1024},   {"num_hidden_layers", 16},  {"num_attention_heads", 16},
             {"num_experts", 64},           {"num_experts_per_tok", 8}};
  ModelConfig oc = parse_model_config(om, "x");
  EXPECT_NEAR(total_parameters(oc) / 1e9, 6.92, 0.01);
  EXPECT_NEAR(active_parameters_per_token(oc) / 1e9, 1.28, 0.01);
}
