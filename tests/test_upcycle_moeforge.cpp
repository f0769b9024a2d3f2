// `moeforge upcycle --family moeforge` (src/upcycle): the moeforge family's config.json and
// tensors (docs/format.md "moeforge MoE models") from models/tiny, the linear and noisy_topk
// routers, the zeros gate mode (HyperMoE's GPT-2-MoE recipe: w_gate = w_noise = 0, k = 1),
// experts that are exact copies of the dense FFNs, dense layers kept, YAML == flags, and the
// one-line errors. Files only: nothing here loads the model (the noisy router's runtime is
// tested with src/moe).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "model/config.h"
#include "upcycle/upcycle.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/str.h"
#include "test_helpers.h"

using namespace mf;
using mf::testing_helpers::CliRun;
using mf::testing_helpers::error_of;
using mf::testing_helpers::run_moeforge;

namespace {

// models/tiny: Llama, 6 layers, hidden 256, FFN 1024, bf16, tied embeddings.
const std::string& tiny() {
  static const std::string dir = std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny";
  return dir;
}

std::string fresh(const std::string& name) {
  std::string d = ::testing::TempDir() + "/mf_upcycle_moeforge_" + name;
  remove_all(d);
  return d;
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// Every tensor of `dir` is one expected_tensors() names for its config.json, with that shape,
// and every required one is there.
void expect_tensors_follow_the_config(const std::string& dir) {
  Checkpoint ck = Checkpoint::open(dir);
  const ModelConfig cfg = parse_model_config(ck.config(), ck.config_path());
  std::set<std::string> expected;
  for (const TensorSpec& s : expected_tensors(cfg)) {
    expected.insert(s.name);
    if (!ck.contains(s.name)) {
      EXPECT_FALSE(s.required) << "missing " << s.name;
      continue;
    }
    EXPECT_EQ(ck.info(s.name).shape, s.shape) << s.name;
  }
  for (const std::string& n : ck.names()) EXPECT_TRUE(expected.count(n)) << "unexpected tensor " << n;
}

// Every expert of MoE layer `l` equals the dense FFN of models/tiny's layer `l`, bit for bit.
void expect_experts_are_the_dense_ffn(const Checkpoint& out, const Checkpoint& dense, int64_t l, int64_t experts) {
  for (const char* p : {"gate_proj", "up_proj", "down_proj"}) {
    const at::Tensor want = dense.get(cat("model.layers.", l, ".mlp.", p, ".weight"));
    for (int64_t e = 0; e < experts; ++e) {
      const std::string name = cat("model.layers.", l, ".mlp.experts.", e, ".", p, ".weight");
      ASSERT_TRUE(out.contains(name)) << name;
      const at::Tensor got = out.get(name);
      EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
      EXPECT_TRUE(at::equal(got, want)) << name;
    }
  }
}

}  // namespace

TEST(UpcycleMoeforge, LinearRouterConfigTensorsAndDenseLayers) {
  const std::string dir = fresh("linear");
  const std::string out = dir + "/out";
  make_dirs(dir);
  CliRun r = run_moeforge("upcycle " + tiny() + " --experts 4 --top-k 1 --family moeforge --layers 1,3 "
                          "--gate-mode uniform_random --seed 2 --out " + out + " --json " + dir + "/summary.json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("moeforge (linear router)"), std::string::npos) << r.out;

  json base = read_json_file(tiny() + "/config.json");
  json c = read_json_file(out + "/config.json");
  EXPECT_EQ(c["model_type"], "moeforge");
  EXPECT_EQ(c["architectures"], json::array({"MoeforgeForCausalLM"}));
  EXPECT_EQ(c["base_model_type"], "llama");
  EXPECT_EQ(c["moe_layers"], json::array({1, 3}));
  EXPECT_EQ(c["num_experts"], 4);
  EXPECT_EQ(c["num_experts_per_tok"], 1);
  EXPECT_EQ(c["intermediate_size"], 1024);
  EXPECT_EQ(c["expert_sizes"], json::parse("[[1024, 1024, 1024, 1024], [1024, 1024, 1024, 1024]]"));
  EXPECT_EQ(c["router"], json::parse(R"({"type": "linear", "score": "softmax", "selection": "top_k",
                                          "gate": "renorm", "aux_loss": "switch", "aux_loss_coef": 0.01})"));
  EXPECT_FALSE(c.contains("mlp_bias"));
  EXPECT_FALSE(c.contains("output_router_logits"));  // an HF MoE key the moeforge family does not read
  // The base's keys stay.
  for (const char* k : {"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "bos_token_id",
                        "eos_token_id", "tie_word_embeddings", "torch_dtype", "rms_norm_eps", "rope_theta"})
    EXPECT_EQ(c[k], base[k]) << k;
  const ModelConfig cfg = parse_model_config(c, "the upcycled config.json");
  EXPECT_EQ(cfg.family, Family::moeforge);
  EXPECT_EQ(cfg.router.type, "linear");
  EXPECT_TRUE(cfg.norm_topk_prob);
  EXPECT_FALSE(cfg.layer_is_moe(0));
  EXPECT_TRUE(cfg.layer_is_moe(3));

  expect_tensors_follow_the_config(out);
  Checkpoint ck = Checkpoint::open(out), dense = Checkpoint::open(tiny());
  for (int64_t l : {1, 3}) {
    expect_experts_are_the_dense_ffn(ck, dense, l, 4);
    const at::Tensor router = ck.get(cat("model.layers.", l, ".mlp.router.weight"), at::kFloat);
    EXPECT_EQ(router.sizes().vec(), (std::vector<int64_t>{4, 256}));
    EXPECT_GT(router.abs().max().item<double>(), 0.0);
    EXPECT_LE(router.abs().max().item<double>(), 1.0 / 16 + 1e-3);  // U(-1/sqrt(H), 1/sqrt(H)), bf16
    EXPECT_FALSE(ck.contains(cat("model.layers.", l, ".mlp.router.noise.weight")));
    EXPECT_FALSE(ck.contains(cat("model.layers.", l, ".mlp.gate_proj.weight")));
  }
  for (int64_t l : {0, 2, 4, 5})  // dense layers: models/tiny's FFN, unchanged
    for (const char* p : {"gate_proj", "up_proj", "down_proj"}) {
      const std::string name = cat("model.layers.", l, ".mlp.", p, ".weight");
      EXPECT_TRUE(at::equal(ck.get(name), dense.get(name))) << name;
    }
  for (const char* name : {"model.embed_tokens.weight", "model.layers.3.self_attn.q_proj.weight", "model.norm.weight"})
    EXPECT_TRUE(at::equal(ck.get(name), dense.get(name))) << name;

  json summary = read_json_file(dir + "/summary.json");
  EXPECT_EQ(summary["family"], "moeforge");
  EXPECT_EQ(summary["router"], "linear");
  EXPECT_EQ(summary["moe_layers"], 2);
  remove_all(dir);
}

TEST(UpcycleMoeforge, HyperMoeRecipeNoisyTopkRouterStartsAtZero) {
  // docs/upcycle.md's recipe, as written there.
  const std::string dir = fresh("noisy");
  const std::string out = dir + "/tiny-8x-noisy";
  make_dirs(dir);
  CliRun r = run_moeforge("upcycle " + tiny() + " --experts 8 --top-k 1 --family moeforge --router noisy_topk "
                          "--gate-mode zeros --out " + out + " --json " + dir + "/summary.json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("moeforge (noisy_topk router)"), std::string::npos) << r.out;

  json c = read_json_file(out + "/config.json");
  EXPECT_EQ(c["model_type"], "moeforge");
  EXPECT_EQ(c["base_model_type"], "llama");
  EXPECT_EQ(c["moe_layers"], json::array({0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(c["num_experts"], 8);
  EXPECT_EQ(c["num_experts_per_tok"], 1);
  EXPECT_EQ(c["intermediate_size"], 1024);
  ASSERT_EQ(c["expert_sizes"].size(), 6u);
  for (const auto& sizes : c["expert_sizes"]) EXPECT_EQ(sizes, json(std::vector<int64_t>(8, 1024)));
  EXPECT_EQ(c["router"], json::parse(R"({"type": "noisy_topk", "score": "softmax", "selection": "top_k",
                                          "gate": "renorm", "aux_loss": "shazeer", "aux_loss_coef": 0.01,
                                          "noise_epsilon": 0.01, "load_estimate": "shazeer"})"));

  Checkpoint ck = Checkpoint::open(out), dense = Checkpoint::open(tiny());
  for (int64_t l = 0; l < 6; ++l) {
    for (const char* t : {"router.weight", "router.noise.weight"}) {
      const std::string name = cat("model.layers.", l, ".mlp.", t);
      ASSERT_TRUE(ck.contains(name)) << name;
      EXPECT_EQ(ck.info(name).shape, (std::vector<int64_t>{8, 256})) << name;
      EXPECT_EQ(ck.get(name, at::kFloat).abs().max().item<double>(), 0.0) << name;
    }
    expect_experts_are_the_dense_ffn(ck, dense, l, 8);
  }
  // Against the family's own tensor list (needs the noisy_topk router entry and the parser).
  expect_tensors_follow_the_config(out);

  json summary = read_json_file(dir + "/summary.json");
  EXPECT_EQ(summary["router"], "noisy_topk");
  EXPECT_EQ(summary["gate_mode"], "zeros");
  EXPECT_EQ(summary["top_k"], 1);
  remove_all(dir);
}

TEST(UpcycleMoeforge, ZerosGateModeForEveryFamily) {
  const std::string dir = fresh("zeros");
  make_dirs(dir);
  UpcycleConfig c;
  c.origin = "test";
  c.base_model = tiny();
  c.family = "mixtral";
  c.gate_mode = "zeros";
  c.top_k = 1;
  UpcycleExpert e;
  e.source_model = tiny();
  c.experts.assign(2, e);
  const UpcycleResult r = run_upcycle(c, dir + "/mixtral");
  ASSERT_EQ(r.gate_condition_numbers.size(), 6u);
  Checkpoint ck = Checkpoint::open(dir + "/mixtral");
  for (int l = 0; l < 6; ++l) {
    const at::Tensor g = ck.get(cat("model.layers.", l, ".block_sparse_moe.gate.weight"), at::kFloat);
    EXPECT_EQ(g.sizes().vec(), (std::vector<int64_t>{2, 256}));
    EXPECT_EQ(g.abs().max().item<double>(), 0.0) << l;
  }
  // A linear moeforge router with zeros, on some layers only.
  c.family = "moeforge";
  c.layers = {2};
  run_upcycle(c, dir + "/moeforge");
  Checkpoint m = Checkpoint::open(dir + "/moeforge");
  EXPECT_EQ(m.get("model.layers.2.mlp.router.weight", at::kFloat).abs().max().item<double>(), 0.0);
  EXPECT_FALSE(m.contains("model.layers.2.mlp.router.noise.weight"));
  EXPECT_TRUE(m.contains("model.layers.1.mlp.gate_proj.weight"));
  expect_tensors_follow_the_config(dir + "/moeforge");
  remove_all(dir);
}

TEST(UpcycleMoeforge, YamlAndFlagsGiveByteIdenticalCheckpoints) {
  const std::string dir = fresh("yaml");
  make_dirs(dir);
  std::string y = "base_model: " + tiny() + "\narchitecture: moeforge\nrouter: noisy_topk\ngate_mode: zeros\n"
                  "experts_per_token: 1\nlayers: [0, 4]\nexperts:\n";
  for (int i = 0; i < 2; ++i) y += "  - source_model: " + tiny() + "\n";
  write_text(dir + "/moe.yml", y);
  const UpcycleConfig parsed = load_upcycle_yaml(dir + "/moe.yml");
  EXPECT_EQ(parsed.family, "moeforge");
  EXPECT_EQ(parsed.router, "noisy_topk");
  CliRun a = run_moeforge("upcycle --config " + dir + "/moe.yml --out " + dir + "/a");
  ASSERT_EQ(a.code, 0) << a.err;
  CliRun b = run_moeforge("upcycle " + tiny() + " --experts 2 --top-k 1 --family moeforge --router noisy_topk "
                          "--gate-mode zeros --layers 0,4 --out " + dir + "/b");
  ASSERT_EQ(b.code, 0) << b.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"})
    EXPECT_EQ(sha256_file(dir + "/a/" + f), sha256_file(dir + "/b/" + f)) << f;
  EXPECT_EQ(read_json_file(dir + "/a/config.json")["moe_layers"], json::array({0, 4}));
  remove_all(dir);
}

TEST(UpcycleMoeforge, BadInputIsOneLineAndWritesNothing) {
  const std::string dir = fresh("bad");
  make_dirs(dir);
  const std::string out = dir + "/out";
  write_text(dir + "/mixtral_noisy.yml", "base_model: " + tiny() + "\narchitecture: mixtral\nrouter: noisy_topk\n"
                                         "gate_mode: random\nexperts:\n  - source_model: " + tiny() + "\n");
  const std::string t = "upcycle " + tiny() + " --experts 4 ";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {t + "--family mixtral --router noisy_topk --out " + out,
       "router noisy_topk is a moeforge router (--family moeforge, YAML architecture: moeforge); mixtral routers are linear"},
      {t + "--family qwen2_moe --shared-expert --router noisy_topk --out " + out, "qwen2_moe routers are linear"},
      {t + "--family moeforge --shared-expert --out " + out, "moeforge has no shared expert (use --family qwen2_moe)"},
      {t + "--family moeforge --router switch --out " + out, "unknown router 'switch' (supported: linear, noisy_topk)"},
      {t + "--family moeforge --gate-mode ones --out " + out,
       "unknown gate mode 'ones' (supported: random, uniform_random, cheap_embed, hidden, zeros)"},
      {t + "--family mixtral --layers 0,1 --out " + out, "mixtral makes every layer sparse"},
      {"upcycle --config " + dir + "/mixtral_noisy.yml --out " + out, "mixtral_noisy.yml: router noisy_topk is a moeforge router"},
  };
  for (const auto& [args, message] : cases) {
    CliRun r = run_moeforge(args);
    EXPECT_EQ(r.code, 1) << args;
    EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(path_exists(out)) << args;
  }
  // The library refuses the same before writing anything.
  UpcycleConfig c;
  c.origin = "test";
  c.base_model = tiny();
  c.family = "olmoe";
  c.router = "noisy_topk";
  UpcycleExpert e;
  e.source_model = tiny();
  c.experts.assign(2, e);
  EXPECT_NE(error_of([&] { validate_upcycle(c); }).find("olmoe routers are linear"), std::string::npos);
  c.family = "moeforge";
  c.shared_expert = e;
  EXPECT_NE(error_of([&] { run_upcycle(c, out); }).find("moeforge has no shared expert"), std::string::npos);
  EXPECT_FALSE(path_exists(out));
  // A YAML router must be a string.
  write_text(dir + "/router_list.yml", "base_model: " + tiny() + "\narchitecture: moeforge\nrouter: [linear]\n"
                                       "experts:\n  - source_model: " + tiny() + "\n");
  EXPECT_NE(error_of([&] { load_upcycle_yaml(dir + "/router_list.yml"); }).find("router must be a string"),
            std::string::npos);
  remove_all(dir);
}
