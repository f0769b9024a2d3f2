// The ZipIt merge of `moeforge merge --merge zipit` (merge/zipit.h; spec merge_and_eval.md
// §A.6.3). Every expected value is derived by hand or by a naive reference written here: plain
// loops for the activations and correlations, and the reference's greedy loop taken literally — a
// full matrix, argmax over all of it, the running count-weighted average, the α·min update, and
// the merged-away row and column deleted, every merge.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "io/checkpoint.h"
#include "merge/calibrate.h"
#include "merge/merge.h"
#include "merge/zipit.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"
#include "merge_fixtures.h"
#include "test_helpers.h"

using namespace mf;
using namespace mf::merge_fixtures;
using mf::testing_helpers::run_moeforge;

namespace {

using Mat = std::vector<std::vector<double>>;

// a[t][c·m + n] = SiLU(x_t · g_{c,n}) · (x_t · u_{c,n}), by plain loops (fp64).
Mat naive_activations(const at::Tensor& X, const std::vector<merge::ExpertWeights>& members) {
  const int64_t T = X.size(0), d = X.size(1), m = members[0].gate.size(0);
  Mat A(static_cast<size_t>(T), std::vector<double>(members.size() * static_cast<size_t>(m)));
  const at::Tensor x = X.to(at::kDouble).contiguous();
  for (size_t c = 0; c < members.size(); ++c) {
    const at::Tensor g = members[c].gate.to(at::kDouble).contiguous(), u = members[c].up.to(at::kDouble).contiguous();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t n = 0; n < m; ++n) {
        double zg = 0, zu = 0;
        for (int64_t k = 0; k < d; ++k) {
          zg += x[t][k].item<double>() * g[n][k].item<double>();
          zu += x[t][k].item<double>() * u[n][k].item<double>();
        }
        A[t][c * m + n] = zg / (1.0 + std::exp(-zg)) * zu;
      }
  }
  return A;
}

// Pearson correlation of the columns over the rows, cov / (σ_a σ_b + 1e-7) with n−1 divisors;
// diagonal −1.
Mat naive_correlation(const Mat& A) {
  const size_t T = A.size(), F = A[0].size();
  std::vector<double> mu(F, 0.0), sd(F, 0.0);
  for (size_t f = 0; f < F; ++f) {
    for (size_t t = 0; t < T; ++t) mu[f] += A[t][f];
    mu[f] /= static_cast<double>(T);
    for (size_t t = 0; t < T; ++t) sd[f] += (A[t][f] - mu[f]) * (A[t][f] - mu[f]);
    sd[f] = std::sqrt(sd[f] / static_cast<double>(T - 1));
  }
  Mat R(F, std::vector<double>(F, -1.0));
  for (size_t a = 0; a < F; ++a)
    for (size_t b = 0; b < F; ++b) {
      if (a == b) continue;
      double cov = 0;
      for (size_t t = 0; t < T; ++t) cov += (A[t][a] - mu[a]) * (A[t][b] - mu[b]);
      R[a][b] = cov / static_cast<double>(T - 1) / (sd[a] * sd[b] + 1e-7);
    }
  return R;
}

struct NaiveZip {
  std::vector<std::vector<int64_t>> groups;  // per remaining feature, in order: its original features
  Mat weights;                               // per remaining feature: its running-averaged weight vector
};

// The reference's loop, literally: the first maximum of the whole matrix in row-major order (the
// diagonal included, as torch.argmax sees it), (c_i w_i + c_j w_j)/(c_i + c_j), row and column i
// set to α·min(row i, row j), R[i][i] = −1, row and column j deleted.
NaiveZip naive_zip(Mat R, Mat w, size_t width, double alpha) {
  const size_t F = R.size();
  NaiveZip z;
  for (size_t f = 0; f < F; ++f) z.groups.push_back({static_cast<int64_t>(f)});
  std::vector<double> count(F, 1.0);
  if (w.empty()) w.assign(F, {});
  while (R.size() > width) {
    size_t bi = 0, bj = 0;
    for (size_t i = 0; i < R.size(); ++i)
      for (size_t j = 0; j < R.size(); ++j)
        if (R[i][j] > R[bi][bj]) bi = i, bj = j;
    if (bi >= bj) {
      ADD_FAILURE() << "the maximum is not above the diagonal: " << bi << ", " << bj;
      return z;
    }
    const double ci = count[bi], cj = count[bj];
    for (size_t e = 0; e < w[bi].size(); ++e) w[bi][e] = (ci * w[bi][e] + cj * w[bj][e]) / (ci + cj);
    count[bi] += cj;
    std::vector<double> upd(R.size());
    for (size_t k = 0; k < R.size(); ++k) upd[k] = alpha * std::min(R[bi][k], R[bj][k]);
    for (size_t k = 0; k < R.size(); ++k) R[bi][k] = R[k][bi] = upd[k];
    R[bi][bi] = -1;
    z.groups[bi].insert(z.groups[bi].end(), z.groups[bj].begin(), z.groups[bj].end());
    std::sort(z.groups[bi].begin(), z.groups[bi].end());
    R.erase(R.begin() + static_cast<std::ptrdiff_t>(bj));
    for (auto& row : R) row.erase(row.begin() + static_cast<std::ptrdiff_t>(bj));
    z.groups.erase(z.groups.begin() + static_cast<std::ptrdiff_t>(bj));
    w.erase(w.begin() + static_cast<std::ptrdiff_t>(bj));
    count.erase(count.begin() + static_cast<std::ptrdiff_t>(bj));
  }
  z.weights = w;
  return z;
}

// The groups of the fast version's labels, in output-neuron order.
std::vector<std::vector<int64_t>> groups_of(const std::vector<int64_t>& label, int64_t width) {
  std::vector<std::vector<int64_t>> g(static_cast<size_t>(width));
  for (size_t f = 0; f < label.size(); ++f) g.at(static_cast<size_t>(label[f])).push_back(static_cast<int64_t>(f));
  return g;
}

at::Tensor to_tensor(const Mat& M) {
  std::vector<double> flat;
  for (const auto& row : M) flat.insert(flat.end(), row.begin(), row.end());
  return at::tensor(flat, at::kDouble).reshape({static_cast<int64_t>(M.size()), static_cast<int64_t>(M[0].size())});
}

merge::ExpertWeights random_expert(int64_t m, int64_t d) {
  return {at::randn({m, d}, at::kDouble), at::randn({m, d}, at::kDouble), at::randn({d, m}, at::kDouble)};
}

at::Tensor activations_of(const at::Tensor& X, const merge::ExpertWeights& e) {
  return at::silu(X.mm(e.gate.t())) * X.mm(e.up.t());
}

}  // namespace

TEST(MergeZipit, GreedyEqualsTheNaiveLoopOnMatricesWithTies) {
  // Symmetric matrices of a few levels k/4 (many exact ties; negative entries, which α·min raises
  // towards 0), zipped by the fast loop (best partner per row, updated incrementally) and by the
  // naive one: the same groups in the same order.
  torch::manual_seed(1);
  for (const double alpha : {0.1, 0.5, 1.0})
    for (const int64_t F : {2, 7, 24})
      for (const int64_t width : {int64_t{1}, F / 3 + 1, F - 1}) {
        Mat R(static_cast<size_t>(F), std::vector<double>(static_cast<size_t>(F), -1.0));
        const at::Tensor levels = at::randint(-3, 4, {F, F}, at::kLong);
        for (int64_t i = 0; i < F; ++i)
          for (int64_t j = i + 1; j < F; ++j) R[i][j] = R[j][i] = static_cast<double>(levels[i][j].item<int64_t>()) / 4;
        const std::vector<int64_t> label = merge::zipit_groups(to_tensor(R), width, alpha);
        EXPECT_EQ(groups_of(label, width), naive_zip(R, {}, static_cast<size_t>(width), alpha).groups)
            << "F " << F << " width " << width << " alpha " << alpha;
      }
}

TEST(MergeZipit, TiesGoToTheFirstPairInRowMajorOrder) {
  // Four features, every correlation 0.5, zipped to 2. First pair: (0, 1). With α = 0.1 the merged
  // feature's correlations become 0.05, so (2, 3) comes next: {0, 1}, {2, 3}. With α = 1 they stay
  // 0.5 and (0, 2) is the first of the tied pairs: {0, 1, 2}, {3}.
  at::Tensor R = at::full({4, 4}, 0.5, at::kDouble);
  EXPECT_EQ(merge::zipit_groups(R.clone(), 2, 0.1), (std::vector<int64_t>{0, 0, 1, 1}));
  EXPECT_EQ(merge::zipit_groups(R.clone(), 2, 1.0), (std::vector<int64_t>{0, 0, 0, 1}));
  // fp32 alike; and only the upper triangle counts (a lower one that disagrees is overwritten).
  at::Tensor S = R.to(at::kFloat);
  S[3][0] = 0.9f;
  EXPECT_EQ(merge::zipit_groups(S, 2, 0.1), (std::vector<int64_t>{0, 0, 1, 1}));
  EXPECT_THROW(merge::zipit_groups(R.clone(), 5, 0.1), Error);
}

TEST(MergeZipit, EqualsTheNaiveReferenceOnRandomExperts) {
  struct Case {
    int64_t members, m, d, T;
    double alpha;
  };
  const std::vector<Case> cases = {{2, 4, 6, 24, 0.1}, {3, 5, 7, 36, 0.1}, {3, 6, 5, 48, 0.1}, {2, 6, 4, 30, 0.5}};
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    const Case& k = cases[ci];
    torch::manual_seed(static_cast<uint64_t>(10 + ci));
    const at::Tensor X = at::randn({k.T, k.d}, at::kDouble);
    std::vector<merge::ExpertWeights> members;
    for (int64_t c = 0; c < k.members; ++c) members.push_back(random_expert(k.m, k.d));
    const Mat A = naive_activations(X, members);
    const Mat R = naive_correlation(A);
    // The correlation of the code equals the loops'.
    EXPECT_LT((merge::activation_correlation(to_tensor(A)) - to_tensor(R)).abs().max().item<double>(), 1e-12) << ci;
    // Per feature c·m + n its weight vector: gate row, up row, down column.
    Mat w;
    for (const auto& e : members)
      for (int64_t n = 0; n < k.m; ++n) {
        std::vector<double> v;
        for (int64_t j = 0; j < k.d; ++j) v.push_back(e.gate[n][j].item<double>());
        for (int64_t j = 0; j < k.d; ++j) v.push_back(e.up[n][j].item<double>());
        for (int64_t j = 0; j < k.d; ++j) v.push_back(e.down[j][n].item<double>());
        w.push_back(v);
      }
    const NaiveZip z = naive_zip(R, w, static_cast<size_t>(k.m), k.alpha);
    // The same partition of the features, in the same output order.
    std::vector<at::Tensor> gs, us;
    for (const auto& e : members) {
      gs.push_back(e.gate);
      us.push_back(e.up);
    }
    std::vector<int64_t> label;  // per feature c·m + n: maps[c][n]
    for (const auto& mp : merge::zipit_maps(X, gs, us, k.alpha)) label.insert(label.end(), mp.begin(), mp.end());
    EXPECT_EQ(groups_of(label, k.m), z.groups) << ci;
    // The same weights: the running average equals the group mean up to rounding.
    const merge::ExpertWeights out = merge::zipit_merge(members, X, k.alpha);
    ASSERT_EQ(out.gate.scalar_type(), at::kDouble);
    double diff = 0;
    for (int64_t g = 0; g < k.m; ++g)
      for (int64_t j = 0; j < k.d; ++j) {
        diff = std::max(diff, std::abs(out.gate[g][j].item<double>() - z.weights[g][j]));
        diff = std::max(diff, std::abs(out.up[g][j].item<double>() - z.weights[g][k.d + j]));
        diff = std::max(diff, std::abs(out.down[j][g].item<double>() - z.weights[g][2 * k.d + j]));
      }
    EXPECT_LT(diff, 1e-12) << ci;
  }
}

TEST(MergeZipit, ExactCopiesZipBackIntoTheExpert) {
  torch::manual_seed(7);
  const int64_t T = 40, d = 5, m = 6;
  const at::Tensor X = at::randn({T, d}, at::kDouble);
  const merge::ExpertWeights E = random_expert(m, d);
  // The input is such that only copies correlate perfectly: distinct neurons of E stay well below 1.
  const at::Tensor own = merge::activation_correlation(activations_of(X, E));
  ASSERT_LT(own.max().item<double>(), 0.999);
  const std::vector<int64_t> id = {0, 1, 2, 3, 4, 5};
  for (const at::ScalarType dt : {at::kDouble, at::kFloat}) {
    const merge::ExpertWeights e{E.gate.to(dt), E.up.to(dt), E.down.to(dt)};
    const at::Tensor x = X.to(dt);
    // Two copies: every neuron pairs with its copy (correlation ≈ 1, the largest), the mean of a
    // weight and itself is that weight: the expert bit for bit.
    EXPECT_EQ(merge::zipit_maps(x, {e.gate, e.gate}, {e.up, e.up}), (std::vector<std::vector<int64_t>>{id, id}));
    const merge::ExpertWeights two = merge::zipit_merge({e, e}, x);
    EXPECT_TRUE(torch::equal(two.gate, e.gate) && torch::equal(two.up, e.up) && torch::equal(two.down, e.down));
    // A copy with permuted neurons (its neuron p is E's neuron perm[p]) is zipped back as well.
    const std::vector<int64_t> perm = {3, 0, 5, 1, 2, 4};
    const at::Tensor p = at::tensor(perm, at::kLong);
    const merge::ExpertWeights ep{e.gate.index_select(0, p), e.up.index_select(0, p), e.down.index_select(1, p)};
    EXPECT_EQ(merge::zipit_maps(x, {e.gate, ep.gate}, {e.up, ep.up}), (std::vector<std::vector<int64_t>>{id, perm}));
    const merge::ExpertWeights back = merge::zipit_merge({e, ep}, x);
    EXPECT_TRUE(torch::equal(back.gate, e.gate) && torch::equal(back.up, e.up) && torch::equal(back.down, e.down));
    EXPECT_FALSE(at::allclose((e.gate + ep.gate) / 2, e.gate));  // what a plain average would give
  }
  // Three copies: with α = 1 a merged pair keeps correlation ≈ 1 with the third copy, and the three
  // zip back (the mean of three equal values, up to rounding). With the paper's α = 0.1 they need
  // not: the pair's correlation with the third copy drops to ≈ 0.1, below those of distinct neurons.
  const merge::ExpertWeights three = merge::zipit_merge({E, E, E}, X, 1.0);
  EXPECT_TRUE(at::allclose(three.gate, E.gate, 0, 1e-14) && at::allclose(three.up, E.up, 0, 1e-14) &&
              at::allclose(three.down, E.down, 0, 1e-14));
}

TEST(MergeZipit, ByHand) {
  // Three tokens x_t = (1, v_t, w_t) with v = (1, 0, −1) and w = (1, −2, 1) (both of mean 0,
  // orthogonal, |v|² = 2, |w|² = 6). Feature f (members A and B, m = 2; features A0, A1, B0, B1 =
  // 0, 1, 2, 3) has gate row (c_f, 0, 0) with c = 1, 2, 3, 4, so SiLU(x·g) = SiLU(c_f) > 0 on every
  // token, and up row (0.1·c_f, cos θ_f / √2, sin θ_f / √6). Its centred activation column is
  // SiLU(c_f)·(cos θ_f / √2 · v + sin θ_f / √6 · w), so cov(f, g) = SiLU(c_f)SiLU(c_g)/2 · cos(θ_f − θ_g)
  // and the correlation is cos(θ_f − θ_g) (less a relative 10⁻⁷ from the ε). With θ = 0°, 25°, 10°, 100°:
  //   r(A0,A1) = cos 25° = 0.906   r(A0,B0) = cos 10° = 0.985   r(A0,B1) = cos 100° = −0.174
  //   r(A1,B0) = cos 15° = 0.966   r(A1,B1) = cos 75° = 0.259   r(B0,B1) = cos 90° = 0
  // α = 0.1: merge (A0, B0) [0.985], kept at index 0; r(0, A1) = 0.1·min(0.906, 0.966) = 0.091,
  //   r(0, B1) = 0.1·min(−0.174, 0) = −0.017; now r(A1, B1) = 0.259 is the largest: merge it.
  //   Groups {A0, B0} → neuron 0, {A1, B1} → neuron 1: across the experts.
  // α = 1: after (A0, B0), r(0, A1) = min(0.906, 0.966) = 0.906 > 0.259: merge A1 into it.
  //   Groups {A0, A1, B0} → neuron 0 (a merge within expert A), {B1} → neuron 1.
  const at::Tensor X = at::tensor({1.0, 1.0, 1.0, 1.0, 0.0, -2.0, 1.0, -1.0, 1.0}, at::kDouble).reshape({3, 3});
  const double deg = std::acos(-1.0) / 180;
  auto up_row = [&](double c, double theta) {
    return std::vector<double>{0.1 * c, std::cos(theta * deg) / std::sqrt(2.0), std::sin(theta * deg) / std::sqrt(6.0)};
  };
  auto rows = [](const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> v = a;
    v.insert(v.end(), b.begin(), b.end());
    return at::tensor(v, at::kDouble).reshape({2, 3});
  };
  const merge::ExpertWeights A{rows({1, 0, 0}, {2, 0, 0}), rows(up_row(1, 0), up_row(2, 25)),
                               at::tensor({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, at::kDouble).reshape({3, 2})};
  const merge::ExpertWeights B{rows({3, 0, 0}, {4, 0, 0}), rows(up_row(3, 10), up_row(4, 100)),
                               at::tensor({7.0, 8.0, 9.0, 10.0, 11.0, 12.0}, at::kDouble).reshape({3, 2})};
  auto near = [](const at::Tensor& a, const at::Tensor& b) { return at::allclose(a, b, 0, 1e-12); };

  EXPECT_EQ(merge::zipit_maps(X, {A.gate, B.gate}, {A.up, B.up}, 0.1),
            (std::vector<std::vector<int64_t>>{{0, 1}, {0, 1}}));
  const merge::ExpertWeights a = merge::zipit_merge({A, B}, X, 0.1);
  EXPECT_TRUE(near(a.gate, at::tensor({2.0, 0.0, 0.0, 3.0, 0.0, 0.0}, at::kDouble).reshape({2, 3}))) << a.gate;
  EXPECT_TRUE(near(a.up[0], (A.up[0] + B.up[0]) / 2) && near(a.up[1], (A.up[1] + B.up[1]) / 2)) << a.up;
  // Down: column n belongs to neuron n, averaged like the rows: ((1+7)/2, (3+9)/2, (5+11)/2) and
  // ((2+8)/2, (4+10)/2, (6+12)/2).
  EXPECT_TRUE(near(a.down, at::tensor({4.0, 5.0, 6.0, 7.0, 8.0, 9.0}, at::kDouble).reshape({3, 2}))) << a.down;

  EXPECT_EQ(merge::zipit_maps(X, {A.gate, B.gate}, {A.up, B.up}, 1.0),
            (std::vector<std::vector<int64_t>>{{0, 0}, {0, 1}}));
  const merge::ExpertWeights b = merge::zipit_merge({A, B}, X, 1.0);
  EXPECT_TRUE(near(b.gate, at::tensor({2.0, 0.0, 0.0, 4.0, 0.0, 0.0}, at::kDouble).reshape({2, 3}))) << b.gate;
  EXPECT_TRUE(near(b.up[0], (A.up[0] + A.up[1] + B.up[0]) / 3) && near(b.up[1], B.up[1])) << b.up;
  EXPECT_TRUE(near(b.down, at::tensor({10.0 / 3, 8.0, 16.0 / 3, 10.0, 22.0 / 3, 12.0}, at::kDouble).reshape({3, 2})))
      << b.down;
}

TEST(MergeZipit, SingletonsAndTooFewTokens) {
  torch::manual_seed(9);
  const merge::ExpertWeights E = random_expert(4, 3), F = random_expert(4, 3);
  // One member: unchanged.
  const merge::ExpertWeights one = merge::zipit_merge({E}, at::randn({10, 3}, at::kDouble));
  EXPECT_TRUE(torch::equal(one.gate, E.gate) && torch::equal(one.up, E.up) && torch::equal(one.down, E.down));
  // One routed row: no correlation, a plain average of the members.
  const merge::ExpertWeights avg = merge::zipit_merge({E, F}, at::randn({1, 3}, at::kDouble));
  EXPECT_TRUE(at::allclose(avg.gate, (E.gate + F.gate) / 2) && at::allclose(avg.down, (E.down + F.down) / 2));
  EXPECT_THROW(merge::zipit_merge({E, random_expert(5, 3)}, at::randn({10, 3}, at::kDouble)), Error);
}

TEST(MergeZipit, CliZipsFourCopiesBackIntoTheExpert) {
  // r = 1 on the upcycled model of four identical experts: one cluster of 4 × 24 neurons zipped to
  // 24. The copies of a neuron pair up first (correlation ≈ 1), then the pairs (≈ α²), so every
  // output neuron is the mean of the four copies of one neuron: the expert, and zero output error.
  // (Three copies would not zip back with α = 0.1: the third copy's correlation with a merged pair
  // drops to ≈ 0.1, below that of distinct neurons.)
  const std::string out = fresh("zipit_cli");
  const auto r = run_moeforge("merge " + mixtral(false) + " --method hc-smoe --experts 1 --merge zipit --calib " +
                              calib_file() + " --seq-len 16 --blocks 8 --out " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  const json report = read_json_file(path_join(out, "merge_report.json"));
  EXPECT_EQ(report["merge"], "zipit");
  const Checkpoint a = Checkpoint::open(mixtral(false)), b = Checkpoint::open(out);
  EXPECT_EQ(b.config()["num_local_experts"], 1);
  for (const json& l : report["layers"]) {
    EXPECT_LT(l["output_error"].get<double>(), 1e-6) << l.dump();
    ASSERT_TRUE(l.contains("zipit_tokens")) << l.dump();
    EXPECT_EQ(l["zipit_tokens"], json::array({2 * 128}));  // 128 tokens, each routed to 2 of the 4 members
    const std::string pre = cat("model.layers.", l["layer"].get<int64_t>(), ".block_sparse_moe.experts.");
    for (const char* proj : {"w1", "w2", "w3"})
      EXPECT_TRUE(at::allclose(b.get(cat(pre, 0, ".", proj, ".weight")), a.get(cat(pre, 0, ".", proj, ".weight")),
                               1e-6, 1e-7))
          << proj;
  }
  std::shared_ptr<Model> merged = Model::load(out, {at::kFloat, at::kCPU});
  merged->eval();
  at::NoGradGuard ng;
  const at::Tensor ids = at::tensor({1, 450, 4996, 17354, 1701, 432}, at::kLong).unsqueeze(0);
  EXPECT_TRUE(at::isfinite(merged->forward(ids)).all().item<bool>());
}

TEST(MergeZipit, ExactOutputHoldsTheZippedExpertsOfTheRoutedTokens) {
  MergeOptions o = options("hc-smoe", 2);
  o.merge = "zipit";
  o.output = "exact";
  const std::string out = fresh("zipit_exact");
  const json report = run_merge(mixtral(true), o, out);
  EXPECT_EQ(report["merge"], "zipit");
  // The routed rows of each cluster from a calibration pass of our own: for every member, in order,
  // the tokens whose two largest router logits include it (plain loops).
  std::shared_ptr<Model> model = Model::load(mixtral(true), {at::kFloat, at::kCPU});
  MergeCalibOptions co = o.calib;
  co.keep_tokens = o.fit_tokens;
  co.logits = true;
  const MergeCalibration calib = calibrate_merge(*model, *Tokenizer::load(mixtral(true)), co);
  const Checkpoint a = Checkpoint::open(mixtral(true)), b = Checkpoint::open(out);
  for (size_t li = 0; li < report["layers"].size(); ++li) {
    const json& l = report["layers"][li];
    const int64_t layer = l["layer"].get<int64_t>();
    const at::Tensor Z = calib.layers[li].logits;
    const int64_t S = Z.size(0), E = Z.size(1);
    const auto clusters = l["clusters"].get<std::vector<std::vector<int64_t>>>();
    for (size_t c = 0; c < clusters.size(); ++c) {
      const std::string src = cat("model.layers.", layer, ".block_sparse_moe.experts.");
      const std::string dst = cat("model.layers.", layer, ".mlp.experts.", c, ".");
      std::vector<merge::ExpertWeights> members;
      std::vector<int64_t> rows;
      for (int64_t j : clusters[c]) {
        members.push_back({a.get(cat(src, j, ".w1.weight")), a.get(cat(src, j, ".w3.weight")),
                           a.get(cat(src, j, ".w2.weight"))});
        for (int64_t t = 0; t < S; ++t) {
          int64_t above = 0;  // logits larger than expert j's: j is in the top 2 when at most 1 is
          for (int64_t e = 0; e < E; ++e) above += Z[t][e].item<float>() > Z[t][j].item<float>();
          if (above < 2) rows.push_back(t);
        }
      }
      const at::Tensor X = calib.layers[li].inputs.index_select(0, at::tensor(rows, at::kLong));
      if (clusters[c].size() > 1) EXPECT_EQ(l["zipit_tokens"][c], static_cast<int64_t>(rows.size()));
      const merge::ExpertWeights want = merge::zipit_merge(members, X);
      EXPECT_TRUE(at::allclose(b.get(dst + "gate_proj.weight"), want.gate, 1e-5, 1e-6)) << layer << " " << c;
      EXPECT_TRUE(at::allclose(b.get(dst + "up_proj.weight"), want.up, 1e-5, 1e-6)) << layer << " " << c;
      EXPECT_TRUE(at::allclose(b.get(dst + "down_proj.weight"), want.down, 1e-5, 1e-6)) << layer << " " << c;
    }
  }
  // The checkpoint's logits equal the original model's with every expert replaced by its cluster's
  // zipped expert (tied experts, the original router): the paper's forward.
  std::shared_ptr<Model> tied = tied_merged_model(mixtral(true), report, b);
  std::shared_ptr<Model> exact = Model::load(out, {at::kFloat, at::kCPU});
  tied->eval();
  exact->eval();
  at::NoGradGuard ng;
  const at::Tensor ids = at::tensor({1, 450, 4996, 17354, 1701, 432, 17204, 975}, at::kLong).unsqueeze(0);
  EXPECT_LT((tied->forward(ids) - exact->forward(ids)).abs().max().item<double>(), 1e-5);
}
