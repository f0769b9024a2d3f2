// End-to-end: `moeforge generate` and `moeforge perplexity` on a tiny GPT-2 checkpoint that
// uses the real GPT-2 tokenizer files (tests/data/tokenizers/gpt2). The CLI's numbers must
// equal the library's on the same model and token ids.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <array>
#include <cstdio>

#include "io/checkpoint.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/perplexity.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"
#include "util/json.h"
#include "test_helpers.h"

using namespace mf;

namespace {

using mf::testing_helpers::CliRun;

CliRun run(const std::string& args) { return mf::testing_helpers::run_moeforge("-q " + args); }

// A 1-layer GPT-2 with the real 50257-token vocabulary, written once per test binary run.
const std::string& tiny_gpt2_dir() {
  static std::string dir = [] {
    std::string d = ::testing::TempDir() + "/mf_model_cli_gpt2";
    remove_all(d);
    json cfg = {{"model_type", "gpt2"}, {"vocab_size", 50257}, {"n_embd", 16}, {"n_layer", 1},
                {"n_head", 2},          {"n_positions", 64},   {"bos_token_id", 50256}, {"eos_token_id", 50256}};
    auto m = Model::create(parse_model_config(cfg, "gpt2"));
    m->init_random(3, 0.5);
    SaveOptions so;
    so.copy_aux_from = std::string(MOEFORGE_TEST_DATA) + "/tokenizers/gpt2";
    save_checkpoint(d, cfg, m->hf_tensors(), so);
    return d;
  }();
  return dir;
}

}  // namespace

TEST(ModelCli, GenerateJsonEqualsLibraryGreedy) {
  const std::string& dir = tiny_gpt2_dir();
  CliRun r = run("generate " + dir + " --prompt 'The quick brown fox' --max-new-tokens 6 --temperature 0 --dtype float32 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  auto tok = Tokenizer::load(dir);
  auto ids32 = tok->encode("The quick brown fox", true);
  auto model = Model::load(dir);
  GenerateOptions go;
  go.max_new_tokens = 6;
  go.sampling.temperature = 0;
  go.stop_ids = {50256};
  auto expect = generate(*model, std::vector<int64_t>(ids32.begin(), ids32.end()), go);
  EXPECT_EQ(j["ids"].get<std::vector<int64_t>>(), expect);
  EXPECT_EQ(j["prompt_tokens"].get<size_t>(), ids32.size());
}

// --prompt-ids is the same prompt as its text; --ignore-eos generates exactly --max-new-tokens past
// EOS (the library without stop ids); the timing fields split the run; bad ids are a usage error.
TEST(ModelCli, GeneratePromptIdsAndIgnoreEos) {
  const std::string& dir = tiny_gpt2_dir();
  auto tok = Tokenizer::load(dir);
  const auto ids32 = tok->encode("The quick brown fox", true);
  std::string csv;
  for (int32_t id : ids32) csv += (csv.empty() ? "" : ",") + std::to_string(id);
  CliRun r = run("generate " + dir + " --prompt-ids " + csv +
                 " --max-new-tokens 12 --temperature 0 --dtype float32 --ignore-eos --warmup --json");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  auto model = Model::load(dir);
  GenerateOptions go;
  go.max_new_tokens = 12;
  go.sampling.temperature = 0;
  EXPECT_EQ(j["ids"].get<std::vector<int64_t>>(), generate(*model, std::vector<int64_t>(ids32.begin(), ids32.end()), go));
  EXPECT_EQ(j["ids"].size(), 12u);
  EXPECT_NEAR(j["prompt_seconds"].get<double>() + j["decode_seconds"].get<double>(), j["seconds"].get<double>(), 1e-9);
  CliRun bad = run("generate " + dir + " --prompt-ids 1,50257");
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("--prompt-ids: 50257 is not a token id"), std::string::npos) << bad.err;
}

TEST(ModelCli, GenerateStreamsText) {
  CliRun r = run("generate " + tiny_gpt2_dir() + " --prompt Hello --max-new-tokens 5 --seed 4 --top-k 50 --top-p 0.9");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_GT(r.out.size(), 1u);
  EXPECT_EQ(r.out.back(), '\n');
  CliRun again = run("generate " + tiny_gpt2_dir() + " --prompt Hello --max-new-tokens 5 --seed 4 --top-k 50 --top-p 0.9");
  EXPECT_EQ(again.out, r.out);  // seeded
}

TEST(ModelCli, PerplexityEqualsLibrary) {
  const std::string& dir = tiny_gpt2_dir();
  const std::string text_file = ::testing::TempDir() + "/mf_model_cli_text.txt";
  const std::string text = "In the beginning God created the heaven and the earth. And the earth was without form, "
                           "and void; and darkness was upon the face of the deep.";
  write_file_atomic(text_file, text);
  CliRun r = run("perplexity " + dir + " --text " + text_file + " --context 16 --stride 8 --json");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  auto tok = Tokenizer::load(dir);
  auto ids32 = tok->encode(text, true);
  auto model = Model::load(dir);
  PerplexityResult expect = rolling_perplexity(*model, std::vector<int64_t>(ids32.begin(), ids32.end()), 16, 8);
  EXPECT_EQ(j["scored_tokens"].get<int64_t>(), static_cast<int64_t>(ids32.size()) - 1);
  EXPECT_NEAR(j["perplexity"].get<double>() / expect.perplexity(), 1.0, 1e-6);
}

TEST(ModelCli, BadInputIsOneLineError) {
  CliRun r = run("generate /nonexistent/model --prompt hi");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("error: /nonexistent/model: ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
  CliRun u = run("perplexity " + tiny_gpt2_dir());
  EXPECT_EQ(u.code, 2) << u.err;
  CliRun s = run("perplexity " + tiny_gpt2_dir() + " --text /nonexistent.txt");
  EXPECT_EQ(s.code, 1);
  EXPECT_EQ(s.err.rfind("error: /nonexistent.txt: ", 0), 0u) << s.err;
}

// `convert` writes the same tensors rounded to bf16 (what torch's .to(bfloat16) gives), in shards
// when asked, with torch_dtype updated and the tokenizer files copied; bad input writes nothing.
TEST(ModelCli, ConvertToBf16Shards) {
  const std::string& dir = tiny_gpt2_dir();
  const std::string out = ::testing::TempDir() + "/mf_model_cli_bf16";
  remove_all(out);
  auto r = run("convert " + dir + " --out " + out + " --dtype bf16 --shard-size 1MB");
  ASSERT_EQ(r.code, 0) << r.err;
  Checkpoint src = Checkpoint::open(dir), dst = Checkpoint::open(out);
  EXPECT_GT(dst.files().size(), 1u);
  EXPECT_EQ(dst.config().at("torch_dtype"), "bfloat16");
  EXPECT_TRUE(path_exists(out + "/tokenizer.json") || path_exists(out + "/vocab.json"));
  for (const auto& name : src.names()) {
    at::Tensor a = src.get(name), b = dst.get(name);
    ASSERT_EQ(b.scalar_type(), at::kBFloat16) << name;
    EXPECT_TRUE(torch::equal(a.to(at::kBFloat16), b)) << name;
  }
  const std::string missing = ::testing::TempDir() + "/mf_no_such_model";
  r = run("convert " + missing + " --out " + out + "_2");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("error: " + missing, 0), 0u) << r.err;
  EXPECT_FALSE(path_exists(out + "_2"));
}

// float16 weights: a float16 checkpoint runs in float32 / bfloat16; computing in float16 on the
// CPU (no libtorch kernel) is a one-line usage error up front, not an internal error mid-forward.
TEST(ModelCli, Float16CheckpointsRunAndFloat16ComputeOnCpuIsAUsageError) {
  const std::string d = ::testing::TempDir() + "/mf_model_cli_fp16";
  remove_all(d);
  json cfg = {{"model_type", "gpt2"}, {"vocab_size", 50257}, {"n_embd", 16}, {"n_layer", 1},
              {"n_head", 2},          {"n_positions", 64},   {"bos_token_id", 50256}, {"eos_token_id", 50256}};
  auto m = Model::create(parse_model_config(cfg, "gpt2"));
  m->init_random(3, 0.5);
  m->to(at::kHalf);
  SaveOptions so;
  so.copy_aux_from = std::string(MOEFORGE_TEST_DATA) + "/tokenizers/gpt2";
  save_checkpoint(d, cfg, m->hf_tensors(), so);
  const std::string text = d + "/text.txt";
  write_file_atomic(text, "The quick brown fox jumps over the lazy dog.");
  for (const char* dt : {"float32", "bfloat16"}) {
    CliRun r = run("perplexity " + d + " --text " + text + " --dtype " + dt + " --json");
    EXPECT_EQ(r.code, 0) << dt << ": " << r.err;
  }
  for (const std::string cmd : {"perplexity " + d + " --text " + text, "generate " + d + " --prompt hi"}) {
    CliRun r = run(cmd + " --dtype float16");
    EXPECT_NE(r.code, 0);
    EXPECT_EQ(r.err.rfind("error: --dtype float16 computes on CUDA only", 0), 0u) << r.err;
  }
}
