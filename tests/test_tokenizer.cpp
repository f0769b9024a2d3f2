// Tokenizers against real reference data: llama.cpp's test vectors (ids HF produced), plus
// hand-derived cases for the pipeline pieces the vectors do not exercise.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/rng.h"
#include "util/str.h"

using namespace mf;

namespace {

const std::string kData = std::string(MOEFORGE_TEST_DATA) + "/tokenizers";

struct Vectors {
  std::vector<std::string> inputs;
  std::vector<std::vector<int32_t>> ids;
};

// SOURCES.md: .inp = tests each followed by "\n__ggml_vocab_test__\n"; .out = one line per test.
Vectors read_vectors(const std::string& name) {
  Vectors v;
  const std::string inp = read_file(kData + "/vectors/ggml-vocab-" + name + ".gguf.inp");
  const std::string sep = "\n__ggml_vocab_test__\n";
  size_t pos = 0;
  while (pos < inp.size()) {
    size_t e = inp.find(sep, pos);
    if (e == std::string::npos) break;
    v.inputs.push_back(inp.substr(pos, e - pos));
    pos = e + sep.size();
  }
  std::istringstream out(read_file(kData + "/vectors/ggml-vocab-" + name + ".gguf.out"));
  std::string line;
  while (std::getline(out, line)) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    int32_t id;
    while (ls >> id) ids.push_back(id);
    v.ids.push_back(ids);
  }
  return v;
}

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (auto id : ids) s += " " + std::to_string(id);
  return s;
}

void expect_vectors(const Tokenizer& tok, const std::string& name) {
  Vectors v = read_vectors(name);
  ASSERT_EQ(v.inputs.size(), 46u);
  ASSERT_EQ(v.ids.size(), v.inputs.size());
  int mismatches = 0;
  for (size_t i = 0; i < v.inputs.size(); ++i) {
    auto got = tok.encode(v.inputs[i], false);
    if (got != v.ids[i]) {
      ++mismatches;
      ADD_FAILURE() << name << " test " << i << " '" << v.inputs[i] << "'\n  want" << ids_str(v.ids[i]) << "\n  got "
                    << ids_str(got);
    }
  }
  EXPECT_EQ(mismatches, 0);
  // The batch path gives the same ids.
  auto batch = tok.encode_batch(v.inputs, false);
  for (size_t i = 0; i < v.inputs.size(); ++i) EXPECT_EQ(batch[i], v.ids[i]) << name << " batch test " << i;
}

const Tokenizer& llama3() {
  static auto t = Tokenizer::load(kData + "/llama3");
  return *t;
}
const Tokenizer& gpt2() {
  static auto t = Tokenizer::load(kData + "/gpt2");
  return *t;
}
const Tokenizer& llama2() {
  static auto t = Tokenizer::load(kData + "/llama2-spm/tokenizer.model");
  return *t;
}

// Random valid UTF-8 mixing the hard cases: emoji (4-byte), CJK, combining marks, control
// characters, long whitespace runs, digits, apostrophes.
std::string random_text(Rng& rng) {
  static const std::vector<std::string> pool = {
      " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "'s", "'LL", "a", "Z", "the", " word", "123", "4567",
      "\u00e9", "e\u0301", "\u0301", "\u0308\u0308", "\u4e2d\u6587", "\u65e5\u672c\u8a9e", "\ud55c", "\U0001F600",
      "\U0001F468\u200D\U0001F469\u200D\U0001F467", "\U0001F1FA\U0001F1F8", "\u0627\u0644\u0639", "\u0928\u092e",
      "\x01", "\x1b", "\x7f", "\u0085", "\u200b", "\ufeff", "!?", "...", "<|", "|>", "<s>", "\\", "\"", "Vi\u1ec7t",
      "\u0e01\u0e02", "\u00df", "\u0130", "\u2028"};
  std::string s;
  const int n = int(rng.below(24));
  for (int k = 0; k < n; ++k) {
    uint64_t r = rng.below(10);
    if (r < 6) {
      s += pool[rng.below(pool.size())];
    } else if (r < 7) {
      s += std::string(1 + rng.below(40), " \t\n"[rng.below(3)]);
    } else {
      // Any scalar value (no surrogates).
      uint32_t cp;
      do cp = uint32_t(rng.below(0x110000)); while (cp >= 0xD800 && cp <= 0xDFFF);
      if (rng.below(2)) cp = uint32_t(rng.below(0x800));
      unicode::append_utf8(s, cp);
    }
  }
  return s;
}

void expect_round_trip(const Tokenizer& tok, int n, uint64_t seed) {
  Rng rng(seed);
  int failures = 0;
  for (int i = 0; i < n && failures < 5; ++i) {
    std::string s = random_text(rng);
    ASSERT_TRUE(unicode::is_valid_utf8(s));
    std::string back = tok.decode(tok.encode(s));
    if (back != s) {
      ++failures;
      ADD_FAILURE() << "round trip failed for string " << i << " (" << s.size() << " bytes)";
    }
  }
  EXPECT_EQ(failures, 0);
}

std::unique_ptr<HfTokenizer> from_json_text(const std::string& text) {
  return HfTokenizer::from_json(nlohmann::json::parse(text), "test.json", "");
}

std::string temp_file(const std::string& name, const std::string& content) {
  std::string dir = testing::TempDir() + "/mf_tok";
  make_dirs(dir);
  std::string path = dir + "/" + name;
  write_file_atomic(path, content);
  return path;
}

// Message of the mf::Error thrown by loading `path`.
std::string load_error(const std::string& path) {
  try {
    Tokenizer::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

// ---- acceptance: real test vectors -------------------------------------------------------

TEST(TokenizerVectors, Llama3TokenizerJson) { expect_vectors(llama3(), "llama-bpe"); }
TEST(TokenizerVectors, Gpt2VocabMerges) { expect_vectors(gpt2(), "gpt-2"); }
TEST(TokenizerVectors, Llama2SentencePiece) { expect_vectors(llama2(), "llama-spm"); }

// ---- acceptance: round trip --------------------------------------------------------------

TEST(TokenizerRoundTrip, Llama3TenThousandRandomStrings) { expect_round_trip(llama3(), 10000, 1); }
TEST(TokenizerRoundTrip, Gpt2TenThousandRandomStrings) { expect_round_trip(gpt2(), 10000, 2); }

TEST(TokenizerRoundTrip, InvalidUtf8IsReplacedLikePython) {
  // b"a\xffb\xe2\x82".decode("utf-8", "replace") == "a\ufffdb\ufffd"
  EXPECT_EQ(unicode::sanitize_utf8("a\xff" "b\xe2\x82"), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  EXPECT_EQ(llama3().decode(llama3().encode("a\xff")), "a\xEF\xBF\xBD");
}

// ---- facts about the real files (SOURCES.md) ----------------------------------------------

TEST(TokenizerLlama3, SpecialTokensAndIds) {
  const Tokenizer& t = llama3();
  EXPECT_EQ(t.vocab_size(), 128256);
  EXPECT_EQ(t.bos_id(), 128000);
  EXPECT_EQ(t.eos_id(), 128001);
  EXPECT_EQ(t.piece_to_id("<|eot_id|>"), 128009);
  EXPECT_EQ(t.eos_ids(), (std::vector<int32_t>{128001, 128009}));
  EXPECT_EQ(t.id_to_piece(128000), "<|begin_of_text|>");
  EXPECT_EQ(t.piece_to_id("no such piece"), -1);
  EXPECT_TRUE(t.is_special(128009));
  // Added tokens are matched on the raw text, before the regex (HF does so even when
  // add_special_tokens is false).
  auto ids = t.encode("<|begin_of_text|>Hello<|eot_id|>");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0], 128000);
  EXPECT_EQ(ids[2], 128009);
  EXPECT_EQ(t.decode(ids, true), "Hello");
  EXPECT_EQ(t.decode(ids, false), "<|begin_of_text|>Hello<|eot_id|>");
  // This tokenizer.json's post-processor is ByteLevel only and tokenizer_config.json has no
  // add_bos_token: HF adds nothing, and neither do we.
  EXPECT_EQ(t.encode("Hello", true), t.encode("Hello", false));
}

TEST(TokenizerLlama3, IgnoreMergesKeepsWholeWords) {
  // llama.cpp#7193: " Việt" is one vocabulary entry; without ignore_merges it becomes 3 ids.
  const Tokenizer& t = llama3();
  int32_t whole = t.piece_to_id(unicode::bytes_to_pieces(" Vi\u1ec7t"));
  ASSERT_GE(whole, 0);
  EXPECT_EQ(t.encode(" Vi\u1ec7t"), std::vector<int32_t>{whole});
}

TEST(TokenizerLlama3, ChatTemplate) {
  const Tokenizer& t = llama3();
  EXPECT_EQ(t.chat_format(), ChatFormat::llama3);
  // The template of this tokenizer_config.json (Meta's base one) always adds the assistant header.
  std::string p = t.apply_chat_template({{"system", "Be brief. "}, {"user", "  Hi!\n"}}, true);
  EXPECT_EQ(p,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  auto ids = t.encode(p);
  EXPECT_EQ(ids.front(), 128000);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128009), 2);
}

TEST(TokenizerGpt2, ByteMapAndSpecials) {
  EXPECT_EQ(unicode::byte_to_piece(' '), "\u0120");   // Ġ
  EXPECT_EQ(unicode::byte_to_piece('\n'), "\u010a");  // Ċ
  EXPECT_EQ(unicode::byte_to_piece(0xAD), "\u0143");  // the 68th remapped byte
  EXPECT_EQ(unicode::byte_to_piece('A'), "A");
  const Tokenizer& t = gpt2();
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_EQ(t.eos_id(), 50256);
  EXPECT_EQ(t.encode("<|endoftext|>"), std::vector<int32_t>{50256});
  EXPECT_EQ(t.id_to_piece(t.encode(" the")[0]), "\u0120the");
}

TEST(TokenizerSentencePiece, Llama2Basics) {
  const Tokenizer& t = llama2();
  EXPECT_EQ(t.vocab_size(), 32000);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.id_to_piece(1), "<s>");
  EXPECT_EQ(t.piece_to_id("<0x0A>"), 13);
  // LlamaTokenizer default: BOS only.
  auto plain = t.encode("Hello world", false);
  auto with = t.encode("Hello world", true);
  ASSERT_EQ(with.size(), plain.size() + 1);
  EXPECT_EQ(with[0], 1);
  EXPECT_EQ(t.decode(with, true), "Hello world");
  EXPECT_EQ(t.decode(plain), "Hello world");
  // Byte fallback: a character outside the vocabulary survives the round trip.
  EXPECT_EQ(t.decode(t.encode("\U0001F600 \u4e2d")), "\U0001F600 \u4e2d");
}

// ---- pipeline pieces on hand-built tokenizer.json files -----------------------------------

namespace {
// A Llama-2-style converted tokenizer (Metaspace via normalizer, byte fallback, SPM decoders).
const char* kSpmStyle = R"({
  "added_tokens": [{"id": 0, "content": "<unk>", "special": true},
                   {"id": 1, "content": "<s>", "special": true},
                   {"id": 2, "content": "</s>", "special": true}],
  "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                    {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
  "pre_tokenizer": null,
  "post_processor": {"type": "TemplateProcessing",
     "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
  "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
              {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
  "model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true, "unk_token": "<unk>",
    "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0xC3>": 3, "<0xA9>": 4, "\u2581": 5, "a": 6, "b": 7,
              "\u2581a": 8, "ab": 9, "\u2581ab": 10},
    "merges": [["\u2581", "a"], "a b", "\u2581a b"]}
})";
}  // namespace

TEST(TokenizerPipeline, SentencePieceStyleTokenizerJson) {
  auto t = from_json_text(kSpmStyle);
  // "ab ab" -> "▁ab▁ab": ▁a (rank 0) then ▁a+b (rank 2).
  EXPECT_EQ(t->encode("ab ab"), (std::vector<int32_t>{10, 10}));
  // é is not in the vocabulary: byte fallback to <0xC3> <0xA9>.
  EXPECT_EQ(t->encode("\u00e9"), (std::vector<int32_t>{5, 3, 4}));
  EXPECT_EQ(t->encode("ab", true), (std::vector<int32_t>{1, 10}));
  EXPECT_EQ(t->bos_id(), 1);
  EXPECT_EQ(t->decode({1, 10, 10, 5, 3, 4}, true), "ab ab \u00e9");
  // An invalid byte sequence decodes to one U+FFFD per byte (HF ByteFallback).
  EXPECT_EQ(t->decode({3, 3}), "\uFFFD\uFFFD");
  // <s> in the text is an added token: split out before normalisation.
  EXPECT_EQ(t->encode("<s>ab"), (std::vector<int32_t>{1, 10}));
}

TEST(TokenizerPipeline, UnknownCharactersFuseIntoOneUnk) {
  std::string j = kSpmStyle;
  j.replace(j.find("\"byte_fallback\": true"), 21, "\"byte_fallback\": false");
  auto t = from_json_text(j);
  // "▁xyb": x and y are unknown -> one fused <unk>, then b.
  EXPECT_EQ(t->encode("xyb"), (std::vector<int32_t>{5, 0, 7}));
}

TEST(TokenizerPipeline, SplitBehaviours) {
  auto make = [](const std::string& behavior, bool invert) {
    std::string j = R"({"pre_tokenizer": {"type": "Split", "pattern": {"String": "-"}, "behavior": ")" + behavior +
                    R"(", "invert": )" + (invert ? "true" : "false") +
                    R"(}, "decoder": null, "model": {"type": "BPE", "vocab": {"a": 0, "-": 1, "a-": 2, "-a": 3, "--": 4, "a--": 5},
                    "merges": []}})";
    return from_json_text(j);
  };
  // Pieces are single tokens here, so ids show the split exactly (ignore_merges off: no merges).
  // "a--a" with delimiter "-":
  EXPECT_EQ(make("Removed", false)->encode("a--a"), (std::vector<int32_t>{0, 0}));
  EXPECT_EQ(make("Isolated", false)->encode("a--a"), (std::vector<int32_t>{0, 1, 1, 0}));
  EXPECT_EQ(make("Isolated", true)->encode("a--a"), (std::vector<int32_t>{0, 1, 1, 0}));
  // With merges the piece boundaries show: MergedWithPrevious "a-","-","a"; MergedWithNext
  // "a","-","-a"; Contiguous "a","--","a".
  std::string merges_json = R"({"pre_tokenizer": {"type": "Split", "pattern": {"String": "-"}, "behavior": "BEHAVIOR"},
    "model": {"type": "BPE", "vocab": {"a": 0, "-": 1, "a-": 2, "-a": 3, "--": 4},
              "merges": ["a -", "- a", "- -"]}})";
  auto with = [&](const std::string& b) {
    std::string j = merges_json;
    j.replace(j.find("BEHAVIOR"), 8, b);
    return from_json_text(j);
  };
  EXPECT_EQ(with("MergedWithPrevious")->encode("a--a"), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ(with("MergedWithNext")->encode("a--a"), (std::vector<int32_t>{0, 1, 3}));
  EXPECT_EQ(with("Contiguous")->encode("a--a"), (std::vector<int32_t>{0, 4, 0}));
  EXPECT_EQ(with("Isolated")->encode("a--a"), (std::vector<int32_t>{0, 1, 1, 0}));
}

TEST(TokenizerPipeline, NormalizersAndAddedTokenOptions) {
  auto t = from_json_text(R"({
    "added_tokens": [{"id": 5, "content": "<x>", "special": false, "lstrip": true, "rstrip": true, "normalized": false},
                     {"id": 6, "content": "ok", "special": false, "single_word": true, "normalized": true}],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
    "pre_tokenizer": {"type": "Whitespace"},
    "model": {"type": "BPE", "vocab": {"f": 0, "i": 1, "fi": 2, "o": 3, "k": 4}, "merges": ["f i"]}})");
  // NFKC maps the ligature U+FB01 to "fi"; Lowercase maps "FI" to "fi".
  EXPECT_EQ(t->encode("\ufb01"), (std::vector<int32_t>{2}));
  EXPECT_EQ(t->encode("FI"), (std::vector<int32_t>{2}));
  // lstrip/rstrip: the token swallows the spaces around it.
  EXPECT_EQ(t->encode("fi  <x>  fi"), (std::vector<int32_t>{2, 5, 2}));
  // single_word: "ok" alone is the added token; inside "okfi" it is not.
  EXPECT_EQ(t->encode("fi ok"), (std::vector<int32_t>{2, 6}));
  EXPECT_EQ(t->encode("OK"), (std::vector<int32_t>{6}));  // normalized token: matched after Lowercase
  EXPECT_EQ(t->encode("okfi"), (std::vector<int32_t>{3, 4, 2}));
  // No decoder: HF joins tokens with spaces.
  EXPECT_EQ(t->decode({2, 3}), "fi o");
}

TEST(TokenizerPipeline, MetaspaceAndDigits) {
  auto t = from_json_text(R"({
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true},
        {"type": "Digits", "individual_digits": true}]},
    "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first"},
    "model": {"type": "BPE", "vocab": {"\u2581": 0, "a": 1, "1": 2, "2": 3, "\u2581a": 4, "\u25811": 5},
              "merges": ["\u2581 a"]}})");
  // "a a12" -> "▁a", "▁a", "1", "2" (Metaspace splits before ▁; Digits isolates digits).
  EXPECT_EQ(t->encode("a a12"), (std::vector<int32_t>{4, 4, 2, 3}));
  EXPECT_EQ(t->decode({4, 4, 2, 3}), "a a12");
}

TEST(TokenizerPipeline, MergesInBothEncodingsGiveTheSameIds) {
  auto a = from_json_text(R"({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
     "decoder": {"type": "ByteLevel"},
     "model": {"type": "BPE", "vocab": {"\u0120": 0, "t": 1, "h": 2, "\u0120t": 3, "\u0120th": 4, "e": 5, "\u0120the": 6},
               "merges": ["\u0120 t", "\u0120t h", "\u0120th e"]}})");
  auto b = from_json_text(R"({"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false},
     "decoder": {"type": "ByteLevel"},
     "model": {"type": "BPE", "vocab": {"\u0120": 0, "t": 1, "h": 2, "\u0120t": 3, "\u0120th": 4, "e": 5, "\u0120the": 6},
               "merges": [["\u0120", "t"], ["\u0120t", "h"], ["\u0120th", "e"]]}})");
  EXPECT_EQ(a->encode(" the the"), (std::vector<int32_t>{6, 6}));
  EXPECT_EQ(b->encode(" the the"), (std::vector<int32_t>{6, 6}));
  EXPECT_EQ(a->decode({6, 6}), " the the");
}

// ---- malformed input: one-line errors naming the file -------------------------------------

TEST(TokenizerErrors, MalformedTokenizerJson) {
  auto check = [](const std::string& name, const std::string& content, const std::string& what) {
    std::string path = temp_file(name, content);
    std::string msg = load_error(path);
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
    EXPECT_EQ(one_line(msg), msg) << "not one line: " << msg;
  };
  check("invalid.json", "{\"model\": {\"type\": \"BPE\",", "invalid JSON");
  check("unknown_model.json", R"({"model": {"type": "Unigram", "vocab": []}})", "unknown or unsupported model type 'Unigram'");
  check("missing_merge_token.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "ab": 1}, "merges": ["a b"]}})",
        "token 'b' is not in the vocabulary");
  check("bad_regex.json",
        R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(?<=\\p{L}+)x("}, "behavior": "Isolated"},
            "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})",
        "invalid regex");
  check("bad_merge.json", R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [42]}})", "merge 0");
  check("bad_pre.json", R"({"pre_tokenizer": {"type": "Nope"}, "model": {"type": "BPE", "vocab": {}, "merges": []}})",
        "unsupported pre_tokenizer type 'Nope'");
  EXPECT_EQ(load_error(temp_file("garbage.model", "not a protobuf")).rfind(testing::TempDir(), 0), 0u);
  EXPECT_NE(load_error("/nonexistent/tok").find("no such file"), std::string::npos);
}

TEST(TokenizerErrors, CliPrintsOneLineError) {
  std::string path = temp_file("cli_bad.json", R"({"model": {"type": "WordLevel"}})");
  std::string cmd = std::string(MOEFORGE_BIN) + " tokenize " + path + " --text hi 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int rc = pclose(p);
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  EXPECT_EQ(out, "error: " + path + ": unknown or unsupported model type 'WordLevel' (supported: BPE)\n");
}

// ---- chat formats --------------------------------------------------------------------------

TEST(TokenizerChat, ChatMLWithQwenDefaultSystem) {
  ChatTemplate t = detect_chat_template(
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou "
      "are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
      "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' "
      "}}{% endif %}",
      "");
  ASSERT_EQ(t.format, ChatFormat::chatml);
  EXPECT_EQ(render_chat(t, {{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(render_chat(t, {{"system", "S"}, {"user", "Hi"}}, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  EXPECT_THROW(render_chat(ChatTemplate{}, {{"user", "x"}}, true), Error);
}

// ---- loading paths and the CLI ---------------------------------------------------------

TEST(TokenizerLoad, FilePathsAndDirectories) {
  auto by_file = Tokenizer::load(kData + "/gpt2/vocab.json");
  EXPECT_EQ(by_file->kind(), "gpt2-vocab-merges");
  EXPECT_EQ(by_file->encode(" Hello world"), gpt2().encode(" Hello world"));
  auto spm_dir = Tokenizer::load(kData + "/llama2-spm");
  EXPECT_EQ(spm_dir->kind(), "sentencepiece");
  std::string empty = testing::TempDir() + "/mf_tok_empty";
  make_dirs(empty);
  EXPECT_NE(load_error(empty).find("no tokenizer.json, vocab.json + merges.txt or tokenizer.model"), std::string::npos);
}

TEST(TokenizerLoad, CliTokenizeMatchesVectors) {
  // "Hello world" is one of the vector strings: the CLI (and, for SPM, the dlopen()ed
  // libsentencepiece shim) must print the reference ids.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"llama-spm", kData + "/llama2-spm/tokenizer.model"}, {"llama-bpe", kData + "/llama3"}, {"gpt-2", kData + "/gpt2"}};
  for (const auto& [vec, path] : cases) {
    Vectors v = read_vectors(vec);
    auto it = std::find(v.inputs.begin(), v.inputs.end(), "Hello world");
    ASSERT_NE(it, v.inputs.end());
    const auto& want = v.ids[size_t(it - v.inputs.begin())];
    std::string cmd = std::string(MOEFORGE_BIN) + " tokenize " + path + " --text 'Hello world' --ids-only 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[512];
    while (fgets(buf, sizeof buf, p)) out += buf;
    EXPECT_EQ(WEXITSTATUS(pclose(p)), 0) << out;
    EXPECT_EQ(" " + out, ids_str(want) + "\n") << vec;
  }
}
