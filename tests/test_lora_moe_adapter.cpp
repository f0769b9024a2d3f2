// LoRA-MoE adapter files (src/train/lora_moe_adapter.h, docs/format.md "LoRA-MoE adapters") on
// the tiny random Llama: save -> load onto a fresh copy of the base gives bit-identical logits for
// MixLoRA, MoLA (per-layer counts), LoRAMoE and GMoE; GMoE's edge list comes from the file even
// where a threshold search on the loaded weights would find another graph; attention LoRA goes
// into the PEFT layout; bad inputs are one-line errors that write nothing and leave the model
// dense.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "model/layers.h"
#include "model/lora_moe_ffn.h"
#include "model/model.h"
#include "moe/routers/graph_router.h"
#include "train/lora.h"
#include "train/lora_moe_adapter.h"
#include "train/peft.h"
#include "util/fs.h"
#include "util/json.h"
#include "model_fixtures.h"
#include "test_helpers.h"

using namespace mf;
using mf::testing_helpers::error_of;

namespace {

// The tiny Llama (d 32, f 48, 2 layers, vocab 64); the same seed gives the same base every time.
std::shared_ptr<Model> base_model() { return testing_fixtures::tiny_model("llama", 3, 0.1); }

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/mf_lora_moe_adapter_" + name;
  remove_all(d);
  return d;
}

std::vector<std::string> sorted_files(const std::string& dir) {
  std::vector<std::string> v = list_dir(dir);
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<std::shared_ptr<LoraMoeFFN>> blocks_of(Model& m) {
  std::vector<std::shared_ptr<LoraMoeFFN>> v;
  for (int64_t l = 0; l < m.config().num_layers; ++l) v.push_back(std::dynamic_pointer_cast<LoraMoeFFN>(m.ffn(l)));
  return v;
}

// Stands in for training: non-zero B and moved router tensors, so the model differs from the base.
void train_randomly(Model& m, uint64_t seed) {
  at::NoGradGuard ng;
  torch::manual_seed(seed);
  for (const auto& b : blocks_of(m)) {
    for (int64_t e = 0; e < b->num_experts(); ++e)
      for (const auto& t : b->options().targets) {
        at::Tensor B = b->lora_B(e, t);
        B.normal_(0.0, 0.3);
      }
    for (auto& p : b->router->parameters()) p.add_(at::randn_like(p) * 0.2);
  }
}

at::Tensor some_ids() {
  torch::manual_seed(17);
  return at::randint(0, 64, {2, 9}, at::kLong);
}

at::Tensor logits(Model& m, const at::Tensor& ids) {
  at::NoGradGuard ng;
  return m.forward(ids);
}

std::shared_ptr<Model> trained_model(const LoraMoeOptions& opt) {
  auto m = base_model();
  convert_to_lora_moe(*m, opt, 5);
  train_randomly(*m, 9);
  return m;
}

// A copy of adapter `from` in `to` with the config and tensors edited.
void tampered_copy(const std::string& from, const std::string& to, const std::function<void(json&)>& edit_config,
                   const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>& edit_tensors) {
  make_dirs(to);
  json cfg = read_json_file(path_join(from, kLoraMoeConfigFile));
  if (edit_config) edit_config(cfg);
  write_json_file(path_join(to, kLoraMoeConfigFile), cfg);
  auto file = SafetensorsFile::open(path_join(from, kLoraMoeWeightsFile));
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& info : file->tensors()) tensors.emplace_back(info.name, file->get(info.name).clone());
  if (edit_tensors) edit_tensors(tensors);
  save_safetensors(path_join(to, kLoraMoeWeightsFile), tensors);
}

void expect_one_line(const std::string& err, const std::string& file, const std::string& what) {
  EXPECT_EQ(err.rfind(file + ": ", 0), 0u) << err;
  EXPECT_NE(err.find(what), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos) << err;
}

std::vector<bool> trainable_flags(Model& m) {
  std::vector<bool> v;
  for (const auto& p : m.parameters()) v.push_back(p.requires_grad());
  return v;
}

}  // namespace

TEST(LoraMoeAdapter, SaveLoadReproducesTheLogitsForEveryRouting) {
  LoraMoeOptions mola = lora_moe_defaults("mola");
  mola.layer_experts = {3, 6};
  const std::vector<std::pair<std::string, LoraMoeOptions>> cases = {{"mixlora", lora_moe_defaults("mixlora")},
                                                                     {"mola", mola},
                                                                     {"loramoe", lora_moe_defaults("loramoe")},
                                                                     {"gmoe", lora_moe_defaults("gmoe")}};
  const at::Tensor ids = some_ids();
  const at::Tensor base_logits = logits(*base_model(), ids);
  for (const auto& [routing, opt] : cases) {
    SCOPED_TRACE(routing);
    auto trained = trained_model(opt);
    const at::Tensor want = logits(*trained, ids);
    ASSERT_FALSE(torch::equal(want, base_logits));  // the adapter matters

    const std::string dir = fresh_dir(routing);
    save_lora_moe_adapter(dir, *trained, opt, nullptr, json{{"run", routing}});
    EXPECT_EQ(sorted_files(dir), (std::vector<std::string>{kLoraMoeConfigFile, kLoraMoeWeightsFile}));
    const json cfg = read_json_file(path_join(dir, kLoraMoeConfigFile));
    EXPECT_EQ(cfg.at("format").get<std::string>(), kLoraMoeFormat);
    EXPECT_EQ(cfg.at("routing").get<std::string>(), routing);
    EXPECT_EQ(cfg.at("experts_per_layer").get<std::vector<int64_t>>(), lora_moe_layer_experts(opt, 2));
    EXPECT_EQ(cfg.at("router").at("kind").get<std::string>(), routing == "gmoe" ? "graph" : "linear");
    EXPECT_EQ(cfg.at("base_model").at("hidden_size").get<int64_t>(), 32);

    // The block's own names under the FFN slot; the frozen base is not in the adapter.
    auto file = SafetensorsFile::open(path_join(dir, kLoraMoeWeightsFile));
    const int64_t last = lora_moe_layer_experts(opt, 2)[1] - 1;
    EXPECT_TRUE(file->contains("model.layers.1.mlp.experts." + std::to_string(last) + ".down_proj.lora_B.weight"));
    EXPECT_FALSE(file->contains("model.layers.0.mlp.gate_proj.weight"));
    if (routing == "gmoe") {
      const StTensorInfo* edges = file->find("model.layers.1.mlp.router.edges");
      ASSERT_TRUE(edges);
      EXPECT_EQ(edges->dtype, StDType::I64);
      EXPECT_EQ(edges->shape, (std::vector<int64_t>{64, 2}));
      EXPECT_TRUE(file->contains("model.layers.0.mlp.router.X"));
      EXPECT_TRUE(file->contains("model.layers.0.mlp.router.convs.1.lin.weight"));
    } else {
      EXPECT_TRUE(file->contains("model.layers.0.mlp.router.weight"));
    }

    auto fresh = base_model();
    const LoadedLoraMoe loaded = load_lora_moe_adapter(dir, *fresh);
    EXPECT_FALSE(loaded.attention);
    EXPECT_EQ(loaded.metadata, json({{"run", routing}}));
    EXPECT_EQ(loaded.options.routing, routing);
    EXPECT_EQ(loaded.options.layer_experts, lora_moe_layer_experts(opt, 2));
    EXPECT_EQ(loaded.options.r, opt.r);
    EXPECT_EQ(loaded.options.aux_coef, opt.aux_coef);
    EXPECT_TRUE(torch::equal(logits(*fresh, ids), want));
  }
}

TEST(LoraMoeAdapter, GmoeUsesTheSavedEdgesNotANewThresholdSearch) {
  const LoraMoeOptions opt = lora_moe_defaults("gmoe");
  auto trained = trained_model(opt);
  // The edges were searched on the initial weights; training moved mlp_struct, so a search on the
  // trained weights (what the reference does on reload) finds another graph.
  std::vector<moe::ExpertEdges> saved;
  torch::manual_seed(23);
  for (const auto& b : blocks_of(*trained)) {
    moe::GraphRouterImpl& g = *b->graph_router();
    at::Tensor w = g.named_parameters()["mlp_struct.weight"];
    for (int tries = 0; tries < 50 && g.threshold_edges() == g.edges(); ++tries) {
      at::NoGradGuard ng;
      w.add_(at::randn_like(w));
    }
    ASSERT_NE(g.threshold_edges(), g.edges());
    saved.push_back(g.edges());
  }
  const at::Tensor ids = some_ids();
  const at::Tensor want = logits(*trained, ids);
  const std::string dir = fresh_dir("gmoe_edges");
  save_lora_moe_adapter(dir, *trained, opt, nullptr);

  // The in-memory model moves on after saving: none of that may reach the loaded one.
  for (const auto& b : blocks_of(*trained)) {
    at::NoGradGuard ng;
    at::Tensor w = b->graph_router()->named_parameters()["mlp_struct.weight"];
    w.add_(at::randn_like(w));
  }
  EXPECT_FALSE(torch::equal(logits(*trained, ids), want));

  auto fresh = base_model();
  load_lora_moe_adapter(dir, *fresh);
  const auto loaded = blocks_of(*fresh);
  for (size_t l = 0; l < loaded.size(); ++l) {
    EXPECT_EQ(loaded[l]->graph_router()->edges(), saved[l]) << "layer " << l;
    EXPECT_NE(loaded[l]->graph_router()->threshold_edges(), saved[l]) << "layer " << l;
  }
  EXPECT_TRUE(torch::equal(logits(*fresh, ids), want));
  auto file = SafetensorsFile::open(path_join(dir, kLoraMoeWeightsFile));
  EXPECT_EQ(moe::gmoe_edges_from_tensor(file->get("model.layers.0.mlp.router.edges")), saved[0]);
}

TEST(LoraMoeAdapter, AttentionLoraGoesIntoThePeftLayout) {
  const LoraMoeOptions opt = lora_moe_defaults("mixlora");
  auto trained = trained_model(opt);
  LoraOptions lo;
  lo.r = 4;
  lo.alpha = 8;
  lo.targets = {"q_proj", "v_proj"};
  lo.seed = 2;
  auto attention = std::make_shared<LoraAdapters>(*trained, lo);
  {
    at::NoGradGuard ng;
    torch::manual_seed(4);
    for (const auto& a : attention->adapters()) a->lora_B.copy_(at::randn(a->lora_B.sizes()) * 0.2);
  }
  attention->eval();
  const at::Tensor ids = some_ids();
  const at::Tensor want = logits(*trained, ids);

  const std::string dir = fresh_dir("attention");
  save_lora_moe_adapter(dir, *trained, opt, attention.get(), json{{"base_model_name_or_path", "org/tiny"}});
  EXPECT_EQ(sorted_files(dir), (std::vector<std::string>{kPeftConfigFile, kPeftWeightsFile, kLoraMoeConfigFile,
                                                         kLoraMoeWeightsFile}));
  const PeftLoraConfig pc = read_peft_config(dir);
  EXPECT_EQ(pc.r, 4);
  EXPECT_EQ(pc.alpha, 8.0);
  EXPECT_EQ(pc.base_model_name_or_path, "org/tiny");
  auto peft = SafetensorsFile::open(path_join(dir, kPeftWeightsFile));
  EXPECT_EQ(peft->tensors().size(), 8u);  // 2 layers x {q_proj, v_proj} x {A, B}
  EXPECT_TRUE(peft->contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_TRUE(peft->contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"));
  auto moe_file = SafetensorsFile::open(path_join(dir, kLoraMoeWeightsFile));
  for (const auto& info : moe_file->tensors()) EXPECT_EQ(info.name.find("self_attn"), std::string::npos) << info.name;
  EXPECT_TRUE(read_json_file(path_join(dir, kLoraMoeConfigFile)).at("attention_lora").get<bool>());

  auto fresh = base_model();
  const LoadedLoraMoe loaded = load_lora_moe_adapter(dir, *fresh);
  ASSERT_TRUE(loaded.attention);
  EXPECT_EQ(loaded.attention->module_names(), attention->module_names());
  EXPECT_TRUE(torch::equal(logits(*fresh, ids), want));

  // An earlier adapter of ours is replaced as a whole: the PEFT files go with it.
  save_lora_moe_adapter(dir, *trained, opt, nullptr);
  EXPECT_EQ(sorted_files(dir), (std::vector<std::string>{kLoraMoeConfigFile, kLoraMoeWeightsFile}));
}

TEST(LoraMoeAdapter, BadInputsAreOneLineErrorsThatChangeNothing) {
  const LoraMoeOptions opt = lora_moe_defaults("mixlora");
  auto trained = trained_model(opt);
  const std::string good = fresh_dir("good");
  save_lora_moe_adapter(good, *trained, opt, nullptr);
  const std::string good_cfg = path_join(good, kLoraMoeConfigFile);

  // Loading: the model stays dense and its trainable flags as they were.
  auto refused_load = [](const std::string& dir, Model& m) {
    const std::vector<bool> before = trainable_flags(m);
    const std::string err = error_of([&] { load_lora_moe_adapter(dir, m); });
    for (int64_t l = 0; l < m.config().num_layers; ++l)
      EXPECT_TRUE(std::dynamic_pointer_cast<GatedMLP>(m.ffn(l))) << "layer " << l << ": " << err;
    EXPECT_EQ(trainable_flags(m), before) << err;
    return err;
  };
  for (const auto& [key, value] : std::vector<std::pair<std::string, int64_t>>{{"hidden_size", 64},
                                                                               {"num_hidden_layers", 3}}) {
    json cfg = testing_fixtures::tiny_config_json("llama");
    cfg[key] = value;
    auto other = Model::create(parse_model_config(cfg, "other/config.json"));
    other->init_random(1, 0.1);
    expect_one_line(refused_load(good, *other), good_cfg,
                    "base_model." + key + " is " + (key == "hidden_size" ? "32" : "2"));
  }

  const std::string missing = fresh_dir("missing_tensor");
  const std::string gone = "model.layers.1.mlp.experts.3.up_proj.lora_A.weight";
  tampered_copy(good, missing, nullptr, [&](auto& ts) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [&](const auto& t) { return t.first == gone; }), ts.end());
  });
  auto m = base_model();
  expect_one_line(refused_load(missing, *m), path_join(missing, kLoraMoeWeightsFile), "missing tensor '" + gone + "'");

  const std::string shape = fresh_dir("wrong_shape");
  tampered_copy(good, shape, nullptr, [](auto& ts) {
    for (auto& t : ts)
      if (t.first == "model.layers.0.mlp.router.weight") t.second = at::zeros({8, 31});
  });
  expect_one_line(refused_load(shape, *m), path_join(shape, kLoraMoeWeightsFile),
                  "'model.layers.0.mlp.router.weight' has shape [8, 31] but the block needs [8, 32]");

  const std::string extra = fresh_dir("extra_tensor");
  tampered_copy(good, extra, nullptr, [](auto& ts) {
    ts.emplace_back("model.layers.0.mlp.experts.8.gate_proj.lora_A.weight", at::zeros({8, 32}));
  });
  expect_one_line(refused_load(extra, *m), path_join(extra, kLoraMoeWeightsFile), "belongs to no LoRA-MoE block");

  const std::string routing = fresh_dir("unknown_routing");
  tampered_copy(good, routing, [](json& c) { c["routing"] = "moe-lora"; }, nullptr);
  expect_one_line(refused_load(routing, *m), path_join(routing, kLoraMoeConfigFile), "unknown routing 'moe-lora'");

  // Saving: an output that is not one of our adapters is left as it was, and nothing is written
  // next to it either.
  const std::string user = fresh_dir("user_notes");
  make_dirs(user);
  write_file_atomic(path_join(user, "notes.txt"), "keep me\n");
  expect_one_line(error_of([&] { save_lora_moe_adapter(user, *trained, opt, nullptr); }), user,
                  "not a LoRA-MoE adapter directory");
  EXPECT_EQ(sorted_files(user), (std::vector<std::string>{"notes.txt"}));
  EXPECT_EQ(read_file(path_join(user, "notes.txt")), "keep me\n");
  for (const auto& name : list_dir(parent_dir(user)))
    EXPECT_EQ(name.rfind(base_name(user) + ".", 0), std::string::npos) << name;

  // A model that was never converted has nothing to save.
  const std::string dense = fresh_dir("dense");
  expect_one_line(error_of([&] { save_lora_moe_adapter(dense, *base_model(), opt, nullptr); }), dense,
                  "not a LoRA-MoE block");
  EXPECT_FALSE(path_exists(dense));
}
