// The whole evaluation pipeline with a fake model: pooled tasks, shared vs independent scoring,
// MMLU-style groups with size weighting and the table's aliases.
#include <gtest/gtest.h>

#include "eval/evaluate.h"
#include "eval/report.h"
#include "eval_fakes.h"
#include "util/fs.h"

using namespace mf;
using namespace mf::eval;
using mf::eval::testing::HistoryModel;
using mf::eval::testing::PieceEncoder;

namespace {
const std::string kData = std::string(MOEFORGE_TEST_DATA) + "/benchmarks";
}

TEST(EvalEvaluate, SharedAndIndependentRunsAgree) {
  TaskRegistry reg = TaskRegistry::builtin();
  PieceEncoder enc;
  EvalOptions opt;
  opt.data_dir = kData;
  opt.engine.progress = false;
  opt.bootstrap_iters = 1000;
  HistoryModel m1(512, 256), m2(512, 256);
  const std::vector<std::string> tasks = {"arc_easy", "piqa", "winogrande", "sciq", "boolq", "wikitext"};
  opt.engine.share_context = true;
  EvalReport a = evaluate(reg, tasks, enc, m1, opt);
  opt.engine.share_context = false;
  EvalReport b = evaluate(reg, tasks, enc, m2, opt);
  ASSERT_EQ(a.results.size(), 6u);
  ASSERT_EQ(b.results.size(), 6u);
  for (size_t i = 0; i < a.results.size(); ++i) {
    ASSERT_EQ(a.results[i].metrics.size(), b.results[i].metrics.size());
    for (size_t k = 0; k < a.results[i].metrics.size(); ++k)
      EXPECT_EQ(a.results[i].metrics[k].value, b.results[i].metrics[k].value) << a.results[i].name;
  }
  EXPECT_EQ(a.results[0].name, "arc_easy");
  EXPECT_EQ(a.results[0].samples, 22);
  EXPECT_EQ(a.results[5].samples, 2);  // two wikitext pages
  EXPECT_GT(a.stats.groups, 0);
  EXPECT_LT(a.stats.input_tokens, b.stats.input_tokens);
  // --limit keeps the first documents.
  opt.limit = 5;
  EvalReport c = evaluate(reg, {"arc_easy"}, enc, m1, opt);
  EXPECT_EQ(c.results[0].samples, 5);
  EXPECT_EQ(c.results[0].original_samples, 22);
  EXPECT_EQ(apply_limit(22, 0.5), 11);
  // acc_bytes on request; on ASCII text it equals acc_norm (characters = bytes).
  opt.limit = -1;
  opt.acc_bytes = true;
  EvalReport d = evaluate(reg, {"arc_easy", "winogrande"}, enc, m1, opt);
  ASSERT_NE(d.results[0].find("acc_bytes"), nullptr);
  EXPECT_EQ(d.results[0].find("acc_bytes")->value, d.results[0].find("acc_norm")->value);
  EXPECT_EQ(d.results[1].find("acc_bytes"), nullptr);  // winogrande reports acc only
  EXPECT_EQ(apply_limit(22, 0.01), 1);
}

TEST(EvalEvaluate, MmluGroupsAreSizeWeighted) {
  // Two subjects with 3 and 1 documents (mmlu/all/test.jsonl layout), everything else absent is
  // not requested: run the stem category's two subjects through a custom group.
  const std::string dir = ::testing::TempDir() + "mf_eval_mmlu";
  make_dirs(dir + "/mmlu/all");
  std::string rows;
  for (int i = 0; i < 3; ++i)
    rows += R"({"question":"q)" + std::to_string(i) + R"(","subject":"anatomy","choices":["a","b","c","d"],"answer":)" +
            std::to_string(i % 4) + "}\n";
  rows += R"({"question":"x","subject":"astronomy","choices":["a","b","c","d"],"answer":2})" "\n";
  write_file_atomic(dir + "/mmlu/all/test.jsonl", rows);
  TaskRegistry reg = TaskRegistry::builtin();
  reg.add_group({"mini", "", {"mmlu_anatomy", "mmlu_astronomy"}, true, 1.0});
  reg.add_group({"top", "", {"mini"}, true, 1.0});
  PieceEncoder enc;
  HistoryModel m(512, 256);
  EvalOptions opt;
  opt.data_dir = dir;
  opt.engine.progress = false;
  EvalReport r = evaluate(reg, {"top"}, enc, m, opt);
  ASSERT_EQ(r.results.size(), 4u);
  EXPECT_EQ(r.results[0].alias, "top");
  EXPECT_EQ(r.results[1].alias, " - mini");
  EXPECT_EQ(r.results[2].alias, "  - anatomy");
  EXPECT_EQ(r.results[3].alias, "  - astronomy");
  EXPECT_EQ(r.results[2].samples, 3);
  EXPECT_EQ(r.results[3].samples, 1);
  const double anatomy = r.results[2].find("acc")->value, astronomy = r.results[3].find("acc")->value;
  EXPECT_DOUBLE_EQ(r.results[1].find("acc")->value, (3 * anatomy + 1 * astronomy) / 4);
  EXPECT_DOUBLE_EQ(r.results[0].find("acc")->value, (3 * anatomy + 1 * astronomy) / 4);
  EXPECT_EQ(r.groups, (std::vector<std::string>{"mini", "top"}));
  // One-document subject: its stderr is N/A, so the group's is too.
  EXPECT_FALSE(r.results[3].find("acc")->has_stderr);
  EXPECT_FALSE(r.results[0].find("acc")->has_stderr);
  const std::string table = format_table(r, true);
  EXPECT_NE(table.find("Groups"), std::string::npos);
  EXPECT_NE(table.find(" - mini"), std::string::npos);
  EXPECT_EQ(table.find("anatomy"), std::string::npos);
}

TEST(EvalEvaluate, BrokenTaskIsReportedAndTheOthersAreScored) {
  // Three tasks, boolq's file broken on its second line: arc_easy and piqa are scored exactly as in a
  // run without boolq; boolq is reported with its one-line reason and has no results.
  const std::string dir = ::testing::TempDir() + "mf_eval_partial";
  for (const char* f : {"arc_easy/test.jsonl", "piqa/validation.jsonl"}) {
    make_dirs(parent_dir(dir + "/" + f));
    copy_file(kData + "/" + f, dir + "/" + f);
  }
  make_dirs(dir + "/boolq");
  const std::string bad = dir + "/boolq/validation.jsonl";
  write_file_atomic(bad, R"({"question":"q","passage":"p","label":0})" "\n" R"({"question":"q","passage":)" "\n");
  TaskRegistry reg = TaskRegistry::builtin();
  PieceEncoder enc;
  HistoryModel m1(512, 256), m2(512, 256);
  EvalOptions opt;
  opt.data_dir = dir;
  opt.engine.progress = false;
  opt.log_samples = true;
  EvalReport r = evaluate(reg, {"arc_easy", "boolq", "piqa"}, enc, m1, opt);
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].task, "boolq");
  EXPECT_EQ(r.failures[0].message.rfind(bad + ":2: invalid JSON", 0), 0u) << r.failures[0].message;
  EXPECT_EQ(r.failures[0].message.find('\n'), std::string::npos);
  ASSERT_EQ(r.results.size(), 2u);
  EXPECT_EQ(r.results[0].name, "arc_easy");
  EXPECT_EQ(r.results[1].name, "piqa");
  EXPECT_EQ(r.data_files.count("boolq"), 0u);
  EXPECT_EQ(r.configs.count("boolq"), 0u);
  EXPECT_EQ(r.samples.count("boolq"), 0u);
  EvalReport clean = evaluate(reg, {"arc_easy", "piqa"}, enc, m2, opt);
  for (size_t i = 0; i < 2; ++i)
    for (size_t k = 0; k < clean.results[i].metrics.size(); ++k)
      EXPECT_EQ(r.results[i].metrics[k].value, clean.results[i].metrics[k].value) << clean.results[i].name;
  auto j = results_json(r, json::object());
  EXPECT_FALSE(j["results"].contains("boolq"));
  EXPECT_FALSE(j["n-samples"].contains("boolq"));
  EXPECT_EQ(j["failed_tasks"]["boolq"], r.failures[0].message);
  // A missing file is a failure of its task too; a group with a failed task is not aggregated.
  const std::string mdir = ::testing::TempDir() + "mf_eval_partial_group";
  make_dirs(mdir + "/mmlu/anatomy");
  write_file_atomic(mdir + "/mmlu/anatomy/test.jsonl",
                    R"({"question":"q","subject":"anatomy","choices":["a","b","c","d"],"answer":1})" "\n");
  reg.add_group({"pair", "", {"mmlu_anatomy", "mmlu_astronomy"}, true, 1.0});
  opt.data_dir = mdir;
  EvalReport g = evaluate(reg, {"pair"}, enc, m1, opt);
  ASSERT_EQ(g.failures.size(), 1u);
  EXPECT_EQ(g.failures[0].message.rfind(mdir + "/mmlu/astronomy/test.jsonl: no such file for task 'mmlu_astronomy'; "
                                        "looked under " + mdir + " for: mmlu/astronomy/test.jsonl (HF cais/mmlu JSONL), ",
                                        0),
            0u);
  ASSERT_EQ(g.results.size(), 1u);
  EXPECT_EQ(g.results[0].name, "mmlu_anatomy");
  EXPECT_TRUE(g.groups.empty());
}
