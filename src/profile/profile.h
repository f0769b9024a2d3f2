// `moeforge profile`: calibration statistics of a dense model's FFN layers, written to a
// directory that `moeforge split` reads (format: docs/profile.md).
//
//   DIR/profile.json         what was profiled: model + config sha256, data + sha256, documents,
//                            tokens, "domains": D, domain names/sizes/source, layers, FFN kind,
//                            intermediate size, settings, timings
//   DIR/profile.safetensors  per profiled layer l (F = intermediate size, D = domains):
//                              layers.{l}.importance_raw  F32 [F, D]  Σ_{s in d} I_s
//                              layers.{l}.importance      F32 [F, D]  log1p + per-domain global L2 norm
//                              layers.{l}.act_mean, act_abs_mean, act_pos_frac   F32 [F]
//                              layers.{l}.coactivation    F32 [F, F]  (only with --coactivation)
//   DIR/domains.jsonl        one line per document: {"index", "domain", "tokens", "loss_tokens"}
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "profile/batch_sharding.h"
#include "util/json.h"

namespace mf {

class Model;
class Tokenizer;

struct ProfileOptions {
  std::string data_path;
  std::string out_dir;
  int domains = 0;               // k-means K; 0 = auto (the data's "domain" field if every line has one, else 8)
  std::string domain_field;      // use this field's values as domains
  std::string embeddings_path;   // k-means on these rows instead of the model's own embeddings
  int64_t max_docs = 0;          // 0 = all
  int64_t max_tokens = 0;        // stop adding documents once this many tokens are taken; 0 = all
  int64_t seq_len = 512;
  int64_t batch_tokens = 4096;   // padded tokens per forward/backward batch
  std::string layers;            // python-style "a:b" over 0-based layers; "" = all
  bool coactivation = false;
  uint64_t seed = 42;
  int kmeans_max_iter = 300;
  std::string model_path;        // for the record
  std::string dtype = "float32"; // for the record
  // Data parallel (profile/batch_sharding.h): the embedding and profiling batches are shared out
  // over the ranks and every statistic is summed over them; rank 0 writes. Default: one process.
  BatchSharding sharding;
};

// Runs the whole profile and writes out_dir atomically (on the writing rank only; every rank
// returns the profile.json record, without write and total timings on the other ranks).
json run_profile(Model& model, const Tokenizer& tok, const ProfileOptions& options);

// Python-style half-open range "a:b" ("a:", ":b", ":", "" = all; negative values count from
// the end) over 0-based layers. Throws mf::UsageError on bad syntax or an empty range.
std::vector<int> parse_profile_layers(const std::string& spec, int64_t num_layers);

struct ProfileLayerData {
  int layer = 0;
  at::Tensor importance_raw;  // float32 [F, D]
  at::Tensor importance;      // float32 [F, D]
  at::Tensor act_mean, act_abs_mean, act_pos_frac;  // float32 [F]
  at::Tensor coactivation;    // float32 [F, F]; undefined when not profiled
};

struct ProfileData {
  std::string dir;
  json info;                          // profile.json
  int64_t num_domains = 0;            // D
  std::vector<std::string> domain_names;
  int64_t intermediate_size = 0;      // F
  std::vector<ProfileLayerData> layers;  // in layer order
  std::vector<int32_t> document_domains; // domains.jsonl, by document index

  const ProfileLayerData* find(int layer) const;  // nullptr when the layer was not profiled
  bool has_coactivation() const { return !layers.empty() && layers.front().coactivation.defined(); }
};

// Reads and validates a profile directory (shapes, D against profile.json, finite values).
// Errors: "<file>: <what>".
ProfileData read_profile(const std::string& dir);

}  // namespace mf
