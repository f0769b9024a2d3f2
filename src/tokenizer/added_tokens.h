// Added tokens (tokenizer.json "added_tokens"): split out of the text before the normaliser
// and pre-tokenizer see it, as HF tokenizers' AddedVocabulary does: leftmost-longest match,
// single_word / lstrip / rstrip, normalized tokens matched on the normalised text.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mf {

class Normalizer;

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = false;
};

// A piece of input: raw text (id < 0) or a matched added token.
struct Segment {
  std::string text;
  int32_t id = -1;
  bool at_start = false;  // starts at offset 0 of the input
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // `normalizer` (may be null) normalises the content of tokens with normalized = true.
  void init(std::vector<AddedToken> tokens, const Normalizer* normalizer);

  // Splits every raw segment of `segs` on the tokens of one kind (normalized or not).
  void split(std::vector<Segment>& segs, bool normalized_kind) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* by_id(int32_t id) const;
  const AddedToken* by_content(const std::string& content) const;
  bool has_normalized() const { return tries_[1].nodes.size() > 1; }

 private:
  struct Trie {
    struct Node {
      std::map<unsigned char, int32_t> next;
      int32_t token = -1;  // index into tokens_
    };
    std::vector<Node> nodes;
    bool first_byte[256] = {};
    void add(const std::string& s, int32_t token);
  };
  void split_one(const Segment& seg, const Trie& trie, std::vector<Segment>& out) const;

  std::vector<AddedToken> tokens_;
  std::map<int32_t, size_t> by_id_;
  std::map<std::string, size_t> by_content_;
  Trie tries_[2];  // [0]: normalized = false (raw text), [1]: normalized = true
};

}  // namespace mf
