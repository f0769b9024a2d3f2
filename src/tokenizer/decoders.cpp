#include "tokenizer/decoders.h"

#include "tokenizer/json_fields.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/str.h"

namespace mf {
namespace {

using nlohmann::json;

class ByteLevelDecoder : public Decoder {
 public:
  // Every char back to its byte; a token with a char outside the map keeps its raw bytes.
  // The joined bytes are decoded as UTF-8 with replacement (from_utf8_lossy).
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const auto& t : tokens) {
      std::string tb;
      tb.reserve(t.size());
      bool ok = true;
      size_t i = 0;
      while (i < t.size()) {
        int b = unicode::piece_code_point_to_byte(unicode::next_code_point(t, i));
        if (b < 0) {
          ok = false;
          break;
        }
        tb += char(b);
      }
      bytes += ok ? tb : t;
    }
    tokens.assign(1, unicode::sanitize_utf8(bytes));
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string rep, bool strip_first) : rep_(std::move(rep)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t k = 0; k < t.size();) {
        if (t.compare(k, rep_.size(), rep_) == 0) {
          // HF drops every replacement char of the first token when a prefix was prepended.
          if (!(i == 0 && strip_first_)) out += ' ';
          k += rep_.size();
        } else {
          out += t[k++];
        }
      }
      tokens[i].swap(out);
    }
  }

 private:
  std::string rep_;
  bool strip_first_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::unique_ptr<Regex> re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = re_->replace_all(t, content_);
  }

 private:
  std::unique_ptr<Regex> re_;
  std::string content_;
};

class ByteFallbackDecoder : public Decoder {
 public:
  // Runs of <0xXX> tokens become their bytes; invalid UTF-8 becomes one U+FFFD per byte.
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t nbytes = 0;
    auto flush = [&]() {
      if (nbytes == 0) return;
      if (unicode::is_valid_utf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < nbytes; ++k) out.push_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      nbytes = 0;
    };
    for (auto& t : tokens) {
      int b = parse_byte(t);
      if (b >= 0) {
        bytes += char(b);
        ++nbytes;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens.swap(out);
  }

 private:
  static int parse_byte(const std::string& t) {
    if (t.size() != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>') return -1;
    auto hex = [](char c) {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    int h = hex(t[3]), l = hex(t[4]);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(uint32_t content, size_t start, size_t stop) : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<uint32_t> cps;
      for (size_t i = 0; i < t.size();) cps.push_back(unicode::next_code_point(t, i));
      size_t b = 0, e = cps.size();
      for (size_t k = 0; k < start_ && b < e && cps[b] == content_; ++k) ++b;
      for (size_t k = 0; k < stop_ && e > b && cps[e - 1] == content_; ++k) --e;
      std::string out;
      for (size_t k = b; k < e; ++k) unicode::append_utf8(out, cps[k]);
      t.swap(out);
    }
  }

 private:
  uint32_t content_;
  size_t start_, stop_;
};

class BpeSuffixDecoder : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (size_t k = 0; k < t.size();) {
        if (!suffix_.empty() && t.compare(k, suffix_.size(), suffix_) == 0) {
          if (i + 1 != tokens.size()) out += ' ';
          k += suffix_.size();
        } else {
          out += t[k++];
        }
      }
      tokens[i].swap(out);
    }
  }

 private:
  std::string suffix_;
};

class DecoderSequence : public Decoder {
 public:
  explicit DecoderSequence(std::vector<std::unique_ptr<Decoder>> items) : items_(std::move(items)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : items_) d->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> items_;
};

size_t get_count(const json& j, const char* key, const std::string& origin) {
  if (!j.contains(key) || j[key].is_null()) return 0;
  if (!j[key].is_number_unsigned() && !j[key].is_number_integer()) fail_file(origin, cat("decoder Strip: '", key, "' must be an integer"));
  return j[key].get<size_t>();
}

}  // namespace

std::unique_ptr<Decoder> make_byte_level_decoder() { return std::make_unique<ByteLevelDecoder>(); }

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& origin) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail_file(origin, "decoder must be an object with a 'type'");
  const std::string type = j["type"].get<std::string>();
  const std::string what = "decoder " + type;
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    std::string rep = tokjson::get_string(j, "replacement", "\xE2\x96\x81", origin);
    bool strip_first = true;
    if (j.contains("prepend_scheme") && j["prepend_scheme"].is_string())
      strip_first = j["prepend_scheme"].get<std::string>() != "never";
    else
      strip_first = tokjson::get_bool(j, "add_prefix_space", true, origin);
    return std::make_unique<MetaspaceDecoder>(rep, strip_first);
  }
  if (type == "Replace") {
    if (!j.contains("pattern")) fail_file(origin, what + ": missing 'pattern'");
    return std::make_unique<ReplaceDecoder>(make_pattern(j["pattern"], origin, what),
                                            tokjson::get_string(j, "content", "", origin));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    std::string c = tokjson::get_string(j, "content", " ", origin);
    size_t i = 0;
    uint32_t cp = c.empty() ? ' ' : unicode::next_code_point(c, i);
    return std::make_unique<StripDecoder>(cp, get_count(j, "start", origin), get_count(j, "stop", origin));
  }
  if (type == "BPEDecoder") return std::make_unique<BpeSuffixDecoder>(tokjson::get_string(j, "suffix", "</w>", origin));
  if (type == "Sequence") {
    if (!j.contains("decoders") || !j["decoders"].is_array()) fail_file(origin, "decoder Sequence: missing array 'decoders'");
    std::vector<std::unique_ptr<Decoder>> items;
    for (const auto& item : j["decoders"])
      if (auto d = make_decoder(item, origin)) items.push_back(std::move(d));
    return std::make_unique<DecoderSequence>(std::move(items));
  }
  fail_file(origin, cat("unsupported decoder type '", type, "'"));
}

}  // namespace mf
