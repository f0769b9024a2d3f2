// `moeforge eval MODEL --adapter DIR` with a LoRA-MoE adapter (issue 17), end to end through the
// binary on the checked-in models/tiny: the adapter saved apart from the base and loaded by the CLI
// gives the scores of the adapted model held in memory, under both protocols —
//   lm-eval's (per-choice log-likelihoods): acc and every logged log-likelihood equal those of
//     eval::evaluate on the in-memory model, and some log-likelihood differs from the base's;
//   mLoRA's (--protocol mlora): acc and every prediction equal eval::mlora_evaluate's;
// and bad input (a task mLoRA cannot score, a corrupt adapter config, options of the other
// protocol) is one line.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "eval/evaluate.h"
#include "eval/mlora_protocol.h"
#include "eval/model_scorer.h"
#include "eval/registry.h"
#include "model/lora_moe_ffn.h"
#include "model/model.h"
#include "test_helpers.h"
#include "tokenizer/tokenizer.h"
#include "train/lora_moe_adapter.h"
#include "train/mc_data.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/str.h"

using namespace mf;
using mf::testing_helpers::run_moeforge;

namespace {

const std::string kModel = std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny";
const std::string kBench = std::string(MOEFORGE_TEST_DATA) + "/benchmarks";

// Under the test temp directory, per process (ctest runs the tests of this file in parallel).
std::string tmp(const std::string& name) {
  return ::testing::TempDir() + "mf_eval_lora_moe_" + std::to_string(::getpid()) + "_" + name;
}

struct Fixture {
  std::string data_dir;  // arc_easy/test.jsonl
  std::string adapter;   // the LoRA-MoE adapter of `model`, saved apart from the base
  std::unique_ptr<Tokenizer> tok;
  std::shared_ptr<Model> model;  // models/tiny in fp32, converted, with non-zero LoRA B: the adapted model
};

// models/tiny converted to MixLoRA with seeded non-zero B (standing in for training, so that the
// adapter changes the outputs), saved as an adapter; the in-memory model is the reference.
const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture x;
    x.data_dir = tmp("data");
    remove_all(x.data_dir);
    make_dirs(x.data_dir + "/arc_easy");
    copy_file(kBench + "/arc_easy/test.jsonl", x.data_dir + "/arc_easy/test.jsonl");
    x.tok = Tokenizer::load(kModel);
    x.model = Model::load(kModel);  // fp32 on the CPU, as `moeforge eval` loads it by default
    const LoraMoeOptions opt = lora_moe_defaults("mixlora");
    convert_to_lora_moe(*x.model, opt, 11);
    {
      at::NoGradGuard ng;
      torch::manual_seed(5);
      for (int64_t l = 0; l < x.model->config().num_layers; ++l) {
        auto block = std::dynamic_pointer_cast<LoraMoeFFN>(x.model->ffn(l));
        EXPECT_TRUE(block != nullptr) << "layer " << l;
        if (!block) continue;
        for (int64_t e = 0; e < block->num_experts(); ++e)
          for (const auto& t : block->options().targets) {
            at::Tensor B = block->lora_B(e, t);
            B.copy_(at::randn(B.sizes()) * 0.05);
          }
      }
    }
    x.adapter = tmp("adapter");
    remove_all(x.adapter);
    save_lora_moe_adapter(x.adapter, *x.model, opt, nullptr);
    return x;
  }();
  return f;
}

std::vector<json> jsonl(const std::string& file) {
  std::vector<json> out;
  for (const auto& line : split(read_file(file), '\n'))
    if (!trim(line).empty()) out.push_back(json::parse(line));
  return out;
}

// The one file in `dir`.
std::string only_file(const std::string& dir) {
  const auto names = list_dir(dir);
  EXPECT_EQ(names.size(), 1u) << dir;
  return names.empty() ? std::string() : path_join(dir, names[0]);
}

size_t line_count(const std::string& s) { return static_cast<size_t>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST(EvalLoraMoe, LmEvalProtocolScoresTheAdaptedModel) {
  const Fixture& f = fixture();
  const std::string out = tmp("lm_eval.json"), samples = tmp("lm_eval_samples"), base_samples = tmp("base_samples");
  for (const auto& p : {out, samples, base_samples}) remove_all(p);
  const std::string common = " --tasks arc_easy --limit 8 --data-dir " + f.data_dir;

  auto r = run_moeforge("-q eval " + kModel + " --adapter " + f.adapter + common + " --output " + out +
                        " --log-samples " + samples);
  ASSERT_EQ(r.code, 0) << r.err;
  auto b = run_moeforge("-q eval " + kModel + common + " --log-samples " + base_samples);
  ASSERT_EQ(b.code, 0) << b.err;

  // The library on the adapted model held in memory, with the CLI's defaults.
  eval::TaskRegistry reg = eval::TaskRegistry::builtin();
  eval::TokenizerEncoder enc(*f.tok);
  eval::TransformerScorer scorer(f.model);
  eval::EvalOptions opt;
  opt.data_dir = f.data_dir;
  opt.limit = 8;
  opt.engine.progress = false;
  opt.log_samples = true;
  const eval::EvalReport rep = eval::evaluate(reg, {"arc_easy"}, enc, scorer, opt);
  ASSERT_TRUE(rep.failures.empty()) << rep.failures[0].message;
  ASSERT_EQ(rep.results.size(), 1u);
  const eval::MetricResult* acc = rep.results[0].find("acc");
  const eval::MetricResult* acc_norm = rep.results[0].find("acc_norm");
  ASSERT_TRUE(acc && acc_norm);

  const json j = read_json_file(out);
  const json& res = j.at("results").at("arc_easy");
  EXPECT_DOUBLE_EQ(res.at("acc,none").get<double>(), acc->value);
  EXPECT_DOUBLE_EQ(res.at("acc_norm,none").get<double>(), acc_norm->value);
  EXPECT_EQ(j.at("n-samples").at("arc_easy").at("effective"), 8);
  const json& cfg = j.at("config");
  EXPECT_EQ(cfg.at("adapter"), f.adapter);
  EXPECT_EQ(cfg.at("adapter_format"), "moeforge-lora-moe");
  EXPECT_EQ(cfg.at("adapter_sha256"), sha256_file(path_join(f.adapter, kLoraMoeWeightsFile)));

  // Every choice's log-likelihood: the CLI's are the in-memory model's, and the adapter moved some.
  const std::vector<json> cli = jsonl(only_file(samples)), base = jsonl(only_file(base_samples));
  const std::vector<std::string>& lib = rep.samples.at("arc_easy");
  ASSERT_EQ(cli.size(), 8u);
  ASSERT_EQ(base.size(), 8u);
  ASSERT_EQ(lib.size(), 8u);
  int differing = 0;
  for (size_t d = 0; d < cli.size(); ++d) {
    const json want = json::parse(lib[d]);
    const json& fc = cli[d].at("filtered_resps");
    const json& fl = want.at("filtered_resps");
    const json& fb = base[d].at("filtered_resps");
    ASSERT_EQ(fc.size(), fl.size()) << "doc " << d;
    ASSERT_EQ(fc.size(), fb.size()) << "doc " << d;
    for (size_t k = 0; k < fc.size(); ++k) {
      const double got = std::stod(fc.at(k).at(0).get<std::string>());
      const double expect = std::stod(fl.at(k).at(0).get<std::string>());
      EXPECT_NEAR(got, expect, 1e-4 * std::max(1.0, std::fabs(expect))) << "doc " << d << " choice " << k;
      if (fc.at(k).at(0) != fb.at(k).at(0)) ++differing;
    }
  }
  EXPECT_GT(differing, 0) << "the adapter changed no log-likelihood";
}

TEST(EvalLoraMoe, MloraProtocolEqualsMloraEvaluate) {
  const Fixture& f = fixture();
  const std::string out = tmp("mlora.json"), samples = tmp("mlora_samples");
  for (const auto& p : {out, samples}) remove_all(p);

  auto r = run_moeforge("-q eval " + kModel + " --adapter " + f.adapter +
                        " --protocol mlora --tasks arc_easy --limit 8 --data-dir " + f.data_dir + " --output " + out +
                        " --log-samples " + samples);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("arc_easy"), std::string::npos) << r.out;

  const eval::TaskRegistry reg = eval::TaskRegistry::builtin();
  std::vector<McItem> items = mc_items(*reg.find_task("arc_easy"), McSplit::Test, f.data_dir, SplitPolicy::TaskSplits);
  const auto original = static_cast<int64_t>(items.size());
  ASSERT_GE(original, 8);
  items.resize(8);
  const eval::MloraEvalResult want = eval::mlora_evaluate(*f.model, *f.tok, items);
  ASSERT_EQ(want.predictions.size(), 8u);

  const json j = read_json_file(out);
  EXPECT_EQ(j.at("protocol"), "mlora");
  EXPECT_EQ(j.at("split"), "test");
  EXPECT_EQ(j.at("split_policy"), "task");
  const json& res = j.at("results").at("arc_easy");
  const double acc = res.at("acc,none").get<double>();
  EXPECT_DOUBLE_EQ(acc, want.accuracy());
  EXPECT_NEAR(res.at("acc_stderr,none").get<double>(), std::sqrt(acc * (1.0 - acc) / 7.0), 1e-12);
  EXPECT_EQ(j.at("n-samples").at("arc_easy").at("original"), original);
  EXPECT_EQ(j.at("n-samples").at("arc_easy").at("effective"), 8);
  EXPECT_EQ(j.at("config").at("adapter_format"), "moeforge-lora-moe");
  EXPECT_EQ(j.at("config").at("adapter_sha256"), sha256_file(path_join(f.adapter, kLoraMoeWeightsFile)));

  const std::vector<json> lines = jsonl(only_file(samples));
  ASSERT_EQ(lines.size(), 8u);
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& s = lines[i];
    EXPECT_EQ(s.at("doc_id"), static_cast<int64_t>(i));
    EXPECT_EQ(s.at("prompt"), items[i].prompt);
    EXPECT_EQ(s.at("labels").get<std::vector<std::string>>(), items[i].labels);
    EXPECT_EQ(s.at("answer"), items[i].answer);
    EXPECT_EQ(s.at("prediction"), want.predictions[i]) << "item " << i;
    EXPECT_EQ(s.at("correct"), want.predictions[i] == items[i].answer);
  }
}

TEST(EvalLoraMoe, BadInputIsOneLine) {
  // A task the mLoRA protocol cannot score: refused before the model loads.
  auto r = run_moeforge("-q eval " + kModel + " --protocol mlora --tasks wikitext --data-dir " + kBench);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(starts_with(r.err, "error: ")) << r.err;
  EXPECT_EQ(line_count(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("'wikitext'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the mlora protocol scores multiple-choice tasks only"), std::string::npos) << r.err;

  // A corrupt lora_moe_config.json: one line naming it, nothing written.
  const std::string bad = tmp("bad_adapter"), out = tmp("bad.json");
  remove_all(bad);
  remove_all(out);
  make_dirs(bad);
  const std::string config = path_join(bad, kLoraMoeConfigFile);
  write_file_atomic(config, "{\"format\": \"moeforge-lora-moe\", \"format_version\": ");
  r = run_moeforge("-q eval " + kModel + " --adapter " + bad + " --tasks arc_easy --limit 2 --data-dir " + kBench +
                   " --output " + out);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(starts_with(r.err, "error: " + config + ": ")) << r.err;
  EXPECT_EQ(line_count(r.err), 1u) << r.err;
  EXPECT_FALSE(path_exists(out));

  // Usage errors (exit 2): expert parallelism over LoRA-MoE blocks, an option of the other protocol.
  r = run_moeforge("-q eval " + kModel + " --adapter " + bad + " --expert-parallel --tasks arc_easy");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("LoRA-MoE"), std::string::npos) << r.err;
  r = run_moeforge("-q eval " + kModel + " --protocol mlora --acc-bytes --tasks arc_easy");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("--acc-bytes applies to --protocol lm-eval only"), std::string::npos) << r.err;
  r = run_moeforge("-q eval " + kModel + " --split validation --tasks arc_easy");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("--split applies to --protocol mlora only"), std::string::npos) << r.err;
}
