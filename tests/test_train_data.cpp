// JSONL documents, packing into windows, and the resumable shuffled batch iterator.
#include <gtest/gtest.h>

#include <unistd.h>

#include <set>

#include "train/data.h"
#include "util/error.h"
#include "util/fs.h"

using namespace mf;

namespace {

std::string temp_file(const std::string& name, const std::string& content) {
  std::string dir = ::testing::TempDir() + "/mf_train_data_" + std::to_string(::getpid());
  make_dirs(dir);
  std::string path = dir + "/" + name;
  write_file_atomic(path, content);
  return path;
}

std::string error_of(const std::string& path) {
  try {
    read_documents_jsonl(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// "a" -> 1, "b" -> 2, ... with BOS 9 in front, as a tokenizer with add_special would.
std::vector<int32_t> letters_with_bos(const std::string& s) {
  std::vector<int32_t> ids = {9};
  for (char c : s) ids.push_back(c - 'a' + 1);
  return ids;
}

std::vector<int64_t> row(const at::Tensor& t, int64_t i) {
  at::Tensor r = t[i].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

}  // namespace

TEST(TrainData, ReadsDocumentsWithDomains) {
  std::string p = temp_file("ok.jsonl",
                            "{\"text\": \"first\", \"domain\": \"code\", \"id\": 1}\n\n"
                            "{\"text\": \"second\"}\n");
  auto docs = read_documents_jsonl(p);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "first");
  EXPECT_EQ(docs[0].domain, "code");
  EXPECT_EQ(docs[1].domain, "default");
  auto fixture = read_documents_jsonl(std::string(MOEFORGE_TEST_DATA) + "/train/tiny_train.jsonl");
  EXPECT_EQ(fixture.size(), 9u);
}

TEST(TrainData, BadLinesNameFileAndLine) {
  std::string p = temp_file("bad1.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"\n");
  EXPECT_EQ(error_of(p).rfind(p + ":2: invalid JSON", 0), 0u) << error_of(p);
  p = temp_file("bad2.jsonl", "{\"text\": \"a\"}\n\n{\"domain\": \"x\"}\n");
  EXPECT_EQ(error_of(p), p + ":3: missing key 'text'");
  p = temp_file("bad3.jsonl", "{\"text\": 5}\n");
  EXPECT_EQ(error_of(p), p + ":1: key 'text' must be a string");
  p = temp_file("bad4.jsonl", "[1, 2]\n");
  EXPECT_EQ(error_of(p), p + ":1: expected a JSON object");
  p = temp_file("bad5.jsonl", "{\"text\": \"a\", \"domain\": 3}\n");
  EXPECT_EQ(error_of(p), p + ":1: key 'domain' must be a non-empty string");
  EXPECT_NE(error_of("/nonexistent/x.jsonl").find("/nonexistent/x.jsonl"), std::string::npos);
}

TEST(TrainData, TokenStreamSeparatesDocumentsWithEos) {
  auto stream = build_token_stream({"ab", "cde"}, tokenize_each(letters_with_bos), 0);
  EXPECT_EQ(stream, (std::vector<int32_t>{9, 1, 2, 0, 9, 3, 4, 5, 0}));
}

TEST(TrainData, PackingCutsOverlappingWindows) {
  // 9 tokens, seq_len 3: windows [0,4) and [3,7); the tail (5, 0) cannot fill a third.
  PackedSequences p(std::vector<int32_t>{9, 1, 2, 0, 9, 3, 4, 5, 0}, 3);
  EXPECT_EQ(p.size(), 2);
  at::Tensor w = p.windows({1, 0});
  ASSERT_EQ(w.sizes().vec(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(w.scalar_type(), at::kLong);
  EXPECT_EQ(row(w, 0), (std::vector<int64_t>{0, 9, 3, 4}));
  EXPECT_EQ(row(w, 1), (std::vector<int64_t>{9, 1, 2, 0}));
  // Exactly seq_len * k + 1 tokens fill k windows.
  EXPECT_EQ(PackedSequences(std::vector<int32_t>(7, 1), 3).size(), 2);
  EXPECT_EQ(PackedSequences(std::vector<int32_t>(3, 1), 3).size(), 0);
  EXPECT_EQ(p.max_token(), 9);
  EXPECT_THROW(p.windows({2}), Error);
}

TEST(TrainData, ShuffledBatchesCoverAnEpochAndResume) {
  std::vector<int32_t> stream(31);
  for (int i = 0; i < 31; ++i) stream[i] = i;
  PackedSequences p(stream, 3);  // 10 windows; window i starts with token 3 i
  ShuffledBatches a(p, 3, 7);
  std::set<int64_t> firsts;
  for (int b = 0; b < 3; ++b) {
    at::Tensor t = a.next();
    for (int i = 0; i < 3; ++i) firsts.insert(t[i][0].item<int64_t>());
  }
  EXPECT_EQ(firsts.size(), 9u);  // one epoch: 3 full batches of distinct windows, 1 dropped
  EXPECT_EQ(a.position().epoch, 0);
  a.next();
  EXPECT_EQ(a.position().epoch, 1);
  LoaderPosition saved = a.position();
  std::vector<at::Tensor> expected;
  for (int b = 0; b < 6; ++b) expected.push_back(a.next());
  ShuffledBatches restored(p, 3, 7);
  restored.restore(saved);
  for (int b = 0; b < 6; ++b) EXPECT_TRUE(torch::equal(restored.next(), expected[b])) << b;
  // Another seed, another order.
  ShuffledBatches c(p, 3, 7), d(p, 3, 8);
  bool differ = false;
  for (int b = 0; b < 3; ++b) differ |= !torch::equal(c.next(), d.next());
  EXPECT_TRUE(differ);
  EXPECT_THROW(ShuffledBatches(p, 11, 0), Error);
}
