// Byte-level BPE trainer (what `moeforge tokenizer train` runs). Deterministic: the same input
// gives a byte-identical tokenizer.json. Pre-tokenization is the Llama-3 split regex followed by
// the GPT-2 byte map; merges are learned from pre-token counts with incremental pair-count
// updates (only the words that contain the merged pair are touched) and a lazy max-heap.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace mf {

struct BpeTrainerOptions {
  int64_t vocab_size = 8192;  // specials + 256 bytes + merges
  // Ids 0, 1, 2: BOS, EOS, padding (in this order).
  std::string bos_token = "<|begin_of_text|>";
  std::string eos_token = "<|end_of_text|>";
  std::string pad_token = "<|pad|>";
  int64_t min_frequency = 2;  // stop when the best pair occurs fewer times
  int threads = 0;            // counting threads; 0 = all cores
  bool progress = true;
};

class BpeTrainer {
 public:
  explicit BpeTrainer(BpeTrainerOptions options);

  // Counts the pre-tokens of `text` (may be called repeatedly).
  void add_text(const std::string& text);
  // Reads and counts files (in parallel chunks). Errors name the file.
  void add_files(const std::vector<std::string>& paths);
  // Learns the merges. Call once, after adding all text.
  void train();

  // HF tokenizer.json (BPE, Split + ByteLevel, TemplateProcessing with BOS, ByteLevel decoder)
  // and a matching tokenizer_config.json.
  nlohmann::ordered_json tokenizer_json() const;
  nlohmann::ordered_json tokenizer_config_json() const;
  // Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `dir`.
  void save(const std::string& dir) const;

  // The trainer's own encoding of a text made only of words it was trained on: each
  // pre-token's final merged symbols (no BOS). Error for an unseen pre-token.
  std::vector<int32_t> encode_training_text(const std::string& text) const;

  int64_t num_merges() const { return int64_t(merges_.size()); }
  int64_t num_words() const { return int64_t(words_.size()); }
  int64_t bytes_seen() const { return bytes_; }

 private:
  void count_chunk(const std::string& text, size_t begin, size_t end, std::unordered_map<std::string, int64_t>& counts) const;

  BpeTrainerOptions opt_;
  std::unordered_map<std::string, int64_t> counts_;  // pre-token bytes -> occurrences
  int64_t bytes_ = 0;
  bool trained_ = false;

  // After train():
  std::vector<std::string> tokens_;  // id -> token string (byte-mapped)
  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::vector<std::string> word_text_;          // sorted pre-tokens
  std::vector<std::vector<int32_t>> words_;     // their final symbols
  std::unordered_map<std::string, int32_t> word_index_;
};

}  // namespace mf
