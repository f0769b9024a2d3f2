// The model-dependent half of `moeforge split`: for each selected FFN layer of a dense
// llama / mistral / qwen2 checkpoint, gather the split inputs (gate rows from the checkpoint,
// importance / co-activation from a `moeforge profile` directory, target sizes from part files),
// call split_layer() (or import published `{layer}.part.{N}` files), then write the experts'
// gathered gate/up/down rows and columns as a moeforge MoE checkpoint (docs/format.md, "moeforge
// MoE models") or as a stock Mixtral directory. Command and choices: docs/split.md, "Command".
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "io/checkpoint.h"
#include "model/config.h"
#include "split/split.h"
#include "util/json.h"

namespace mf {

struct BuildMoeOptions {
  SplitOptions split;             // method and its knobs; method may be "" when importing part files
  int top_k = 0;                  // k of top-k (1..N)
  std::string layers;             // python-style "a:b" over 0-based layers ("" = all)
  std::string profile_dir;        // `moeforge profile` output (hemoe, moebert*, moefication-coact)
  std::string partition_dir;      // import `{layer}.part.{N}` files instead of splitting
  std::string sizes_from;         // random-hetero: expert sizes from these part files, per layer
  std::string router;             // linear | mlp | avgk ("" = the method's default)
  std::string gate;               // unit | renorm | prob | ones ("" = the router's default)
  std::string export_format = "moeforge";  // moeforge | mixtral
  std::string export_partition_dir;        // also write `{layer}.part.{N}` files here
  std::string dtype;              // "" keeps every tensor's stored dtype; else bf16 / fp16 / fp32
  bool progress = true;
};

// Python-style half-open 0-based range over `num_layers` layers: "a:b", "a:", ":b", ":" (all),
// negative ends count from the end ("3:-1"), or a single index "5". Empty ranges are errors.
std::vector<int> parse_layer_range(const std::string& spec, int64_t num_layers);

// Router and gate a method gets unless told otherwise (docs/split.md).
struct RouterChoice {
  std::string type;  // linear | mlp | avgk
  std::string gate;  // unit | renorm | prob | ones
};
RouterChoice resolve_router(const BuildMoeOptions& o);

struct LayerSplit {
  int layer = 0;
  Partition partition;
  SplitReport report;
  double seconds = 0;
};

struct SplitPlan {
  std::string method;  // recorded in moe_provenance ("imported" for --partition without --method)
  RouterChoice router;
  std::vector<LayerSplit> layers;
  std::string profile_sha256;
};

// Checks that `cfg` is a dense SwiGLU llama / mistral / qwen2 model; one-line error otherwise.
void check_splittable(const ModelConfig& cfg);

// Validates the options against the model and computes (or imports) every layer's partition.
// Writes nothing except --export-partition files.
SplitPlan plan_split(const Checkpoint& ck, const ModelConfig& cfg, const BuildMoeOptions& o);

// Tensors of the output checkpoint, in model order, and its config.json.
struct MoeCheckpointData {
  json config;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
};
MoeCheckpointData moeforge_checkpoint(const Checkpoint& ck, const ModelConfig& cfg, const SplitPlan& plan,
                                      const BuildMoeOptions& o);
// Stock Mixtral; fails with a one-line reason when the split is not expressible as Mixtral.
MoeCheckpointData mixtral_checkpoint(const Checkpoint& ck, const ModelConfig& cfg, const SplitPlan& plan,
                                     const BuildMoeOptions& o);

// Router weights of one layer (fp32): linear N(0, 0.001) seeded per layer (HEMoE), mlp
// (MoEfication: W1 rows = centres of the expert's L2-normalised gate rows, W2 = identity).
// Returns {} for avgk.
std::vector<std::pair<std::string, at::Tensor>> router_tensors(const std::string& prefix, const std::string& type,
                                                               const Partition& p, const at::Tensor& gate_rows,
                                                               uint64_t seed, int layer);

// Per-layer report (also the --json output).
json split_plan_json(const SplitPlan& plan);

// The whole command: open MODEL, plan, write OUT (if not empty) atomically. Returns the report.
json build_moe(const std::string& model_dir, const std::string& out_dir, const BuildMoeOptions& o,
               SplitPlan* plan_out = nullptr);

}  // namespace mf
