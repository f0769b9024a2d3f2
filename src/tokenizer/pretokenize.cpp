#include "tokenizer/pretokenize.h"

#include <algorithm>
#include <utility>

#include "tokenizer/json_fields.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/str.h"

namespace mf {

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace {

using nlohmann::json;

enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

Behavior parse_behavior(const json& j, const std::string& origin, const std::string& what) {
  if (!j.is_string()) fail_file(origin, what + ": 'behavior' must be a string");
  const std::string b = j.get<std::string>();
  if (b == "Removed") return Behavior::removed;
  if (b == "Isolated") return Behavior::isolated;
  if (b == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (b == "MergedWithNext") return Behavior::merged_with_next;
  if (b == "Contiguous") return Behavior::contiguous;
  fail_file(origin, cat(what, ": unknown behavior '", b, "'"));
}

struct Span {
  size_t b, e;
  bool is_match;
};

// HF SplitDelimiterBehavior over the matches of `re` in one piece (normalizer.rs `split`).
void split_piece(const Piece& piece, const Regex& re, Behavior behavior, bool invert, std::vector<Piece>& out) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  const std::string& s = piece.text;
  re.find_all(s, matches);
  std::vector<Span> spans;
  spans.reserve(matches.size() * 2 + 1);
  size_t last = 0;
  for (auto [b, e] : matches) {
    if (b > last) spans.push_back({last, b, invert});
    spans.push_back({b, e, !invert});
    last = e;
  }
  if (last < s.size()) spans.push_back({last, s.size(), invert});

  std::vector<std::pair<size_t, size_t>> parts;
  parts.reserve(spans.size());
  switch (behavior) {
    case Behavior::removed:
      for (const auto& sp : spans)
        if (!sp.is_match) parts.emplace_back(sp.b, sp.e);
      break;
    case Behavior::isolated:
      for (const auto& sp : spans) parts.emplace_back(sp.b, sp.e);
      break;
    case Behavior::merged_with_previous: {
      bool prev_match = false;
      for (const auto& sp : spans) {
        if (sp.is_match && !prev_match && !parts.empty()) parts.back().second = sp.e;
        else parts.emplace_back(sp.b, sp.e);
        prev_match = sp.is_match;
      }
      break;
    }
    case Behavior::merged_with_next: {
      bool prev_match = false;
      for (size_t k = spans.size(); k-- > 0;) {
        const auto& sp = spans[k];
        if (sp.is_match && !prev_match && !parts.empty()) parts.back().first = sp.b;
        else parts.emplace_back(sp.b, sp.e);
        prev_match = sp.is_match;
      }
      std::reverse(parts.begin(), parts.end());
      break;
    }
    case Behavior::contiguous: {
      bool prev_match = false;
      for (const auto& sp : spans) {
        if (!parts.empty() && sp.is_match == prev_match) parts.back().second = sp.e;
        else parts.emplace_back(sp.b, sp.e);
        prev_match = sp.is_match;
      }
      break;
    }
  }
  for (auto [b, e] : parts)
    if (e > b) out.push_back({s.substr(b, e - b), piece.at_start && b == 0});
}

void split_all(std::vector<Piece>& pieces, const Regex& re, Behavior behavior, bool invert) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 4);
  for (const auto& p : pieces) split_piece(p, re, behavior, invert, out);
  pieces.swap(out);
}

class SplitPre : public PreTokenizer {
 public:
  SplitPre(std::unique_ptr<Regex> re, Behavior behavior, bool invert)
      : re_(std::move(re)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override { split_all(pieces, *re_, behavior_, invert_); }

 private:
  std::unique_ptr<Regex> re_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelPre : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) re_ = std::make_unique<Regex>(kGpt2Pattern);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_)
      for (auto& p : pieces)
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(p.text.begin(), ' ');
    if (re_) split_all(pieces, *re_, Behavior::isolated, false);
    for (auto& p : pieces) p.text = unicode::bytes_to_pieces(p.text);
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> re_;
};

class MetaspacePre : public PreTokenizer {
 public:
  enum Scheme { always, first, never };
  MetaspacePre(std::string replacement, Scheme scheme, bool split)
      : rep_(std::move(replacement)), scheme_(scheme), split_(split), rep_re_(rep_, true) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (auto& p : pieces) {
      std::string s;
      s.reserve(p.text.size() + 8);
      for (char c : p.text) {
        if (c == ' ') s += rep_;
        else s += c;
      }
      bool starts = s.compare(0, rep_.size(), rep_) == 0;
      if (!starts && (scheme_ == always || (scheme_ == first && p.at_start))) s = rep_ + s;
      p.text.swap(s);
    }
    if (split_) split_all(pieces, rep_re_, Behavior::merged_with_next, false);
  }

 private:
  std::string rep_;
  Scheme scheme_;
  bool split_;
  Regex rep_re_;
};

class SequencePre : public PreTokenizer {
 public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> items) : items_(std::move(items)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : items_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> items_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex) {
  return std::make_unique<ByteLevelPre>(add_prefix_space, use_regex);
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& origin) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail_file(origin, "pre_tokenizer must be an object with a 'type'");
  const std::string type = j["type"].get<std::string>();
  const std::string what = "pre_tokenizer " + type;
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPre>(tokjson::get_bool(j, "add_prefix_space", true, origin), tokjson::get_bool(j, "use_regex", true, origin));
  if (type == "Split") {
    if (!j.contains("pattern")) fail_file(origin, what + ": missing 'pattern'");
    if (!j.contains("behavior")) fail_file(origin, what + ": missing 'behavior'");
    return std::make_unique<SplitPre>(make_pattern(j["pattern"], origin, what),
                                      parse_behavior(j["behavior"], origin, what), tokjson::get_bool(j, "invert", false, origin));
  }
  if (type == "Metaspace") {
    std::string rep = "\xE2\x96\x81";  // U+2581
    if (j.contains("replacement") && j["replacement"].is_string()) rep = j["replacement"].get<std::string>();
    MetaspacePre::Scheme scheme = MetaspacePre::always;
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string()) {
      std::string s = j["prepend_scheme"].get<std::string>();
      if (s == "first") scheme = MetaspacePre::first;
      else if (s == "never") scheme = MetaspacePre::never;
      else if (s != "always") fail_file(origin, cat(what, ": unknown prepend_scheme '", s, "'"));
    } else if (j.contains("add_prefix_space") && j["add_prefix_space"].is_boolean()) {
      scheme = j["add_prefix_space"].get<bool>() ? MetaspacePre::always : MetaspacePre::never;
    }
    return std::make_unique<MetaspacePre>(rep, scheme, tokjson::get_bool(j, "split", true, origin));
  }
  if (type == "Digits") {
    // char::is_numeric = Unicode N*; individual digits are isolated, otherwise runs are kept.
    bool individual = tokjson::get_bool(j, "individual_digits", false, origin);
    return std::make_unique<SplitPre>(std::make_unique<Regex>(R"(\p{N})"),
                                      individual ? Behavior::isolated : Behavior::contiguous, false);
  }
  if (type == "Whitespace")  // HF: \w+|[^\w\s]+ kept, the rest removed (\w as Onig: L, M, N, Pc)
    return std::make_unique<SplitPre>(
        std::make_unique<Regex>(R"([\p{L}\p{M}\p{N}\p{Pc}]+|[^\p{L}\p{M}\p{N}\p{Pc}\s]+)"), Behavior::removed, true);
  if (type == "WhitespaceSplit")
    return std::make_unique<SplitPre>(std::make_unique<Regex>(R"(\s+)"), Behavior::removed, false);
  if (type == "Punctuation") {
    Behavior b = j.contains("behavior") ? parse_behavior(j["behavior"], origin, what) : Behavior::isolated;
    return std::make_unique<SplitPre>(std::make_unique<Regex>(R"([\p{P}!-/:-@\[-`{-~])"), b, false);
  }
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      fail_file(origin, "pre_tokenizer Sequence: missing array 'pretokenizers'");
    std::vector<std::unique_ptr<PreTokenizer>> items;
    for (const auto& item : j["pretokenizers"])
      if (auto p = make_pre_tokenizer(item, origin)) items.push_back(std::move(p));
    return std::make_unique<SequencePre>(std::move(items));
  }
  fail_file(origin, cat("unsupported pre_tokenizer type '", type, "'"));
}

}  // namespace mf
