// The scoring engine: turns token requests into (sum logprob, is_greedy) through an abstract model,
// with lm-eval's truncation semantics and our speed-ups:
//   - requests sorted longest first (lm-eval's Collator order) and packed into batches by a token budget;
//   - requests sharing the same context tokens form one group: the context runs once and every
//     continuation is scored on top of it (one shared KV prefix); single-token continuations then cost
//     no extra tokens at all (lm-eval's one-token logits reuse is the special case).
// Results are bit-for-bit those of independent scoring as long as the model's shared path is exact.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/requests.h"

namespace mf::eval {

struct TokenScore {
  double logprob = 0.0;  // sum over continuation tokens of log p(token | prefix)
  bool greedy = true;    // every continuation token was the argmax
};

// One independent row: logits at positions input.size() - targets.size() .. input.size() - 1 predict
// targets (the model scores log p(targets[i] | input[0 .. pos])).
struct ScoreRow {
  std::vector<int32_t> input;
  std::vector<int32_t> targets;
};

// Several continuations of one prefix: continuation k is scored as if the row were
// prefix + continuation[k][:-1] with targets continuation[k]. prefix is never empty.
// Two exact ways to run it: (a) the prefix once into a KV cache, then all suffixes c[:-1] as a
// batch on top of it; (b) one packed row per group, prefix followed by every c[:-1], with a
// tree-shaped attention mask (each continuation sees the prefix and its own earlier tokens) and
// positions continuing after the prefix. The engine budgets groups by (b)'s row length.
struct SharedGroup {
  std::vector<int32_t> prefix;
  std::vector<std::vector<int32_t>> continuations;
};

class LoglikelihoodModel {
 public:
  virtual ~LoglikelihoodModel() = default;
  // Longest input the model accepts (lm-eval max_length).
  virtual int64_t max_length() const = 0;
  virtual std::vector<TokenScore> score(const std::vector<ScoreRow>& rows) = 0;
  // Shared-context scoring; one result vector per group, one entry per continuation. The default
  // expands each group into independent rows (exact, no speed-up).
  virtual std::vector<std::vector<TokenScore>> score_shared(const std::vector<SharedGroup>& groups);
};

struct EngineOptions {
  // Padded tokens per batch: rows x longest row, or groups x longest packed group (context +
  // sum of continuation inputs); one row or group always fits.
  int64_t batch_tokens = 4096;
  int64_t max_batch_rows = 256;
  bool share_context = true;    // false: every request is its own row (the lm-eval way)
  bool progress = true;
  std::string progress_label = "requests";
  // Data parallelism (src/dist): the batches are formed exactly as in one process and batch j is
  // scored by rank j % world_size (so every score is bit-identical to a one-process run); then
  // `all_gather` (every rank's byte string, by rank) gives every rank all the scores.
  int64_t rank = 0, world_size = 1;
  std::function<std::vector<std::string>(const std::string& mine)> all_gather;
  // Expert parallelism: every forward pass exchanges routed tokens with the other ranks, so every
  // rank must run as many passes as the busiest one; a rank with fewer batches calls this (one
  // pass over a dummy token) until it has.
  std::function<void()> idle_forward;
};

struct EngineStats {
  int64_t requests = 0;
  int64_t rows = 0;            // independent rows sent
  int64_t groups = 0;          // shared groups sent
  int64_t batches = 0;
  int64_t input_tokens = 0;    // tokens the model had to process (no padding)
  int64_t padded_tokens = 0;   // batch shape area: rows x longest row, groups x longest packed group
  int64_t truncated = 0;       // requests cut from the left to max_length
};

// lm-eval's input row for one request: (context + continuation)[-(max_length+1):][:-1], targets =
// continuation. Fails when the continuation alone is longer than max_length.
ScoreRow make_row(const TokenRequest& request, int64_t max_length);

std::vector<TokenScore> run_requests(LoglikelihoodModel& model, const std::vector<TokenRequest>& requests,
                                     const EngineOptions& options, EngineStats* stats = nullptr);

}  // namespace mf::eval
