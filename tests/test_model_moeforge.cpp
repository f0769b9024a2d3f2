// moeforge MoE models (docs/format.md "moeforge MoE models"): a random dense Llama whose FFNs
// on some layers are split, here in the test, into a TRUE partition of heterogeneous experts
// (rows / columns gathered by hand), written as a moeforge checkpoint and loaded back.
// Identities: k = N with unit gates reproduces the dense model for every router; k < N
// differs; KV-cache decoding equals the full forward; load -> save -> load is bit exact; bad
// configs and tensors give one-line errors; the router learns through the straight-through
// gate (checked against a hand-written reference gradient); avg-k gates follow the experts.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "io/checkpoint.h"
#include "model/model.h"
#include "model/moe_ffn.h"
#include "test_helpers.h"
#include "util/error.h"
#include "util/fs.h"

using namespace mf;
using mf::testing_helpers::error_of;

namespace {

constexpr int64_t kH = 32, kF = 48, kE = 4;
const std::vector<int64_t> kMoeLayers = {0, 2};
const std::vector<std::vector<int64_t>> kSizes = {{6, 18, 9, 15}, {20, 4, 12, 12}};

json dense_json() {
  return {{"model_type", "llama"},      {"architectures", {"LlamaForCausalLM"}},
          {"vocab_size", 64},           {"hidden_size", kH},
          {"intermediate_size", kF},    {"num_hidden_layers", 3},
          {"num_attention_heads", 4},   {"num_key_value_heads", 2},
          {"rms_norm_eps", 1e-5},       {"max_position_embeddings", 128},
          {"bos_token_id", 1},          {"eos_token_id", 2}};
}

std::shared_ptr<Model> dense_model() {
  static std::shared_ptr<Model> m = [] {
    auto d = Model::create(parse_model_config(dense_json(), "dense/config.json"));
    d->init_random(7, 0.2);
    d->eval();
    return d;
  }();
  return m;
}

std::string temp_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/mf_moeforge_" + name;
  remove_all(d);
  return d;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

// A random partition of the F neurons into experts of the given sizes.
std::vector<std::vector<int64_t>> random_partition(const std::vector<int64_t>& sizes, uint64_t seed) {
  std::vector<int64_t> perm(kF);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<std::vector<int64_t>> parts;
  size_t at = 0;
  for (int64_t s : sizes) {
    parts.emplace_back(perm.begin() + at, perm.begin() + at + s);
    at += s;
  }
  return parts;
}

struct Split {
  json config;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
};

// The dense model's checkpoint with the FFNs of kMoeLayers replaced by experts.
Split make_split(const std::string& router_type, int64_t k, const std::string& gate = "unit") {
  Split s;
  s.config = dense_json();
  s.config["model_type"] = "moeforge";
  s.config["architectures"] = {"MoeforgeForCausalLM"};
  s.config["base_model_type"] = "llama";
  s.config["moe_layers"] = kMoeLayers;
  s.config["num_experts"] = kE;
  s.config["num_experts_per_tok"] = k;
  s.config["expert_sizes"] = kSizes;
  s.config["router"] = {{"type", router_type}, {"gate", gate}};
  s.config["moe_provenance"] = {{"split_method", "test"}};
  std::map<std::string, at::Tensor> dense;
  for (auto& [n, t] : dense_model()->hf_tensors()) dense[n] = t;
  torch::manual_seed(11);
  for (auto& [n, t] : dense) {
    bool moe_ffn = false;
    for (int64_t l : kMoeLayers) moe_ffn |= n.rfind("model.layers." + std::to_string(l) + ".mlp.", 0) == 0;
    if (!moe_ffn) s.tensors.emplace_back(n, t);
  }
  for (size_t i = 0; i < kMoeLayers.size(); ++i) {
    const std::string p = "model.layers." + std::to_string(kMoeLayers[i]) + ".mlp.";
    if (router_type == "linear") s.tensors.emplace_back(p + "router.weight", torch::randn({kE, kH}));
    if (router_type == "mlp") {
      s.tensors.emplace_back(p + "router.0.weight", torch::randn({kE, kH}));
      s.tensors.emplace_back(p + "router.2.weight", torch::randn({kE, kE}));
    }
    const auto parts = random_partition(kSizes[i], 100 + i);
    for (int64_t e = 0; e < kE; ++e) {
      const at::Tensor ids = torch::tensor(parts[e], torch::kLong);
      const std::string ep = p + "experts." + std::to_string(e) + ".";
      s.tensors.emplace_back(ep + "gate_proj.weight", dense[p + "gate_proj.weight"].index_select(0, ids));
      s.tensors.emplace_back(ep + "up_proj.weight", dense[p + "up_proj.weight"].index_select(0, ids));
      s.tensors.emplace_back(ep + "down_proj.weight", dense[p + "down_proj.weight"].index_select(1, ids));
      s.tensors.emplace_back(ep + "neurons", ids.to(torch::kInt));
    }
  }
  return s;
}

std::string write_split(const std::string& name, const Split& s) {
  const std::string dir = temp_dir(name);
  save_checkpoint(dir, s.config, s.tensors);
  return dir;
}

at::Tensor random_ids(int64_t b, int64_t t, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(3, 64, {b, t}, torch::kLong);
}

}  // namespace

TEST(ModelMoeforge, ConfigParsesEveryKey) {
  Split s = make_split("mlp", 2);
  s.config["router"] = {{"type", "mlp"}, {"score", "sigmoid"}, {"selection", "top_p"}, {"gate", "renorm"},
                        {"top_p", 0.6}, {"dynk_tau", 0.3}, {"aux_loss", "switch"}, {"aux_loss_coef", 0.01}};
  ModelConfig c = parse_model_config(s.config, "m/config.json");
  EXPECT_EQ(c.family, Family::moeforge);
  EXPECT_EQ(c.base_family, Family::llama);
  EXPECT_EQ(c.num_experts, kE);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.moe_layers, kMoeLayers);
  EXPECT_TRUE(c.layer_is_moe(0));
  EXPECT_FALSE(c.layer_is_moe(1));
  EXPECT_EQ(c.layer_expert_widths(2), kSizes[1]);
  EXPECT_EQ(c.router.score, "sigmoid");
  EXPECT_EQ(c.router.selection, "top_p");
  EXPECT_EQ(c.router.gate, "renorm");
  EXPECT_DOUBLE_EQ(c.router.top_p, 0.6);
  EXPECT_DOUBLE_EQ(c.router.dynk_tau, 0.3);
  EXPECT_EQ(c.router.aux_loss, "switch");
  EXPECT_DOUBLE_EQ(c.router.aux_loss_coef, 0.01);
  // Defaults.
  ModelConfig d = parse_model_config(make_split("avgk", 2).config, "m/config.json");
  EXPECT_EQ(d.router.score, "softmax");
  EXPECT_EQ(d.router.selection, "top_k");
  EXPECT_EQ(d.router.gate, "unit");
  EXPECT_DOUBLE_EQ(d.router.top_p, 0.8);
  EXPECT_DOUBLE_EQ(d.router.dynk_tau, 0.5);
  EXPECT_EQ(d.router.aux_loss, "hemoe");
  EXPECT_DOUBLE_EQ(d.router.aux_loss_coef, 5e-4);

  // Parameter counts by hand: the experts of a true partition hold exactly the dense FFN, so
  // total = dense total + routers; active per token (top-2 of 4).
  const ModelConfig dense = parse_model_config(dense_json(), "d");
  ModelConfig lin = parse_model_config(make_split("linear", 2).config, "m");
  EXPECT_EQ(total_parameters(lin), total_parameters(dense) + 2 * kE * kH);
  const int64_t ffn = 3 * kH * kF;
  auto range = active_parameter_range(lin);
  // layer 0 sizes {6, 18, 9, 15}: narrowest two 6 + 9, widest two 18 + 15; layer 2 {20, 4, 12, 12}.
  EXPECT_EQ(range.min, total_parameters(lin) - 2 * ffn + 3 * kH * (6 + 9) + 3 * kH * (4 + 12));
  EXPECT_EQ(range.max, total_parameters(lin) - 2 * ffn + 3 * kH * (18 + 15) + 3 * kH * (20 + 12));
  EXPECT_EQ(active_parameters_per_token(lin), total_parameters(lin) - 2 * ffn + 2 * (3 * kH * kF / 2));
}

TEST(ModelMoeforge, AllExpertsWithUnitGatesReproduceTheDenseModel) {
  const at::Tensor ids_long = random_ids(2, 12, 1), ids_short = random_ids(1, 5, 2);
  at::Tensor dense_long, dense_short;
  {
    torch::NoGradGuard ng;
    dense_long = dense_model()->forward(ids_long);
    dense_short = dense_model()->forward(ids_short);
  }
  for (const std::string router : {"linear", "avgk", "mlp"}) {
    auto m = Model::load(write_split("full_" + router, make_split(router, kE)));
    EXPECT_EQ(m->config().family, Family::moeforge);
    {
      torch::NoGradGuard ng;  // grouped path (24 tokens) and fused decode path (5 tokens)
      EXPECT_LE(max_diff(m->forward(ids_long), dense_long), 1e-5) << router;
      EXPECT_LE(max_diff(m->forward(ids_short), dense_short), 1e-5) << router;
    }
    EXPECT_LE(max_diff(m->forward(ids_long).detach(), dense_long), 1e-5) << router;  // autograd path
    // Every token used every neuron of the dense FFN.
    auto stats = m->moe_stats();
    ASSERT_EQ(stats.size(), 2u);
    EXPECT_EQ(stats[0].layer, 0);
    EXPECT_EQ(stats[1].layer, 2);
    EXPECT_EQ(stats[0].tokens, 24);
    EXPECT_NEAR(stats[0].active_ffn_fraction, 1.0, 1e-12);
    EXPECT_EQ(stats[1].tokens_per_expert, (std::vector<int64_t>{24, 24, 24, 24}));
  }
}

TEST(ModelMoeforge, FewerExpertsChangeTheOutput) {
  torch::NoGradGuard ng;
  const at::Tensor ids = random_ids(2, 12, 3);
  const at::Tensor dense = dense_model()->forward(ids);
  for (const std::string router : {"linear", "avgk"}) {
    auto m = Model::load(write_split("k2_" + router, make_split(router, 2)));
    EXPECT_GT(max_diff(m->forward(ids), dense), 1e-3) << router;
    auto stats = m->moe_stats();
    int64_t routed = 0;
    for (int64_t c : stats[0].tokens_per_expert) routed += c;
    EXPECT_EQ(routed, 24 * 2);
    // Between the two narrowest and the two widest experts of layer 0 (of 48 neurons).
    EXPECT_GE(stats[0].active_ffn_fraction, (6.0 + 9.0) / kF - 1e-12);
    EXPECT_LE(stats[0].active_ffn_fraction, (18.0 + 15.0) / kF + 1e-12);
    EXPECT_LT(stats[0].active_ffn_fraction, 1.0);
  }
}

TEST(ModelMoeforge, KvCacheDecodingEqualsFullForward) {
  torch::NoGradGuard ng;
  auto m = Model::load(write_split("kv", make_split("linear", 2)));
  const at::Tensor ids = random_ids(2, 12, 4);
  const at::Tensor full = m->forward(ids);
  KvCache cache = m->make_cache(4);
  std::vector<at::Tensor> parts;
  parts.push_back(m->forward(ids.narrow(1, 0, 5), {}, &cache));
  for (int64_t t = 5; t < 9; ++t) parts.push_back(m->forward(ids.narrow(1, t, 1), {}, &cache));
  parts.push_back(m->forward(ids.narrow(1, 9, 3), {}, &cache));
  EXPECT_LE(max_diff(at::cat(parts, 1), full), 1e-5);
}

TEST(ModelMoeforge, LoadSaveLoadIsBitExact) {
  for (const std::string router : {"linear", "mlp", "avgk"}) {
    Split s = make_split(router, 2);
    auto m = Model::load(write_split("rt_" + router, s));
    {
      torch::NoGradGuard ng;
      m->forward(random_ids(1, 20, 5));  // the inference layer now shares the weights' storage
    }
    const std::string out = temp_dir("rt_out_" + router);
    save_checkpoint(out, s.config, m->hf_tensors());
    Checkpoint a = Checkpoint::open(out);
    std::map<std::string, at::Tensor> orig(s.tensors.begin(), s.tensors.end());
    EXPECT_EQ(a.names().size(), orig.size()) << router;
    for (const auto& name : a.names()) {
      ASSERT_TRUE(orig.count(name)) << name;
      const at::Tensor t = a.get(name);
      EXPECT_EQ(t.scalar_type(), orig[name].scalar_type()) << name;
      EXPECT_TRUE(torch::equal(t, orig[name])) << name;
    }
    // Parameter names are the checkpoint names.
    auto m2 = Model::load(out);
    for (auto& p : m2->named_parameters()) EXPECT_TRUE(orig.count(p.key())) << p.key();
    EXPECT_TRUE(m2->named_parameters().contains("model.layers.2.mlp.experts.3.down_proj.weight"));
  }
}

TEST(ModelMoeforge, BadInputsGiveOneLineErrors) {
  auto one_line = [](const std::string& msg) { return !msg.empty() && msg.find('\n') == std::string::npos; };
  auto load_err = [&](const std::string& name, const Split& s) {
    const std::string dir = write_split(name, s);
    std::string e = error_of([&] { Model::load(dir); });
    EXPECT_TRUE(one_line(e)) << e;
    return e;
  };
  {
    Split s = make_split("linear", 2);
    s.config["expert_sizes"][1] = {20, 4, 24};
    EXPECT_NE(load_err("bad_sizes", s).find("config.json: expert_sizes[1] has 3 entries, num_experts is 4"),
              std::string::npos);
  }
  {
    Split s = make_split("linear", 2);
    s.config["moe_layers"] = {0, 3};
    EXPECT_NE(load_err("bad_layer", s).find("config.json: moe_layers[1] is 3, out of range (num_hidden_layers is 3)"),
              std::string::npos);
  }
  {
    Split s = make_split("linear", 2);
    s.config["expert_sizes"][0] = {18, 6, 9, 15};  // same total, swapped widths
    const std::string e = load_err("bad_shape", s);
    EXPECT_NE(e.find("tensor model.layers.0.mlp.experts.0.gate_proj.weight has shape [6, 32] but config.json implies "
                     "[18, 32]"),
              std::string::npos)
        << e;
  }
  {
    Split s = make_split("linear", 2);
    s.config["router"]["type"] = "gcn";
    EXPECT_NE(load_err("bad_router", s).find("config.json: router.type \"gcn\" is not supported"), std::string::npos);
  }
  {
    Split s = make_split("linear", 2);
    s.tensors.erase(std::remove_if(s.tensors.begin(), s.tensors.end(),
                                   [](const auto& t) { return t.first == "model.layers.2.mlp.router.weight"; }),
                    s.tensors.end());
    EXPECT_NE(load_err("no_router", s).find("missing tensor model.layers.2.mlp.router.weight"), std::string::npos);
  }
  {
    Split s = make_split("linear", 2);
    s.config["num_experts_per_tok"] = 5;
    EXPECT_NE(load_err("bad_k", s).find("num_experts_per_tok is 5, must be in 1..4"), std::string::npos);
  }
  {
    Split s = make_split("linear", 2);
    s.config["base_model_type"] = "gpt2";
    EXPECT_NE(load_err("bad_base", s).find("base_model_type \"gpt2\" is not supported"), std::string::npos);
  }
  {
    // Without the optional neuron indices the checkpoint still loads.
    Split s = make_split("linear", 2);
    s.tensors.erase(std::remove_if(s.tensors.begin(), s.tensors.end(),
                                   [](const auto& t) { return t.first.find(".neurons") != std::string::npos; }),
                    s.tensors.end());
    EXPECT_EQ(error_of([&] { Model::load(write_split("no_neurons", s)); }), "");
  }
}

TEST(ModelMoeforge, RouterLearnsThroughTheStraightThroughGate) {
  // One MoE block with unit gates and top-2 of 4: the forward does not depend on the router
  // weights (except through the discrete choice), the gradient is the straight-through one:
  // dL/dW = sum over tokens and selected e of <dL/dy_t, expert_e(x_t)> * d softmax(W x_t)_e / dW.
  auto m = Model::load(write_split("st", make_split("linear", 2)));
  auto named = m->named_parameters();
  at::Tensor w = named["model.layers.0.mlp.router.weight"];
  at::Tensor x_seen, dy_seen;
  m->hooks().add(HookPoint::ffn_input, [&](HookEvent& e) { x_seen = e.tensor.detach(); }, false, 0);
  // Freeze everything but the routers, as router-only training does.
  for (auto& p : named) p.value().set_requires_grad(is_router_parameter(p.key()));
  int64_t routers = 0;
  for (auto& p : named) routers += is_router_parameter(p.key());
  EXPECT_EQ(routers, 2);
  m->train();
  m->hooks().add(HookPoint::block_output, [&](HookEvent& e) { dy_seen = e.tensor; }, true, 0);
  const at::Tensor logits = m->forward(random_ids(2, 7, 6));
  logits.pow(2).mean().backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_GT(w.grad().abs().max().item<double>(), 0);
  for (auto& p : named)
    if (!is_router_parameter(p.key())) EXPECT_FALSE(p.value().grad().defined()) << p.key();

  // Reference from the definition, with plain ops: dy = gradient of the block output (the MoE
  // output adds to the residual stream), expert outputs recomputed from the expert weights.
  ASSERT_TRUE(dy_seen.defined());
  at::Tensor wr = w.detach().clone().requires_grad_(true);
  at::Tensor p = at::softmax(at::linear(x_seen, wr), -1);
  const auto top = std::get<1>(p.detach().topk(2, -1));
  at::Tensor obj = torch::zeros({});
  for (int64_t t = 0; t < x_seen.size(0); ++t)
    for (int64_t j = 0; j < 2; ++j) {
      const int64_t e = top[t][j].item<int64_t>();
      const std::string ep = "model.layers.0.mlp.experts." + std::to_string(e) + ".";
      const at::Tensor xt = x_seen[t];
      const at::Tensor y = at::mv(named[ep + "down_proj.weight"].detach(),
                                  at::silu(at::mv(named[ep + "gate_proj.weight"].detach(), xt)) *
                                      at::mv(named[ep + "up_proj.weight"].detach(), xt));
      obj = obj + at::dot(dy_seen[t], y) * p[t][e];
    }
  obj.backward();
  EXPECT_LE(max_diff(w.grad(), wr.grad()), 1e-6 + 1e-4 * wr.grad().abs().max().item<double>());
}

TEST(ModelMoeforge, AvgKGateFollowsTheExperts) {
  torch::NoGradGuard ng;
  auto m = Model::load(write_split("avgk_gate", make_split("avgk", 2)));
  auto named = m->named_parameters();
  at::Tensor x, logits;
  m->hooks().add(HookPoint::ffn_input, [&](HookEvent& e) { x = e.tensor.clone(); }, false, 2);
  m->hooks().add(HookPoint::router_logits, [&](HookEvent& e) { logits = e.tensor.clone(); }, false, 2);
  auto expected = [&] {
    std::vector<at::Tensor> keys;
    for (int64_t e = 0; e < kE; ++e)
      keys.push_back(named["model.layers.2.mlp.experts." + std::to_string(e) + ".gate_proj.weight"].mean(0));
    return at::linear(x, at::stack(keys));
  };
  const at::Tensor ids = random_ids(1, 9, 7);
  m->forward(ids);
  EXPECT_LE(max_diff(logits, expected()), 1e-5);
  // An "optimizer step" on one expert's keys moves its gate.
  named["model.layers.2.mlp.experts.1.gate_proj.weight"].add_(0.5);
  m->after_optimizer_step();
  m->forward(ids);
  EXPECT_LE(max_diff(logits, expected()), 1e-5);
}

TEST(ModelMoeforge, Bf16LoadStaysCloseToFp32) {
  torch::NoGradGuard ng;
  const std::string dir = write_split("bf16", make_split("linear", 2));
  auto f = Model::load(dir);
  auto b = Model::load(dir, {at::kBFloat16, at::kCPU});
  EXPECT_EQ(b->dtype(), at::kBFloat16);
  const at::Tensor ids = random_ids(1, 6, 8);
  const at::Tensor lf = f->forward(ids), lb = b->forward(ids);
  EXPECT_LE(max_diff(lf, lb), 0.05 * lf.abs().max().item<double>() + 0.05);
}

TEST(ModelMoeforge, InfoShowsExpertsAndActiveRange) {
  const std::string dir = write_split("info", make_split("linear", 2));
  const std::string cmd = std::string(MOEFORGE_BIN) + " -q info --json " + dir + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0) << out;
  const json j = json::parse(out);
  EXPECT_EQ(j["model_type"], "moeforge");
  EXPECT_EQ(j["base_model_type"], "llama");
  EXPECT_EQ(j["router"]["type"], "linear");
  ASSERT_EQ(j["moe_layers"].size(), 2u);
  EXPECT_EQ(j["moe_layers"][1]["layer"], 2);
  EXPECT_EQ(j["moe_layers"][1]["experts"], kE);
  EXPECT_EQ(j["moe_layers"][1]["top_k"], 2);
  EXPECT_EQ(j["moe_layers"][1]["expert_sizes"].get<std::vector<int64_t>>(), kSizes[1]);
  const ModelConfig c = parse_model_config(make_split("linear", 2).config, "m");
  EXPECT_EQ(j["parameters"]["active_per_token_min"].get<int64_t>(), active_parameter_range(c).min);
  EXPECT_EQ(j["parameters"]["active_per_token_max"].get<int64_t>(), active_parameter_range(c).max);
  // The table names the per-expert widths.
  FILE* t = popen((std::string(MOEFORGE_BIN) + " -q info " + dir + " 2>/dev/null").c_str(), "r");
  std::string table;
  while ((n = fread(buf, 1, sizeof buf, t)) > 0) table.append(buf, n);
  pclose(t);
  EXPECT_NE(table.find("4 experts of 6/18/9/15, top-2 (layer 0); 4 experts of 20/4/12/12, top-2 (layer 2)"),
            std::string::npos)
      << table;
}
