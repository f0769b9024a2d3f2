// Model-independent split algorithms (dense FFN → experts). `moeforge split` gathers the
// per-layer inputs from the model (gate rows, importance, co-activation) and calls split_layer().
#pragma once
#include "util/rng.h"
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "split/hemoe_placement.h"
#include "split/partition.h"

namespace mf {

struct SplitInputs {
  int64_t num_neurons = 0;   // F
  // [F, H] rows to cluster (SwiGLU gate_proj / 2-matrix W1): moefication, emoe, hemoe.
  at::Tensor gate_rows;
  // [F, D] non-negative per-domain neuron scores, preprocessed (log1p + per-domain norm):
  // hemoe (D domains), moebert (summed over domains), moebert-multitask (expert d = domain d).
  at::Tensor domain_scores;
  // [F, F] symmetric co-activation counts (Σ over token batches of min(1, Σ_t a_t a_tᵀ)):
  // moefication-coact.
  at::Tensor coactivation;
  // random-hetero: size of every expert (sums to F).
  std::vector<int64_t> target_sizes;
};

struct SplitOptions {
  std::string method = "hemoe";  // a name in split_method_registry() (split/method_registry.h)
  int num_experts = 8;           // N
  uint64_t seed = 42;
  int kmeans_max_iter = 100;
  // hemoe
  int modules = 128;             // M (F must be divisible by M)
  double size_ratio = 4;         // R
  double coherence = 2;          // l
  std::string solver = "fast";   // fast | cbc
  double time_limit_s = 10;      // fast: cap per layer; cbc: MIP time limit
  // moebert: shared neurons (default F/N/2) and expert width (default F/N); -1 = default
  int64_t moebert_shared = -1, moebert_expert_size = -1;
};

struct SplitReport {
  CoverStats cover;
  std::vector<std::string> warnings;
  bool has_placement = false;
  PlacementReport placement;     // hemoe only
};

// One layer: runs the registry entry of opt.method. Throws mf::Error for an unknown method,
// missing/ill-shaped inputs or impossible options.
Partition split_layer(const SplitInputs& in, const SplitOptions& opt, SplitReport* report = nullptr);

// ---- building blocks (one file each under methods/) ----

// Random homogeneous (sizes F/N, remainder to the first experts) / heterogeneous: uniform draw
// of an expert per neuron, then surplus repair to the exact target sizes (reference procedure).
Partition split_random(int64_t F, const std::vector<int64_t>& sizes, uint64_t seed);
// Surplus repair shared by the random and co-activation splits: random surplus members of
// over-full experts go, shuffled, to under-full ones until expert j has exactly sizes[j].
Partition repair_to_sizes(std::vector<std::vector<int32_t>> members, const std::vector<int64_t>& sizes, int64_t F,
                          Rng& rng);
std::vector<int64_t> equal_sizes(int64_t F, int n);

// Balanced k-means on the rows as given (callers L2-normalise): k-means++ init, assignment to
// exact cluster sizes by an ε-scaling auction, centroid update; stops when labels repeat.
struct BalancedKMeansResult {
  std::vector<int32_t> labels;
  double inertia = 0;
  int iterations = 0;
};
BalancedKMeansResult balanced_kmeans(const at::Tensor& rows, const std::vector<int64_t>& sizes,
                                     uint64_t seed, int max_iter = 100);
// Exact-size assignment maximising Σ benefit[i, label(i)] (benefit [F, k] row-major) by the
// auction algorithm with ε-scaling; within F·ε_final of optimal.
std::vector<int32_t> auction_assignment(const std::vector<double>& benefit, int64_t F, int k,
                                        const std::vector<int64_t>& sizes);

Partition split_moefication(const at::Tensor& gate_rows, int n, uint64_t seed, int max_iter);
Partition split_moefication_coact(const at::Tensor& coactivation, int n, uint64_t seed);
Partition split_moebert(const at::Tensor& importance, int n, int64_t shared, int64_t expert_size);
Partition split_moebert_multitask(const at::Tensor& domain_scores, int64_t expert_size);

// HEMoE: (e) size-constrained k-means of the normalised gate rows into M modules of F/M,
// module scores s[m,d] = Σ_{i∈m} S[i,d]; (f) placement; (g) unpack to neurons.
struct HemoeModules {
  std::vector<int32_t> module_of_neuron;   // [F]
  std::vector<double> scores;              // [M*D]
};
HemoeModules hemoe_modules(const at::Tensor& gate_rows, const at::Tensor& domain_scores, int M, uint64_t seed, int max_iter);
Partition hemoe_unpack(const std::vector<int32_t>& module_of_neuron, const Placement& placement, int N);

}  // namespace mf
