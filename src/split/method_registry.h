// The table of split methods (`moeforge split --method NAME`): one entry per method says what
// the model-dependent half (build_moe.cpp) must gather for each layer, which checks to make
// before the first layer, which router the method gets by default, and the function that splits
// one layer. Built-ins are defined next to their code in methods/*.cpp and added in
// method_registry.cpp; a test or plugin adds its own with split_method_registry().add().
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "split/split.h"
#include "util/json.h"
#include "util/registry.h"

namespace mf {

struct SplitMethodEntry {
  std::string description;  // one line, shown by `moeforge split --help`

  // What plan_split() puts into SplitInputs for every layer (num_neurons always):
  bool needs_gate_rows = false;        // gate_rows = the checkpoint's gate_proj [F, H], fp32
  // "" (none) | "importance" | "importance_raw" (→ domain_scores [F, D]) | "coactivation"
  // (→ coactivation [F, F]): the `moeforge profile` statistic; a non-empty one needs --profile.
  std::string profile_stat;
  bool sizes_from_part_files = false;  // target_sizes = expert sizes of --sizes-from's part files

  // Checks against the model before the first layer is split (so errors come before hours of work):
  bool equal_division = false;         // experts of exactly F/N neurons: N must divide F
  std::function<void(const SplitOptions& opt, int64_t F)> check;  // optional, method-specific

  std::string default_router = "linear";  // linear | avgk; the default gate follows the router

  // The method's knobs recorded in moe_provenance.options (optional).
  std::function<json(const SplitOptions& opt)> provenance_options;

  // One layer. split_layer() has checked 1 <= N <= F; the result must have N experts over F
  // neurons. Warnings and the hemoe placement go into the report; split_layer fills its cover.
  std::function<Partition(const SplitInputs& in, const SplitOptions& opt, SplitReport& rep)> run;
};

// name -> entry; built-ins in method_registry.cpp.
Registry<SplitMethodEntry>& split_method_registry();

// Registered names for listings: the built-ins in their registration order (the order of the
// docs, baselines first), then names added at run time, alphabetically. (Registry sorts by name.)
std::vector<std::string> split_method_names();
// "unknown split method 'x' (random, random-hetero, ...)"
std::string unknown_split_method_message(const std::string& name);
// The entry, or mf::Error with unknown_split_method_message().
const SplitMethodEntry& split_method_at(const std::string& name);

// For run functions: fails "split: method M needs WHAT with F rows" unless t has F rows.
void require_rows(const at::Tensor& t, int64_t F, const std::string& method, const char* what);
// {"kmeans_max_iter": ...}: the provenance of every method that runs balanced k-means.
json kmeans_provenance(const SplitOptions& opt);

// The built-in entries (one per method, defined next to the code they call).
SplitMethodEntry random_split_method();
SplitMethodEntry random_hetero_split_method();
SplitMethodEntry moefication_split_method();
SplitMethodEntry emoe_split_method();
SplitMethodEntry moefication_coact_split_method();
SplitMethodEntry moebert_split_method();
SplitMethodEntry moebert_multitask_split_method();
SplitMethodEntry hemoe_split_method();

}  // namespace mf
