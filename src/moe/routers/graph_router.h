// GMoE's graph router "GoEgate" (moe_routing_training.md §4.2). Per token, a small graph of E
// expert nodes plus one token node (index E) is run through L_g GCN layers; expert node e's
// output, projected to a scalar, is the token's logit for expert e. The shared router tail
// (softmax, top-k, renormalisation as the SelectionConfig says) follows.
//
// Tensors (checkpoint names, relative to the router module; the reference adapter's names):
//   X                      [E, d]   expert node features, Glorot-uniform, FROZEN (a buffer: saved, never trained)
//   edges                  [E*E, 2] int64 expert-expert edge list, padded with (-1, -1) rows (a buffer)
//   mlp.weight             [g, d]   token node projection (Xavier-uniform, gain 100)
//   mlp_struct.weight      [g, d]   expert node projection (Xavier-uniform)
//   convs.{l}.lin.weight   [g, g]   GCN layer l, l < L_g (Xavier-uniform)
//   proj.weight            [1, g]   output projection (Xavier-uniform)
//   poisson_lambda, normal_sigma [1] the layer's learnable targets of the two GMoE losses
//                                   (moe/gmoe_losses.h; init 1.5 and E/2, saved with the gate
//                                   as the reference does with "gate.lamb" / "gate.theta")
//
// The edge list is built once, by the threshold search (gmoe_threshold_edges), when a router is
// made fresh; a loaded router keeps the saved list (the reference re-derives it from the
// trained weights on reload, so its test-time graph can differ from the training graph).
// The buffer has a fixed shape so that checkpoint validation (RouterEntry::tensors) can name it.
//
// Graph semantics (PyG GCNConv defaults over the reference's SparseTensor adjacency): a pair
// (i, j) means node i aggregates from node j (threshold lists are symmetric, so direction does
// not matter there); every expert <-> token edge exists in both directions; self loops are SET
// to 1 (an edge list with or without (i, i) gives the same graph); duplicates count once.
// Â = D^-1/2 (A + I) D^-1/2 with D the row sums; layer: H' = act(Â (H W^T)), no bias.
#pragma once
#include <nlohmann/json.hpp>

#include <utility>
#include <vector>

#include "moe/routers/router.h"

namespace mf::moe {

using ExpertEdges = std::vector<std::pair<int64_t, int64_t>>;

struct GraphRouterOptions {
  int64_t dim_gcn = 128;         // g
  int64_t gcn_layers = 2;        // L_g >= 1
  double edges_threshold = 0.25; // beta in (0, 1]: fraction of the E^2 similarity entries kept
  Act activation = Act::SiLU;    // the LLM's FFN activation ("nl" in the reference)
};

// Options from a router config section: keys dim_gcn, gcn_layers, edges_threshold, activation
// (absent keys keep the defaults); a bad value is a one-line mf::Error naming the key.
GraphRouterOptions graph_router_options(const nlohmann::json& config);

// The threshold search of §4.2 on a similarity matrix sim [E, E]: for y_i = (100 - i) / 100,
// i = 0, 1, ..., 100 (exact decimal steps, no accumulated float drift), keep the entries with
// |sim| >= y_i and stop at the first i where their fraction of all E^2 entries (diagonal
// included) reaches beta. Returns the kept (row, col) pairs in row-major order. y = 0 keeps
// every finite entry, so beta in (0, 1] always terminates (NaN entries are never kept).
ExpertEdges gmoe_threshold_edges(const at::Tensor& sim, double beta);

// The dense normalised adjacency Â [(E+1), (E+1)] (token node last) of an expert edge list,
// as the router uses it (CPU, `dtype`).
at::Tensor gmoe_normalized_adjacency(int64_t num_experts, const ExpertEdges& edges,
                                     at::ScalarType dtype = at::kDouble);

// The fixed-shape buffer form of an edge list: [E*E, 2] int64, pairs sorted and de-duplicated,
// unused rows (-1, -1). Pairs must lie in [0, E).
at::Tensor gmoe_edges_tensor(int64_t num_experts, const ExpertEdges& edges);
// The pairs of a buffer (any dtype holding integers; [n, 2]), (-1, -1) rows dropped.
ExpertEdges gmoe_edges_from_tensor(const at::Tensor& edges);

class GraphRouterImpl : public RouterImpl {
 public:
  // Fresh router: random X and weights (the reference's inits, global torch RNG), edges from the
  // threshold search on act(mlp_struct(X)).
  GraphRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, GraphRouterOptions opt = {},
                  ScoreFn score = ScoreFn::Softmax, RouterNoise noise = {});
  // Random weights with a given edge list (e.g. before loading a saved adapter).
  GraphRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, GraphRouterOptions opt,
                  const ExpertEdges& edges);

  RouterOutput route(const at::Tensor& x, bool training) override;
  const char* kind() const override { return "graph"; }

  // Clean logits [T, E] for x [T, d] (fp32; fp64 when x is fp64).
  at::Tensor logits(const at::Tensor& x) const;

  // The edge list in use (read from the "edges" buffer, so a loaded buffer is honoured).
  ExpertEdges edges() const;
  // Replaces the edge list (validated, sorted, de-duplicated); the buffer keeps its dtype/device.
  void set_edges(const ExpertEdges& edges);
  // Cosine similarity [E, E] (fp64, exactly symmetric) of the rows of act(mlp_struct(X)).
  at::Tensor expert_similarity() const;
  // What the threshold search gives for the current weights (what the reference re-runs on reload).
  ExpertEdges threshold_edges() const;

  const GraphRouterOptions& options() const { return opt_; }
  at::Tensor poisson_lambda() const { return poisson_lambda_; }
  at::Tensor normal_sigma() const { return normal_sigma_; }

 private:
  void build_modules();
  at::Tensor expert_features(at::ScalarType dt) const;  // act(mlp_struct(X)) [E, g]

  GraphRouterOptions opt_;
  at::Tensor expert_nodes_;  // X buffer
  at::Tensor edges_;         // padded edge buffer
  torch::nn::Linear mlp_{nullptr}, mlp_struct_{nullptr}, proj_{nullptr};
  std::vector<torch::nn::Linear> gcn_;  // the convs.{l}.lin modules
  at::Tensor poisson_lambda_, normal_sigma_;
};
TORCH_MODULE(GraphRouter);

}  // namespace mf::moe
