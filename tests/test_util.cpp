#include <gtest/gtest.h>

#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/rng.h"
#include "util/str.h"

using namespace mf;

TEST(Util, Sha256KnownVectors) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  std::string million(1000000, 'a');
  EXPECT_EQ(sha256_hex(million), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Util, Sha256MatchesShippedManifest) {
  // Hash from shared/data/SOURCES.md's manifest, fixture copied into tests/data.
  EXPECT_EQ(sha256_file(std::string(MOEFORGE_TEST_DATA) + "/tokenizers/llama3/tokenizer_config.json"),
            "c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf");
}

TEST(Util, OneLine) { EXPECT_EQ(one_line("a\nb\t\tc  \n"), "a b c"); }

TEST(Util, ParseSize) {
  EXPECT_EQ(parse_size("5GB"), 5000000000ull);
  EXPECT_EQ(parse_size("1GiB"), 1073741824ull);
  EXPECT_EQ(parse_size("100"), 100ull);
  EXPECT_THROW(parse_size("lots"), UsageError);
  EXPECT_THROW(parse_size("5XB"), UsageError);
}

TEST(Util, AtomicFileLeavesNothingOnAbort) {
  std::string dir = testing::TempDir() + "/mf_atomic";
  remove_all(dir);
  make_dirs(dir);
  {
    AtomicFile f(dir + "/out.bin");
    f.write("abc", 3);
    // no commit: destructor must remove the temporary
  }
  EXPECT_TRUE(list_dir(dir).empty());
  write_file_atomic(dir + "/out.bin", "hello");
  EXPECT_EQ(read_file(dir + "/out.bin"), "hello");
  EXPECT_EQ(list_dir(dir).size(), 1u);
}

TEST(Util, JsonErrorsNameFileAndKey) {
  try {
    parse_json("{\"a\": 1,", "cfg.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("cfg.json: invalid JSON", 0), 0u) << e.what();
  }
  json j = json::parse(R"({"n": 3, "s": "x"})");
  EXPECT_EQ(json_get<int64_t>(j, "n", "c.json"), 3);
  try {
    json_get<int64_t>(j, "missing", "c.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "c.json: missing key 'missing'");
  }
  EXPECT_THROW(json_get<int64_t>(j, "s", "c.json"), Error);
}

TEST(Util, RngIsDeterministicAndUniform) {
  Rng a(42), b(42);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.next_u64(), b.next_u64());
  Rng r(7);
  int counts[4] = {0, 0, 0, 0};
  for (int i = 0; i < 40000; ++i) counts[r.below(4)]++;
  for (int c : counts) EXPECT_NEAR(c, 10000, 400);  // ~4 sigma
}
