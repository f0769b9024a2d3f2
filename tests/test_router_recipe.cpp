// LoRA adapters, the router recipe's balance loss, data encoding, the MLP router fit and the
// recipe end to end on tiny models.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/hypermoe_ffn.h"
#include "model/layers.h"
#include "model/model.h"
#include "model_fixtures.h"
#include "moe/losses.h"
#include "moe/routers/selection.h"
#include "test_helpers.h"
#include "train/lora.h"
#include "train/router_recipe.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"

using namespace mf;
using mf::testing_helpers::error_of;

namespace {

std::string temp_dir(const std::string& name) {
  std::string d = "/tmp/moeforge_test_router_" + name + "_" + std::to_string(::getpid());
  remove_all(d);
  make_dirs(d);
  return d;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

// Byte-level tokenizer: BOS 256 then the bytes; EOS 257.
RecipeTokenizer byte_tokenizer() {
  RecipeTokenizer t;
  t.encode = [](const std::string& s, bool special) {
    std::vector<int32_t> ids;
    if (special) ids.push_back(256);
    for (unsigned char c : s) ids.push_back(c);
    return ids;
  };
  t.eos_id = 257;
  return t;
}

json tiny_llama_json() {
  json j = testing_fixtures::tiny_config_json("llama");
  j["vocab_size"] = 260;
  return j;
}

// A tiny dense Llama (or another tiny family) written as an HF directory.
std::string write_tiny_llama(const std::string& dir, const std::string& family = "llama") {
  json cfg = testing_fixtures::tiny_config_json(family);
  cfg["vocab_size"] = 260;
  auto m = Model::create(parse_model_config(cfg, "tiny/config.json"));
  m->init_random(3, 0.1);
  save_checkpoint(dir, cfg, m->hf_tensors());
  return dir;
}

std::map<std::string, at::Tensor> read_all(const std::string& dir) {
  Checkpoint ck = Checkpoint::open(dir);
  std::map<std::string, at::Tensor> out;
  for (const auto& n : ck.names()) out[n] = ck.get(n);
  return out;
}

std::vector<json> metrics_lines(const std::string& path) {
  std::vector<json> out;
  for (const auto& line : split(read_file(path), '\n'))
    if (!trim(line).empty()) out.push_back(json::parse(line));
  return out;
}

// A module holding one Linear named q_proj (for the adapter-level tests).
struct OneLinear : torch::nn::Module {
  OneLinear(int64_t in, int64_t out) { q_proj = register_module("q_proj", std::make_shared<Linear>(in, out, true)); }
  std::shared_ptr<Linear> q_proj;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
TEST(Lora, FreshAdaptersLeaveTheModelUnchangedAndKeepNames) {
  auto m = testing_fixtures::tiny_model("llama");
  at::Tensor ids = at::randint(0, 64, {2, 7}, at::kLong);
  at::Tensor before = m->forward(ids);
  std::vector<std::string> names_before;
  for (const auto& p : m->named_parameters()) names_before.push_back(p.key());
  LoraAdapters lora(*m, {});
  EXPECT_EQ(lora.module_names().size(), 8u);  // q,k,v,o of two layers
  EXPECT_EQ(lora.module_names().front(), "model.layers.0.self_attn.q_proj");
  lora.eval();
  EXPECT_TRUE(at::equal(m->forward(ids), before));  // B = 0
  std::vector<std::string> names_after;
  for (const auto& p : m->named_parameters()) names_after.push_back(p.key());
  EXPECT_EQ(names_after, names_before);
  // A follows PEFT's kaiming-uniform bound 1/sqrt(in).
  const auto& a = lora.adapters().front()->lora_A;
  EXPECT_LE(a.abs().max().item<double>(), 1.0 / std::sqrt(32.0));
  EXPECT_GT(a.abs().max().item<double>(), 0.5 / std::sqrt(32.0));
}

TEST(Lora, MergedEqualsUnmerged) {
  auto m = testing_fixtures::tiny_model("llama");
  LoraOptions o;
  o.targets = {"q_proj", "v_proj", "down_proj"};
  LoraAdapters lora(*m, o);
  EXPECT_EQ(lora.module_names().size(), 6u);
  {
    at::NoGradGuard g;
    for (auto& a : lora.adapters()) a->lora_B.normal_(0, 0.3);
  }
  lora.eval();  // no dropout
  at::Tensor ids = at::randint(0, 64, {2, 9}, at::kLong);
  at::Tensor with_adapters = m->forward(ids);
  lora.merge();
  at::Tensor merged = m->forward(ids);
  EXPECT_LE((merged - with_adapters).abs().max().item<double>(), 1e-5);
  // The adapters really changed the function (so the comparison above is not vacuous).
  auto base = testing_fixtures::tiny_model("llama");
  EXPECT_GT((base->forward(ids) - merged).abs().max().item<double>(), 1e-3);
  EXPECT_NE(error_of([&] { lora.merge(); }), "");
}

TEST(Lora, GradientsMatchFiniteDifferences) {
  OneLinear holder(5, 4);
  at::NoGradGuard init_guard;
  holder.q_proj->weight.set_data(at::randn({4, 5}, at::kDouble));
  holder.q_proj->bias.set_data(at::randn({4}, at::kDouble));
  LoraOptions o;
  o.r = 3;
  o.alpha = 6;
  o.dropout = 0;
  o.targets = {"q_proj"};
  LoraAdapters lora(holder, o);
  lora.to(at::kDouble);
  auto& ad = *lora.adapters().front();
  ad.lora_B.set_data(at::randn({4, 3}, at::kDouble));
  at::Tensor x = at::randn({6, 5}, at::kDouble);
  at::Tensor c = at::randn({6, 4}, at::kDouble);
  auto loss = [&]() { return (holder.q_proj->forward(x).tanh() * c).sum(); };
  {
    at::AutoGradMode on(true);
    loss().backward();
  }
  for (at::Tensor* p : {&ad.lora_A, &ad.lora_B}) {
    at::Tensor g = p->grad().clone();
    ASSERT_TRUE(g.defined());
    at::Tensor flat = p->view({-1});
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double h = 1e-6, orig = flat[i].item<double>();
      flat[i] = orig + h;
      const double up = loss().item<double>();
      flat[i] = orig - h;
      const double down = loss().item<double>();
      flat[i] = orig;
      EXPECT_NEAR(g.view({-1})[i].item<double>(), (up - down) / (2 * h), 1e-6);
    }
  }
  // The base weight gets no adapter-specific gradient path: (alpha/r) B A is what is added.
  at::Tensor expect = at::linear(x, holder.q_proj->weight, holder.q_proj->bias) +
                      at::linear(x, at::mm(ad.lora_B, ad.lora_A)) * 2.0;
  EXPECT_LE((holder.q_proj->forward(x) - expect).abs().max().item<double>(), 1e-12);
}

TEST(Lora, NoMatchingModuleIsAnError) {
  auto m = testing_fixtures::tiny_model("llama");
  LoraOptions o;
  o.targets = {"qkv"};
  EXPECT_NE(error_of([&] { LoraAdapters l(*m, o); }).find("no Linear module matches"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
TEST(RouterRecipe, HemoeBalanceLossMatchesHandComputation) {
  // 4 tokens, 3 experts, top-1, sizes 1/2/3 of an FFN of width 6; token 3 is padding.
  const std::vector<std::vector<double>> lg = {{2.0, 0.5, -1.0}, {0.1, 1.5, 0.2}, {0.0, 0.3, 0.9}, {3.0, -2.0, 0.0}};
  at::Tensor logits = at::empty({4, 3}, at::kFloat);
  for (int t = 0; t < 4; ++t)
    for (int e = 0; e < 3; ++e) logits[t][e] = lg[t][e];
  logits.set_requires_grad(true);
  at::Tensor valid = at::tensor(std::vector<int64_t>{1, 1, 1, 0}).to(at::kBool);
  const double lambda = 0.5, scale = 4;  // T counts the padded token too
  // By hand: softmax rows, argmax counts over the 3 real tokens.
  double P[3] = {0, 0, 0}, f[3] = {0, 0, 0};
  for (int t = 0; t < 3; ++t) {
    double z = 0;
    for (int e = 0; e < 3; ++e) z += std::exp(lg[t][e]);
    int best = 0;
    for (int e = 0; e < 3; ++e) {
      P[e] += std::exp(lg[t][e]) / z / 3;
      if (lg[t][e] > lg[t][best]) best = e;
    }
    f[best] += 1.0 / 3;
  }
  const double rr[3] = {1.0 / 6, 2.0 / 6, 3.0 / 6};
  double expect = 0;
  for (int e = 0; e < 3; ++e) expect += f[e] * rr[e] * P[e];
  expect *= lambda * scale;
  // The MoE blocks' loss: straight-through unit weights of the top-1 selection, r_j = size / 6.
  at::Tensor probs = at::softmax(logits, -1);
  moe::SelectionConfig sel;
  sel.k = 1;
  at::Tensor idx = moe::select_experts(probs.detach(), sel);
  at::Tensor w = moe::dense_from_slots(idx, moe::gate_values(probs, idx, moe::GateMode::UnitST), 3);
  at::Tensor loss = moe::hemoe_balance_loss(w, probs, {1, 2, 3}, valid, lambda, true, 6);
  EXPECT_NEAR(loss.item<double>(), expect, 1e-7);
  // The loss reaches the logits (straight-through f and P): its gradient is not zero.
  loss.backward();
  EXPECT_GT(logits.grad().abs().sum().item<double>(), 0);
  EXPECT_EQ(logits.grad()[3].abs().sum().item<double>(), 0);  // padding gets no gradient
}

TEST(RouterRecipe, DecodeRowsMasksPromptAndPadding) {
  RouterRecipeConfig c;
  c.seq_len = 7;
  const std::string dir = temp_dir("decode");
  write_text(dir + "/sft.jsonl", "{\"prompt\": \"ab\", \"response\": \"c\"}\n");
  c.train_files = {dir + "/sft.jsonl"};
  RecipeData d = load_recipe_data(c, byte_tokenizer(), 260);
  ASSERT_TRUE(d.sft);
  ASSERT_EQ(d.train.size(), 1);
  DecodedBatch b = decode_rows(d.train.windows({0}));
  // tokens: BOS a b | c EOS | pad pad pad
  auto longs = [](std::vector<int64_t> v) { return at::tensor(v).view({1, -1}); };
  EXPECT_TRUE(at::equal(b.input_ids, longs({256, 'a', 'b', 'c', 257, 0, 0})));
  EXPECT_TRUE(at::equal(b.targets, longs({-100, -100, 'c', 257, -100, -100, -100})));
  ASSERT_TRUE(b.attention.defined());
  EXPECT_TRUE(at::equal(b.attention, longs({1, 1, 1, 1, 1, 0, 0})));
  // Loss over the two response targets only.
  at::Tensor logits = at::randn({1, 7, 260});
  at::Tensor lp = at::log_softmax(logits, -1);
  const double expect = -(lp[0][2]['c'].item<double>() + lp[0][3][257].item<double>()) / 2;
  EXPECT_NEAR(masked_lm_loss(logits, b.targets).item<double>(), expect, 1e-5);
  remove_all(dir);
}

TEST(RouterRecipe, ConfigAndDataErrorsAreOneLine) {
  const std::string dir = temp_dir("errors");
  auto cfg_error = [&](const std::string& text) {
    write_text(dir + "/c.json", text);
    return error_of([&] { load_router_config(dir + "/c.json"); });
  };
  EXPECT_EQ(cfg_error(R"({"training": {"max_steps": 2, "train_data": "t.jsonl", "learning_rate": 1}})"),
            dir + "/c.json: unknown key 'training.learning_rate'");
  EXPECT_EQ(cfg_error(R"({"training": {"max_steps": 2, "epochs": 1, "train_data": "t.jsonl"}})"),
            dir + "/c.json: give exactly one of 'training.max_steps' and 'training.epochs'");
  EXPECT_EQ(cfg_error(R"({"training": {"max_steps": 2, "train_data": "t.jsonl"}, "router": {"balance_loss": "gshard"}})"),
            dir + "/c.json: router.balance_loss must be \"hemoe\", \"switch\", \"load_balancing\" or \"none\"");
  EXPECT_EQ(cfg_error(R"({"training": {"max_steps": 2, "train_data": "t.jsonl"}, "lora": {"r": 0}})"),
            dir + "/c.json: lora.r must be positive");
  EXPECT_EQ(cfg_error(R"({"training": {"max_steps": 2}})"), dir + "/c.json: missing key 'training.train_data'");
  // Defaults (HEMoE's recipe).
  write_text(dir + "/c.json", R"({"training": {"epochs": 2.5, "train_data": "t.jsonl"}})");
  RouterRecipeConfig c = load_router_config(dir + "/c.json");
  EXPECT_DOUBLE_EQ(c.trainer.schedule.lr, 3e-4);
  EXPECT_DOUBLE_EQ(c.trainer.schedule.min_lr, 3e-5);
  EXPECT_DOUBLE_EQ(c.warmup_ratio, 0.05);
  EXPECT_EQ(c.lora.r, 8);
  EXPECT_DOUBLE_EQ(c.lora.alpha, 16);
  EXPECT_DOUBLE_EQ(c.lora.dropout, 0.05);
  EXPECT_EQ(c.train_files, std::vector<std::string>{dir + "/t.jsonl"});
  // Data errors name file and line.
  write_text(dir + "/bad.jsonl", "{\"text\": \"ok\"}\n{\"prompt\": \"no response\"}\n");
  c.train_files = {dir + "/bad.jsonl"};
  EXPECT_EQ(error_of([&] { load_recipe_data(c, byte_tokenizer(), 260); }),
            dir + "/bad.jsonl:2: an SFT line needs both 'prompt' and 'response'");
  write_text(dir + "/bad.jsonl", "{\"text\": 3}\n");
  EXPECT_EQ(error_of([&] { load_recipe_data(c, byte_tokenizer(), 260); }),
            dir + "/bad.jsonl:1: key 'text' must be a string");
  write_text(dir + "/bad.jsonl", "{\"text\": \"ok\"\n");
  EXPECT_EQ(error_of([&] { load_recipe_data(c, byte_tokenizer(), 260); }).rfind(dir + "/bad.jsonl:1: invalid JSON: ", 0), 0u);
  // Token ids beyond the vocabulary.
  write_text(dir + "/ok.jsonl", "{\"text\": \"hello world, a longer line\"}\n");
  c.train_files = {dir + "/ok.jsonl"};
  c.seq_len = 4;
  EXPECT_NE(error_of([&] { load_recipe_data(c, byte_tokenizer(), 100); }).find("outside the model vocabulary of 100"),
            std::string::npos);
  remove_all(dir);
}

TEST(RouterRecipe, SwigluExpertMassByHand) {
  auto floats = [](std::vector<float> v, int64_t rows) { return at::tensor(v).view({rows, -1}); };
  at::Tensor x = floats({1.0f, -2.0f}, 1);
  at::Tensor g = floats({0.5f, 0.25f, -1.0f, 0.0f}, 2);
  at::Tensor u = floats({2.0f, 1.0f, 1.0f, 3.0f}, 2);
  // neuron 0: g = 0.5 - 0.5 = 0 -> silu 0; neuron 1: g = -1, u = 1 - 6 = -5.
  const double silu_m1 = -1.0 / (1.0 + std::exp(1.0));
  EXPECT_NEAR(swiglu_expert_mass(x, g, u)[0].item<double>(), std::abs(silu_m1 * -5.0), 1e-6);
}

TEST(RouterRecipe, MlpRouterFitImprovesRecall) {
  torch::manual_seed(0);
  const int64_t H = 16, E = 4, per = 6, n = 3000;
  // Experts are clusters of neurons around a centre (as a MoEfication split makes them), so an
  // expert's activation mass depends on the direction of x and a router can predict it.
  at::Tensor centres = at::randn({E, H});
  at::Tensor gate = centres.repeat_interleave(per, 0) + 0.1 * at::randn({E * per, H});
  at::Tensor up = gate.clone();
  at::Tensor x = at::randn({n, H});
  std::vector<at::Tensor> masses;
  for (int64_t e = 0; e < E; ++e)
    masses.push_back(swiglu_expert_mass(x, gate.slice(0, e * per, (e + 1) * per), up.slice(0, e * per, (e + 1) * per)));
  at::Tensor mass = at::stack(masses, 1);
  // A poor start: random first layer instead of the centres.
  at::Tensor w1 = at::randn({E, H}) * 0.01, w2 = at::eye(E);
  MlpRouterTrainOptions o;
  o.epochs = 20;
  o.batch_tokens = 256;
  MlpRouterFit fit = fit_mlp_router(w1, w2, x, mass, 2, o, 7);
  EXPECT_EQ(fit.val_tokens, 300);
  EXPECT_GT(fit.best_epoch, 0);
  EXPECT_GT(fit.recall_after, fit.recall_before + 0.05);
  // The weights written back are those of the best epoch: recomputing gives its recall.
  at::Tensor xn = x / x.norm(2, 1, true);
  const double all_recall = topk_mass_recall(at::linear(at::tanh(at::linear(xn, w1)), w2), mass, 2);
  const double random_recall = topk_mass_recall(at::randn({n, E}), mass, 2);
  EXPECT_GT(all_recall, random_recall + 0.05);
}

// ---------------------------------------------------------------------------------------------
namespace {

struct RecipeRun {
  std::string dir, model, data, config;
};

// Four SFT examples and batch_size 4: every step sees the same batch, so losses of different
// steps compare the same thing.
RecipeRun setup_dense_run(const std::string& name, int64_t max_steps, const std::string& family = "llama",
                          const std::string& sections = R"("lora": {"dropout": 0.1})") {
  RecipeRun r;
  r.dir = temp_dir(name);
  r.model = write_tiny_llama(r.dir + "/model", family);
  r.data = r.dir + "/sft.jsonl";
  std::string lines;
  const char* pairs[][2] = {{"Q: colour of sky? A:", " blue"}, {"Q: colour of grass? A:", " green"},
                            {"Q: colour of snow? A:", " white"}, {"Q: colour of coal? A:", " black"}};
  for (auto& p : pairs) lines += json({{"prompt", p[0]}, {"response", p[1]}}).dump() + "\n";
  write_text(r.data, lines);
  r.config = r.dir + "/router.json";
  write_text(r.config, cat(R"({"model": "model", "training": {"seq_len": 32, "batch_size": 4, "max_steps": )", max_steps,
                           R"(, "lr": 0.01, "min_lr": 0.001, "bf16": false, "save_every": 2, "keep_checkpoints": 0,
                              "train_data": "sft.jsonl", "validation_data": "sft.jsonl", "eval_every": 2,
                              "output_dir": "run"}, )", sections, "}"));
  return r;
}

}  // namespace

TEST(RouterRecipe, DenseLoraRunLowersLossAndTouchesOnlyAdaptedWeights) {
  RecipeRun r = setup_dense_run("dense", 8);
  RouterRecipeConfig c = load_router_config(r.config);
  c.trainer.progress = false;
  RecipeTokenizer tok = byte_tokenizer();
  RouterRecipeResult res = run_router_recipe(c, &tok);
  EXPECT_EQ(res.train.steps, 8);
  EXPECT_EQ(res.trainable_router_params, 0);
  EXPECT_EQ(res.lora_params, 2 * 4 * (8 * 32 + 32 * 8) - 2 * 2 * (8 * 32 - 8 * 16));  // k,v project to 16
  auto lines = metrics_lines(r.dir + "/run/metrics.jsonl");
  ASSERT_EQ(lines.size(), 8u);
  EXPECT_LT(lines.back()["lm_loss"].get<double>(), lines.front()["lm_loss"].get<double>());
  EXPECT_EQ(lines.front()["balance_loss"].get<double>(), 0.0);  // dense: no router
  EXPECT_TRUE(lines.back().contains("val_loss"));
  // Final model: same names, frozen tensors bit-identical, adapted projections changed.
  auto in = read_all(r.model), out = read_all(res.final_dir);
  ASSERT_EQ(in.size(), out.size());
  int changed = 0;
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(out.count(name)) << name;
    const bool adapted = name.find("_proj.weight") != std::string::npos && name.find("self_attn") != std::string::npos;
    if (adapted) changed += !at::equal(t, out[name]);
    else EXPECT_TRUE(at::equal(t, out[name])) << name;
  }
  EXPECT_EQ(changed, 8);
  EXPECT_TRUE(path_exists(res.final_dir + "/train_record.json"));
  // The final directory loads as a model of the same family.
  auto loaded = Model::load(res.final_dir);
  EXPECT_EQ(loaded->config().vocab_size, 260);
  remove_all(r.dir);
}

TEST(RouterRecipe, KilledAndResumedRunMatches) {
  RecipeRun a = setup_dense_run("full", 4);
  RecipeRun b = setup_dense_run("killed", 4);
  RecipeTokenizer tok = byte_tokenizer();
  RouterRecipeConfig ca = load_router_config(a.config);
  ca.trainer.progress = false;
  run_router_recipe(ca, &tok);
  RouterRecipeConfig cb = load_router_config(b.config);
  cb.trainer.progress = false;
  cb.trainer.stop_after_step = 2;
  run_router_recipe(cb, &tok);
  EXPECT_FALSE(path_exists(b.dir + "/run/final"));
  cb.trainer.stop_after_step = -1;
  RouterRecipeResult rb = run_router_recipe(cb, &tok);
  EXPECT_EQ(rb.train.start_step, 2);
  auto la = metrics_lines(a.dir + "/run/metrics.jsonl"), lb = metrics_lines(b.dir + "/run/metrics.jsonl");
  ASSERT_EQ(la.size(), lb.size());
  for (size_t i = 0; i < la.size(); ++i) EXPECT_EQ(la[i]["loss"], lb[i]["loss"]) << "step " << i + 1;
  auto fa = read_all(a.dir + "/run/final"), fb = read_all(b.dir + "/run/final");
  for (const auto& [name, t] : fa) EXPECT_TRUE(at::equal(t, fb[name])) << name;
  remove_all(a.dir);
  remove_all(b.dir);
}

TEST(RouterRecipe, NothingToTrainIsAnError) {
  RecipeRun r = setup_dense_run("nothing", 2);
  write_text(r.config, R"({"model": "model", "training": {"seq_len": 32, "max_steps": 2, "train_data": "sft.jsonl",
                           "output_dir": "run"}, "lora": {"enabled": false}})");
  RouterRecipeConfig c = load_router_config(r.config);
  c.trainer.progress = false;
  RecipeTokenizer tok = byte_tokenizer();
  EXPECT_EQ(error_of([&] { run_router_recipe(c, &tok); }),
            r.model + ": nothing to train: the model has no trainable router parameters and LoRA is off");
  remove_all(r.dir);
}

TEST(RouterRecipe, MixtralRouterOnlyTrainsRoutersWithBalanceLoss) {
  RecipeRun r = setup_dense_run("mixtral", 8, "mixtral",
                                R"("lora": {"enabled": false}, "router": {"balance_coef": 0.01})");
  RouterRecipeConfig c = load_router_config(r.config);
  c.trainer.progress = false;
  c.trainer.schedule.lr = 0.05;
  c.trainer.schedule.min_lr = 0.005;
  RecipeTokenizer tok = byte_tokenizer();
  RouterRecipeResult res = run_router_recipe(c, &tok);
  EXPECT_EQ(res.trainable_router_params, 2 * 4 * 32);
  EXPECT_EQ(res.lora_params, 0);
  auto lines = metrics_lines(r.dir + "/run/metrics.jsonl");
  ASSERT_EQ(lines.size(), 8u);
  EXPECT_GT(lines.front()["balance_loss"].get<double>(), 0.0);
  EXPECT_LT(lines.back()["loss"].get<double>(), lines.front()["loss"].get<double>());
  auto in = read_all(r.model), out = read_all(res.final_dir);
  int changed = 0;
  for (const auto& [name, t] : in) {
    if (is_router_parameter(name)) changed += !at::equal(t, out[name]);
    else EXPECT_TRUE(at::equal(t, out[name])) << name;  // experts, attention, norms, embeddings
  }
  EXPECT_EQ(changed, 2);
  remove_all(r.dir);
}

// --hypermoe in the SFT recipe: a stock Mixtral gets fresh HyperMoE tensors (written as
// model_type moeforge over mixtral), only they train (routers and LoRA off), everything else
// stays bit-identical, and the result loads.
TEST(RouterRecipe, HyperMoeTrainsOnlyTheHyperExpertsOnSftData) {
  RecipeRun r = setup_dense_run("hypermoe", 6, "mixtral", R"("lora": {"enabled": false}, "router": {"train": false})");
  RouterRecipeConfig c = load_router_config(r.config);
  c.trainer.progress = false;
  c.trainer.schedule.lr = 0.01;
  c.hypermoe = true;
  RecipeTokenizer tok = byte_tokenizer();
  RouterRecipeResult res = run_router_recipe(c, &tok);
  EXPECT_EQ(res.trainable_router_params, 0);
  EXPECT_GT(res.hypermoe_params, 0);
  const json out_cfg = read_json_file(res.final_dir + "/config.json");
  EXPECT_EQ(out_cfg.at("model_type"), "moeforge");
  EXPECT_EQ(out_cfg.at("base_model_type"), "mixtral");
  auto in = read_all(r.model), out = read_all(res.final_dir);
  int64_t hyper = 0;
  for (const auto& [name, t] : out) {
    if (is_hypermoe_tensor(name)) {
      hyper += t.numel();
      continue;
    }
    ASSERT_TRUE(in.count(name)) << name;
    EXPECT_TRUE(at::equal(in[name], t)) << name;
  }
  EXPECT_EQ(hyper, res.hypermoe_params);
  auto lines = metrics_lines(r.dir + "/run/metrics.jsonl");
  EXPECT_LT(lines.back()["lm_loss"].get<double>(), lines.front()["lm_loss"].get<double>());
  EXPECT_NO_THROW(Model::load(res.final_dir));
}
