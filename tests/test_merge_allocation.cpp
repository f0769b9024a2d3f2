// Two options of `moeforge merge` from the HC-SMoE reference (issue 16): `--allocation global` for
// hc-smoe and kmeans (the reference's dynamic_group: per-layer cluster counts from M-SMoE's global
// frequency threshold, spec merge_and_eval.md §A.5, §A.8.1), and K-means' combined
// representations (`--representation a+b[+c]`, §A.4: each representation's distances to the
// centres standardised as K-means standardises one, then averaged with weights 1). Every expected
// value is derived by hand or by a naive reference written here, never copied from the code's output.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "io/checkpoint.h"
#include "merge/calibrate.h"
#include "merge/hclust.h"
#include "merge/kmeans.h"
#include "merge/merge.h"
#include "merge/plan.h"
#include "merge/represent.h"
#include "model/hooks.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"
#include "merge_fixtures.h"
#include "test_helpers.h"

using namespace mf;
using namespace mf::merge_fixtures;
using mf::testing_helpers::run_moeforge;

namespace {

using Clusters = std::vector<std::vector<int64_t>>;
using Rows = std::vector<std::vector<double>>;  // one vector per expert

Clusters clusters_of(const json& layer) { return layer["clusters"].get<Clusters>(); }

std::vector<double> flat(const Rows& V) {
  std::vector<double> out;
  for (const auto& v : V) out.insert(out.end(), v.begin(), v.end());
  return out;
}

double dist(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t c = 0; c < a.size(); ++c) s += (a[c] - b[c]) * (a[c] - b[c]);
  return std::sqrt(s);
}

struct NaiveKMeans {
  Clusters clusters;
  std::vector<int64_t> dominant;    // per cluster (in the order of `clusters`)
  std::vector<bool> dominant_clear; // the best member beats the next by more than rounding
  bool empty = false;               // a cluster lost every member (the reference goes NaN there)
};

// The reference's K-means loop (hcsmoe/merging/clustering.py) written out on plain rows, for F
// feature sets: per set f, D_f[i][c] = ‖x_i − centre_c‖ / divisor_f, each column c standardised
// (minus its mean over the points, divided by its std with n−1 divisor + 1e-6), then the whole
// matrix shifted by its minimum; D = the mean of the D_f; every point to its argmin centre (ties:
// the lower); centres = the means of their members; stop once no centre coordinate moved by 1e-4
// or more, at most 100 iterations. The dominant member of a cluster has the least Σ_f distance to
// the final centres (ties: the lower index). Clusters listed by their lowest member.
NaiveKMeans naive_kmeans(const std::vector<Rows>& features, const std::vector<double>& divisors,
                         const std::vector<int64_t>& init) {
  const size_t n = features[0].size(), k = init.size(), F = features.size();
  std::vector<Rows> centres(F);
  for (size_t f = 0; f < F; ++f)
    for (int64_t j : init) centres[f].push_back(features[f][static_cast<size_t>(j)]);
  std::vector<size_t> assign(n, 0);
  std::vector<Rows> updated = centres;
  NaiveKMeans out;
  for (int it = 0; it < 100; ++it) {
    Rows D(n, std::vector<double>(k, 0.0));
    for (size_t f = 0; f < F; ++f) {
      Rows Df(n, std::vector<double>(k));
      for (size_t i = 0; i < n; ++i)
        for (size_t c = 0; c < k; ++c) Df[i][c] = dist(features[f][i], centres[f][c]) / divisors[f];
      for (size_t c = 0; c < k; ++c) {
        double mean = 0, var = 0;
        for (size_t i = 0; i < n; ++i) mean += Df[i][c];
        mean /= static_cast<double>(n);
        for (size_t i = 0; i < n; ++i) var += (Df[i][c] - mean) * (Df[i][c] - mean);
        const double sd = std::sqrt(var / static_cast<double>(n - 1));
        for (size_t i = 0; i < n; ++i) Df[i][c] = (Df[i][c] - mean) / (sd + 1e-6);
      }
      double lo = std::numeric_limits<double>::infinity();
      for (const auto& row : Df)
        for (double v : row) lo = std::min(lo, v);
      for (size_t i = 0; i < n; ++i)
        for (size_t c = 0; c < k; ++c) D[i][c] += (Df[i][c] - lo) / static_cast<double>(F);
    }
    for (size_t i = 0; i < n; ++i) {
      assign[i] = 0;
      for (size_t c = 1; c < k; ++c)
        if (D[i][c] < D[i][assign[i]]) assign[i] = c;
    }
    double max_diff = 0;
    for (size_t f = 0; f < F; ++f)
      for (size_t c = 0; c < k; ++c) {
        std::vector<double> sum(features[f][0].size(), 0.0);
        size_t count = 0;
        for (size_t i = 0; i < n; ++i)
          if (assign[i] == c) {
            for (size_t t = 0; t < sum.size(); ++t) sum[t] += features[f][i][t];
            ++count;
          }
        if (count == 0) {
          out.empty = true;
          return out;
        }
        for (size_t t = 0; t < sum.size(); ++t) {
          updated[f][c][t] = sum[t] / static_cast<double>(count);
          max_diff = std::max(max_diff, std::abs(updated[f][c][t] - centres[f][c][t]));
        }
      }
    if (max_diff < 1e-4) break;
    centres = updated;
  }
  std::vector<int64_t> order;  // centre indices by their lowest member
  for (size_t i = 0; i < n; ++i)
    if (std::find(order.begin(), order.end(), static_cast<int64_t>(assign[i])) == order.end())
      order.push_back(static_cast<int64_t>(assign[i]));
  for (int64_t c : order) {
    std::vector<int64_t> members;
    std::vector<double> sums;
    for (size_t i = 0; i < n; ++i) {
      if (static_cast<int64_t>(assign[i]) != c) continue;
      double s = 0;
      for (size_t f = 0; f < F; ++f) s += dist(features[f][i], updated[f][static_cast<size_t>(c)]);
      members.push_back(static_cast<int64_t>(i));
      sums.push_back(s);
    }
    size_t best = 0;
    for (size_t m = 1; m < members.size(); ++m)
      if (sums[m] < sums[best]) best = m;
    bool clear = true;
    for (size_t m = 0; m < members.size(); ++m)
      if (m != best && sums[m] - sums[best] <= 1e-9 * std::max(1.0, sums[best])) clear = false;
    out.clusters.push_back(members);
    out.dominant.push_back(members[best]);
    out.dominant_clear.push_back(clear);
  }
  return out;
}

}  // namespace

TEST(MergeCombinedRepresentation, KMeansAveragesEachFeatureSetsStandardisedDistances) {
  // Built so that the two feature sets disagree: from the centres 0 and 5, A alone splits
  // {0,1,2} | {3,4,5} and B alone {0,1,3} | {2,4,5}. Point 2 is clearly A's first cluster and only
  // just B's second, point 3 clearly B's first and only just A's second, so the average of the
  // standardised distances puts both with 0: {0,1,2,3} | {4,5}, unlike either set alone (the
  // closest call, point 3 in the first iteration, is 0.46 apart in averaged distance). Dominant
  // members: 1 (Σ distance 2.61 to the means (1.875, .25) and (1.625, .5), against 3.59, 5.06,
  // 4.43), and 4, which ties exactly with 5 (the two halves of a pair) and is the lower index.
  const Rows A = {{0, 0}, {1, 0}, {1, 1}, {5.5, 0}, {9, 1}, {10, 0}};
  const Rows B = {{0, 0}, {0, 1}, {5.5, 0}, {1, 1}, {10, 1}, {10, 0}};
  const std::vector<double> a = flat(A), b = flat(B);
  const merge::KMeansFeatures fa{&a, 2, 1.0, 0.0}, fb{&b, 2, 1.0, 0.0};
  merge::KMeansOptions ko;
  ko.init = {0, 5};
  const merge::KMeansResult ra = merge::kmeans({fa}, 6, 2, ko), rb = merge::kmeans({fb}, 6, 2, ko),
                            rab = merge::kmeans({fa, fb}, 6, 2, ko);
  EXPECT_EQ(merge::cluster_members(ra.labels), (Clusters{{0, 1, 2}, {3, 4, 5}}));
  EXPECT_EQ(merge::cluster_members(rb.labels), (Clusters{{0, 1, 3}, {2, 4, 5}}));
  EXPECT_EQ(merge::cluster_members(rab.labels), (Clusters{{0, 1, 2, 3}, {4, 5}}));
  EXPECT_EQ(rab.dominant, (std::vector<int64_t>{1, 4}));
  // The naive reference agrees on all three.
  for (const auto& [result, sets] : std::vector<std::pair<merge::KMeansResult, std::vector<Rows>>>{
           {ra, {A}}, {rb, {B}}, {rab, {A, B}}}) {
    const NaiveKMeans naive = naive_kmeans(sets, std::vector<double>(sets.size(), 2.0), {0, 5});
    ASSERT_FALSE(naive.empty);
    EXPECT_EQ(merge::cluster_members(result.labels), naive.clusters);
    EXPECT_EQ(result.dominant, naive.dominant);
  }
}

TEST(MergeCombinedRepresentation, KMeansOnRandomFeatureSetsEqualsTheNaiveLoop) {
  // Three feature sets of 8 points (dimensions 3, 5, 4; the second divided by 7 instead of its
  // dimension, as an embedding is), k = 3, from the seeded k-means++ start: its draws depend on the
  // first feature set alone, so they are those of K-means on that set.
  int64_t compared = 0;
  for (uint64_t seed = 0; seed < 6; ++seed) {
    torch::manual_seed(static_cast<int64_t>(100 + seed));
    const int64_t n = 8, k = 3;
    const std::vector<int64_t> dims = {3, 5, 4};
    std::vector<Rows> sets;
    std::vector<std::vector<double>> values;
    for (int64_t d : dims) {
      const at::Tensor t = at::randn({n, d}, at::kDouble).contiguous();
      values.emplace_back(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
      Rows rows;
      for (int64_t i = 0; i < n; ++i)
        rows.emplace_back(values.back().begin() + i * d, values.back().begin() + (i + 1) * d);
      sets.push_back(rows);
    }
    const std::vector<merge::KMeansFeatures> features = {
        {&values[0], 3, 1.0, 0.0}, {&values[1], 5, 1.0, 7.0}, {&values[2], 4, 1.0, 0.0}};
    merge::KMeansOptions ko;
    ko.seed = seed;
    const merge::KMeansResult r = merge::kmeans(features, n, k, ko);
    EXPECT_EQ(r.initial, merge::kmeans(values[0], n, 3, k, ko).initial) << seed;
    if (r.reseeded > 0) continue;  // a re-seeded empty cluster: the documented deviation, not modelled here
    const NaiveKMeans naive = naive_kmeans(sets, {3.0, 7.0, 4.0}, r.initial);
    ASSERT_FALSE(naive.empty) << seed;
    EXPECT_EQ(merge::cluster_members(r.labels), naive.clusters) << seed;
    for (size_t c = 0; c < naive.dominant.size(); ++c)
      if (naive.dominant_clear[c]) EXPECT_EQ(r.dominant[c], naive.dominant[c]) << seed;
    ++compared;
  }
  EXPECT_GE(compared, 3);
}

TEST(MergeCombinedRepresentation, KMeansOnAFeatureSetGivenTwiceIsKMeansOnIt) {
  for (uint64_t seed = 0; seed < 4; ++seed) {
    torch::manual_seed(static_cast<int64_t>(seed));
    const at::Tensor t = at::randn({7, 4}, at::kDouble).contiguous();
    const std::vector<double> X(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    for (double divisor : {0.0, 13.0}) {
      const merge::KMeansFeatures f{&X, 4, 1.0, divisor};
      merge::KMeansOptions ko;
      ko.seed = seed;
      const merge::KMeansResult one = merge::kmeans({f}, 7, 3, ko), two = merge::kmeans({f, f}, 7, 3, ko);
      EXPECT_EQ(one.labels, two.labels);
      EXPECT_EQ(one.dominant, two.dominant);
      EXPECT_EQ(one.centers, two.centers);  // bit for bit
      EXPECT_EQ(one.initial, two.initial);
      EXPECT_EQ(one.iterations, two.iterations);
      EXPECT_EQ(one.converged, two.converged);
      EXPECT_EQ(one.reseeded, two.reseeded);
    }
  }
}

TEST(MergeCombinedRepresentation, RepeatingARepresentationIsThatRepresentation) {
  const std::string dir = mixtral(true);
  for (const std::string rep : {"expert-output", "router-logits"})
    for (int64_t r : {2, 3}) {
      MergeOptions one = options("kmeans", r);
      one.representation = rep;
      MergeOptions two = one;
      two.representation = rep + "+" + rep;
      const std::string out1 = fresh(cat("combo_one_", rep, r)), out2 = fresh(cat("combo_two_", rep, r));
      const json a = run_merge(dir, one, out1), b = run_merge(dir, two, out2);
      EXPECT_EQ(b["representation"].get<std::string>(), rep + "+" + rep);
      ASSERT_EQ(a["layers"].size(), b["layers"].size());
      for (size_t l = 0; l < a["layers"].size(); ++l) {
        EXPECT_EQ(clusters_of(a["layers"][l]), clusters_of(b["layers"][l])) << rep << " " << r;
        EXPECT_EQ(a["layers"][l]["router_row_of"], b["layers"][l]["router_row_of"]) << rep << " " << r;
        EXPECT_EQ(a["layers"][l]["output_error"], b["layers"][l]["output_error"]) << rep << " " << r;
      }
      const Checkpoint ca = Checkpoint::open(out1), cb = Checkpoint::open(out2);
      ASSERT_EQ(ca.names(), cb.names());
      for (const std::string& name : ca.names()) EXPECT_TRUE(torch::equal(ca.get(name), cb.get(name))) << name;
    }
}

TEST(MergeCombinedRepresentation, ExpertOutputAndRouterLogitsEqualTheNaiveLoop) {
  const std::string dir = mixtral(true);
  // The mean expert outputs and, through a hook of our own, the router logits of every calibration
  // token, from our own calibration pass.
  std::shared_ptr<Model> model = Model::load(dir, {at::kFloat, at::kCPU});
  std::map<int, Rows> logits;  // layer -> per token the 4 logits
  const int h = model->hooks().add(HookPoint::router_logits, [&](HookEvent& ev) {
    const at::Tensor z = ev.tensor.to(at::kDouble).contiguous();
    for (int64_t t = 0; t < z.size(0); ++t)
      logits[ev.layer].emplace_back(z[t].data_ptr<double>(), z[t].data_ptr<double>() + z.size(1));
  });
  const MergeCalibration calib = calibrate_merge(*model, *Tokenizer::load(dir), options("kmeans", 2).calib);
  model->hooks().remove(h);
  ASSERT_EQ(calib.layers.size(), 2u);
  int64_t compared = 0;
  for (const std::string name : {"expert-output+router-logits", "router-logits+expert-output"})
    for (int64_t r : {2, 3}) {
      MergeOptions o = options("kmeans", r);
      o.representation = name;
      const bool outputs_first = name == "expert-output+router-logits";
      const json report = run_merge(dir, o, fresh(cat("combo_naive_", outputs_first ? "eo_rl_" : "rl_eo_", r)));
      EXPECT_EQ(report["representation"].get<std::string>(), name);
      for (size_t l = 0; l < 2; ++l) {
        const LayerCalibration& c = calib.layers[l];
        const std::vector<double> mo = merge::to_vector(c.mean_output);
        const int64_t d = c.mean_output.size(1);
        Rows outputs, columns(4);
        for (int64_t j = 0; j < 4; ++j) outputs.emplace_back(mo.begin() + j * d, mo.begin() + (j + 1) * d);
        const Rows& Z = logits.at(static_cast<int>(c.layer));
        ASSERT_EQ(static_cast<int64_t>(Z.size()), calib.tokens);
        for (const auto& z : Z)
          for (int j = 0; j < 4; ++j) columns[j].push_back(z[j]);
        const double T = static_cast<double>(Z.size());
        const double D = static_cast<double>(d);
        const std::vector<Rows> sets =
            outputs_first ? std::vector<Rows>{outputs, columns} : std::vector<Rows>{columns, outputs};
        const std::vector<double> divisors = outputs_first ? std::vector<double>{D, T} : std::vector<double>{T, D};
        // The seeded start (seed 0): k-means++ on the first representation's vectors.
        const merge::KMeansResult first = merge::kmeans(flat(sets[0]), 4, static_cast<int64_t>(sets[0][0].size()), r);
        const NaiveKMeans naive = naive_kmeans(sets, divisors, first.initial);
        if (naive.empty) continue;  // the code re-seeds there (a documented deviation)
        const json& L = report["layers"][l];
        EXPECT_EQ(clusters_of(L), naive.clusters) << name << " r " << r << " layer " << l;
        const auto dominant = L["router_row_of"].get<std::vector<int64_t>>();
        for (size_t k = 0; k < naive.dominant.size(); ++k)
          if (naive.dominant_clear[k]) EXPECT_EQ(dominant[k], naive.dominant[k]) << name << " r " << r << " layer " << l;
        ++compared;
      }
    }
  EXPECT_GE(compared, 4);
}

TEST(MergeAllocation, HcSmoeAndKMeansTakeMSmoesGlobalCountsAndClusterEachLayerIntoThem) {
  const std::string dir = mixtral(true);
  // Our own calibration pass: the mean outputs o_j the clustering sees.
  std::shared_ptr<Model> model = Model::load(dir, {at::kFloat, at::kCPU});
  const MergeCalibration calib = calibrate_merge(*model, *Tokenizer::load(dir), options("hc-smoe", 2).calib);
  ASSERT_EQ(calib.layers.size(), 2u);
  const at::Tensor ids =
      at::tensor({1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889}, at::kLong).unsqueeze(0);
  bool some_layers_differ = false;  // the case must exercise a non-uniform allocation
  for (int64_t r : {2, 3}) {
    MergeOptions ms = options("m-smoe", r);
    ms.output = "exact";
    const json msmoe = run_merge(dir, ms, fresh(cat("alloc_msmoe_", r)));
    for (const std::string method : {"hc-smoe", "kmeans"}) {
      const std::string what = cat(method, " r ", r);
      MergeOptions o = options(method, r);
      o.allocation = "global";
      o.output = "exact";
      const std::string out = fresh(cat("alloc_", method, "_", r));
      const json report = run_merge(dir, o, out);
      // By hand from the report's frequencies: all 8 in descending order, τ the one at index r·2,
      // a layer keeps the experts above τ, at least one (clustering has no group limit).
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
      }
      EXPECT_EQ(report["experts_per_layer"].get<std::vector<int64_t>>(), expect) << what;
      some_layers_differ |= expect.front() != expect.back();
      EXPECT_EQ(report["allocation"].get<std::string>(), "global") << what;
      EXPECT_DOUBLE_EQ(report["frequency_threshold"].get<double>(), tau) << what;
      EXPECT_TRUE(report.contains("layers_raised_to_one_cluster")) << what;
      // m-smoe's allocation on the same calibration (its minimum ⌈4 / 4⌉ is also 1).
      EXPECT_EQ(report["experts_per_layer"], msmoe["experts_per_layer"]) << what;
      for (size_t l = 0; l < 2; ++l) {
        const json& L = report["layers"][l];
        EXPECT_EQ(L["frequency"], msmoe["layers"][l]["frequency"]) << what;
        EXPECT_EQ(L["experts"].get<int64_t>(), expect[l]) << what;
        // Each layer is the method's clustering of the mean outputs into its own count.
        const std::vector<double> X = merge::to_vector(calib.layers[l].mean_output);
        const int64_t d = calib.layers[l].mean_output.size(1);
        const std::vector<int64_t> labels = method == "hc-smoe"
                                                ? merge::hierarchical_clusters(X, 4, d, expect[l], merge::Linkage::Average)
                                                : merge::kmeans(X, 4, d, expect[l]).labels;
        EXPECT_EQ(clusters_of(L), merge::cluster_members(labels)) << what << " layer " << l;
      }
      // The exact checkpoint: num_experts is the largest count, smaller layers padded with width-1
      // experts nobody maps to; its logits are those of the original model with tied experts.
      const int64_t width = *std::max_element(expect.begin(), expect.end());
      const Checkpoint b = Checkpoint::open(out);
      EXPECT_EQ(b.config()["num_experts"], width) << what;
      for (size_t li = 0; li < expect.size(); ++li) {
        std::vector<int64_t> sizes(static_cast<size_t>(expect[li]), 24);
        sizes.resize(static_cast<size_t>(width), 1);
        EXPECT_EQ(b.config()["expert_sizes"][li].get<std::vector<int64_t>>(), sizes) << what;
        for (int64_t e : b.config()["router"]["expert_maps"][li].get<std::vector<int64_t>>()) EXPECT_LT(e, expect[li]);
      }
      std::shared_ptr<Model> tied = tied_merged_model(dir, report, b);
      std::shared_ptr<Model> exact = Model::load(out, {at::kFloat, at::kCPU});
      tied->eval();
      exact->eval();
      at::NoGradGuard ng;
      EXPECT_LT((tied->forward(ids) - exact->forward(ids)).abs().max().item<double>(), 1e-5) << what;
    }
  }
  EXPECT_TRUE(some_layers_differ) << "every layer got the same count: the global allocation is untested";
}

TEST(MergeAllocation, KeepingAllExpertsIsTheIdentity) {
  struct Case {
    std::string method, representation, allocation;
  };
  const std::vector<Case> cases = {{"hc-smoe", "", "global"},
                                   {"kmeans", "", "global"},
                                   {"kmeans", "expert-output+router-logits", ""},
                                   {"kmeans", "router-logits+weights+expert-output", "global"}};
  const Checkpoint a = Checkpoint::open(mixtral(true));
  for (const Case& c : cases) {
    MergeOptions o = options(c.method, 4);  // r = N: a stock output even with the global allocation
    o.representation = c.representation;
    o.allocation = c.allocation;
    const std::string what = c.method + " " + c.representation + " " + c.allocation;
    const std::string out = fresh("alloc_identity_" + std::to_string(&c - cases.data()));
    const json report = run_merge(mixtral(true), o, out);
    EXPECT_EQ(report["experts_per_layer"].get<std::vector<int64_t>>(), (std::vector<int64_t>{4, 4})) << what;
    const Checkpoint b = Checkpoint::open(out);
    ASSERT_EQ(a.names(), b.names()) << what;
    for (const std::string& name : a.names()) EXPECT_TRUE(torch::equal(a.get(name), b.get(name))) << what << " " << name;
  }
}

TEST(MergeAllocation, BadOptionsAreOneLineAndWriteNothing) {
  const std::string out = fresh("alloc_bad_out");
  const std::string m = mixtral(true) + " --calib " + calib_file() + " --experts 2";
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {m + " --method hc-smoe --allocation global", "a stock config cannot hold: add --output exact"},
      {m + " --method kmeans --allocation global --output stock", "a stock config cannot hold"},
      {m + " --method reap --allocation global", "only hc-smoe, kmeans and m-smoe allocate groups per layer, not reap"},
      {m + " --method kmeans --representation expert-output+nope",
       "'nope' in 'expert-output+nope' is not expert-output, router-logits or weights"},
      {m + " --method kmeans --representation expert-output+", "'' in 'expert-output+' is not"},
      {m + " --method kmeans --representation router-logits+weights+expert-output+weights", "two or three"},
      {m + " --representation expert-output+router-logits", "for --method kmeans only; hc-smoe takes one of"},
      {m + " --method m-smoe --output exact --representation router-logits+weights", "for --method kmeans only"},
      {m + " --method o-prune --representation router-logits+weights", "does not group experts"},
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
