// Domains of the calibration documents (spec dense_to_moe.md §1.2 (b)): either given by a
// label field, or found by k-means on L2-normalised document embeddings — the model's own
// mean-pooled last hidden state, or rows of an embeddings file (.npy / .safetensors).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "profile/batch_sharding.h"

namespace mf {

class Model;
struct Sample;

struct KMeansResult {
  std::vector<int32_t> labels;  // [n]
  at::Tensor centroids;         // float32 [k, d]
  double inertia = 0;           // Σ squared distance to the assigned centroid
  int iterations = 0;
};

// Plain k-means (Lloyd) on the rows of x [n, d]: k-means++ initialisation drawn from mf::Rng(seed),
// then assignment / mean steps until the labels stop changing or max_iter. An emptied cluster
// is re-seeded with the point farthest from its centroid. Deterministic for a given seed.
KMeansResult domain_kmeans(const at::Tensor& x, int k, uint64_t seed, int max_iter = 300);

// Rows scaled to unit L2 norm (zero rows stay zero), float32.
at::Tensor l2_normalize_rows(const at::Tensor& x);

// A 2-D float embeddings matrix, one row per document: NumPy .npy (float32/float64, C order,
// little endian) or .safetensors (the tensor "embeddings", or its only tensor). float32 [n, d].
at::Tensor read_embeddings_file(const std::string& path);

// Mean over the real tokens of each sample of the model's last hidden state (after the final
// norm), float32 [n, H]; no gradients. `on_batch(done)` reports progress in samples (of the whole
// job: a batch another rank runs counts as done when this rank passes it). Data parallel: each
// rank runs its share of the batches and the rows are summed over the ranks; a row is computed by
// one rank and zero on the others, so every rank gets one process's matrix exactly.
at::Tensor mean_pooled_embeddings(Model& model, const std::vector<Sample>& samples, int64_t batch_tokens,
                                  const std::function<void(int64_t)>& on_batch = {},
                                  const BatchSharding& sharding = BatchSharding());

// Sorted distinct labels -> 0..D-1. `names` receives the sorted labels.
std::vector<int32_t> domains_from_labels(const std::vector<std::string>& labels, std::vector<std::string>* names);

}  // namespace mf
