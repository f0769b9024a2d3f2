// Models through the checkpoint I/O layer: every tiny family written as a Hugging Face
// directory and loaded back through Model::load; bad checkpoints give one-line errors; and,
// where scripts/hf_reference.py has been run, logits equal those of transformers itself.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model_fixtures.h"
#include "util/error.h"
#include "util/fs.h"

using namespace mf;
using mf::testing_fixtures::tiny_config_json;
using mf::testing_fixtures::tiny_families;
using mf::testing_fixtures::tiny_model;

namespace {

std::string temp_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/mf_model_ckpt_" + name;
  remove_all(d);
  return d;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

std::string load_error(const std::string& dir) {
  try {
    Model::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(ModelCheckpoint, RoundTripEveryFamily) {
  torch::NoGradGuard ng;
  at::Tensor ids = torch::randint(3, 64, {2, 7}, torch::kLong);
  for (const auto& name : tiny_families()) {
    auto m = tiny_model(name);
    std::string dir = temp_dir(name);
    save_checkpoint(dir, tiny_config_json(name), m->hf_tensors());
    auto loaded = Model::load(dir);
    EXPECT_EQ(loaded->config().model_type, m->config().model_type);
    EXPECT_LE(max_diff(loaded->forward(ids), m->forward(ids)), 1e-6) << name;
    auto bf = Model::load(dir, {at::kBFloat16, at::kCPU});
    EXPECT_EQ(bf->dtype(), at::kBFloat16) << name;
    remove_all(dir);
  }
}

TEST(ModelCheckpoint, ShardedCheckpointLoads) {
  torch::NoGradGuard ng;
  auto m = tiny_model("mixtral");
  std::string dir = temp_dir("sharded");
  SaveOptions so;
  so.max_shard_bytes = 20000;
  save_checkpoint(dir, tiny_config_json("mixtral"), m->hf_tensors(), so);
  EXPECT_TRUE(path_exists(dir + "/model.safetensors.index.json"));
  at::Tensor ids = torch::randint(3, 64, {1, 6}, torch::kLong);
  EXPECT_LE(max_diff(Model::load(dir)->forward(ids), m->forward(ids)), 1e-6);
  remove_all(dir);
}

TEST(ModelCheckpoint, Gpt2WithoutTransformerPrefixLoads) {
  // The original GPT-2 release names tensors "h.0.attn..." and stores attn.bias buffers.
  torch::NoGradGuard ng;
  auto m = tiny_model("gpt2");
  std::vector<std::pair<std::string, at::Tensor>> bare;
  for (auto& [n, t] : m->hf_tensors()) bare.emplace_back(n.substr(std::string("transformer.").size()), t);
  bare.emplace_back("h.0.attn.bias", torch::ones({1, 1, 64, 64}).tril());
  std::string dir = temp_dir("gpt2_bare");
  save_checkpoint(dir, tiny_config_json("gpt2"), bare);
  at::Tensor ids = torch::randint(3, 64, {1, 6}, torch::kLong);
  EXPECT_LE(max_diff(Model::load(dir)->forward(ids), m->forward(ids)), 1e-6);
  remove_all(dir);
}

TEST(ModelCheckpoint, BadCheckpointsGiveOneLineErrors) {
  auto m = tiny_model("llama");
  auto tensors = m->hf_tensors();
  std::string dir = temp_dir("bad");
  // Config says 3 kv heads' worth of width... simplest: a config whose hidden_act is fine but
  // whose intermediate_size disagrees with the stored MLP tensors.
  json cfg = tiny_config_json("llama");
  cfg["intermediate_size"] = 40;
  save_checkpoint(dir, cfg, tensors);
  std::string e = load_error(dir);
  EXPECT_EQ(e, dir + "/model.safetensors: tensor model.layers.0.mlp.gate_proj.weight has shape [48, 32] but config.json implies [40, 32]");
  EXPECT_EQ(e.find('\n'), std::string::npos);
  remove_all(dir);

  cfg = tiny_config_json("llama");
  cfg["model_type"] = "falcon";
  save_checkpoint(dir, cfg, tensors);
  EXPECT_EQ(load_error(dir), dir + "/config.json: unsupported model_type \"falcon\" (supported: " +
                                 supported_model_types() + ")");
  remove_all(dir);

  auto missing = tensors;
  missing.erase(missing.begin() + 3);
  save_checkpoint(dir, tiny_config_json("llama"), missing);
  EXPECT_EQ(load_error(dir), dir + ": missing tensor " + tensors[3].first);
  remove_all(dir);

  auto extra = tensors;
  extra.emplace_back("model.layers.0.mlp.extra.weight", torch::zeros({2}));
  save_checkpoint(dir, tiny_config_json("llama"), extra);
  EXPECT_EQ(load_error(dir), dir + "/model.safetensors: unexpected tensor model.layers.0.mlp.extra.weight");
  remove_all(dir);
}

// Reference logits written by scripts/hf_reference.py with transformers itself.
TEST(ModelCheckpoint, LogitsEqualTransformers) {
  const std::string root = std::string(MOEFORGE_TEST_DATA) + "/hf_reference";
  if (!is_directory(root)) GTEST_SKIP() << "tests/data/hf_reference absent (run scripts/hf_reference.py)";
  torch::NoGradGuard ng;
  int checked = 0;
  // Every family the script writes (transformers 5 saves Mixtral/Qwen2-MoE/OLMoE experts per expert,
  // and rope settings as "rope_parameters").
  for (const std::string name : {"gpt2", "llama", "llama3_tied", "llama_bias", "mistral", "mixtral", "olmoe",
                                 "olmoe_clip", "qwen2", "qwen2_moe", "qwen2_moe_norm"}) {
    const std::string dir = root + "/" + name;
    ASSERT_TRUE(path_exists(dir + "/reference.safetensors")) << dir;
    auto m = Model::load(dir);
    auto ref = SafetensorsFile::open(dir + "/reference.safetensors");
    for (const std::string& c : {"plain", "padded"}) {
      if (!ref->contains(c + ".input_ids")) continue;
      at::Tensor ids = ref->get(c + ".input_ids").to(at::kLong);
      at::Tensor mask = ref->get(c + ".attention_mask").to(at::kLong);
      at::Tensor expect = ref->get(c + ".logits").to(at::kFloat);
      at::Tensor got = m->forward(ids, mask);
      at::Tensor real = mask.to(at::kBool).unsqueeze(-1).expand_as(got);
      double diff = (got - expect).abs().masked_select(real).max().item<double>();
      EXPECT_LE(diff, 1e-4) << name << " " << c;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 22);
}
