// HF tokenizers pre-tokenizers: ByteLevel (GPT-2 regex built in), Split (regex or string, all
// five delimiter behaviours, invert), Metaspace, Digits, Whitespace, WhitespaceSplit,
// Punctuation, Sequence. Each turns a list of pieces into a finer list of pieces.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mf {

struct Piece {
  std::string text;
  bool at_start = false;  // begins at offset 0 of the original input (Metaspace "first")
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their splits; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// nullptr for JSON null. Errors: mf::Error "<origin>: ...".
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& origin);

// GPT-2's pre-tokenizer regex as HF's ByteLevel uses it.
extern const char* const kGpt2Pattern;
// Llama-3's Split pattern (tokenizer.json of Meta-Llama-3); also what our trainer writes.
extern const char* const kLlama3Pattern;

// The ByteLevel pre-tokenizer as a standalone object (GPT-2 legacy files, the trainer).
std::unique_ptr<PreTokenizer> make_byte_level_pre_tokenizer(bool add_prefix_space, bool use_regex);

}  // namespace mf
