// `moeforge eval` end to end on the checked-in models/tiny: a three-task run with one broken data
// file scores and writes the other two, reports the failure in one line and exits 1; --log-samples
// writes one lm-eval-shaped JSONL file per scored task.
#include <gtest/gtest.h>

#include "test_helpers.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"

using namespace mf;
using mf::testing_helpers::run_moeforge;

TEST(EvalCli, BrokenTaskFailsAloneAndExitsOne) {
  const std::string bench = std::string(MOEFORGE_TEST_DATA) + "/benchmarks";
  const std::string model = std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny";
  const std::string dir = ::testing::TempDir() + "mf_eval_cli_data";
  for (const char* f : {"arc_easy/test.jsonl", "piqa/validation.jsonl"}) {
    make_dirs(parent_dir(dir + "/" + f));
    copy_file(bench + "/" + f, dir + "/" + f);
  }
  make_dirs(dir + "/boolq");
  const std::string bad = dir + "/boolq/validation.jsonl";
  write_file_atomic(bad, "{\"question\":\"q\",\"passage\":\"p\",\"label\":0}\n{\"question\":\"q\",\"label\":1}\n");
  const std::string out = ::testing::TempDir() + "mf_eval_cli_results.json";
  const std::string samples = ::testing::TempDir() + "mf_eval_cli_samples";
  remove_all(samples);
  if (path_exists(out)) remove_all(out);

  auto r = run_moeforge("-q eval " + model + " --tasks arc_easy,boolq,piqa --data-dir " + dir +
                        " --limit 4 --output " + out + " --log-samples " + samples);
  EXPECT_EQ(r.code, 1) << r.err;
  // Exactly one line, the failed task's reason.
  EXPECT_EQ(r.err, "error: " + bad + ":2: missing field 'passage'\n");
  EXPECT_NE(r.out.find("arc_easy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("piqa"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("boolq"), std::string::npos) << r.out;

  ASSERT_TRUE(path_exists(out));
  const json j = read_json_file(out);
  EXPECT_TRUE(j.at("results").contains("arc_easy"));
  EXPECT_TRUE(j.at("results").contains("piqa"));
  EXPECT_FALSE(j.at("results").contains("boolq"));
  EXPECT_EQ(j.at("n-samples").at("piqa").at("effective"), 4);
  EXPECT_EQ(j.at("failed_tasks").at("boolq"), bad + ":2: missing field 'passage'");
  EXPECT_TRUE(j.at("config").at("model_args").get<std::string>().rfind("pretrained=" + model, 0) == 0);
  EXPECT_EQ(j.at("config").at("random_seed"), 0);
  EXPECT_TRUE(j.at("total_evaluation_time_seconds").is_string());
  EXPECT_EQ(j.at("task_hashes").size(), 2u);

  const auto files = list_dir(samples);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_TRUE(starts_with(files[0], "samples_arc_easy_"));
  EXPECT_TRUE(starts_with(files[1], "samples_piqa_"));
  const auto lines = split(read_file(samples + "/" + files[1]), '\n');
  ASSERT_GE(lines.size(), 4u);
  const json first = json::parse(lines[0]);
  EXPECT_EQ(first.at("doc_id"), 0);
  EXPECT_EQ(first.at("arguments").size(), 2u);  // piqa: two choices
}
