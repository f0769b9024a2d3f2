// The HC-SMoE reference code's K-means (hcsmoe/merging/clustering.py, spec merge_and_eval.md
// §A.5): what the released scripts actually run, because `--cluster hirarchical` (sic) falls
// through to it. Kept for reproducing the reference; `hc-smoe` proper uses merge/hclust.h.
//
//   * k-means++ initialisation on the first feature set: the first centre uniformly at random, each
//     further one with probability ∝ (Euclidean distance to the nearest chosen centre)².
//   * Each iteration, per feature set f: D_f = cdist(X_f, centres_f) / d_f (or `divisor`), standardised per column
//     (centre c: minus the column mean over the points, divided by its std (n−1 divisor) + 1e-6),
//     then shifted so the matrix minimum is 0; D = Σ w_f D_f / Σ w_f (the reference divides by
//     w1 + w2 + w3 even when a feature set is absent, a constant factor: the same argmin). With
//     one feature set D is D_1 itself, and a feature set given twice is D_1 again, bit for bit
//     (½x + ½x = x). Every point goes to its argmin centre (ties: the lowest centre), every centre
//     moves to the mean of its members.
//   * At most max_iter (100) iterations; stop when no centre coordinate moved by tol (1e-4) or more.
//   * The dominant expert of a cluster is the member nearest its final centre (Σ_f Euclidean
//     distance over the feature sets; ties: the lowest index).
//
// Deviations from the reference, on purpose:
//   * Randomness comes from std::mt19937_64 seeded with `seed`, not torch's global generator
//     (seeded 0 there), so the initial centres differ from the reference's draws for the same seed.
//     `init` fixes them explicitly (the reference's `init_center` argument).
//   * Arithmetic is double, not fp32.
//   * An empty cluster (the reference produces a NaN centre and carries on) is re-seeded with the
//     point farthest (in the standardised distance used for assignment) from its own centre, taken
//     from a cluster of two or more points (ties: the lowest index), so every cluster has a member.
//   * When all points coincide with the chosen centres during k-means++ (every weight 0, where
//     torch.multinomial raises), the next centre is drawn uniformly from the points not yet chosen.
//   * Labels are renumbered in order of each cluster's lowest member index (as merge/hclust.h
//     does); `initial` keeps the initial centre indices in draw order.
#pragma once
#include <cstdint>
#include <vector>

namespace mf::merge {

// One feature set: n rows of dimension d (row-major), weight w_f in the averaged distance.
// `values` must outlive the kmeans() call.
struct KMeansFeatures {
  const std::vector<double>* values = nullptr;
  int64_t d = 0;
  double weight = 1.0;
  // The divisor of the distances (the reference's feature dimension); 0 = d. Set when `values`
  // is an embedding of vectors of another dimension (merge/represent.h: router logits over T
  // tokens, flattened weights), so the standardisation sees the reference's numbers.
  double divisor = 0.0;
};

struct KMeansOptions {
  int64_t max_iter = 100;
  double tol = 1e-4;
  uint64_t seed = 0;
  std::vector<int64_t> init;  // k initial centre indices; empty: k-means++ with `seed`
};

struct KMeansResult {
  std::vector<int64_t> labels;    // n, clusters numbered by their lowest member
  std::vector<int64_t> dominant;  // k, per cluster the member nearest its final centre
  std::vector<double> centers;    // k × d of the first feature set (final means), in label order
  std::vector<int64_t> initial;   // the k initial centre indices (draw order)
  int64_t iterations = 0;         // assignment steps run
  bool converged = false;         // stopped by tol before max_iter
  int64_t reseeded = 0;           // empty clusters re-seeded (a reference run would have gone NaN)
};

KMeansResult kmeans(const std::vector<double>& X, int64_t n, int64_t d, int64_t k, const KMeansOptions& options = {});
// Several feature sets of the same n points (the reference's experts/experts2/experts3, e.g.
// router-logits + expert-output); k-means++ uses the first.
KMeansResult kmeans(const std::vector<KMeansFeatures>& features, int64_t n, int64_t k,
                    const KMeansOptions& options = {});

}  // namespace mf::merge
