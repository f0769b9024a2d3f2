// The byte-level BPE trainer: its tokenizer.json loads with our HF loader and reproduces the
// trainer's own segmentation of the training text; round trip; byte-identical reruns; CLI.
#include <gtest/gtest.h>

#include <cstdio>

#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"
#include "tokenizer/unicode.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/rng.h"
#include "util/str.h"

using namespace mf;

namespace {

// A deterministic corpus with Zipf-ish word frequencies, numbers, punctuation, some non-ASCII
// and blank lines (the split regex's newline rules matter at chunk boundaries).
std::string corpus(size_t bytes, uint64_t seed) {
  static const char* words[] = {"the", "of", "and", "to", "in", "expert", "router", "token", "mixture", "dense",
                                "layer", "model", "Zürich", "naïve", "東京", "données", "it's", "we'll", "x", "y"};
  Rng rng(seed);
  std::string s;
  while (s.size() < bytes) {
    uint64_t r = rng.below(100);
    if (r < 80) {
      size_t w = size_t(rng.below(20));
      w = std::min(w, size_t(rng.below(20)));  // skew towards the first words
      s += words[w];
      s += ' ';
    } else if (r < 88) {
      s += std::to_string(rng.below(100000)) + ", ";
    } else if (r < 94) {
      s += ".\n";
    } else if (r < 97) {
      s += "\n\n";
    } else {
      s += "  (\t";
    }
  }
  return s;
}

std::string temp_dir(const std::string& name) {
  std::string d = testing::TempDir() + "/mf_tok_train/" + name;
  remove_all(d);
  make_dirs(parent_dir(d));
  return d;
}

std::string run(const std::string& cmd, int* rc) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (p && fgets(buf, sizeof buf, p)) out += buf;
  int status = p ? pclose(p) : -1;
  *rc = WEXITSTATUS(status);
  return out;
}

}  // namespace

TEST(TokenizerTrain, ReloadedTokenizerMatchesTrainerSegmentation) {
  const std::string text = corpus(300000, 7);
  BpeTrainerOptions opt;
  opt.vocab_size = 600;
  opt.progress = false;
  BpeTrainer trainer(opt);
  trainer.add_text(text);
  trainer.train();
  EXPECT_EQ(trainer.num_merges(), 600 - 259);
  const std::string dir = temp_dir("a");
  trainer.save(dir);

  auto tok = Tokenizer::load(dir);
  EXPECT_EQ(tok->vocab_size(), 600);
  EXPECT_EQ(tok->bos_id(), 0);
  EXPECT_EQ(tok->eos_id(), 1);
  EXPECT_EQ(tok->pad_id(), 2);
  EXPECT_EQ(tok->id_to_piece(3 + ' '), "\u0120");  // byte symbols follow the specials in byte order

  const auto trained = trainer.encode_training_text(text);
  const auto loaded = tok->encode(text);
  ASSERT_EQ(loaded.size(), trained.size());
  EXPECT_TRUE(loaded == trained);
  // Compression sanity: learned merges are used (well under one token per byte).
  EXPECT_LT(double(loaded.size()), 0.5 * double(text.size()));
  auto with_bos = tok->encode("the model", true);
  EXPECT_EQ(with_bos.front(), 0);
  EXPECT_EQ(tok->decode(tok->encode(text)), text);
  EXPECT_EQ(tok->decode(with_bos, true), "the model");
}

TEST(TokenizerTrain, RoundTripRandomUtf8) {
  BpeTrainerOptions opt;
  opt.vocab_size = 400;
  opt.progress = false;
  BpeTrainer trainer(opt);
  trainer.add_text(corpus(50000, 3));
  trainer.train();
  const std::string dir = temp_dir("rt");
  trainer.save(dir);
  auto tok = Tokenizer::load(dir);
  Rng rng(11);
  int failures = 0;
  for (int i = 0; i < 10000; ++i) {
    std::string s;
    const int n = int(rng.below(30));
    for (int k = 0; k < n; ++k) {
      uint32_t cp;
      do cp = uint32_t(rng.below(4) == 0 ? rng.below(0x110000) : rng.below(0x3100)); while (cp >= 0xD800 && cp <= 0xDFFF);
      if (rng.below(5) == 0) cp = " \t\n"[rng.below(3)];
      unicode::append_utf8(s, cp);
    }
    if (tok->decode(tok->encode(s)) != s && ++failures <= 3) ADD_FAILURE() << "round trip failed on string " << i;
  }
  EXPECT_EQ(failures, 0);
}

TEST(TokenizerTrain, DeterministicOutputWhateverTheThreadCount) {
  const std::string text = corpus(3 << 20, 5);  // > 1 MiB: several counting chunks
  std::string outputs[2];
  for (int run_i = 0; run_i < 2; ++run_i) {
    BpeTrainerOptions opt;
    opt.vocab_size = 500;
    opt.threads = run_i == 0 ? 1 : 2;
    opt.progress = false;
    BpeTrainer trainer(opt);
    trainer.add_text(text);
    trainer.train();
    const std::string dir = temp_dir("det" + std::to_string(run_i));
    trainer.save(dir);
    outputs[run_i] = read_file(dir + "/tokenizer.json");
    // Chunked counting must not create pre-tokens the whole-text split would not.
    EXPECT_NO_THROW(trainer.encode_training_text(text));
  }
  EXPECT_EQ(outputs[0], outputs[1]);
  EXPECT_NE(outputs[0].find("\"ignore_merges\": false"), std::string::npos);
}

TEST(TokenizerTrain, CliTrainThenTokenize) {
  const std::string dir = temp_dir("cli");
  const std::string input = testing::TempDir() + "/mf_tok_train/input.txt";
  write_file_atomic(input, corpus(100000, 9));
  int rc = 0;
  std::string out = run(cat(MOEFORGE_BIN, " -q tokenizer train --vocab-size 300 --input ", input, " --out ", dir), &rc);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(path_exists(dir + "/tokenizer.json"));
  EXPECT_TRUE(path_exists(dir + "/tokenizer_config.json"));
  json rec = read_json_file(dir + "/moeforge_train_record.json");
  EXPECT_EQ(rec["results"]["vocab_size"].get<int64_t>(), 300);

  out = run(cat(MOEFORGE_BIN, " tokenize ", dir, " --text 'the router' --add-special --json"), &rc);
  ASSERT_EQ(rc, 0) << out;
  json j = json::parse(out);
  auto tok = Tokenizer::load(dir);
  EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), tok->encode("the router", true));
  EXPECT_EQ(j["ids"][0].get<int32_t>(), 0);
  EXPECT_EQ(j["pieces"][0].get<std::string>(), "<|begin_of_text|>");

  out = run(cat(MOEFORGE_BIN, " tokenizer train --vocab-size 300 --input /nonexistent.txt --out ", dir, "x"), &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_EQ(out, "error: /nonexistent.txt: no such file\n");
}
