// Expert representations for grouping (spec merge_and_eval.md §A.4, the reference's
// `similarity_base`): the vector each expert j is described by when experts are clustered
// (hc-smoe, kmeans) or compared (m-smoe's similarity):
//   expert-output  o_j = (1/T) Σ_t E_j(x_t) ∈ R^d over all calibration tokens (the paper's),
//   router-logits  the column j of the router logits over all T calibration tokens, ∈ R^T,
//   weights        the concatenation of expert j's flattened gate, down and up weights, ∈ R^{3·m·d}.
//
// Clustering, representatives and cosine similarities only need inner products of these vectors,
// so the last two are carried as their n×n Gram matrix G (G_ij = <v_i, v_j>, accumulated over
// tokens during the calibration pass, or over weight chunks), never as the vectors themselves:
// memory n²·8 bytes whatever T or the expert size. From G:
//   ‖v_i − v_j‖² = G_ii + G_jj − 2 G_ij (clamped at 0),
//   the member closest to its cluster's mean: ‖v_j − μ_C‖² = (1/|C|) Σ_{c∈C} ‖v_j − v_c‖²
//     − (1/(2|C|²)) Σ_{c,c'∈C} ‖v_c − v_c'‖²,
//   M-SMoE's similarity (cos(v_i, v_j) + 1)/2, cos = G_ij / max(√(G_ii G_jj), 1e-7)
//     (the reference's F.cosine_similarity with its FP32_EPS),
//   and for K-means an n-dimensional embedding with exactly these distances (classical MDS of
//   the double-centred squared distances), which k-means++, the assignments and the centre
//   means see exactly as they would see the vectors (every quantity K-means uses is a distance
//   between points and means of points).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mf::merge {

enum class Representation { ExpertOutput, RouterLogits, Weights };

// "expert-output" | "router-logits" | "weights"; anything else throws mf::Error naming them.
Representation parse_representation(const std::string& name);
const char* to_string(Representation r);
// K-means' combined representations (spec §A.4, the reference's `router-logits+expert-output`,
// …): "a+b" or "a+b+c", each part one of the three names (a repeat is allowed), in the order
// given — the first is the one k-means++ draws its initial centres from (the reference's
// `experts`). A name without '+' gives that one representation. Anything else (an unknown or
// empty part, more than three parts) throws mf::Error naming the valid names.
std::vector<Representation> parse_representations(const std::string& name);
bool is_combined_representation(const std::string& name);

// n vectors of dimension `dim` known through their Gram matrix (row-major n×n).
struct Geometry {
  int64_t n = 0;
  double dim = 0;  // the vectors' dimension (the reference divides K-means distances by it)
  std::vector<double> gram;
};

// Validates (n ≥ 1, n×n finite values) and symmetrises (the mean of G and Gᵀ).
Geometry geometry_from_gram(std::vector<double> gram, int64_t n, double dim);
// The Gram matrix of the n rows of X (n×d, row-major).
Geometry geometry_from_features(const std::vector<double>& X, int64_t n, int64_t d);

std::vector<double> squared_distances(const Geometry& g);  // n×n, zero diagonal
std::vector<double> distances(const Geometry& g);          // n×n Euclidean
std::vector<double> cosine_similarity(const Geometry& g);  // n×n, (cos + 1)/2, diagonal 1

// Per cluster 0..max(labels): the member closest to the cluster's mean (ties: the lowest index),
// from the squared distances D2 (n×n).
std::vector<int64_t> representatives_from_squared_distances(const std::vector<double>& D2, int64_t n,
                                                            const std::vector<int64_t>& labels);

// n×n coordinates (row i: point i) whose pairwise Euclidean distances are those of g (up to
// rounding; tiny negative eigenvalues of the centred Gram matrix are dropped).
std::vector<double> embedding(const Geometry& g);

}  // namespace mf::merge
