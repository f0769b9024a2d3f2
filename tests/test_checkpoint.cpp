// HF model directories: the exact tensor-name layouts of real families round-trip bit-exactly,
// single-file and sharded; broken directories are refused with one line naming the file.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/checkpoint.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

using namespace mf;

namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

std::string tmpdir(const std::string& name) {
  std::string dir = testing::TempDir() + "/mf_ck/" + name;
  remove_all(dir);
  make_dirs(parent_dir(dir));
  return dir;
}

// Tensor-name layouts written out by hand from transformers' modeling files (v4 names),
// tiny sizes: hidden 8, 2 layers, vocab 16, ffn 12, 2 KV heads of dim 2 (q: 4 heads).
Named llama_like(bool qkv_bias, bool tied, at::ScalarType dt) {
  Named t;
  auto r = [&](std::vector<int64_t> s) { return torch::randn(s).to(dt); };
  t.push_back({"model.embed_tokens.weight", r({16, 8})});
  for (int l = 0; l < 2; ++l) {
    std::string p = cat("model.layers.", l, ".");
    t.push_back({p + "input_layernorm.weight", r({8})});
    t.push_back({p + "self_attn.q_proj.weight", r({8, 8})});
    t.push_back({p + "self_attn.k_proj.weight", r({4, 8})});
    t.push_back({p + "self_attn.v_proj.weight", r({4, 8})});
    t.push_back({p + "self_attn.o_proj.weight", r({8, 8})});
    if (qkv_bias) {
      t.push_back({p + "self_attn.q_proj.bias", r({8})});
      t.push_back({p + "self_attn.k_proj.bias", r({4})});
      t.push_back({p + "self_attn.v_proj.bias", r({4})});
    }
    t.push_back({p + "post_attention_layernorm.weight", r({8})});
    t.push_back({p + "mlp.gate_proj.weight", r({12, 8})});
    t.push_back({p + "mlp.up_proj.weight", r({12, 8})});
    t.push_back({p + "mlp.down_proj.weight", r({8, 12})});
  }
  t.push_back({"model.norm.weight", r({8})});
  if (!tied) t.push_back({"lm_head.weight", r({16, 8})});
  return t;
}

Named gpt2_layout() {
  Named t;
  auto r = [](std::vector<int64_t> s) { return torch::randn(s); };
  t.push_back({"wte.weight", r({16, 8})});
  t.push_back({"wpe.weight", r({32, 8})});
  for (int l = 0; l < 2; ++l) {
    std::string p = cat("h.", l, ".");
    t.push_back({p + "ln_1.weight", r({8})});
    t.push_back({p + "ln_1.bias", r({8})});
    t.push_back({p + "attn.c_attn.weight", r({8, 24})});  // Conv1D: [in, out]
    t.push_back({p + "attn.c_attn.bias", r({24})});
    t.push_back({p + "attn.c_proj.weight", r({8, 8})});
    t.push_back({p + "attn.c_proj.bias", r({8})});
    t.push_back({p + "ln_2.weight", r({8})});
    t.push_back({p + "ln_2.bias", r({8})});
    t.push_back({p + "mlp.c_fc.weight", r({8, 32})});
    t.push_back({p + "mlp.c_fc.bias", r({32})});
    t.push_back({p + "mlp.c_proj.weight", r({32, 8})});
    t.push_back({p + "mlp.c_proj.bias", r({8})});
  }
  t.push_back({"ln_f.weight", r({8})});
  t.push_back({"ln_f.bias", r({8})});
  return t;
}

// Mixtral (block_sparse_moe.experts.e.w1/w2/w3), Qwen1.5-MoE (mlp.experts + shared expert),
// OLMoE (mlp.experts, q_norm/k_norm over the full width).
Named moe_layout(const std::string& family) {
  Named t = llama_like(family == "qwen2_moe", false, at::kBFloat16);
  Named out;
  auto r = [](std::vector<int64_t> s) { return torch::randn(s).to(at::kBFloat16); };
  for (auto& [name, w] : t) {
    if (name.find(".mlp.") != std::string::npos) continue;
    out.push_back({name, w});
  }
  for (int l = 0; l < 2; ++l) {
    std::string p = cat("model.layers.", l, ".");
    if (family == "mixtral") {
      out.push_back({p + "block_sparse_moe.gate.weight", r({4, 8})});
      for (int e = 0; e < 4; ++e) {
        std::string q = cat(p, "block_sparse_moe.experts.", e, ".");
        out.push_back({q + "w1.weight", r({6, 8})});
        out.push_back({q + "w2.weight", r({8, 6})});
        out.push_back({q + "w3.weight", r({6, 8})});
      }
    } else {
      out.push_back({p + "mlp.gate.weight", r({4, 8})});
      for (int e = 0; e < 4; ++e) {
        std::string q = cat(p, "mlp.experts.", e, ".");
        out.push_back({q + "gate_proj.weight", r({6, 8})});
        out.push_back({q + "up_proj.weight", r({6, 8})});
        out.push_back({q + "down_proj.weight", r({8, 6})});
      }
      if (family == "qwen2_moe") {
        out.push_back({p + "mlp.shared_expert.gate_proj.weight", r({10, 8})});
        out.push_back({p + "mlp.shared_expert.up_proj.weight", r({10, 8})});
        out.push_back({p + "mlp.shared_expert.down_proj.weight", r({8, 10})});
        out.push_back({p + "mlp.shared_expert_gate.weight", r({1, 8})});
      }
      if (family == "olmoe") {
        out.push_back({p + "self_attn.q_norm.weight", r({8})});
        out.push_back({p + "self_attn.k_norm.weight", r({4})});
      }
    }
  }
  return out;
}

void expect_round_trip(const std::string& dir, const json& config, const Named& tensors, uint64_t shard_bytes) {
  SaveOptions opt;
  opt.max_shard_bytes = shard_bytes;
  save_checkpoint(dir, config, tensors, opt);
  auto ck = Checkpoint::open(dir);
  EXPECT_EQ(ck.config(), config);
  EXPECT_EQ(ck.names().size(), tensors.size());
  uint64_t total = 0;
  for (const auto& [name, w] : tensors) {
    ASSERT_TRUE(ck.contains(name)) << name;
    auto r = ck.get(name);
    EXPECT_EQ(r.scalar_type(), w.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(r, w)) << name;  // bit-exact
    total += w.numel() * w.element_size();
  }
  EXPECT_EQ(ck.total_bytes(), total);
  if (total > shard_bytes) {
    ASSERT_GT(ck.files().size(), 1u);
    json index = read_json_file(dir + "/model.safetensors.index.json");
    EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), total);
    EXPECT_EQ(index["weight_map"].size(), tensors.size());
    size_t n = ck.files().size();
    for (size_t i = 0; i < n; ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
      EXPECT_EQ(base_name(ck.files()[i]), name);
      // Each shard respects the limit unless it holds a single oversized tensor.
      auto st = SafetensorsFile::open(ck.files()[i]);
      uint64_t bytes = 0;
      for (const auto& t : st->tensors()) bytes += t.nbytes();
      if (st->tensors().size() > 1) EXPECT_LE(bytes, shard_bytes);
    }
  } else {
    EXPECT_EQ(ck.files().size(), 1u);
    EXPECT_TRUE(path_exists(dir + "/model.safetensors"));
    EXPECT_FALSE(path_exists(dir + "/model.safetensors.index.json"));
  }
}

}  // namespace

TEST(Checkpoint, FamiliesRoundTripSingleAndSharded) {
  std::vector<std::pair<std::string, Named>> cases = {
      {"llama3.2", llama_like(false, true, at::kBFloat16)},
      {"qwen2.5", llama_like(true, false, at::kBFloat16)},
      {"gpt2", gpt2_layout()},
      {"mixtral", moe_layout("mixtral")},
      {"qwen2_moe", moe_layout("qwen2_moe")},
      {"olmoe", moe_layout("olmoe")},
  };
  for (const auto& [name, tensors] : cases) {
    SCOPED_TRACE(name);
    json config = {{"model_type", name}, {"hidden_size", 8}};
    expect_round_trip(tmpdir(name), config, tensors, 5000000000ull);
    expect_round_trip(tmpdir(name + "-sharded"), config, tensors, 1024);
  }
}

TEST(Checkpoint, AuxiliaryFilesAreCopiedAndOutputIsAtomic) {
  std::string src = tmpdir("aux-src");
  make_dirs(src);
  write_file_atomic(src + "/tokenizer.json", "{}");
  write_file_atomic(src + "/generation_config.json", "{\"eos_token_id\": 2}");
  std::string out = tmpdir("aux-out");
  SaveOptions opt;
  opt.copy_aux_from = src;
  save_checkpoint(out, json{{"model_type", "llama"}}, {{"w", torch::ones({2})}}, opt);
  EXPECT_EQ(read_file(out + "/tokenizer.json"), "{}");
  EXPECT_TRUE(path_exists(out + "/generation_config.json"));
  // A failing write leaves no directory behind.
  std::string bad = tmpdir("aux-bad");
  EXPECT_THROW(save_checkpoint(bad, json{}, {{"w", torch::ones({2}, torch::kComplexFloat)}}), Error);
  EXPECT_FALSE(path_exists(bad));
  for (const auto& f : list_dir(parent_dir(bad))) EXPECT_EQ(f.find("aux-bad"), std::string::npos) << f;
}

namespace {
void expect_open_refused(const std::string& dir, const std::string& file, const std::string& what) {
  try {
    auto ck = Checkpoint::open(dir);
    for (const auto& n : ck.names()) ck.get(n);
    FAIL() << "accepted; expected " << what;
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind(file + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
}

std::string sharded_fixture(const std::string& name) {
  std::string dir = tmpdir(name);
  SaveOptions opt;
  opt.max_shard_bytes = 64;
  save_checkpoint(dir, json{{"model_type", "llama"}},
                  {{"a", torch::ones({16})}, {"b", torch::ones({16})}, {"c", torch::ones({16})}}, opt);
  return dir;
}
}  // namespace

TEST(CheckpointBadInput, MissingShard) {
  std::string dir = sharded_fixture("missing-shard");
  std::remove((dir + "/model-00002-of-00003.safetensors").c_str());
  expect_open_refused(dir, dir + "/model.safetensors.index.json", "shard 'model-00002-of-00003.safetensors' is missing");
}

TEST(CheckpointBadInput, IndexNamesTensorItsShardLacks) {
  std::string dir = sharded_fixture("lying-index");
  json index = read_json_file(dir + "/model.safetensors.index.json");
  index["weight_map"]["a"] = "model-00002-of-00003.safetensors";
  write_json_file(dir + "/model.safetensors.index.json", index);
  expect_open_refused(dir, dir + "/model.safetensors.index.json", "tensor 'a' is mapped to 'model-00002-of-00003.safetensors'");
}

TEST(CheckpointBadInput, BrokenIndexAndConfig) {
  std::string dir = sharded_fixture("broken-index");
  write_file_atomic(dir + "/model.safetensors.index.json", "{\"weight_map\": 3}");
  expect_open_refused(dir, dir + "/model.safetensors.index.json", "weight_map");
  write_file_atomic(dir + "/config.json", "{\"model_type\": ");
  expect_open_refused(dir, dir + "/config.json", "invalid JSON");
  std::string nodir = tmpdir("no-config");
  make_dirs(nodir);
  expect_open_refused(nodir, nodir, "config.json is missing");
  write_file_atomic(nodir + "/config.json", "{}");
  expect_open_refused(nodir, nodir, "no model.safetensors");
  expect_open_refused("/nonexistent/model", "/nonexistent/model", "no such file or directory");
}

TEST(CheckpointBadInput, CorruptShardNamesTheShard) {
  std::string dir = sharded_fixture("corrupt-shard");
  std::string shard = dir + "/model-00003-of-00003.safetensors";
  std::string bytes = read_file(shard);
  write_file_atomic(shard, bytes.substr(0, bytes.size() - 3));
  expect_open_refused(dir, shard, "truncated");
}
