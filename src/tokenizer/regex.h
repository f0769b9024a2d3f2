// PCRE2 (UTF + UCP, JIT-compiled) regular expressions for pre-tokenizers and normalizers.
// PCRE2 rather than std::regex / RE2: the Llama-3 and Qwen2 split patterns need \p{L}, \p{N}
// and the negative look-ahead \s+(?!\S). Onig (what HF tokenizers uses) and PCRE2 agree on
// every construct those patterns use.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mf {

class Regex {
 public:
  // literal: match `pattern` as plain text. Throws mf::Error("invalid regex '<p>': <why> at
  // offset N") when the pattern does not compile (callers add the file name).
  explicit Regex(const std::string& pattern, bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-empty, non-overlapping matches [begin, end) in `text` (valid UTF-8), left to right.
  void find_all(const std::string& text, std::vector<std::pair<size_t, size_t>>& out) const;
  // Replaces every match by `with`.
  std::string replace_all(const std::string& text, const std::string& with) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8
  bool jit_ = false;
};

}  // namespace mf
