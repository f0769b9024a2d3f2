// GMoE's graph router "GoEgate" (moe_routing_training.md §4.2, §6.6 item 9): the normalised
// adjacency of hand-computed graphs, the threshold search on fixed matrices, the logits against
// a naive GCN over the literal block-diagonal graph of T tokens (fp64, 1e-10), finite-difference
// gradients, the registry entry's tensor list and config keys, and a save -> load that keeps the
// saved edge list. The losses are in test_gmoe_losses.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "moe/routers/graph_router.h"
#include "moe/routers/registry.h"
#include "moe_test_util.h"
#include "test_helpers.h"

using namespace mf::moe;
using mf::moe::testing::fd_check;
using mf::testing_helpers::error_of;

namespace {

SelectionConfig top2() {
  SelectionConfig sel;
  sel.k = 2;
  sel.gate = GateMode::Renorm;
  return sel;
}

at::Tensor act_of(const at::Tensor& h, Act a) {
  if (a == Act::SiLU) return h * at::sigmoid(h);
  if (a == Act::ReLU) return h.clamp_min(0);
  if (a == Act::GELU) return 0.5 * h * (1 + at::erf(h / std::sqrt(2.0)));
  return at::gelu(h, "tanh");
}

// fp64 router with every parameter re-drawn at a moderate scale (the reference's gain-100
// token projection would saturate the activations and hide gradients).
GraphRouter fp64_router(int64_t d, int64_t E, GraphRouterOptions opt, uint64_t seed) {
  torch::manual_seed(seed);
  GraphRouter r(d, E, top2(), opt);
  r->to(at::kDouble);
  torch::NoGradGuard ng;
  for (auto& p : r->parameters()) p.uniform_(-0.7, 0.7);
  r->named_buffers()["X"].normal_();
  return r;
}

// The reference's computation, literally: T disjoint copies of the (E+1)-node graph in one
// dense (T(E+1))^2 adjacency, self loops set, D^-1/2 A D^-1/2 entry by entry, GCN layers as
// dense matmuls, proj on each expert node.
at::Tensor naive_graph_logits(GraphRouterImpl& r, const at::Tensor& x) {
  auto params = r.named_parameters();
  auto buffers = r.named_buffers();
  const Act act = r.options().activation;
  const int64_t E = r.num_experts(), T = x.size(0), n = E + 1, N = T * n;
  at::Tensor A = at::zeros({N, N}, at::kDouble);
  auto a = A.accessor<double, 2>();
  for (int64_t t = 0; t < T; ++t) {
    const int64_t base = t * n;
    for (const auto& [i, j] : r.edges()) a[base + i][base + j] = 1;
    for (int64_t e = 0; e < E; ++e) a[base + e][base + E] = a[base + E][base + e] = 1;
  }
  for (int64_t v = 0; v < N; ++v) a[v][v] = 1;
  std::vector<double> deg(N, 0.0);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) deg[i] += a[i][j];
  at::Tensor Ahat = at::zeros({N, N}, at::kDouble);
  auto ah = Ahat.accessor<double, 2>();
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < N; ++j) ah[i][j] = a[i][j] / std::sqrt(deg[i] * deg[j]);
  const at::Tensor experts = act_of(buffers["X"].mm(params["mlp_struct.weight"].t()), act);  // [E, g]
  const at::Tensor tokens = act_of(x.mm(params["mlp.weight"].t()), act);                       // [T, g]
  std::vector<at::Tensor> rows;
  for (int64_t t = 0; t < T; ++t) rows.push_back(at::cat({experts, tokens[t].unsqueeze(0)}));
  at::Tensor H = at::cat(rows);  // [N, g]
  for (int64_t l = 0; l < r.options().gcn_layers; ++l)
    H = act_of(Ahat.mm(H.mm(params["convs." + std::to_string(l) + ".lin.weight"].t())), act);
  at::Tensor logits = at::zeros({T, E}, at::kDouble);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) logits[t][e] = (H[t * n + e] * params["proj.weight"][0]).sum();
  return logits;
}

ExpertEdges self_loops(int64_t E) {
  ExpertEdges v;
  for (int64_t e = 0; e < E; ++e) v.emplace_back(e, e);
  return v;
}

}  // namespace

TEST(GmoeGraph, NormalizedAdjacencyOfAHandComputedThreeExpertGraph) {
  // Experts 0, 1, 2, token node 3; expert edge 0-1. With the token edges and the self loops
  // (set, not added) the neighbourhoods are N(0) = N(1) = {0, 1, 3}, N(2) = {2, 3},
  // N(3) = {0, 1, 2, 3}: degrees 3, 3, 2, 4, and Â_ij = 1/sqrt(d_i d_j) on each edge.
  const double s12 = 1 / std::sqrt(12.0), s8 = 1 / std::sqrt(8.0);
  const at::Tensor want = at::tensor({1 / 3., 1 / 3., 0., s12,  //
                                      1 / 3., 1 / 3., 0., s12,  //
                                      0., 0., 1 / 2., s8,       //
                                      s12, s12, s8, 1 / 4.},
                                     at::kDouble)
                              .view({4, 4});
  for (const ExpertEdges& edges : {ExpertEdges{{0, 0}, {0, 1}, {1, 0}, {1, 1}, {2, 2}},  // with self loops
                                   ExpertEdges{{0, 1}, {1, 0}},                          // without: same graph
                                   ExpertEdges{{1, 0}, {0, 1}, {0, 1}, {1, 1}}})         // duplicates count once
    EXPECT_TRUE(at::allclose(gmoe_normalized_adjacency(3, edges), want, 0, 1e-15));
  // Direction (the reference's SparseTensor adjacency): pair (0, 1) alone means node 0 hears
  // node 1, not the reverse. Degrees 3, 2, 2, 4; Â_01 = 1/sqrt(3 * 2), Â_10 = 0.
  const at::Tensor directed = gmoe_normalized_adjacency(3, {{0, 1}});
  EXPECT_NEAR(directed[0][1].item<double>(), 1 / std::sqrt(6.0), 1e-15);
  EXPECT_EQ(directed[1][0].item<double>(), 0.0);
  EXPECT_NEAR(directed[1][1].item<double>(), 0.5, 1e-15);
  EXPECT_NEAR(directed[1][3].item<double>(), s8, 1e-15);
  EXPECT_NEAR(directed[3][0].item<double>(), s12, 1e-15);
  EXPECT_THROW(gmoe_normalized_adjacency(3, {{0, 3}}), c10::Error);  // node 3 is the token
}

TEST(GmoeGraph, SelfLoopsOnlyGraphHasTheSpecWeights) {
  // §6.6 item 9, E = 8: each expert has degree 2 (itself, the token), the token E + 1 = 9:
  // expert self 1/2, expert <-> token 1/sqrt(2 * 9), token self 1/9, nothing else.
  const int64_t E = 8;
  for (const ExpertEdges& edges : {self_loops(E), ExpertEdges{}}) {
    const at::Tensor A = gmoe_normalized_adjacency(E, edges);
    for (int64_t i = 0; i <= E; ++i)
      for (int64_t j = 0; j <= E; ++j) {
        double want = 0;
        if (i == j) want = i == E ? 1.0 / 9 : 0.5;
        else if (i == E || j == E) want = 1 / std::sqrt(18.0);
        EXPECT_NEAR(A[i][j].item<double>(), want, 1e-15) << i << "," << j;
      }
  }
}

TEST(GmoeGraph, ThresholdSearchOnFixedMatrices) {
  // Off-diagonal |S|: (0,1) .9, (0,2) .5, (1,2) .3, (1,3) .2, (0,3) .1, (2,3) .05; 16 entries.
  const at::Tensor S = at::tensor({1.0, 0.9, -0.5, 0.1,  //
                                   0.9, 1.0, 0.3, 0.2,   //
                                   -0.5, 0.3, 1.0, 0.05, //
                                   0.1, 0.2, 0.05, 1.0},
                                  at::kDouble)
                           .view({4, 4});
  const ExpertEdges diag = self_loops(4);
  // beta .25: y = 1 keeps the 4 diagonal entries = 4/16, enough.
  EXPECT_EQ(gmoe_threshold_edges(S, 0.25), diag);
  // beta .3: 4/16 until y = .90 (exactly .9 is kept: |S| >= y), then 6/16 = .375.
  EXPECT_EQ(gmoe_threshold_edges(S, 0.3), (ExpertEdges{{0, 0}, {0, 1}, {1, 0}, {1, 1}, {2, 2}, {3, 3}}));
  // beta .5: 6/16 until y = .50 takes |-.5| -> 8/16.
  EXPECT_EQ(gmoe_threshold_edges(S, 0.5),
            (ExpertEdges{{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}, {2, 0}, {2, 2}, {3, 3}}));
  // beta .6: y = .30 adds (1,2), (2,1) -> 10/16 = .625.
  EXPECT_EQ(gmoe_threshold_edges(S, 0.6),
            (ExpertEdges{{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}, {1, 2}, {2, 0}, {2, 1}, {2, 2}, {3, 3}}));
  // beta 1: only y = .05 keeps all 16.
  EXPECT_EQ(gmoe_threshold_edges(S, 1.0).size(), 16u);
  EXPECT_EQ(gmoe_threshold_edges(S.to(at::kFloat), 0.5), gmoe_threshold_edges(S, 0.5));

  // E = 8, beta = 0.1 (the paper's value): the 8 self loops are 8/64 = .125 >= .1 at y = 1, so
  // there is no expert-expert edge at all; beta = .25 needs 16 entries, so off-diagonal pairs.
  torch::manual_seed(8);
  at::Tensor U = at::randn({8, 5}, at::kDouble);
  U = U / U.norm(2, {1}, true);
  at::Tensor sim = U.mm(U.t());
  sim = (sim + sim.t()) * 0.5;
  sim.fill_diagonal_(1.0);
  EXPECT_EQ(gmoe_threshold_edges(sim, 0.1), self_loops(8));
  const ExpertEdges quarter = gmoe_threshold_edges(sim, 0.25);
  EXPECT_GE(quarter.size(), 16u);
  for (const auto& [i, j] : quarter)
    EXPECT_TRUE(std::find(quarter.begin(), quarter.end(), std::make_pair(j, i)) != quarter.end()) << i << "," << j;

  EXPECT_THROW(gmoe_threshold_edges(S, 0.0), c10::Error);
  EXPECT_THROW(gmoe_threshold_edges(S, 1.5), c10::Error);
}

TEST(GmoeGraph, RouterLogitsEqualANaiveGcnOnTheBlockDiagonalGraph) {
  struct Case {
    int64_t E, layers;
    Act act;
    double beta;
    bool own_graph;  // edges from the router's threshold search, else `edges`
    ExpertEdges edges;
  };
  const std::vector<Case> cases = {
      {4, 2, Act::SiLU, 0.25, false, {{0, 0}, {0, 2}, {2, 0}, {1, 1}, {1, 3}, {3, 1}, {2, 2}, {3, 3}}},
      {5, 3, Act::GELU, 0.4, true, {}},
      {3, 1, Act::ReLU, 0.25, false, {}},
      {6, 2, Act::GELUTanh, 0.25, false, {{0, 5}, {5, 0}, {2, 3}}},  // a one-way pair
  };
  const int64_t d = 6, T = 5;
  for (const Case& c : cases) {
    SCOPED_TRACE("E=" + std::to_string(c.E) + " layers=" + std::to_string(c.layers));
    GraphRouterOptions opt;
    opt.dim_gcn = 4;
    opt.gcn_layers = c.layers;
    opt.activation = c.act;
    opt.edges_threshold = c.beta;
    GraphRouter r = fp64_router(d, c.E, opt, 20 + static_cast<uint64_t>(c.E));
    if (!c.own_graph) r->set_edges(c.edges);
    const at::Tensor x = at::randn({T, d}, at::kDouble);
    const RouterOutput out = r->route(x, false);
    const at::Tensor want = naive_graph_logits(*r, x);
    ASSERT_EQ(out.logits.scalar_type(), at::kDouble);
    EXPECT_LT((out.logits - want).abs().max().item<double>(), 1e-10);
    EXPECT_LT((out.probs - at::softmax(want, -1)).abs().max().item<double>(), 1e-10);
    // The selected probabilities are the naive top 2 (compared by value: ReLU can tie logits at 0).
    const at::Tensor top = std::get<0>(at::softmax(want, -1).topk(2, 1));
    EXPECT_LT((out.probs.gather(1, out.idx) - top).abs().max().item<double>(), 1e-10);
    EXPECT_LT((out.gates.sum(1) - 1).abs().max().item<double>(), 1e-12);
  }
  // fp32 input routes in fp32.
  GraphRouter r32(d, 4, top2(), GraphRouterOptions{});
  EXPECT_EQ(r32->route(at::randn({3, d}), false).logits.scalar_type(), at::kFloat);
  EXPECT_EQ(r32->logits(at::randn({0, d})).sizes(), (std::vector<int64_t>{0, 4}));
}

TEST(GmoeGraph, RouterGradientsMatchFiniteDifferences) {
  GraphRouterOptions opt;
  opt.dim_gcn = 3;
  GraphRouter r = fp64_router(5, 4, opt, 31);
  r->set_edges({{0, 0}, {0, 1}, {1, 0}, {2, 3}, {3, 2}});
  at::Tensor x = at::randn({3, 5}, at::kDouble).requires_grad_();
  const at::Tensor R = at::randn({3, 4}, at::kDouble);
  auto f = [&] { return (r->logits(x) * R).sum(); };
  f().backward();
  EXPECT_LT(fd_check(f, x, x.grad()), 1e-7);
  auto params = r->named_parameters();
  for (auto& p : params) {
    const at::Tensor g = p.value().grad().defined() ? p.value().grad() : at::zeros_like(p.value());
    EXPECT_LT(fd_check(f, p.value(), g), 1e-7) << p.key();
  }
  // X and the graph are frozen: buffers, never parameters, and X gets no gradient.
  EXPECT_FALSE(params.contains("X"));
  EXPECT_FALSE(params.contains("edges"));
  auto buffers = r->named_buffers();
  ASSERT_TRUE(buffers.contains("X") && buffers.contains("edges"));
  EXPECT_FALSE(buffers["X"].requires_grad());
  EXPECT_FALSE(buffers["X"].grad().defined());
  EXPECT_TRUE(params["mlp.weight"].grad().defined());
}

TEST(GmoeGraph, SaveLoadKeepsTheSavedEdgeList) {
  const int64_t d = 7, E = 8;
  GraphRouterOptions opt;
  opt.dim_gcn = 6;
  torch::manual_seed(11);
  GraphRouter trained(d, E, top2(), opt);
  // A training graph of self loops only: never what the search gives at beta = .25 (>= 16 of
  // the 64 entries, so off-diagonal pairs).
  trained->set_edges(self_loops(E));
  ASSERT_NE(trained->threshold_edges(), trained->edges());

  std::map<std::string, at::Tensor> saved;
  for (const auto& p : trained->named_parameters()) saved[p.key()] = p.value().detach().clone();
  for (const auto& b : trained->named_buffers()) saved[b.key()] = b.value().clone();

  torch::manual_seed(12);
  GraphRouter loaded(d, E, top2(), opt);
  EXPECT_NE(loaded->edges(), self_loops(E));
  {
    torch::NoGradGuard ng;
    for (auto& p : loaded->named_parameters()) p.value().copy_(saved.at(p.key()));
    for (auto& b : loaded->named_buffers()) b.value().copy_(saved.at(b.key()));
  }
  EXPECT_EQ(loaded->edges(), self_loops(E));
  EXPECT_NE(loaded->threshold_edges(), loaded->edges());  // re-deriving (the reference) would change it
  const at::Tensor x = at::randn({9, d});
  const RouterOutput a = trained->route(x, false), b = loaded->route(x, false);
  EXPECT_TRUE(torch::equal(a.logits, b.logits));
  EXPECT_TRUE(torch::equal(a.idx, b.idx));
  // Built with a given edge list (a loader that knows the graph up front).
  EXPECT_EQ(GraphRouter(d, E, top2(), opt, self_loops(E))->edges(), self_loops(E));
}

TEST(GmoeGraph, RegistryEntryBuildsTheRouterItsTensorListDescribes) {
  RouterSpec s;
  s.dim = 6;
  s.num_experts = 5;
  s.selection = top2();
  s.config = nlohmann::json::object(
      {{"type", "graph"}, {"dim_gcn", 4}, {"gcn_layers", 3}, {"edges_threshold", 0.4}, {"activation", "gelu"}});
  // Not in router_registry() until the LoRA-MoE recipe loads its buffers (X, edges) with a model.
  const RouterEntry entry = graph_router_entry();
  EXPECT_FALSE(entry.init);  // not a split router
  const Router r = entry.make(s);
  EXPECT_STREQ(r->kind(), "graph");
  auto* g = dynamic_cast<GraphRouterImpl*>(r.get());
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->options().dim_gcn, 4);
  EXPECT_EQ(g->options().gcn_layers, 3);
  EXPECT_EQ(g->options().edges_threshold, 0.4);
  EXPECT_EQ(g->options().activation, Act::GELU);
  EXPECT_EQ(g->edges(), g->threshold_edges());  // a fresh router's graph comes from the search
  EXPECT_NEAR(g->poisson_lambda().item<double>(), 1.5, 0);
  EXPECT_NEAR(g->normal_sigma().item<double>(), 2.5, 0);

  std::map<std::string, std::vector<int64_t>> have, want;
  for (const auto& p : r->named_parameters()) have[p.key()] = p.value().sizes().vec();
  for (const auto& b : r->named_buffers()) have[b.key()] = b.value().sizes().vec();
  for (const auto& [name, shape] : entry.tensors(s)) want[name] = shape;
  EXPECT_EQ(have, want);
  EXPECT_EQ(r->named_buffers()["edges"].scalar_type(), at::kLong);

  const GraphRouterOptions defaults = graph_router_options(nlohmann::json::object());
  EXPECT_EQ(defaults.dim_gcn, 128);
  EXPECT_EQ(defaults.gcn_layers, 2);
  EXPECT_EQ(defaults.edges_threshold, 0.25);
  EXPECT_EQ(defaults.activation, Act::SiLU);
  for (const nlohmann::json& bad :
       {nlohmann::json::object({{"dim_gcn", 0}}), nlohmann::json::object({{"dim_gcn", "x"}}),
        nlohmann::json::object({{"gcn_layers", 1.5}}), nlohmann::json::object({{"edges_threshold", 0}}),
        nlohmann::json::object({{"edges_threshold", 1.5}}), nlohmann::json::object({{"activation", "tanh"}}),
        nlohmann::json::object({{"activation", 3}})})
    EXPECT_NE(error_of([&] { graph_router_options(bad); }), "") << bad.dump();
}
