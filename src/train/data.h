// Pretraining data: JSONL documents, token streams packed into fixed-length windows, and a
// shuffled batch iterator whose position can be saved in a checkpoint and restored exactly.
// Tokenization is a function passed in, so this file knows nothing of a particular tokenizer.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace mf {

struct TextDocument {
  std::string text;
  std::string domain;
};

// Reads {"text": ..., "domain": ...} lines (other keys ignored; "domain" optional, default
// "default"; blank lines skipped). Errors are one line: "<path>:<line>: <what>".
std::vector<TextDocument> read_documents_jsonl(const std::string& path);

// Texts -> token ids, one vector per text, special tokens (BOS) included as the tokenizer adds them.
using TokenizeBatchFn = std::function<std::vector<std::vector<int32_t>>(const std::vector<std::string>&)>;
// Adapts a one-text encoder.
TokenizeBatchFn tokenize_each(std::function<std::vector<int32_t>(const std::string&)> encode);

// Concatenates tok(doc_0) EOS tok(doc_1) EOS ...: every document ends with EOS, so the model
// learns where documents stop and never attends across a boundary without seeing one.
// `progress_label` non-empty shows a progress bar (documents).
std::vector<int32_t> build_token_stream(const std::vector<std::string>& texts, const TokenizeBatchFn& tokenize,
                                        int32_t eos_id, const std::string& progress_label = "");

// A token stream cut into windows of seq_len + 1 tokens with stride seq_len: window i is
// stream[i*T, i*T + T + 1), inputs its first T tokens, targets its last T. Consecutive windows
// share one token, so every token after the first is a target exactly once; the tail that
// does not fill a window is dropped.
class PackedSequences {
 public:
  PackedSequences() = default;
  PackedSequences(std::vector<int32_t> stream, int64_t seq_len);
  // Independent rows instead of a packed stream: `rows` holds n * (seq_len + 1) tokens, row i
  // is window i (no shared token). For data that is not packed (one example per sequence).
  static PackedSequences from_rows(std::vector<int32_t> rows, int64_t seq_len);

  int64_t size() const { return num_windows_; }
  int64_t seq_len() const { return seq_len_; }
  int64_t stream_tokens() const { return static_cast<int64_t>(stream_.size()); }
  int32_t max_token() const;
  // Windows `indices` as an int64 tensor [indices.size(), seq_len + 1].
  at::Tensor windows(const std::vector<int64_t>& indices) const;

 private:
  std::vector<int32_t> stream_;
  int64_t seq_len_ = 0, num_windows_ = 0;
  int64_t stride_ = 0;  // tokens between window starts: seq_len (packed) or seq_len + 1 (rows)
};

// Where a ShuffledBatches iterator stands: the epoch and the next index into its permutation.
struct LoaderPosition {
  int64_t epoch = 0;
  int64_t offset = 0;
};

// Batches of `batch_size` windows in an order shuffled per epoch from (seed, epoch) alone, so
// a restored position reproduces the remaining batches exactly. An epoch's last partial batch
// is dropped (every batch has the same number of tokens, so mean losses average exactly).
class ShuffledBatches {
 public:
  ShuffledBatches(const PackedSequences& data, int64_t batch_size, uint64_t seed);
  at::Tensor next();  // [batch_size, seq_len + 1] int64
  // The window indices of the next batch (what next() would return the windows of), for a
  // caller that takes only part of each batch (a data-parallel rank's shard).
  std::vector<int64_t> next_indices();
  LoaderPosition position() const { return pos_; }
  void restore(const LoaderPosition& pos);

 private:
  void make_permutation();
  const PackedSequences& data_;
  int64_t batch_size_;
  uint64_t seed_;
  LoaderPosition pos_;
  std::vector<int64_t> perm_;
};

}  // namespace mf
