// Sparse upcycling (src/upcycle) and continued MoE pretraining: identities (identical experts
// compute the dense model for every k; fine-grained slices selected with equal weight compute
// the dense FFN), seeded gate modes, the mergekit gate definitions written out in the test,
// YAML == flags byte for byte, one-line errors with nothing written, and the pretrain recipe
// on an upcycled Mixtral (auxiliary losses, telemetry, exact resume with router jitter).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <string>

#include "io/checkpoint.h"
#include "model/load.h"
#include "model/model.h"
#include "profile/calibration_data.h"
#include "profile/expert_stats.h"
#include "tokenizer/tokenizer.h"
#include "train/pretrain.h"
#include "train/pretrain_model.h"
#include "upcycle/upcycle.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/str.h"
#include "spm_llama_fixture.h"
#include "test_helpers.h"

using namespace mf;
using mf::testing_helpers::CliRun;
using mf::testing_helpers::error_of;
using mf::testing_helpers::run_moeforge;

namespace {

std::string fresh(const std::string& name) {
  std::string d = ::testing::TempDir() + "/mf_upcycle_" + name;
  remove_all(d);
  return d;
}

// A 2-layer random Llama (hidden 16, FFN 24) with the llama2-spm tokenizer, saved once.
const std::string& base_dir() {
  static const std::string dir = [] {
    std::string d = fresh("base");
    testing_fixtures::save_tiny_spm_llama(d);
    return d;
  }();
  return dir;
}

UpcycleConfig flags(const std::string& family, int64_t n, int64_t k, int64_t g = 1) {
  UpcycleConfig c;
  c.origin = "test";
  c.base_model = base_dir();
  c.family = family;
  c.top_k = k;
  c.granularity = g;
  UpcycleExpert e;
  e.source_model = base_dir();
  c.experts.assign(static_cast<size_t>(n), e);
  return c;
}

at::Tensor ids() {
  return at::tensor({1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889}, at::kLong).unsqueeze(0);
}

double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1.0, b.abs().max().item<double>());
}

void zero_routers(Model& m) {
  at::NoGradGuard g;
  for (auto& p : m.named_parameters())
    if (is_router_parameter(p.key())) p.value().zero_();
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

}  // namespace

TEST(Upcycle, MixtralWithIdenticalExpertsIsTheDenseModel) {
  auto dense = Model::load(base_dir());
  const at::Tensor want = dense->forward(ids());
  for (int64_t k : {1, 2, 4}) {
    const std::string out = fresh("identity_k" + std::to_string(k));
    UpcycleConfig c = flags("mixtral", 4, k);
    c.seed = static_cast<uint64_t>(k);
    run_upcycle(c, out);
    auto moe = Model::load(out);
    EXPECT_EQ(moe->config().model_type, "mixtral");
    EXPECT_EQ(moe->config().num_experts, 4);
    EXPECT_EQ(moe->config().num_experts_per_tok, k);
    EXPECT_TRUE(Checkpoint::open(out).contains("model.layers.1.block_sparse_moe.experts.3.w2.weight"));
    EXPECT_LE(max_rel_diff(moe->forward(ids()), want), 1e-5) << "k = " << k;
    remove_all(out);
  }
}

TEST(Upcycle, FineGrainedSlicesSelectedEquallyAreTheDenseFfn) {
  auto dense = Model::load(base_dir());
  const at::Tensor want = dense->forward(ids());
  {  // Mixtral, 2 slices of 12 neurons, each twice; all 4 experts with equal weight.
    const std::string out = fresh("fine_mixtral");
    run_upcycle(flags("mixtral", 4, 4, 2), out);
    auto moe = Model::load(out);
    EXPECT_EQ(moe->config().intermediate_size, 12);
    EXPECT_GT(max_rel_diff(moe->forward(ids()), want), 1e-3);  // a random router weighs slices unequally
    zero_routers(*moe);
    EXPECT_LE(max_rel_diff(moe->forward(ids()), want), 1e-5);
    remove_all(out);
  }
  {  // Qwen2-MoE, 3 slices of 8 (6 experts) plus a shared expert whose output the test removes.
    const std::string out = fresh("fine_qwen");
    UpcycleConfig c = flags("qwen2_moe", 6, 6, 3);
    c.shared_expert = c.experts[0];
    run_upcycle(c, out);
    auto moe = Model::load(out);
    EXPECT_EQ(moe->config().moe_intermediate_size, 8);
    EXPECT_EQ(moe->config().shared_expert_intermediate_size, 24);
    zero_routers(*moe);
    {
      at::NoGradGuard g;
      for (auto& p : moe->named_parameters())
        if (p.key().find("shared_expert.down_proj") != std::string::npos) p.value().zero_();
    }
    EXPECT_LE(max_rel_diff(moe->forward(ids()), want), 1e-5);
    remove_all(out);
  }
}

TEST(Upcycle, RandomGateModesAreSeeded) {
  auto router = [](const std::string& mode, uint64_t seed) {
    const std::string out = fresh("gate_" + mode + std::to_string(seed));
    UpcycleConfig c = flags("mixtral", 8, 2);
    c.gate_mode = mode;
    c.seed = seed;
    run_upcycle(c, out);
    at::Tensor t = Checkpoint::open(out).get("model.layers.0.block_sparse_moe.gate.weight", at::kFloat);
    remove_all(out);
    return t;
  };
  for (const std::string mode : {"random", "uniform_random"}) {
    at::Tensor a = router(mode, 5), b = router(mode, 5), c = router(mode, 6);
    EXPECT_TRUE(at::equal(a, b)) << mode;
    EXPECT_FALSE(at::equal(a, c)) << mode;
  }
  // N(0, 1) and U(-1/sqrt(H), 1/sqrt(H)), H = 16: 128 draws each.
  at::Tensor r = router("random", 1), u = router("uniform_random", 1);
  EXPECT_NEAR(r.std().item<double>(), 1.0, 0.2);
  EXPECT_LE(u.abs().max().item<double>(), 0.25);
  EXPECT_NEAR(u.std().item<double>(), 0.25 / std::sqrt(3.0), 0.03);
}

TEST(Upcycle, PromptGateModesFollowMergekit) {
  const std::string dir = fresh("prompts");
  make_dirs(dir);
  const std::vector<std::vector<std::string>> pos = {{"The cat sat on the mat", "A dog barked"},
                                                     {"def main(): return 0"}};
  const std::vector<std::string> neg = {"int x = 1;"};
  auto yaml = [&](const std::string& mode) {
    std::string y = "base_model: " + base_dir() + "\ngate_mode: " + mode + "\nexperts_per_token: 1\nexperts:\n";
    for (const auto& p : pos) {
      y += "  - source_model: " + base_dir() + "\n    positive_prompts:\n";
      for (const auto& s : p) y += "      - \"" + s + "\"\n";
      y += "    negative_prompts: [\"" + neg[0] + "\"]\n";
    }
    write_text(dir + "/" + mode + ".yml", y);
    const std::string out = dir + "/" + mode;
    run_upcycle(load_upcycle_yaml(dir + "/" + mode + ".yml"), out);
    return Checkpoint::open(out);
  };
  auto tok = Tokenizer::load(base_dir());
  const at::Tensor embed = Checkpoint::open(base_dir()).get("model.embed_tokens.weight", at::kFloat);
  // cheap_embed: normalised sum of the prompts' token embeddings, the same in every layer.
  Checkpoint cheap = yaml("cheap_embed");
  for (size_t e = 0; e < pos.size(); ++e) {
    at::Tensor want = at::zeros({16});
    for (const auto& p : pos[e])
      for (int32_t id : tok->encode(p, false)) want += embed[id];
    want /= want.norm();
    for (int l : {0, 1})
      EXPECT_TRUE(at::allclose(cheap.get(cat("model.layers.", l, ".block_sparse_moe.gate.weight"), at::kFloat)[e], want,
                               1e-5, 1e-6));
  }
  // hidden, layer 0: the residual input is the embedding output at the last (BOS-prefixed) token.
  Checkpoint hidden = yaml("hidden");
  auto last_embed = [&](const std::string& p) { return embed[tok->encode(p, true).back()]; };
  for (size_t e = 0; e < pos.size(); ++e) {
    at::Tensor want = at::zeros({16});
    for (const auto& p : pos[e]) want += last_embed(p) / static_cast<double>(pos[e].size());
    want -= last_embed(neg[0]);
    want /= want.norm();
    const at::Tensor l0 = hidden.get("model.layers.0.block_sparse_moe.gate.weight", at::kFloat)[e];
    const at::Tensor l1 = hidden.get("model.layers.1.block_sparse_moe.gate.weight", at::kFloat)[e];
    EXPECT_TRUE(at::allclose(l0, want, 1e-5, 1e-6)) << e;
    EXPECT_NEAR(l1.norm().item<double>(), 1.0, 1e-5);
    EXPECT_FALSE(at::allclose(l1, l0, 1e-3, 1e-3));  // layer 1 sees the output of layer 0
  }
  remove_all(dir);
}

TEST(Upcycle, YamlAndFlagsGiveByteIdenticalCheckpoints) {
  const std::string dir = fresh("yaml_vs_flags");
  make_dirs(dir);
  std::string y = "base_model: " + base_dir() + "\ngate_mode: uniform_random\nexperts_per_token: 2\nseed: 3\n"
                  "granularity: 2\ndtype: bfloat16\nexperts:\n";
  for (int e = 0; e < 4; ++e) y += "  - source_model: " + base_dir() + "\n    noise_scale: 0.01\n";
  write_text(dir + "/moe.yml", y);
  CliRun a = run_moeforge("upcycle --config " + dir + "/moe.yml --out " + dir + "/a");
  ASSERT_EQ(a.code, 0) << a.err;
  CliRun b = run_moeforge("upcycle " + base_dir() + " --experts 4 --top-k 2 --granularity 2 --gate-mode uniform_random "
                          "--seed 3 --noise-scale 0.01 --dtype bf16 --out " + dir + "/b --json " + dir + "/b.json");
  ASSERT_EQ(b.code, 0) << b.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model"})
    EXPECT_EQ(sha256_file(dir + "/a/" + f), sha256_file(dir + "/b/" + f)) << f;
  const json summary = read_json_file(dir + "/b.json");
  EXPECT_EQ(summary["experts"], 4);
  EXPECT_EQ(summary["moe_layers"], 2);
  EXPECT_EQ(Checkpoint::open(dir + "/a").info("model.layers.0.block_sparse_moe.experts.0.w1.weight").dtype, StDType::BF16);
  remove_all(dir);
}

TEST(Upcycle, BadInputIsOneLineAndWritesNothing) {
  const std::string dir = fresh("bad");
  make_dirs(dir);
  // A donor of another width, and one with another tokenizer.
  json wide = read_json_file(base_dir() + "/config.json");
  wide["hidden_size"] = 32;
  auto wm = Model::create(parse_model_config(wide, "wide"));
  wm->init_random(1);
  save_checkpoint(dir + "/wide", wide, wm->hf_tensors());
  save_checkpoint(dir + "/othertok", read_json_file(base_dir() + "/config.json"), Model::load(base_dir())->hf_tensors());
  write_text(dir + "/othertok/tokenizer.json", "{}");
  auto donors_yaml = [&](const std::string& donor) {
    const std::string p = dir + "/" + base_name(donor) + ".yml";
    write_text(p, "base_model: " + base_dir() + "\ngate_mode: random\nexperts:\n  - source_model: " + base_dir() +
                      "\n  - source_model: " + donor + "\n");
    return p;
  };
  const std::string out = dir + "/out";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"upcycle --config " + donors_yaml(dir + "/wide") + " --out " + out, "hidden_size 32 differs from the base model's 16"},
      {"upcycle --config " + donors_yaml(dir + "/othertok") + " --out " + out, "tokenizer differs from the base model's"},
      {"upcycle " + base_dir() + " --experts 6 --granularity 4 --out " + out, "is not divisible by the granularity"},
      {"upcycle " + base_dir() + " --experts 4 --top-k 5 --out " + out, "top-k 5 must be between 1 and"},
      {"upcycle " + base_dir() + " --experts 4 --family switch --out " + out, "unknown family 'switch'"},
      {"upcycle " + base_dir() + " --experts 4 --family qwen2_moe --out " + out, "qwen2_moe needs a shared expert"},
      {"upcycle " + base_dir() + " --experts 4 --gate-mode hidden --out " + out, "has no positive_prompts"},
  };
  for (const auto& [args, message] : cases) {
    CliRun r = run_moeforge(args);
    EXPECT_EQ(r.code, 1) << args;
    EXPECT_NE(r.err.find("error: "), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(path_exists(out)) << args;
  }
  // A user's non-empty directory is never replaced without --overwrite.
  make_dirs(out);
  write_text(out + "/notes.txt", "mine");
  CliRun r = run_moeforge("upcycle " + base_dir() + " --experts 2 --out " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("exists and is not empty"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(out + "/notes.txt"), "mine");
  remove_all(dir);
}

namespace {

// A pretrain config continuing from `init` on the test corpus, with jitter and a z-loss.
PretrainConfig continued_config(const std::string& dir, const std::string& init, int64_t steps) {
  make_dirs(dir);
  json cfg = {{"model", {{"router_jitter_noise", 0.1}, {"router_z_loss_coef", 0.01}, {"router_aux_loss_coef", 0.02}}},
              {"training",
               {{"seq_len", 16}, {"batch_size", 2}, {"max_steps", steps}, {"lr", 1e-2}, {"warmup_steps", 1},
                {"save_every", 2}, {"eval_every", 0}, {"eval_batches", 1}, {"bf16", false}, {"seed", 3},
                {"init", init}, {"output_dir", dir + "/run"},
                {"train_data", std::string(MOEFORGE_TEST_DATA) + "/train/tiny_train.jsonl"},
                {"validation_data", std::string(MOEFORGE_TEST_DATA) + "/train/tiny_validation.jsonl"}}}};
  write_json_file(dir + "/pretrain.json", cfg);
  PretrainConfig c = load_pretrain_config(dir + "/pretrain.json");
  c.trainer.progress = false;
  return c;
}

TrainResult pretrain(const PretrainConfig& c) {
  auto tok = Tokenizer::load(c.tokenizer);
  PretrainTokenizer pt;
  pt.encode = [&tok](const std::vector<std::string>& t) { return tok->encode_batch(t, true); };
  pt.eos_id = tok->eos_id();
  pt.bos_id = tok->bos_id();
  pt.files_dir = c.tokenizer;
  return run_pretrain(
      c, [&] { return pretrain_model_of(load_model_with_overrides(c.init, {at::kFloat, at::kCPU}, c.model_overrides)); },
      pt);
}

std::vector<json> metrics_lines(const std::string& path) {
  std::vector<json> v;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) v.push_back(json::parse(line));
  return v;
}

}  // namespace

TEST(Upcycle, ContinuedPretrainingTrainsTheMoeWithItsLossesAndResumesExactly) {
  const std::string dir = fresh("pretrain");
  const std::string init = dir + "/mixtral";
  UpcycleConfig uc = flags("mixtral", 4, 2);
  uc.experts[1].noise_scale = uc.experts[3].noise_scale = 0.05;
  run_upcycle(uc, init);

  PretrainConfig full = continued_config(dir + "/full", init, 4);
  pretrain(full);
  PretrainConfig killed = continued_config(dir + "/killed", init, 4);
  killed.trainer.stop_after_step = 2;
  pretrain(killed);
  EXPECT_FALSE(path_exists(dir + "/killed/run/final"));
  killed.trainer.stop_after_step = -1;
  EXPECT_EQ(pretrain(killed).start_step, 2);

  auto la = metrics_lines(dir + "/full/run/metrics.jsonl"), lb = metrics_lines(dir + "/killed/run/metrics.jsonl");
  ASSERT_EQ(la.size(), 4u);
  ASSERT_EQ(lb.size(), 4u);
  for (size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i]["loss"], lb[i]["loss"]) << "step " << i + 1;
    // HF load balancing pooled over layers (k at balance, times the coefficient) and the z-loss.
    EXPECT_GT(la[i]["balance_loss"].get<double>(), 0.0);
    EXPECT_LE(la[i]["balance_loss"].get<double>(), 0.02 * 4 * 2 + 1e-6);  // <= coef E k
    EXPECT_GT(la[i]["z_loss"].get<double>(), 0.0);
    EXPECT_GT(la[i]["moe_load_balance"].get<double>(), 0.0);
    EXPECT_LE(la[i]["moe_load_balance"].get<double>(), 1.0 + 1e-9);
    EXPECT_GE(la[i]["moe_max_load"].get<double>(), 1.0);
  }
  Checkpoint a = Checkpoint::open(dir + "/full/run/final"), b = Checkpoint::open(dir + "/killed/run/final"),
             start = Checkpoint::open(init);
  EXPECT_EQ(a.config()["model_type"], "mixtral");
  EXPECT_EQ(a.config()["router_jitter_noise"], 0.1);
  for (const auto& name : a.names()) EXPECT_TRUE(at::equal(a.get(name), b.get(name))) << name;
  // Routers and experts moved; the experts started identical up to the noise and now differ.
  EXPECT_FALSE(at::equal(a.get("model.layers.0.block_sparse_moe.gate.weight", at::kFloat),
                         start.get("model.layers.0.block_sparse_moe.gate.weight", at::kFloat)));
  EXPECT_FALSE(at::equal(a.get("model.layers.0.block_sparse_moe.experts.0.w1.weight", at::kFloat),
                         a.get("model.layers.0.block_sparse_moe.experts.2.w1.weight", at::kFloat)));
  remove_all(dir);
}

TEST(Upcycle, PretrainFromScratchTakesAnyFamily) {
  const std::string dir = fresh("scratch");
  make_dirs(dir);
  json model = read_json_file(base_dir() + "/config.json");
  model["model_type"] = "qwen2_moe";
  model["num_experts"] = 4;
  model["num_experts_per_tok"] = 2;
  model["moe_intermediate_size"] = 8;
  model["shared_expert_intermediate_size"] = 16;
  json cfg = {{"model", model},
              {"training",
               {{"seq_len", 16}, {"batch_size", 2}, {"max_steps", 2}, {"lr", 1e-3}, {"bf16", false},
                {"tokenizer", base_dir()}, {"output_dir", dir + "/run"},
                {"train_data", std::string(MOEFORGE_TEST_DATA) + "/train/tiny_train.jsonl"}}}};
  write_json_file(dir + "/pretrain.json", cfg);
  CliRun r = run_moeforge("-q train --recipe pretrain --config " + dir + "/pretrain.json");
  ASSERT_EQ(r.code, 0) << r.err;
  auto m = Model::load(dir + "/run/final");
  EXPECT_EQ(m->config().model_type, "qwen2_moe");
  EXPECT_EQ(metrics_lines(dir + "/run/metrics.jsonl").back()["step"], 2);
  remove_all(dir);
}

TEST(Upcycle, ExpertStatsOfSlicedExperts) {
  // Experts 0 and 2 are copies of slice 0, 1 and 3 of slice 1 (G = 2): o_0 = o_2, o_1 = o_3, and
  // (o_0 + o_1) / 2 is the mean dense FFN output (each slice's down_proj carries the factor 2).
  const std::string dir = fresh("stats");
  run_upcycle(flags("mixtral", 4, 2, 2), dir + "/moe");
  auto moe = Model::load(dir + "/moe");
  auto tok = Tokenizer::load(dir + "/moe");
  ExpertStatsOptions o;
  o.data_files = {std::string(MOEFORGE_TEST_DATA) + "/train/tiny_validation.jsonl"};
  o.max_tokens = 300;
  o.seq_len = 64;
  ExpertStats s = expert_stats(*moe, *tok, o);
  EXPECT_EQ(s.tokens, 300);
  ASSERT_EQ(s.layers.size(), 2u);
  for (const auto& l : s.layers) {
    int64_t routed = 0;
    for (const auto& [domain, c] : l.tokens_per_expert)
      for (int64_t n : c) routed += n;
    EXPECT_EQ(routed, 300 * 2);
    EXPECT_NEAR(l.cosine[0][2].item<double>(), 1.0, 1e-9);
    EXPECT_NEAR(l.cosine[1][3].item<double>(), 1.0, 1e-9);
    EXPECT_LT(l.cosine[0][1].item<double>(), 0.999);
  }
  // The layer-0 FFN inputs are the dense model's (attention is unchanged): compare with a
  // dense FFN written out here on the same inputs.
  auto dense = Model::load(base_dir());
  Checkpoint ck = Checkpoint::open(base_dir());
  const at::Tensor w1 = ck.get("model.layers.0.mlp.gate_proj.weight", at::kFloat),
                   w3 = ck.get("model.layers.0.mlp.up_proj.weight", at::kFloat),
                   w2 = ck.get("model.layers.0.mlp.down_proj.weight", at::kFloat);
  at::Tensor sum = at::zeros({16}, at::kDouble);
  int64_t seen = 0;
  dense->hooks().add(HookPoint::ffn_input, [&](HookEvent& ev) {
    const at::Tensor x = ev.tensor.to(at::kFloat);
    const at::Tensor y = at::matmul(at::silu(at::matmul(x, w1.t())) * at::matmul(x, w3.t()), w2.t());
    sum += y.to(at::kDouble).sum(0);
  }, false, 0);
  for (const auto& d : read_calibration_jsonl(o.data_files[0], "", false)) {
    if (seen >= 300) break;
    std::vector<int32_t> ids = tok->encode(d.text, true);
    const int64_t n = std::min<int64_t>({static_cast<int64_t>(ids.size()), 64, 300 - seen});
    dense->forward_hidden(at::tensor(std::vector<int64_t>(ids.begin(), ids.begin() + n), at::kLong).unsqueeze(0));
    seen += n;
  }
  const at::Tensor want = (sum / 300.0).to(at::kFloat);
  const at::Tensor got = (s.layers[0].mean_output[0] + s.layers[0].mean_output[1]) / 2;
  EXPECT_TRUE(at::allclose(got, want, 1e-4, 1e-5)) << (got - want).abs().max().item<double>();
  remove_all(dir);
}
