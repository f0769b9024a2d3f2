// What the experts of an MoE model do on a data set: per MoE layer, the tokens each expert is
// routed (top-k of the router logits) per domain, and HC-SMoE's "expert-output" representation
// o_j = (1/T) Σ_t E_j(x_t) over *all* tokens (every expert run on every token's FFN input; spec
// merge_and_eval.md §A.4) with the pairwise cosine similarities of the o_j — how alike the
// experts' functions are, and so whether merging them is a real choice. Model cards and
// `moeforge experts` report it.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "util/json.h"

namespace mf {

class Model;
class Tokenizer;

struct ExpertStatsOptions {
  std::vector<std::string> data_files;  // JSONL documents ({"text", "domain"})
  int64_t seq_len = 512;                // documents are truncated to this many tokens
  int64_t max_tokens = 65536;           // stop after this many tokens (documents in file order)
};

struct LayerExpertStats {
  int64_t layer = 0;
  std::map<std::string, std::vector<int64_t>> tokens_per_expert;  // domain -> routed tokens per expert
  at::Tensor mean_output;  // [E, H] fp32: o_j
  at::Tensor cosine;       // [E, E] fp64: cos(o_i, o_j)
  double mean_pairwise_cosine = 0.0;  // mean over i < j
};

struct ExpertStats {
  int64_t tokens = 0;
  std::vector<LayerExpertStats> layers;  // MoE layers in order
  double mean_pairwise_cosine = 0.0;     // mean over layers
};

ExpertStats expert_stats(Model& model, const Tokenizer& tok, const ExpertStatsOptions& options);

// Counts, cosine matrices (rounded to 4 decimals) and the means; not the o_j vectors.
json expert_stats_json(const ExpertStats& s);

}  // namespace mf
