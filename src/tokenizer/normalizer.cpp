#include "tokenizer/normalizer.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/locid.h>

#include <vector>

#include "tokenizer/json_fields.h"
#include "tokenizer/regex.h"
#include "util/error.h"
#include "util/str.h"

namespace mf {
namespace {

using nlohmann::json;

std::string to_utf8(const icu::UnicodeString& u) {
  std::string out;
  u.toUTF8String(out);
  return out;
}

class UnicodeNormalizer : public Normalizer {
 public:
  enum Form { nfc, nfd, nfkc, nfkd };
  UnicodeNormalizer(Form form, const std::string& origin) {
    UErrorCode status = U_ZERO_ERROR;
    switch (form) {
      case nfc: impl_ = icu::Normalizer2::getNFCInstance(status); break;
      case nfd: impl_ = icu::Normalizer2::getNFDInstance(status); break;
      case nfkc: impl_ = icu::Normalizer2::getNFKCInstance(status); break;
      case nfkd: impl_ = icu::Normalizer2::getNFKDInstance(status); break;
    }
    if (U_FAILURE(status) || !impl_) fail_file(origin, "ICU normalizer data unavailable");
  }
  std::string normalize(const std::string& text) const override {
    UErrorCode status = U_ZERO_ERROR;
    auto u = icu::UnicodeString::fromUTF8(text);
    if (impl_->isNormalized(u, status) && U_SUCCESS(status)) return text;
    status = U_ZERO_ERROR;
    auto n = impl_->normalize(u, status);
    return U_SUCCESS(status) ? to_utf8(n) : text;
  }

 private:
  const icu::Normalizer2* impl_ = nullptr;
};

class Lowercase : public Normalizer {
 public:
  std::string normalize(const std::string& text) const override {
    auto u = icu::UnicodeString::fromUTF8(text);
    u.toLower(icu::Locale::getRoot());
    return to_utf8(u);
  }
};

class StripAccents : public Normalizer {
 public:
  // Removes non-spacing marks (HF: after NFD, chars with category Mn).
  std::string normalize(const std::string& text) const override {
    auto u = icu::UnicodeString::fromUTF8(text);
    icu::UnicodeString out;
    for (int32_t i = 0; i < u.length();) {
      UChar32 c = u.char32At(i);
      if (u_charType(c) != U_NON_SPACING_MARK) out.append(c);
      i += U16_LENGTH(c);
    }
    return to_utf8(out);
  }
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(const std::string& text) const override {
    auto u = icu::UnicodeString::fromUTF8(text);
    int32_t b = 0, e = u.length();
    if (left_)
      while (b < e && u_isUWhiteSpace(u.char32At(b))) b += U16_LENGTH(u.char32At(b));
    if (right_)
      while (e > b && u_isUWhiteSpace(u.char32At(e - 1))) e -= U16_LENGTH(u.char32At(e - 1));
    return to_utf8(u.tempSubStringBetween(b, e));
  }

 private:
  bool left_, right_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string s) : s_(std::move(s)) {}
  std::string normalize(const std::string& text) const override { return text.empty() ? text : s_ + text; }

 private:
  std::string s_;
};

class Replace : public Normalizer {
 public:
  Replace(std::unique_ptr<Regex> re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  std::string normalize(const std::string& text) const override { return re_->replace_all(text, content_); }

 private:
  std::unique_ptr<Regex> re_;
  std::string content_;
};

class NormalizerSequence : public Normalizer {
 public:
  explicit NormalizerSequence(std::vector<std::unique_ptr<Normalizer>> items) : items_(std::move(items)) {}
  std::string normalize(const std::string& text) const override {
    std::string s = text;
    for (const auto& n : items_) s = n->normalize(s);
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> items_;
};

std::string str_field(const json& j, const char* key, const std::string& origin, const std::string& what) {
  if (!j.contains(key) || !j[key].is_string()) fail_file(origin, cat(what, ": missing string '", key, "'"));
  return j[key].get<std::string>();
}

}  // namespace

// The {"String": s} / {"Regex": r} pattern object shared by Replace and Split.
std::unique_ptr<Regex> make_pattern(const json& j, const std::string& origin, const std::string& what) {
  if (!j.is_object()) fail_file(origin, what + ": 'pattern' must be an object");
  try {
    if (j.contains("String") && j["String"].is_string()) return std::make_unique<Regex>(j["String"].get<std::string>(), true);
    if (j.contains("Regex") && j["Regex"].is_string()) return std::make_unique<Regex>(j["Regex"].get<std::string>(), false);
  } catch (const Error& e) {
    fail_file(origin, cat(what, ": ", e.what()));
  }
  fail_file(origin, what + ": 'pattern' needs a String or Regex");
}

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& origin) {
  if (j.is_null()) return nullptr;
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    fail_file(origin, "normalizer must be an object with a 'type'");
  const std::string type = j["type"].get<std::string>();
  const std::string what = "normalizer " + type;
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(UnicodeNormalizer::nfc, origin);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(UnicodeNormalizer::nfd, origin);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(UnicodeNormalizer::nfkc, origin);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(UnicodeNormalizer::nfkd, origin);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Strip")
    return std::make_unique<Strip>(tokjson::get_bool(j, "strip_left", true, origin), tokjson::get_bool(j, "strip_right", true, origin));
  if (type == "Prepend") return std::make_unique<Prepend>(str_field(j, "prepend", origin, what));
  if (type == "Replace") {
    if (!j.contains("pattern")) fail_file(origin, what + ": missing 'pattern'");
    return std::make_unique<Replace>(make_pattern(j["pattern"], origin, what), str_field(j, "content", origin, what));
  }
  if (type == "Sequence") {
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      fail_file(origin, "normalizer Sequence: missing array 'normalizers'");
    std::vector<std::unique_ptr<Normalizer>> items;
    for (const auto& item : j["normalizers"])
      if (auto n = make_normalizer(item, origin)) items.push_back(std::move(n));
    return std::make_unique<NormalizerSequence>(std::move(items));
  }
  fail_file(origin, cat("unsupported normalizer type '", type, "'"));
}

}  // namespace mf
