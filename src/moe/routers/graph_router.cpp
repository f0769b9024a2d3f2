#include "moe/routers/graph_router.h"

#include <algorithm>
#include <set>
#include <string>

#include "moe/expert_bank.h"
#include "moe/gmoe_losses.h"
#include "moe/routers/registry.h"
#include "util/error.h"

namespace mf::moe {

namespace {

// Â from the padded edge buffer, on `device` in `dt`. Tensor ops only (no host round trip per
// forward), and always what the buffer holds now, even right after a loader overwrote it.
at::Tensor adjacency_from_buffer(const at::Tensor& edges, int64_t num_experts, at::ScalarType dt,
                                 at::Device device) {
  const int64_t E = num_experts, n = E + 1;
  const at::Tensor pairs = edges.to(device, at::kLong);
  const at::Tensor rows = pairs.select(1, 0), cols = pairs.select(1, 1);
  // Unused (-1, -1) rows land in a spare slot past the matrix, cut off below.
  const at::Tensor flat = (rows * n + cols).masked_fill(rows.lt(0), n * n);
  at::Tensor a = at::zeros({n * n + 1}, at::TensorOptions().dtype(dt).device(device));
  a.index_fill_(0, flat, 1.0);
  a = a.narrow(0, 0, n * n).view({n, n});
  a.select(0, E).fill_(1.0);  // the token node hears every expert ...
  a.select(1, E).fill_(1.0);  // ... and every expert hears the token node
  a.diagonal().fill_(1.0);    // self loops are set, not added (PyG fill_diag)
  const at::Tensor d = a.sum(1).rsqrt();
  return d.unsqueeze(1) * a * d.unsqueeze(0);
}

// A non-negative integer key of the router config, or the default.
int64_t config_int(const nlohmann::json& c, const char* key, int64_t def) {
  auto it = c.find(key);
  if (it == c.end()) return def;
  if (!it->is_number_integer() || it->get<int64_t>() < 1)
    fail(std::string("router.") + key + " must be an integer >= 1");
  return it->get<int64_t>();
}

}  // namespace

GraphRouterOptions graph_router_options(const nlohmann::json& config) {
  GraphRouterOptions o;
  if (!config.is_object()) return o;
  o.dim_gcn = config_int(config, "dim_gcn", o.dim_gcn);
  o.gcn_layers = config_int(config, "gcn_layers", o.gcn_layers);
  if (auto it = config.find("edges_threshold"); it != config.end()) {
    if (!it->is_number() || !(it->get<double>() > 0 && it->get<double>() <= 1))
      fail("router.edges_threshold must be a number in (0, 1]");
    o.edges_threshold = it->get<double>();
  }
  if (auto it = config.find("activation"); it != config.end()) {
    if (!it->is_string()) fail("router.activation must be a string (silu, gelu, gelu_tanh, relu)");
    o.activation = parse_act(it->get<std::string>());
  }
  return o;
}

ExpertEdges gmoe_threshold_edges(const at::Tensor& sim, double beta) {
  TORCH_CHECK(sim.dim() == 2 && sim.size(0) == sim.size(1), "gmoe_threshold_edges: sim must be [E, E]");
  TORCH_CHECK(beta > 0 && beta <= 1, "gmoe_threshold_edges: beta must be in (0, 1]");
  const at::Tensor a = sim.detach().to(at::kCPU, at::kDouble).abs().contiguous();
  const auto s = a.accessor<double, 2>();
  const int64_t E = a.size(0);
  const double entries = static_cast<double>(E * E);
  for (int step = 0; step <= 100; ++step) {
    const double y = (100 - step) / 100.0;
    int64_t kept = 0;
    for (int64_t i = 0; i < E; ++i)
      for (int64_t j = 0; j < E; ++j) kept += s[i][j] >= y;
    if (static_cast<double>(kept) / entries < beta) continue;
    ExpertEdges out;
    for (int64_t i = 0; i < E; ++i)
      for (int64_t j = 0; j < E; ++j)
        if (s[i][j] >= y) out.emplace_back(i, j);
    return out;
  }
  fail("gmoe_threshold_edges: the similarity matrix has NaN entries");
}

at::Tensor gmoe_edges_tensor(int64_t num_experts, const ExpertEdges& edges) {
  std::set<std::pair<int64_t, int64_t>> unique;
  for (const auto& [i, j] : edges) {
    TORCH_CHECK(i >= 0 && i < num_experts && j >= 0 && j < num_experts, "graph router: edge (", i, ", ", j,
                ") is outside the ", num_experts, " experts");
    unique.insert({i, j});
  }
  at::Tensor t = at::full({num_experts * num_experts, 2}, -1, at::kLong);
  auto a = t.accessor<int64_t, 2>();
  int64_t r = 0;
  for (const auto& [i, j] : unique) {
    a[r][0] = i;
    a[r][1] = j;
    ++r;
  }
  return t;
}

ExpertEdges gmoe_edges_from_tensor(const at::Tensor& edges) {
  TORCH_CHECK(edges.dim() == 2 && edges.size(1) == 2, "graph router: edges must be [n, 2]");
  const at::Tensor c = edges.detach().to(at::kCPU, at::kLong).contiguous();
  const auto a = c.accessor<int64_t, 2>();
  ExpertEdges out;
  for (int64_t r = 0; r < c.size(0); ++r)
    if (a[r][0] != -1 || a[r][1] != -1) out.emplace_back(a[r][0], a[r][1]);
  return out;
}

at::Tensor gmoe_normalized_adjacency(int64_t num_experts, const ExpertEdges& edges, at::ScalarType dtype) {
  return adjacency_from_buffer(gmoe_edges_tensor(num_experts, edges), num_experts, dtype, at::kCPU);
}

GraphRouterImpl::GraphRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, GraphRouterOptions opt,
                                 ScoreFn score, RouterNoise noise)
    : RouterImpl(dim, num_experts, sel, score, noise), opt_(opt) {
  build_modules();
  set_edges(threshold_edges());
}

GraphRouterImpl::GraphRouterImpl(int64_t dim, int64_t num_experts, SelectionConfig sel, GraphRouterOptions opt,
                                 const ExpertEdges& edges)
    : RouterImpl(dim, num_experts, sel), opt_(opt) {
  build_modules();
  set_edges(edges);
}

void GraphRouterImpl::build_modules() {
  TORCH_CHECK(dim_ >= 1 && num_experts_ >= 1, "graph router: dim and num_experts must be >= 1");
  TORCH_CHECK(opt_.dim_gcn >= 1 && opt_.gcn_layers >= 1, "graph router: dim_gcn and gcn_layers must be >= 1");
  TORCH_CHECK(opt_.edges_threshold > 0 && opt_.edges_threshold <= 1, "graph router: edges_threshold must be in (0, 1]");
  const int64_t g = opt_.dim_gcn;
  auto linear = [](int64_t in, int64_t out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)); };
  expert_nodes_ = register_buffer("X", at::empty({num_experts_, dim_}, at::kFloat));
  edges_ = register_buffer("edges", gmoe_edges_tensor(num_experts_, {}));
  mlp_ = register_module("mlp", linear(dim_, g));
  mlp_struct_ = register_module("mlp_struct", linear(dim_, g));
  auto convs = register_module("convs", torch::nn::ModuleList());
  for (int64_t l = 0; l < opt_.gcn_layers; ++l) {
    // PyG's GCNConv keeps its weight in a submodule "lin": convs.{l}.lin.weight.
    auto conv = std::make_shared<torch::nn::Module>();
    gcn_.emplace_back(conv->register_module("lin", linear(g, g)));
    convs->push_back(conv);
  }
  proj_ = register_module("proj", linear(g, 1));
  poisson_lambda_ = register_parameter("poisson_lambda", at::full({1}, kGmoeInitialLambda, at::kFloat));
  normal_sigma_ = register_parameter("normal_sigma", at::full({1}, num_experts_ / 2.0, at::kFloat));
  // The reference's initialisation (GMoE feed_forward.py): Xavier-uniform everywhere, gain 100
  // on the token projection; X is Glorot-uniform and then never trained.
  torch::nn::init::xavier_uniform_(expert_nodes_);
  torch::nn::init::xavier_uniform_(mlp_->weight, 100.0);
  torch::nn::init::xavier_uniform_(mlp_struct_->weight);
  for (auto& lin : gcn_) torch::nn::init::xavier_uniform_(lin->weight);
  torch::nn::init::xavier_uniform_(proj_->weight);
}

at::Tensor GraphRouterImpl::expert_features(at::ScalarType dt) const {
  return apply_act(at::linear(expert_nodes_.to(dt), mlp_struct_->weight.to(dt)), opt_.activation);
}

at::Tensor GraphRouterImpl::expert_similarity() const {
  at::NoGradGuard ng;
  const at::Tensor f = expert_features(at::kDouble).to(at::kCPU);
  const at::Tensor unit = f / f.norm(2, {1}, true).clamp_min(1e-12);  // F.normalize
  const at::Tensor sim = unit.matmul(unit.t());
  return (sim + sim.t()) * 0.5;  // exactly symmetric, so the edge list is too
}

ExpertEdges GraphRouterImpl::threshold_edges() const {
  return gmoe_threshold_edges(expert_similarity(), opt_.edges_threshold);
}

ExpertEdges GraphRouterImpl::edges() const { return gmoe_edges_from_tensor(edges_); }

void GraphRouterImpl::set_edges(const ExpertEdges& edges) {
  const at::Tensor t = gmoe_edges_tensor(num_experts_, edges);
  at::NoGradGuard ng;
  edges_.copy_(t);
}

at::Tensor GraphRouterImpl::logits(const at::Tensor& x) const {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == dim_, "graph router: x must be [T, ", dim_, "]");
  const at::ScalarType dt = routing_dtype(x);
  const int64_t E = num_experts_;
  const Act act = opt_.activation;
  const at::Tensor adj = adjacency_from_buffer(edges_, E, dt, x.device());  // [E+1, E+1]
  const at::Tensor experts = expert_features(dt);                           // F [E, g], every token's
  const at::Tensor token = apply_act(at::linear(x.to(dt), mlp_->weight.to(dt)), act);  // u_t [T, g]
  at::Tensor h;  // [T, rows, g]
  const int64_t L = static_cast<int64_t>(gcn_.size());
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor w = gcn_[l]->weight.to(dt);
    // The last layer only needs the expert rows (the token node's output is discarded).
    const at::Tensor a = l == L - 1 ? adj.narrow(0, 0, E) : adj;
    if (l == 0) {
      // H0 = [F; u_t] for every token: Â (H0 W) = (expert columns of Â) (F W), the same for all
      // tokens, plus (token column of Â) (u_t W). No T copies of F are materialised.
      const at::Tensor shared = at::matmul(a.narrow(1, 0, E), at::linear(experts, w));  // [rows, g]
      const at::Tensor token_column = a.narrow(1, E, 1);                                 // [rows, 1]
      h = apply_act(shared.unsqueeze(0) + token_column.unsqueeze(0) * at::linear(token, w).unsqueeze(1), act);
    } else {
      h = apply_act(at::matmul(a, at::linear(h, w)), act);  // Â broadcast over the T graphs
    }
  }
  return at::linear(h, proj_->weight.to(dt)).squeeze(-1);  // [T, E]
}

RouterOutput GraphRouterImpl::route(const at::Tensor& x, bool training) {
  const at::Tensor xr = maybe_jitter(x.to(routing_dtype(x)), training);
  return finish(logits(xr), training);
}

RouterEntry graph_router_entry() {
  RouterEntry e;
  e.description = "graph: GMoE's GCN router over E expert nodes + 1 token node (router.dim_gcn, gcn_layers, "
                  "edges_threshold, activation), tensors X [E, d] (frozen), edges [E*E, 2] int64, mlp.weight, "
                  "mlp_struct.weight [g, d], convs.{l}.lin.weight [g, g], proj.weight [1, g], poisson_lambda, "
                  "normal_sigma [1]";
  e.make = [](const RouterSpec& s) -> Router {
    return std::make_shared<GraphRouterImpl>(s.dim, s.num_experts, s.selection, graph_router_options(s.config),
                                             s.score, s.noise);
  };
  // "edges" has a fixed shape [E*E, 2] (the most an expert graph can hold), unused rows
  // (-1, -1), so the checkpoint validation's static shapes hold whatever the search found.
  e.tensors = [](const RouterSpec& s) {
    const GraphRouterOptions o = graph_router_options(s.config);
    const int64_t E = s.num_experts, g = o.dim_gcn;
    std::vector<std::pair<std::string, std::vector<int64_t>>> v{{"X", {E, s.dim}},
                                                                {"edges", {E * E, 2}},
                                                                {"mlp.weight", {g, s.dim}},
                                                                {"mlp_struct.weight", {g, s.dim}}};
    for (int64_t l = 0; l < o.gcn_layers; ++l) v.push_back({"convs." + std::to_string(l) + ".lin.weight", {g, g}});
    v.push_back({"proj.weight", {1, g}});
    v.push_back({"poisson_lambda", {1}});
    v.push_back({"normal_sigma", {1}});
    return v;
  };
  // No `init`: a graph router is not made by dense -> MoE splits.
  return e;
}

}  // namespace mf::moe
