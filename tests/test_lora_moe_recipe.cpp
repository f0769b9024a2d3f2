// `moeforge train MODEL --recipe lora-moe` end to end on models/tiny with ARC-Easy items cut into
// train / validation / test files: the first step's loss equals a naive answer-token cross
// entropy of the base model, trainable counts equal the per-method formula, the kept adapter is the
// best validation step and reproduces its accuracy after loading, the summary is the seeds' mean
// and std, a killed run resumes to the same results, and bad configs are one-line errors that
// write nothing.
#include <gtest/gtest.h>

#include <cmath>

#include "eval/mlora_protocol.h"
#include "eval/registry.h"
#include "model/model.h"
#include "test_helpers.h"
#include "tokenizer/tokenizer.h"
#include "train/lora_moe_adapter.h"
#include "train/lora_moe_recipe.h"
#include "train/mc_data.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"

using namespace mf;
using mf::testing_helpers::run_moeforge;

namespace {

const std::string kTiny = std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny";

// arc_easy/{train,validation,test}.jsonl: 12 / 4 / 6 rows of the ARC-Easy fixture.
std::string arc_data_dir() {
  const std::string dir = ::testing::TempDir() + "mf_lora_moe_recipe_data";
  const auto lines = split(read_file(std::string(MOEFORGE_TEST_DATA) + "/benchmarks/arc_easy/test.jsonl"), '\n');
  make_dirs(dir + "/arc_easy");
  auto write = [&](const std::string& name, size_t from, size_t to) {
    std::string s;
    for (size_t i = from; i < to; ++i) s += lines[i] + "\n";
    write_file_atomic(dir + "/arc_easy/" + name, s);
  };
  write("train.jsonl", 0, 12);
  write("validation.jsonl", 12, 16);
  write("test.jsonl", 16, 22);
  return dir;
}

LoraMoeRecipeConfig config(const std::string& routing, const std::string& out) {
  json j = {{"model", kTiny},
            {"routing", routing},
            {"data", {{"tasks", {"arc_easy"}}, {"data_dir", arc_data_dir()}}},
            {"training",
             {{"batch_size", 4}, {"grad_accum", 1}, {"max_steps", 6}, {"eval_every", 2}, {"lr", 1e-3},
              {"base_dtype", "fp32"}, {"output_dir", out}}}};
  const std::string path = ::testing::TempDir() + "mf_lora_moe_" + routing + ".json";
  write_json_file(path, j);
  return load_lora_moe_config(path);
}

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + name;
  remove_all(d);
  return d;
}

json first_metrics_line(const std::string& run_dir) {
  return json::parse(split(read_file(run_dir + "/metrics.jsonl"), '\n').front());
}

}  // namespace

// With B = 0 every routing with renormalised weights computes the base model, so the loss of the
// first step (before any update) is the base model's mean cross entropy over the answer tokens of
// the batch; one batch of all 12 items makes it independent of the data order.
TEST(LoraMoeRecipe, FirstStepLossIsTheBaseModelsAnswerTokenCrossEntropy) {
  LoraMoeRecipeConfig c = config("loramoe", fresh_dir("mf_lmr_first"));
  c.trainer.batch_size = 12;
  c.trainer.max_steps = 1;
  c.lm_eval_protocol = false;
  run_lora_moe_recipe(c);
  const double logged = first_metrics_line(c.trainer.out_dir + "/seed-42")["loss"].get<double>();

  auto tok = Tokenizer::load(kTiny);
  auto model = Model::load(kTiny);
  eval::TaskRegistry reg = eval::TaskRegistry::builtin();
  const auto items = mc_items(*reg.find_task("arc_easy"), McSplit::Train, c.data_dir);
  ASSERT_EQ(items.size(), 12u);
  double nll = 0;
  int64_t count = 0;
  at::NoGradGuard ng;
  for (const auto& it : items) {
    const auto prompt = tok->encode(it.prompt, true);
    const auto full = tok->encode(it.prompt + " " + it.labels[it.answer], true);
    ASSERT_GT(full.size(), prompt.size());
    for (size_t i = 0; i < prompt.size(); ++i) ASSERT_EQ(prompt[i], full[i]);
    std::vector<int64_t> ids(full.begin(), full.end());
    at::Tensor logp = at::log_softmax(model->forward(at::tensor(ids).unsqueeze(0))[0].to(at::kDouble), -1);
    for (size_t p = prompt.size(); p < full.size(); ++p, ++count) nll -= logp[p - 1][full[p]].item<double>();
  }
  EXPECT_NEAR(logged, nll / count, 2e-5 * std::abs(nll / count));
}

TEST(LoraMoeRecipe, TrainableParametersFollowTheFormula) {
  // models/tiny: d 256, f 1024, 6 layers, attention 256 -> 256 four times.
  const int64_t d = 256, f = 1024, L = 6, attn = 4 * (d + d);
  struct Case {
    std::string routing;
    int64_t expected;
  };
  int64_t mola_experts = 0;  // layer l in quarter floor(4 l / L) gets 5, 7, 9 or 11 experts
  for (int64_t l = 0; l < L; ++l) mola_experts += 5 + 2 * (4 * l / L);
  const std::vector<Case> cases = {
      {"lora", L * (8 * attn + 8 * 3 * (d + f))},
      {"mixlora", L * (8 * 8 * 3 * (d + f) + 8 * d + 8 * attn)},
      {"loramoe", L * (8 * 8 * 3 * (d + f) + 8 * d)},
      {"ming-moe", L * (8 * 16 * 3 * (d + f) + 8 * d)},
      {"mola", mola_experts * (8 * 3 * (d + f) + d) + L * 8 * attn},
      // gmoe: r 2 experts, the graph router 2 d g + L_g g^2 + g + 2 (g 128, L_g 2), attention r 2.
      {"gmoe", L * (8 * 2 * 3 * (d + f) + 2 * d * 128 + 2 * 128 * 128 + 128 + 2 + 2 * attn)},
  };
  for (const auto& k : cases) {
    LoraMoeRecipeConfig c = config(k.routing, fresh_dir("mf_lmr_params_" + k.routing));
    c.trainer.max_steps = 1;
    c.lm_eval_protocol = false;
    const auto r = run_lora_moe_recipe(c);
    EXPECT_EQ(r.runs.at(0).trainable_params, k.expected) << k.routing;
  }
}

TEST(LoraMoeRecipe, KeepsTheBestValidationAdapterAndSummarisesSeeds) {
  LoraMoeRecipeConfig c = config("mixlora", fresh_dir("mf_lmr_seeds"));
  c.seeds = 2;
  const auto r = run_lora_moe_recipe(c);
  ASSERT_EQ(r.runs.size(), 2u);
  auto tok = Tokenizer::load(kTiny);
  eval::TaskRegistry reg = eval::TaskRegistry::builtin();
  const auto val = mc_items(*reg.find_task("arc_easy"), McSplit::Validation, c.data_dir);
  std::vector<double> test_acc;
  for (const auto& run : r.runs) {
    ASSERT_EQ(run.val_history.size(), 3u);  // steps 2, 4, 6
    double best = -1;
    int64_t best_step = 0;
    for (const auto& [step, acc] : run.val_history)
      if (acc > best) best = acc, best_step = step;
    EXPECT_EQ(run.best_step, best_step);
    EXPECT_EQ(run.best_val_accuracy, best);
    // The saved adapter on a fresh base model scores what was selected.
    auto model = Model::load(kTiny);
    const LoadedLoraMoe loaded = load_lora_moe_adapter(run.adapter_dir, *model);
    ASSERT_TRUE(loaded.attention);
    EXPECT_EQ(loaded.metadata.at("step"), best_step);
    eval::MloraEvalOptions eo;
    eo.max_seq_len = 512;
    EXPECT_DOUBLE_EQ(eval::mlora_evaluate(*model, *tok, val, eo).accuracy(), best);
    test_acc.push_back(run.test_mlora.at("arc_easy").acc);
    EXPECT_EQ(run.test_mlora.at("arc_easy").n, 6);
    EXPECT_EQ(run.test_lm_eval.at("arc_easy").n, 6);
  }
  const json s = read_json_file(c.trainer.out_dir + "/summary.json");
  const double mean = (test_acc[0] + test_acc[1]) / 2;
  EXPECT_DOUBLE_EQ(s["tasks"]["arc_easy"]["mlora"]["mean"].get<double>(), mean);
  EXPECT_NEAR(s["tasks"]["arc_easy"]["mlora"]["std"].get<double>(), std::abs(test_acc[0] - test_acc[1]) / std::sqrt(2.0),
              1e-12);
  EXPECT_EQ(s["seeds"], json::array({42, 43}));
}

TEST(LoraMoeRecipe, KilledRunResumesToTheSameResults) {
  // GMoE: its Normal loss's running counts (kept outside the blocks' tensors) must resume too.
  LoraMoeRecipeConfig whole = config("gmoe", fresh_dir("mf_lmr_whole"));
  whole.trainer.save_every = 2;
  whole.lm_eval_protocol = false;
  const auto a = run_lora_moe_recipe(whole);
  LoraMoeRecipeConfig cut = whole;
  cut.trainer.out_dir = fresh_dir("mf_lmr_cut");
  cut.trainer.stop_after_step = 3;  // after the step-2 checkpoint and the step-2 validation
  EXPECT_FALSE(run_lora_moe_recipe(cut).runs.at(0).finished);
  cut.trainer.stop_after_step = -1;
  const auto b = run_lora_moe_recipe(cut);
  const auto& ra = a.runs.at(0);
  const auto& rb = b.runs.at(0);
  EXPECT_EQ(rb.train.last_loss, ra.train.last_loss);
  EXPECT_EQ(rb.val_history, ra.val_history);
  EXPECT_EQ(rb.best_step, ra.best_step);
  EXPECT_EQ(rb.test_mlora.at("arc_easy").acc, ra.test_mlora.at("arc_easy").acc);
}

TEST(LoraMoeRecipe, BadConfigsAreOneLineErrorsThatWriteNothing) {
  const std::string data = arc_data_dir();
  const std::string tmp = ::testing::TempDir();
  // A YAML task with only a data file has no train split.
  write_file_atomic(tmp + "mf_lmr_task.yaml",
                    "task: only_test\ndata_file: only_test.jsonl\noutput_type: multiple_choice\n"
                    "doc_to_text: q\ndoc_to_choice: choices\ndoc_to_target: gold\n");
  write_file_atomic(data + "/only_test.jsonl", "{\"q\": \"Is it?\", \"choices\": [\"yes\", \"no\"], \"gold\": 0}\n");
  struct Case {
    std::string name;
    json routing, lora_moe, data;
    std::string expect;
  };
  const json arc = {{"tasks", {"arc_easy"}}, {"data_dir", data}};
  const std::vector<Case> cases = {
      {"routing", "switchy", nullptr, arc, "unknown routing 'switchy'"},
      {"target", "mixlora", {{"targets", {"gate_proj", "q_proj"}}}, arc, "unknown target module 'q_proj'"},
      {"layers", "mola", {{"layer_experts", {4, 4, 4}}}, arc, "layer_experts has 3 entries, expected 6"},
      {"split", "mixlora", nullptr, {{"tasks", {"only_test"}}, {"include", tmp + "mf_lmr_task.yaml"}, {"data_dir", data}},
       "task 'only_test' has no train split"},
  };
  for (const auto& k : cases) {
    const std::string out = fresh_dir("mf_lmr_bad_" + k.name);
    json j = {{"model", kTiny}, {"routing", k.routing}, {"data", k.data},
              {"training", {{"max_steps", 2}, {"output_dir", out}}}};
    if (!k.lora_moe.is_null()) j["lora_moe"] = k.lora_moe;
    const std::string cfg = tmp + "mf_lmr_bad_" + k.name + ".json";
    write_json_file(cfg, j);
    const auto r = run_moeforge("-q train --recipe lora-moe --config " + cfg);
    EXPECT_NE(r.code, 0) << k.name;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << k.name << ": " << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(k.expect), std::string::npos) << k.name << ": " << r.err;
    EXPECT_FALSE(path_exists(out)) << k.name;
  }
}
