// The grouping and merging options of `moeforge merge` beyond the paper's default (issue 16):
// the router-logits and weights representations, M-SMoE (global allocation, frequency-dominant
// grouping with a group limit), the fix-dom merge and the least-squares router fit. Every
// expected value is derived by hand or by a naive reference written here (plain loops over the
// logits the model produces, the checkpoint's weights), never copied from the code's output.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>

#include "io/checkpoint.h"
#include "merge/calibrate.h"
#include "merge/fixdom.h"
#include "merge/hclust.h"
#include "merge/kmeans.h"
#include "merge/merge.h"
#include "merge/msmoe.h"
#include "merge/represent.h"
#include "merge/router_fit.h"
#include "model/model.h"
#include "model/moe_ffn.h"
#include "tokenizer/tokenizer.h"
#include "upcycle/upcycle.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"
#include "merge_fixtures.h"
#include "spm_llama_fixture.h"
#include "test_helpers.h"

using namespace mf;
using mf::testing_helpers::run_moeforge;

using namespace mf::merge_fixtures;

namespace {

using Clusters = std::vector<std::vector<int64_t>>;

Clusters clusters_of(const json& layer) { return layer["clusters"].get<Clusters>(); }

// Plain Euclidean distances between the n rows of V (n × dim).
std::vector<double> plain_distances(const std::vector<std::vector<double>>& V) {
  const size_t n = V.size();
  std::vector<double> D(n * n, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      double s = 0;
      for (size_t c = 0; c < V[i].size(); ++c) s += (V[i][c] - V[j][c]) * (V[i][c] - V[j][c]);
      D[i * n + j] = std::sqrt(s);
    }
  return D;
}

std::vector<double> flat(const std::vector<std::vector<double>>& V) {
  std::vector<double> out;
  for (const auto& v : V) out.insert(out.end(), v.begin(), v.end());
  return out;
}

}  // namespace

TEST(MergeMethods, GlobalAllocationByHand) {
  // Sorted: .7 .4 .3 .2 | .1 .1 .1 .1 — r·L = 4, τ = the value at index 4 = .1, and a layer keeps
  // its experts strictly above τ: layer 0 {.4, .3, .2} → 3, layer 1 {.7} → 1.
  const std::vector<std::vector<double>> f = {{0.4, 0.3, 0.2, 0.1}, {0.7, 0.1, 0.1, 0.1}};
  merge::GlobalAllocation a = merge::global_allocation(f, 2, 1);
  EXPECT_EQ(a.counts, (std::vector<int64_t>{3, 1}));
  EXPECT_DOUBLE_EQ(a.threshold, 0.1);
  EXPECT_EQ(a.raised, 0);
  // A group limit of 2 for 4 experts needs at least 2 groups per layer.
  a = merge::global_allocation(f, 2, 2);
  EXPECT_EQ(a.counts, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(a.raised, 1);
  // r = 1: τ = sorted[2] = .3 → layer 0 {.4}, layer 1 {.7}.
  EXPECT_EQ(merge::global_allocation(f, 1, 1).counts, (std::vector<int64_t>{1, 1}));
  // r = N keeps everything.
  EXPECT_EQ(merge::global_allocation(f, 4, 1).counts, (std::vector<int64_t>{4, 4}));
}

TEST(MergeMethods, MSmoeGroupingByHand) {
  // Dominant experts: 1 (f .30) and 3 (f .25). Similarities to them:
  //   expert 0: .90 / .20, expert 2: .80 / .30, expert 4: .70 / .60, expert 5: .95 / .50.
  // Without a limit everything joins expert 1. With a limit of 3: 0 and 2 join 1; 4 joins 1, which
  // is then full: its least similar member, 4 (.70), moves to 3; 5 joins 1, which is full again:
  // now 2 (.80) is the least similar and moves to 3. Groups {0, 1, 5} and {2, 3, 4}.
  const std::vector<double> freq = {0.05, 0.30, 0.10, 0.25, 0.20, 0.10};
  std::vector<double> S(36, 0.5);
  auto set = [&](int a, int b, double v) { S[a * 6 + b] = S[b * 6 + a] = v; };
  for (int i = 0; i < 6; ++i) S[i * 6 + i] = 1.0;
  set(0, 1, 0.90), set(0, 3, 0.20), set(2, 1, 0.80), set(2, 3, 0.30);
  set(4, 1, 0.70), set(4, 3, 0.60), set(5, 1, 0.95), set(5, 3, 0.50);
  merge::DominantGroups g = merge::group_by_dominants(freq, S, 6, 2, 6);
  EXPECT_EQ(g.labels, (std::vector<int64_t>{0, 0, 0, 1, 0, 0}));
  EXPECT_EQ(g.dominant, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(g.moved, 0);
  g = merge::group_by_dominants(freq, S, 6, 2, 3);
  EXPECT_EQ(g.labels, (std::vector<int64_t>{0, 0, 1, 1, 1, 0}));
  EXPECT_EQ(g.dominant, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(g.moved, 2);
  // A tie in similarity goes to the more frequent dominant expert; a tie in frequency to the lower index.
  const std::vector<double> tie_f = {0.25, 0.25, 0.25, 0.25};
  std::vector<double> T(16, 0.5);
  for (int i = 0; i < 4; ++i) T[i * 4 + i] = 1.0;
  g = merge::group_by_dominants(tie_f, T, 4, 2, 4);
  EXPECT_EQ(g.dominant, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(g.labels, (std::vector<int64_t>{0, 1, 0, 0}));
  // The limit must be satisfiable: 2 groups of at most 1 cannot hold 4 experts.
  EXPECT_NE(testing_helpers::error_of([&] { merge::group_by_dominants(tie_f, T, 4, 2, 1); }), "");
}

TEST(MergeMethods, GramGeometryMatchesPlainLoops) {
  const std::vector<std::vector<double>> V = {{1, 0, 2}, {0, 1, 2}, {3, 3, 0}, {1.2, 1, 1.5}, {-1, 0, 0}};
  const merge::Geometry g = merge::geometry_from_features(flat(V), 5, 3);
  const std::vector<double> D = merge::distances(g), plain = plain_distances(V);
  for (size_t i = 0; i < D.size(); ++i) EXPECT_NEAR(D[i], plain[i], 1e-12);
  // cos(v0, v1) = 4 / 5, so the similarity is (0.8 + 1) / 2.
  EXPECT_NEAR(merge::cosine_similarity(g)[0 * 5 + 1], 0.9, 1e-12);
  // Representatives from distances only equal those from the vectors: cluster {0, 1, 3} has mean
  // (2.2, 2, 5.5)/3, squared distances .543, .677, .440 → 3; cluster {2, 4} is a tie → the lower, 2.
  const std::vector<int64_t> labels = {0, 0, 1, 0, 1};
  EXPECT_EQ(merge::representatives_from_squared_distances(merge::squared_distances(g), 5, labels),
            (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(merge::representatives(flat(V), 5, 3, labels), (std::vector<int64_t>{3, 2}));
  // The embedding has the same distances.
  const std::vector<double> Y = merge::embedding(g);
  std::vector<std::vector<double>> rows;
  for (int i = 0; i < 5; ++i) rows.emplace_back(Y.begin() + i * 5, Y.begin() + (i + 1) * 5);
  const std::vector<double> DE = plain_distances(rows);
  for (size_t i = 0; i < D.size(); ++i) EXPECT_NEAR(DE[i], plain[i], 1e-9);
}

TEST(MergeMethods, RouterLogitsAndWeightsRepresentationsEqualPlainClustering) {
  const std::string dir = mixtral(true);
  // The router logits of every calibration token, collected by a hook of our own during the
  // calibration pass.
  std::shared_ptr<Model> model = Model::load(dir, {at::kFloat, at::kCPU});
  const std::unique_ptr<Tokenizer> tok = Tokenizer::load(dir);
  std::map<int, std::vector<std::vector<double>>> logits;  // layer -> per token the 4 logits
  const int h = model->hooks().add(HookPoint::router_logits, [&](HookEvent& ev) {
    const at::Tensor z = ev.tensor.to(at::kDouble).contiguous();
    for (int64_t t = 0; t < z.size(0); ++t)
      logits[ev.layer].emplace_back(z[t].data_ptr<double>(), z[t].data_ptr<double>() + z.size(1));
  });
  const MergeOptions base = options("hc-smoe", 2);
  const MergeCalibration calib = calibrate_merge(*model, *tok, base.calib);
  model->hooks().remove(h);
  ASSERT_EQ(calib.layers.size(), 2u);

  std::map<std::string, json> reports;
  for (const std::string rep : {"router-logits", "weights"})
    for (const std::string method : {"hc-smoe", "kmeans", "m-smoe"}) {
      MergeOptions o = options(method, 2);
      o.representation = rep;
      if (method == "m-smoe") o.allocation = "uniform";
      reports[method + "/" + rep] = run_merge(dir, o, fresh("rep_" + method + rep));
    }
  const Checkpoint ck = Checkpoint::open(dir);
  for (size_t l = 0; l < 2; ++l) {
    const int layer = static_cast<int>(calib.layers[l].layer);
    // Logit columns over the tokens (N × T) and flattened weights (gate, down, up), by plain loops.
    const auto& Z = logits.at(layer);
    ASSERT_EQ(static_cast<int64_t>(Z.size()), calib.tokens);
    std::vector<std::vector<double>> columns(4), weights(4);
    for (const auto& z : Z)
      for (int j = 0; j < 4; ++j) columns[j].push_back(z[j]);
    for (int j = 0; j < 4; ++j)
      for (const char* proj : {"w1", "w2", "w3"}) {
        const at::Tensor w =
            ck.get(cat("model.layers.", layer, ".block_sparse_moe.experts.", j, ".", proj, ".weight"), at::kDouble)
                .contiguous();
        weights[j].insert(weights[j].end(), w.data_ptr<double>(), w.data_ptr<double>() + w.numel());
      }
    // The calibration's Gram matrix is Σ_t z_t z_tᵀ.
    const at::Tensor Gt = calib.layers[l].logit_gram.contiguous();
    const std::vector<double> G(Gt.data_ptr<double>(), Gt.data_ptr<double>() + Gt.numel());
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        double s = 0;
        for (size_t t = 0; t < columns[i].size(); ++t) s += columns[i][t] * columns[j][t];
        EXPECT_NEAR(G[i * 4 + j], s, 1e-9 * std::max(1.0, std::abs(s)));
      }
    for (const auto& [name, V] : std::map<std::string, std::vector<std::vector<double>>>{{"router-logits", columns},
                                                                                           {"weights", weights}}) {
      const std::vector<double> D = plain_distances(V);
      // hc-smoe: average linkage of the plain distances, cut at 2 clusters.
      const std::vector<int64_t> labels =
          merge::cut_tree(merge::linkage_from_distances(D, 4, merge::Linkage::Average), 4, 2);
      EXPECT_EQ(clusters_of(reports["hc-smoe/" + name]["layers"][l]), merge::cluster_members(labels)) << name;
      // kmeans: the reference's K-means on the vectors themselves (distances / their dimension).
      const std::vector<double> X = flat(V);
      const merge::KMeansResult km = merge::kmeans(X, 4, static_cast<int64_t>(V[0].size()), 2);
      EXPECT_EQ(clusters_of(reports["kmeans/" + name]["layers"][l]), merge::cluster_members(km.labels)) << name;
      // m-smoe: cosine similarity (cos + 1)/2 of the plain vectors.
      std::vector<double> S(16);
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
          double dot = 0, ni = 0, nj = 0;
          for (size_t c = 0; c < V[i].size(); ++c) dot += V[i][c] * V[j][c], ni += V[i][c] * V[i][c], nj += V[j][c] * V[j][c];
          S[i * 4 + j] = i == j ? 1.0 : (dot / std::sqrt(ni * nj) + 1) / 2;
        }
      const std::vector<double> f = reports["m-smoe/" + name]["layers"][l]["frequency"].get<std::vector<double>>();
      EXPECT_EQ(clusters_of(reports["m-smoe/" + name]["layers"][l]),
                merge::cluster_members(merge::group_by_dominants(f, S, 4, 2, 4).labels))
          << name;
    }
  }
}

TEST(MergeMethods, FixDomByHand) {
  // Dominant rows r0..r2, member rows s0..s2, member neurons 0 and 1 matched to dominant neuron 0,
  // neuron 2 to 2: merged row 0 = (r0 + s0 + s1)/3, row 1 = r1 (nothing matched), row 2 = (r2 + s2)/2.
  const at::Tensor R = at::tensor({1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}).reshape({3, 2});
  const at::Tensor Sm = at::tensor({7.0f, 8.0f, 10.0f, 11.0f, 13.0f, 15.0f}).reshape({3, 2});
  const std::vector<int64_t> id = {0, 1, 2}, pi = {0, 0, 2};
  const at::Tensor rows = merge::fix_dom_combine({R, Sm}, {id, pi}, {1.0, 1.0}, 0);
  const at::Tensor expect_rows = at::tensor({6.0f, 7.0f, 3.0f, 4.0f, 9.0f, 10.5f}).reshape({3, 2});
  EXPECT_TRUE(at::allclose(rows, expect_rows, 0, 1e-6)) << rows;
  // The down projection is merged over its columns with the same map.
  const at::Tensor cols = merge::fix_dom_combine({R.t().contiguous(), Sm.t().contiguous()}, {id, pi}, {1.0, 1.0}, 1);
  EXPECT_TRUE(at::allclose(cols, expect_rows.t(), 0, 1e-6)) << cols;
}

TEST(MergeMethods, FixDomAlignsPermutedNeuronsAndGivesIdenticalExpertsBack) {
  torch::manual_seed(3);
  const int64_t T = 64, d = 5, m = 6;
  const at::Tensor X = at::randn({T, d}), G = at::randn({m, d}), U = at::randn({m, d}), D = at::randn({d, m});
  const std::vector<int64_t> id = {0, 1, 2, 3, 4, 5};
  const at::Tensor A = merge::swiglu_activations(X, G, U);
  // Identical experts: every neuron is matched to itself and the merge is the expert, bit for bit.
  EXPECT_EQ(merge::align_neurons(A, A), id);
  EXPECT_TRUE(torch::equal(merge::fix_dom_combine({G, G}, {id, id}, {1.0, 1.0}, 0), G));
  EXPECT_TRUE(torch::equal(merge::fix_dom_combine({D, D}, {id, id}, {1.0, 1.0}, 1), D));
  // A member that is the dominant expert with its neurons permuted (its neuron n is the dominant's
  // neuron perm[n]) is aligned back, and the merge is the dominant expert again — which a plain
  // average of the unaligned weights is not.
  const std::vector<int64_t> perm = {3, 0, 5, 1, 2, 4};
  const at::Tensor p = at::tensor(perm, at::kLong);
  const at::Tensor Gp = G.index_select(0, p), Up = U.index_select(0, p), Dp = D.index_select(1, p);
  const std::vector<int64_t> pi = merge::align_neurons(A, merge::swiglu_activations(X, Gp, Up));
  EXPECT_EQ(pi, perm);
  EXPECT_TRUE(torch::equal(merge::fix_dom_combine({G, Gp}, {id, pi}, {1.0, 1.0}, 0), G));
  EXPECT_TRUE(torch::equal(merge::fix_dom_combine({U, Up}, {id, pi}, {1.0, 1.0}, 0), U));
  EXPECT_TRUE(torch::equal(merge::fix_dom_combine({D, Dp}, {id, pi}, {1.0, 1.0}, 1), D));
  EXPECT_FALSE(at::allclose((G + Gp) / 2, G));
}

TEST(MergeMethods, FixDomMergesExactCopiesIntoTheExpert) {
  MergeOptions o = options("hc-smoe", 2);
  o.merge = "fix-dom";
  const std::string out = fresh("fixdom_copies");
  const json report = run_merge(mixtral(false), o, out);
  const Checkpoint a = Checkpoint::open(mixtral(false)), b = Checkpoint::open(out);
  for (const json& l : report["layers"]) {
    EXPECT_LT(l["output_error"].get<double>(), 1e-6) << l.dump();
    ASSERT_TRUE(l.contains("fix_dom_tokens"));
    const std::string pre = cat("model.layers.", l["layer"].get<int64_t>(), ".block_sparse_moe.experts.");
    for (int i = 0; i < 2; ++i)
      for (const char* proj : {"w1", "w2", "w3"})
        EXPECT_TRUE(at::allclose(b.get(cat(pre, i, ".", proj, ".weight")), a.get(cat(pre, 0, ".", proj, ".weight")),
                                 1e-6, 1e-7))
            << proj;
  }
}

namespace {

// Σ_t (w·x_t − ℓ_t)² by a plain loop.
double squared_residual(const at::Tensor& w, const at::Tensor& X, const at::Tensor& l) {
  double s = 0;
  for (int64_t t = 0; t < X.size(0); ++t) {
    double z = 0;
    for (int64_t c = 0; c < X.size(1); ++c) z += w[c].item<double>() * X[t][c].item<double>();
    s += (z - l[t].item<double>()) * (z - l[t].item<double>());
  }
  return s;
}

}  // namespace

TEST(MergeMethods, RouterFitReproducesAnExactSolution) {
  torch::manual_seed(5);
  const int64_t S = 50, d = 5, N = 4;
  at::Tensor X = at::randn({S, d}, at::kDouble);
  X.select(1, 0).fill_(1.0);                                  // a constant input feature
  at::Tensor W = at::randn({N, d}).to(at::kDouble);           // float-representable rows
  W[1].copy_(W[0]);                                           // experts 0 and 1 route alike
  const at::Tensor Z = X.mm(W.t());
  // Cluster {0, 1}: log(e^{z0} + e^{z1}) = w0·x + ln 2 = (w0 + ln 2 · e_0)·x, exactly linear.
  const merge::RouterFit f = merge::fit_router(W.to(at::kFloat), X, Z, {{0, 1}, {2}, {3}}, {{0.5, 0.5}, {1.0}, {1.0}});
  at::Tensor expect0 = W[0].clone();
  expect0[0] += std::log(2.0);
  EXPECT_TRUE(at::allclose(f.rows[0].to(at::kDouble), expect0, 0, 1e-5)) << f.rows[0] << expect0;
  EXPECT_TRUE(torch::equal(f.rows[1], W[2].to(at::kFloat)));  // singletons keep their rows
  EXPECT_TRUE(torch::equal(f.rows[2], W[3].to(at::kFloat)));
  EXPECT_LT(f.residual, 1e-6);
  EXPECT_EQ(f.tokens, S);
  // The softmax over the three fitted rows is the cluster-summed distribution of the original router.
  for (int64_t t = 0; t < S; ++t) {
    std::vector<double> p(N), q(3), s(3);
    double zs = 0, ss = 0;
    for (int64_t j = 0; j < N; ++j) zs += p[j] = std::exp(Z[t][j].item<double>());
    q = {(p[0] + p[1]) / zs, p[2] / zs, p[3] / zs};
    for (int c = 0; c < 3; ++c) {
      double z = 0;
      for (int64_t k = 0; k < d; ++k) z += f.rows[c][k].item<double>() * X[t][k].item<double>();
      ss += s[c] = std::exp(z);
    }
    for (int c = 0; c < 3; ++c) EXPECT_NEAR(s[c] / ss, q[c], 1e-5) << t;
  }
  // Without an exact solution ({0, 2} with different rows) the fit is the least-squares one: it
  // satisfies the normal equations Xᵀ(X w − ℓ) = 0 and beats the weighted and the dominant row.
  const merge::RouterFit g = merge::fit_router(W.to(at::kFloat), X, Z, {{0, 2}, {1}, {3}}, {{0.25, 0.75}, {1.0}, {1.0}});
  const at::Tensor l = at::logsumexp(Z.index_select(1, at::tensor({0, 2}, at::kLong)), 1);
  const at::Tensor w = g.rows[0].to(at::kDouble);
  EXPECT_LT((X.t().mv(X.mv(w) - l)).abs().max().item<double>(), 1e-3);
  const double fit = squared_residual(w, X, l);
  EXPECT_LE(fit, squared_residual(W[0] * 0.25 + W[2] * 0.75, X, l));
  EXPECT_LE(fit, squared_residual(W[2], X, l));
  EXPECT_GT(g.residual, 0.0);
}

TEST(MergeMethods, RouterFitOnTheModelSolvesTheNormalEquations) {
  MergeOptions o = options("hc-smoe", 2);
  o.router = "fit";
  const std::string out = fresh("fit_stock");
  const json report = run_merge(mixtral(true), o, out);
  // The inputs and logits of the first calibration tokens, from a calibration pass of our own.
  std::shared_ptr<Model> model = Model::load(mixtral(true), {at::kFloat, at::kCPU});
  MergeCalibOptions co = o.calib;
  co.keep_tokens = o.fit_tokens;
  co.logits = true;
  const MergeCalibration calib = calibrate_merge(*model, *Tokenizer::load(mixtral(true)), co);
  const Checkpoint a = Checkpoint::open(mixtral(true)), b = Checkpoint::open(out);
  for (size_t li = 0; li < 2; ++li) {
    const json& l = report["layers"][li];
    ASSERT_TRUE(l.contains("router_fit")) << l.dump();
    EXPECT_EQ(l["router_fit"]["tokens"], calib.tokens);  // 128 tokens < --fit-tokens: all of them
    const std::string gate = cat("model.layers.", l["layer"].get<int64_t>(), ".block_sparse_moe.gate.weight");
    const at::Tensor X = calib.layers[li].inputs.to(at::kDouble), Z = calib.layers[li].logits.to(at::kDouble);
    const auto clusters = clusters_of(l);
    for (size_t c = 0; c < clusters.size(); ++c) {
      const at::Tensor row = b.get(gate)[static_cast<int64_t>(c)].to(at::kDouble);
      if (clusters[c].size() == 1) {
        EXPECT_TRUE(torch::equal(b.get(gate)[static_cast<int64_t>(c)], a.get(gate)[clusters[c][0]]));
        continue;
      }
      // Naive least squares: (XᵀX) w = Xᵀ ℓ with ℓ = log Σ_{i∈C} exp(z_i).
      const at::Tensor ell = at::logsumexp(Z.index_select(1, at::tensor(clusters[c], at::kLong)), 1);
      const at::Tensor w = at::linalg_solve(X.t().mm(X), X.t().mv(ell));
      EXPECT_TRUE(at::allclose(row, w, 1e-3, 1e-4)) << row << w;
    }
  }
}

TEST(MergeMethods, KeepingAllExpertsIsTheIdentityForEveryNewOption) {
  struct Case {
    std::string method, representation, merge, router, allocation;
  };
  const std::vector<Case> cases = {
      {"hc-smoe", "router-logits", "freq", "dominant", ""}, {"hc-smoe", "weights", "freq", "weighted", ""},
      {"kmeans", "router-logits", "freq", "dominant", ""},  {"kmeans", "weights", "average", "dominant", ""},
      {"hc-smoe", "", "fix-dom", "dominant", ""},           {"hc-smoe", "", "freq", "fit", ""},
      {"m-smoe", "", "freq", "dominant", ""},               {"m-smoe", "", "fix-dom", "fit", "uniform"},
      {"hc-smoe", "", "zipit", "dominant", ""},             {"kmeans", "", "zipit", "weighted", ""},
  };
  const Checkpoint a = Checkpoint::open(mixtral(true));
  for (const Case& c : cases) {
    MergeOptions o = options(c.method, 4);
    o.representation = c.representation;
    o.merge = c.merge;
    o.router = c.router;
    o.allocation = c.allocation;
    const std::string what = c.method + " " + c.representation + " " + c.merge + " " + c.router + " " + c.allocation;
    const std::string out = fresh("identity_" + std::to_string(&c - cases.data()));
    const json report = run_merge(mixtral(true), o, out);
    EXPECT_EQ(report["experts_per_layer"].get<std::vector<int64_t>>(), (std::vector<int64_t>{4, 4})) << what;
    const Checkpoint b = Checkpoint::open(out);
    ASSERT_EQ(a.names(), b.names()) << what;
    for (const std::string& name : a.names()) EXPECT_TRUE(torch::equal(a.get(name), b.get(name))) << what << " " << name;
  }
}

TEST(MergeMethods, MSmoeExactOutputHoldsPerLayerCounts) {
  for (int64_t r : {2, 3}) {
    MergeOptions o = options("m-smoe", r);
    o.output = "exact";
    const std::string out = fresh(cat("msmoe_exact_", r));
    const json report = run_merge(mixtral(true), o, out);
    // Naive allocation: all 8 frequencies in descending order, τ the one at index r·2, a layer keeps
    // the experts above τ (at least ⌈4 / 4⌉ = 1).
    std::vector<double> all;
    for (const json& l : report["layers"])
      for (double f : l["frequency"].get<std::vector<double>>()) all.push_back(f);
    std::sort(all.rbegin(), all.rend());
    const double tau = all[static_cast<size_t>(r * 2)];
    std::vector<int64_t> expect;
    for (const json& l : report["layers"]) {
      int64_t n = 0;
      for (double f : l["frequency"].get<std::vector<double>>()) n += f > tau;
      expect.push_back(std::max<int64_t>(n, 1));
      // The dominant experts are the layer's most frequent; every group has at most 4 members.
      const auto clusters = clusters_of(l);
      const auto dominant = l["router_row_of"].get<std::vector<int64_t>>();
      const auto f = l["frequency"].get<std::vector<double>>();
      for (size_t c = 0; c < clusters.size(); ++c) {
        EXPECT_LE(clusters[c].size(), 4u);
        for (int64_t j : clusters[c]) EXPECT_LE(f[j], f[dominant[c]]);
      }
    }
    EXPECT_EQ(report["experts_per_layer"].get<std::vector<int64_t>>(), expect) << r;
    const int64_t width = *std::max_element(expect.begin(), expect.end());
    // The moeforge checkpoint: num_experts is the largest count; smaller layers are padded with
    // width-1 experts that no original expert maps to.
    const Checkpoint b = Checkpoint::open(out);
    EXPECT_EQ(b.config()["num_experts"], width);
    for (size_t li = 0; li < expect.size(); ++li) {
      std::vector<int64_t> sizes(static_cast<size_t>(expect[li]), 24);
      sizes.resize(static_cast<size_t>(width), 1);
      EXPECT_EQ(b.config()["expert_sizes"][li].get<std::vector<int64_t>>(), sizes);
      for (int64_t e : b.config()["router"]["expert_maps"][li].get<std::vector<int64_t>>()) EXPECT_LT(e, expect[li]);
    }
    // Its logits equal those of the original model with every expert replaced by its group's merged
    // weights (tied experts, the original router): the paper's forward.
    std::shared_ptr<Model> tied = tied_merged_model(mixtral(true), report, b);
    std::shared_ptr<Model> exact = Model::load(out, {at::kFloat, at::kCPU});
    tied->eval();
    exact->eval();
    at::NoGradGuard ng;
    const at::Tensor ids =
        at::tensor({1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889}, at::kLong).unsqueeze(0);
    EXPECT_LT((tied->forward(ids) - exact->forward(ids)).abs().max().item<double>(), 1e-5) << r;
  }
}

TEST(MergeMethods, BadOptionsAreOneLineAndWriteNothing) {
  const std::string out = fresh("bad_out");
  const std::string m = mixtral(true) + " --calib " + calib_file();
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {m + " --experts 2 --method m-smoe", "a stock config cannot hold"},
      {m + " --experts 2 --method f-prune --representation weights", "does not group experts"},
      {m + " --experts 2 --method f-prune --allocation uniform", "only hc-smoe, kmeans and m-smoe allocate"},
      {m + " --experts 2 --merge nope", "not freq, average, fix-dom or zipit"},
      {m + " --experts 2 --router nope", "not dominant, weighted or fit"},
      {m + " --experts 2 --representation nope", "is not expert-output, router-logits or weights"},
      {m + " --experts 1 --method m-smoe --allocation uniform --group-limit 2", "need --experts >= 2"},
  };
  for (const Case& c : cases) {
    const auto r = run_moeforge("merge " + c.args + " --out " + out);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), r.code == 2 ? 2 : 1) << r.err;
    EXPECT_FALSE(path_exists(out)) << c.args;
  }
}
