// Calibration data for `moeforge profile`: JSONL documents, tokenized into one sample each,
// and length-sorted batches of samples.
//
// A line is {"text": ...} (loss on every next-token target) or an SFT pair
// {"prompt": ..., "response": ...} (loss on the response tokens only: the prompt is encoded
// with the tokenizer's special tokens (BOS), the response without, followed by EOS). Other keys
// are ignored except the domain field. Errors are one line: "<file>:<line>: <what>".
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace mf {

class Tokenizer;

struct CalibrationDoc {
  std::string text;      // text documents; SFT: the prompt
  std::string response;  // SFT only
  bool sft = false;
  bool has_domain = false;
  std::string domain;    // value of the domain field (numbers/bools as their JSON text)
  int64_t line = 0;      // 1-based line in the file
};

// `domain_field`: the key holding the domain label ("" = read key "domain" when present).
// `required_domain`: every line must have the field (the user named it). Blank lines are
// skipped; a file without documents is an error.
std::vector<CalibrationDoc> read_calibration_jsonl(const std::string& path, const std::string& domain_field,
                                                   bool required_domain);

struct Sample {
  std::vector<int64_t> ids;
  // Targets ids[p] for loss_begin <= p < ids.size() are scored (predicted from position p-1).
  int64_t loss_begin = 1;
  int domain = 0;
  int64_t index = 0;  // document index
  int64_t loss_tokens() const { return std::max<int64_t>(0, static_cast<int64_t>(ids.size()) - loss_begin); }
};

// Tokenizes every document (all cores) and truncates it to seq_len tokens.
std::vector<Sample> tokenize_calibration(const std::vector<CalibrationDoc>& docs, const Tokenizer& tok,
                                         int64_t seq_len);

// Groups sample indices (only those with loss tokens) into batches of similar length: sorted
// by length (longest first, ties by index), a batch grows while batch * longest <= batch_tokens
// (a longer sample gets a batch of its own).
std::vector<std::vector<int64_t>> make_length_batches(const std::vector<Sample>& samples, int64_t batch_tokens);

// A padded batch: ids [B, T] int64 (right padding with 0), mask [B, T] int64 (undefined when no
// padding), and per-position loss weights [B, T] float32: 1/n_s on the n_s scored targets of
// sample s, else 0 — so Σ weight·CE is Σ_s ℓ_s with ℓ_s the sample's mean CE.
struct PaddedBatch {
  at::Tensor ids, mask, weights;
  int64_t tokens = 0;  // real tokens
};
PaddedBatch pad_batch(const std::vector<Sample>& samples, const std::vector<int64_t>& which);

}  // namespace mf
