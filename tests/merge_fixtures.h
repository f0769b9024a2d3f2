// Fixtures of the merge tests (test_merge*.cpp): a tiny upcycled Mixtral (identical or noisy
// experts), tiny random Qwen2-MoE and OLMoE models, a calibration file, merge options sized for
// them, and the paper's in-memory merged model to compare an exact output with.
#pragma once
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include "io/checkpoint.h"
#include "merge/merge.h"
#include "model/model.h"
#include "model/moe_ffn.h"
#include "upcycle/upcycle.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"
#include "spm_llama_fixture.h"

namespace mf::merge_fixtures {

inline std::string fresh(const std::string& name) {
  std::string d = ::testing::TempDir() + "/mf_merge_" + name;
  remove_all(d);
  return d;
}

// A 2-layer random Llama (hidden 16, FFN 24) upcycled to a 4-expert top-2 Mixtral: identical
// copies, or with noise on each expert's weights (and router rows) so that they differ.
inline const std::string& mixtral(bool noisy) {
  static std::string dirs[2];
  std::string& d = dirs[noisy ? 1 : 0];
  if (d.empty()) {
    const std::string base = fresh("base");
    testing_fixtures::save_tiny_spm_llama(base);
    UpcycleConfig c;
    c.origin = "test";
    c.base_model = base;
    c.family = "mixtral";
    c.top_k = 2;
    c.dtype = "fp32";
    UpcycleExpert e;
    e.source_model = base;
    e.noise_scale = noisy ? 0.05 : 0.0;
    c.experts.assign(4, e);
    d = fresh(noisy ? "noisy" : "copies");
    run_upcycle(c, d);
  }
  return d;
}

// A random Qwen2-MoE (3 layers, layer 1 dense, a shared expert with its sigmoid gate) or OLMoE
// (QK-norm) with 4 experts, top-2 and norm_topk_prob false, hidden 16, fp32, saved with the
// llama2-spm tokenizer (vocab 32000) so that the calibration text tokenizes.
inline const std::string& stock_moe(const std::string& family) {
  static std::map<std::string, std::string> dirs;
  std::string& d = dirs[family];
  if (!d.empty()) return d;
  json cfg = {{"vocab_size", 32000},         {"hidden_size", 16},         {"num_hidden_layers", 2},
              {"num_attention_heads", 2},    {"num_key_value_heads", 1},  {"rms_norm_eps", 1e-5},
              {"max_position_embeddings", 256}, {"bos_token_id", 1},      {"eos_token_id", 2},
              {"tie_word_embeddings", true}, {"num_experts", 4},          {"num_experts_per_tok", 2},
              {"norm_topk_prob", false},     {"torch_dtype", "float32"}};
  if (family == "qwen2_moe") {
    cfg["model_type"] = "qwen2_moe";
    cfg["architectures"] = json::array({"Qwen2MoeForCausalLM"});
    cfg["num_hidden_layers"] = 3;
    cfg["intermediate_size"] = 24;
    cfg["moe_intermediate_size"] = 12;
    cfg["shared_expert_intermediate_size"] = 20;
    cfg["decoder_sparse_step"] = 1;
    cfg["mlp_only_layers"] = json::array({1});
  } else {
    cfg["model_type"] = "olmoe";
    cfg["architectures"] = json::array({"OlmoeForCausalLM"});
    cfg["intermediate_size"] = 12;
    cfg["num_key_value_heads"] = 2;
    cfg["clip_qkv"] = nullptr;
  }
  auto m = Model::create(parse_model_config(cfg, family + "/config.json"));
  m->init_random(11, 0.3);
  const std::string dir = fresh("stock_" + family);
  SaveOptions so;
  so.copy_aux_from = std::string(MOEFORGE_TEST_DATA) + "/tokenizers/llama2-spm";
  save_checkpoint(dir, cfg, m->hf_tensors(), so);
  d = dir;
  return d;
}

inline const std::string& calib_file() {
  static const std::string path = [] {
    std::string p = fresh("calib.jsonl");
    std::ofstream f(p);
    const char* texts[] = {"The quick brown fox jumps over the lazy dog near the river bank.",
                           "In the beginning God created the heaven and the earth.",
                           "A compiler translates source code into machine code for a processor.",
                           "Bread is made from flour, water, salt and yeast, then baked in an oven."};
    for (int rep = 0; rep < 6; ++rep)
      for (const char* t : texts) f << json{{"text", t}}.dump() << "\n";
    return p;
  }();
  return path;
}

inline MergeOptions options(const std::string& method, int64_t r) {
  MergeOptions o;
  o.method = method;
  o.experts = r;
  o.calib.file = calib_file();
  o.calib.seq_len = 16;
  o.calib.blocks = 8;
  return o;
}


// The original model `model_dir` with every expert's weights replaced by its cluster's merged
// weights from the checkpoint `merged` (the report's clusters): tied experts, original router and
// top-k — the paper's forward, which an exact output must reproduce.
inline std::shared_ptr<Model> tied_merged_model(const std::string& model_dir, const json& report,
                                                const Checkpoint& merged) {
  std::shared_ptr<Model> tied = Model::load(model_dir, {at::kFloat, at::kCPU});
  at::NoGradGuard ng;
  for (const json& l : report["layers"]) {
    const int64_t layer = l["layer"].get<int64_t>();
    auto block = std::dynamic_pointer_cast<MoeFFN>(tied->ffn(layer));
    EXPECT_TRUE(block) << "layer " << layer << " is not an MoE block";
    if (!block) continue;
    const auto clusters = l["clusters"].get<std::vector<std::vector<int64_t>>>();
    for (size_t c = 0; c < clusters.size(); ++c)
      for (int64_t j : clusters[c]) {
        const std::string pre = cat("model.layers.", layer, ".mlp.experts.", c, ".");
        block->experts[j]->gate->weight.copy_(merged.get(pre + "gate_proj.weight", at::kFloat));
        block->experts[j]->up->weight.copy_(merged.get(pre + "up_proj.weight", at::kFloat));
        block->experts[j]->down->weight.copy_(merged.get(pre + "down_proj.weight", at::kFloat));
      }
  }
  return tied;
}

}  // namespace mf::merge_fixtures
