// HF tokenizers normalizers: NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Prepend,
// Replace, Sequence. Offsets are not tracked (moeforge needs ids, not alignments).
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace mf {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(const std::string& text) const = 0;
};

// Builds a normalizer from its tokenizer.json object; nullptr for JSON null.
// Errors: mf::Error "<origin>: ...".
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& origin);

class Regex;
// The {"String": s} (literal) / {"Regex": r} pattern object of Replace and Split.
std::unique_ptr<Regex> make_pattern(const nlohmann::json& j, const std::string& origin, const std::string& what);

}  // namespace mf
