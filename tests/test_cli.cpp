// End-to-end tests of the moeforge binary: exit codes and the one-line error contract.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "test_helpers.h"

namespace {

using Run = mf::testing_helpers::CliRun;

Run run(const std::string& args) { return mf::testing_helpers::run_moeforge(args, /*merge_stderr=*/true); }

}  // namespace

TEST(Cli, HelpExitsZero) {
  auto r = run("--help");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("Usage: moeforge"), std::string::npos) << r.out;
}

TEST(Cli, VersionExitsZero) {
  auto r = run("--version");
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out.rfind("moeforge ", 0), 0u) << r.out;
}

TEST(Cli, UnknownCommandIsUsageError) {
  auto r = run("frobnicate");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.out.rfind("error: unknown command 'frobnicate'\n", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("--help"), std::string::npos);
}

TEST(Cli, NoCommandIsUsageError) {
  auto r = run("");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_EQ(r.out.rfind("error: ", 0), 0u) << r.out;
}

TEST(Cli, BadGlobalOptionIsUsageError) {
  auto r = run("--threads=-3 --help");
  EXPECT_EQ(r.code, 2) << r.out;
}

TEST(Cli, OutOfRangeNumbersAreOneLineUsageErrors) {
  // Rejected while parsing, before any model is read (issue 22, "accepted nonsense").
  for (const char* args : {"--threads 1000000 info /nonexistent", "--threads -1 info /nonexistent",
                           "eval /nonexistent --tasks arc_easy --limit -5", "eval /nonexistent --tasks arc_easy --batch-tokens 0",
                           "eval /nonexistent --tasks arc_easy --batch-tokens -1", "eval /nonexistent --tasks arc_easy --max-length -1"}) {
    auto r = run(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.out;
    EXPECT_EQ(r.out.rfind("error: ", 0), 0u) << args << ": " << r.out;
    EXPECT_NE(r.out.find("must be"), std::string::npos) << args << ": " << r.out;
    EXPECT_LT(r.out.size(), 200u) << args << ": " << r.out;  // no DBL_MAX ranges
  }
}

TEST(Cli, InfoOnMissingModelIsOneLineError) {
  auto r = run("info /nonexistent");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out, "error: /nonexistent: no such file or directory\n");
}

TEST(Cli, InitThenInfoDescribesTheCheckpoint) {
  // A config written by hand; info must report what it says, and the parameter count of a
  // Llama with tied embeddings: V*H + L*(4*H*H' + 3*H*F + 2*H) + H (here H' = q/k/v/o widths).
  std::string dir = testing::TempDir() + "/mf_cli_init";
  std::string cfg = dir + ".json";
  FILE* f = fopen(cfg.c_str(), "w");
  fputs(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64, "hidden_size": 16,
            "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
            "max_position_embeddings": 128, "tie_word_embeddings": true})", f);
  fclose(f);
  auto r = run("-q init --config " + cfg + " --out " + dir + " --dtype fp32");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("info --json " + dir);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  int64_t v = 64, h = 16, ffn = 32, layers = 2;
  int64_t expected = v * h + layers * (4 * h * h + 3 * h * ffn + 2 * h) + h;
  EXPECT_EQ(j["parameters"]["total"].get<int64_t>(), expected);
  EXPECT_EQ(j["stored_parameters"].get<int64_t>(), expected);
  EXPECT_EQ(j["layers"].get<int64_t>(), 2);
  EXPECT_EQ(j["dtypes"]["F32"].get<int64_t>(), expected);
  EXPECT_EQ(j["architecture"], "LlamaForCausalLM");
}
