// Agglomerative (hierarchical) clustering of expert feature vectors, HC-SMoE's grouping step
// (spec merge_and_eval.md §A.5), with SciPy's standard definitions rather than the reference
// code's (whose `complete` merges the farthest pair and whose `ward` drops a square root):
//   average   UPGMA: d(A,B) = mean of the pairwise point distances,
//   single    d(A,B) = min of the pairwise point distances,
//   complete  d(A,B) = max of the pairwise point distances,
//   ward      d(A,B) = sqrt(2·|A||B|/(|A|+|B|))·‖μ_A − μ_B‖ (SciPy's Ward, via Lance–Williams),
// all on Euclidean distances in double precision.
//
// The algorithms are SciPy 1.10's own, step for step, so that ties (equal distances: copied
// experts, integer data) resolve exactly as SciPy resolves them: the nearest-neighbour chain for
// average/complete/ward and the minimum spanning tree for single, then a stable sort of the merges
// by height and union-find relabelling (scipy.cluster.hierarchy.linkage), and cut_tree applies the
// merges in the order of scipy's cut_tree (by height; equal heights in reverse breadth-first order
// from the root). tests/test_merge_cluster.cpp checks labels and merge heights on every case of
// SciPy's golden file.
//
// Plain C++ on row-major std::vector<double> (n rows of d features); no torch.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace mf::merge {

enum class Linkage { Average, Single, Complete, Ward };

// "average" | "single" | "complete" | "ward"; anything else throws mf::Error naming the valid ones.
Linkage parse_linkage(const std::string& name);
const char* to_string(Linkage method);

// SciPy's linkage matrix Z, column by column: row i merges clusters merged[i][0] < merged[i][1]
// (ids < n are the points, id n+k is the cluster formed by row k) at height heights[i] (= Z[i,2])
// into a cluster of sizes[i] points (= Z[i,3]). n-1 rows, heights non-decreasing.
struct Dendrogram {
  std::vector<std::array<int64_t, 2>> merged;
  std::vector<double> heights;
  std::vector<int64_t> sizes;
};

// Pairwise Euclidean distances of the n rows of X (n×d, row-major) as a full n×n row-major
// matrix (zero diagonal), each sqrt(Σ_c (x_c − y_c)²) summed in feature order like scipy's pdist.
// Throws mf::Error on n < 1, d < 1, X.size() != n·d or a non-finite value.
std::vector<double> pairwise_distances(const std::vector<double>& X, int64_t n, int64_t d);

// The dendrogram of the n rows of X (n×d, row-major) under `method`. n = 1 gives no merges.
Dendrogram linkage(const std::vector<double>& X, int64_t n, int64_t d, Linkage method);
// The same from a full n×n distance matrix (symmetric, finite, non-negative; Ward is only
// meaningful when the distances are Euclidean).
Dendrogram linkage_from_distances(const std::vector<double>& D, int64_t n, Linkage method);

// Flat clusters after the first n−r merges (scipy's cut_tree(Z, n_clusters=r)): labels[i] in
// 0..r−1, clusters numbered in order of their lowest member index. r = n gives 0..n−1, r = 1 all
// zeros. Throws mf::Error unless 1 ≤ r ≤ n and the dendrogram has n−1 valid rows.
std::vector<int64_t> cut_tree(const Dendrogram& tree, int64_t n, int64_t r);

// linkage + cut_tree.
std::vector<int64_t> hierarchical_clusters(const std::vector<double>& X, int64_t n, int64_t d, int64_t r,
                                           Linkage method);

// The members of each cluster (ascending), from labels numbered 0..max.
std::vector<std::vector<int64_t>> cluster_members(const std::vector<int64_t>& labels);

// The "dominant" expert of cluster `cluster` (spec §A.5): the member whose row of X is closest in
// L2 to the mean of the cluster's rows; ties: the lowest index. Throws mf::Error when the cluster
// has no member or the shapes disagree.
int64_t representative(const std::vector<double>& X, int64_t n, int64_t d, const std::vector<int64_t>& labels,
                       int64_t cluster);
// representative() of every cluster 0..max(labels).
std::vector<int64_t> representatives(const std::vector<double>& X, int64_t n, int64_t d,
                                     const std::vector<int64_t>& labels);

}  // namespace mf::merge
