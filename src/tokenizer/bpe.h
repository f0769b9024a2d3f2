// The BPE model of HF tokenizers (models/bpe/model.rs): vocabulary, ranked merges, and the
// per-word merge loop (lowest rank first, then leftmost), with ignore_merges, byte_fallback,
// unk/fuse_unk, continuing_subword_prefix / end_of_word_suffix and a word cache.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace mf {

struct BpeOptions {
  bool ignore_merges = false;
  bool byte_fallback = false;
  bool fuse_unk = false;
  std::string unk_token;  // "" = none
  std::string continuing_subword_prefix, end_of_word_suffix;
};

class BpeModel {
 public:
  // merges[i] = (left, right) with rank i. Errors name `origin`: a merge whose tokens (or whose
  // concatenation) are not in the vocabulary, duplicate ids, an unk_token not in the vocabulary.
  BpeModel(std::unordered_map<std::string, int32_t> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           BpeOptions options, const std::string& origin);

  // tokenizer.json "model" object (type BPE). Both merge encodings: "a b" and ["a", "b"].
  static std::unique_ptr<BpeModel> from_json(const nlohmann::json& model, const std::string& origin);

  // Appends the ids of one pre-token.
  void tokenize(const std::string& word, std::vector<int32_t>& out) const;

  int32_t token_to_id(const std::string& token) const;  // -1 if absent
  const std::string* id_to_token(int32_t id) const;     // nullptr if absent
  int64_t size() const { return int64_t(id_to_token_.size()); }
  size_t num_merges() const { return merges_.size(); }

 private:
  void merge_word(const std::string& word, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;  // dense by id ("" for holes)
  std::vector<bool> has_id_;
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  BpeOptions opt_;
  int32_t unk_id_ = -1;
  std::array<int32_t, 256> byte_fallback_id_{};
  // Id of every single code point < 0x10000 that is a token (fast start of the merge loop).
  std::vector<int32_t> char_id_;

  // Word cache, sharded so that encode_batch threads rarely contend.
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  static constexpr int kShards = 64;
  static constexpr size_t kShardCapacity = 4096;
  mutable std::unique_ptr<Shard[]> cache_;
};

}  // namespace mf
