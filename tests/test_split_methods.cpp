// Split methods: every cover is what its method documents; k-means recovers planted clusters.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <set>

#include "io/checkpoint.h"
#include "model_fixtures.h"
#include "split/build_moe.h"
#include "split/method_registry.h"
#include "split/min_cost_flow.h"
#include "split/split.h"
#include "test_helpers.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/rng.h"
#include "util/str.h"

using namespace mf;

namespace {

// Rows drawn around k well-separated centres (planted clusters), cluster c = rows [c*size, (c+1)*size).
at::Tensor planted_rows(int k, int size, int H, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::Tensor centres = at::randn({k, H}, gen) * 10;
  at::Tensor rows = centres.repeat_interleave(size, 0) + at::randn({k * size, H}, gen) * 0.5;
  return rows;
}

// Number of distinct (true cluster, label) pairs: k when labels match the planted clusters.
size_t confusion_pairs(const std::vector<int32_t>& labels, int size) {
  std::set<std::pair<int, int>> s;
  for (size_t i = 0; i < labels.size(); ++i) s.insert({static_cast<int>(i) / size, labels[i]});
  return s.size();
}

}  // namespace

TEST(SplitMethods, RandomHomogeneousAndHeterogeneous) {
  Partition p = split_random(1000, equal_sizes(1000, 8), 42);
  EXPECT_TRUE(validate(p).is_partition());
  EXPECT_EQ(p.sizes(), std::vector<int64_t>(8, 125));
  Partition q = split_random(1000, equal_sizes(1000, 8), 42);
  EXPECT_EQ(p.experts, q.experts);  // seeded
  EXPECT_NE(split_random(1000, equal_sizes(1000, 8), 43).experts, p.experts);
  std::vector<int64_t> het = {64, 256, 64, 128, 200, 100, 88, 100};
  Partition h = split_random(1000, het, 1);
  EXPECT_TRUE(validate(h).is_partition());
  EXPECT_EQ(h.sizes(), het);
  EXPECT_EQ(equal_sizes(10, 3), (std::vector<int64_t>{4, 3, 3}));
  EXPECT_THROW(split_random(1000, {500, 400}, 1), Error);
}

TEST(SplitMethods, AuctionMatchesMinCostFlowOptimum) {
  Rng rng(3);
  for (int trial = 0; trial < 10; ++trial) {
    int F = 12, k = 3;
    std::vector<int64_t> sizes = {5, 4, 3};
    std::vector<double> b(F * k);
    for (double& x : b) x = rng.normal();
    auto lab = auction_assignment(b, F, k, sizes);
    std::vector<int64_t> cnt(k, 0);
    double got = 0;
    for (int i = 0; i < F; ++i) ++cnt[lab[i]], got += b[i * k + lab[i]];
    EXPECT_EQ(cnt, sizes);
    auto exact = max_value_assignment(b, F, k, {5, 4, 3}, {5, 4, 3});
    double want = 0;
    for (int i = 0; i < F; ++i) want += b[i * k + exact[i]];
    EXPECT_NEAR(got, want, 1e-6);
  }
}

TEST(SplitMethods, BalancedKMeansRecoversPlantedClusters) {
  const int k = 4, size = 16;
  at::Tensor rows = planted_rows(k, size, 8, 11);
  auto r = balanced_kmeans(rows.to(at::kDouble), std::vector<int64_t>(k, size), 42, 50);
  std::vector<int64_t> cnt(k, 0);
  for (int32_t l : r.labels) ++cnt[l];
  EXPECT_EQ(cnt, std::vector<int64_t>(k, size));
  EXPECT_EQ(confusion_pairs(r.labels, size), static_cast<size_t>(k));
  auto r2 = balanced_kmeans(rows.to(at::kDouble), std::vector<int64_t>(k, size), 42, 50);
  EXPECT_EQ(r.labels, r2.labels);  // deterministic
}

TEST(SplitMethods, MoeficationAndEmoeEqualSizes) {
  // Planted clusters of unequal natural size (24, 8, 16, 16): the split must still be 16 each.
  at::Generator gen = at::detail::createCPUGenerator(5);
  at::Tensor centres = at::randn({4, 6}, gen) * 10;
  at::Tensor idx = at::cat({at::zeros({24}, at::kLong), at::ones({8}, at::kLong), at::full({16}, 2, at::kLong),
                            at::full({16}, 3, at::kLong)});
  at::Tensor rows = centres.index_select(0, idx) + at::randn({64, 6}, gen) * 0.3;
  SplitInputs in;
  in.num_neurons = 64;
  in.gate_rows = rows;
  for (const char* m : {"moefication", "emoe"}) {
    SplitOptions o;
    o.method = m;
    o.num_experts = 4;
    SplitReport rep;
    Partition p = split_layer(in, o, &rep);
    EXPECT_TRUE(rep.cover.is_partition());
    EXPECT_EQ(p.sizes(), std::vector<int64_t>(4, 16));
  }
}

TEST(SplitMethods, MoebertSharedRoundRobinAndDrops) {
  // Importance = neuron id reversed: neuron 63 most important.
  const int F = 64, N = 4;
  at::Tensor imp = at::arange(F, at::kDouble).flip(0).contiguous();  // neuron 0 most important
  SplitInputs in;
  in.num_neurons = F;
  in.domain_scores = imp.unsqueeze(1);
  SplitOptions o;
  o.method = "moebert";
  o.num_experts = N;
  SplitReport rep;
  Partition p = split_layer(in, o, &rep);  // shared F/N/2 = 8, width F/N = 16
  ASSERT_EQ(p.num_experts(), N);
  for (int j = 0; j < N; ++j) {
    std::vector<int32_t> want;
    for (int i = 0; i < 8; ++i) want.push_back(i);                       // shared: ranks 0..7
    for (int r = 8 + j; static_cast<int>(want.size()) < 16; r += N) want.push_back(r);  // round-robin
    std::sort(want.begin(), want.end());
    EXPECT_EQ(p.experts[j], want) << "expert " << j;
  }
  EXPECT_EQ(rep.cover.shared, 8);
  EXPECT_EQ(rep.cover.dropped, F - 8 - N * 8);
  EXPECT_EQ(rep.cover.max_multiplicity, N);
  ASSERT_FALSE(rep.warnings.empty());
  EXPECT_NE(rep.warnings[0].find("counted k times"), std::string::npos);
}

TEST(SplitMethods, MoebertMultitaskTopPerDomain) {
  at::Tensor S = at::zeros({8, 2}, at::kDouble);
  for (int i = 0; i < 8; ++i) S[i][0] = i, S[i][1] = 8 - i;
  Partition p = split_moebert_multitask(S, 3);
  EXPECT_EQ(p.experts[0], (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(p.experts[1], (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(validate(p).dropped, 2);
}

TEST(SplitMethods, CoactivationFindsBlocks) {
  // Three blocks of 8 neurons that co-fire only within their block, plus noise: METIS + exact
  // rebalancing gives 8/8/8 matching the blocks.
  const int F = 24, N = 3;
  at::Tensor A = at::zeros({F, F}, at::kDouble);
  Rng rng(1);
  for (int i = 0; i < F; ++i)
    for (int j = 0; j < F; ++j) {
      if (i == j) continue;
      A[i][j] = (i / 8 == j / 8) ? 50 + static_cast<double>(rng.below(10)) : static_cast<double>(rng.below(2));
    }
  A = (A + A.t()) / 2;
  SplitInputs in;
  in.num_neurons = F;
  in.coactivation = A;
  SplitOptions o;
  o.method = "moefication-coact";
  o.num_experts = N;
  Partition p = split_layer(in, o);
  EXPECT_TRUE(validate(p).is_partition());
  EXPECT_EQ(p.sizes(), std::vector<int64_t>(N, 8));
  EXPECT_EQ(confusion_pairs(p.labels(), 8), static_cast<size_t>(N));
}

TEST(SplitMethods, HemoeEndToEndLayer) {
  // F=256 neurons, M=32 modules of 8, N=8, D=8, R=4 → 2..8 modules = 16..64 neurons.
  const int F = 256, H = 16, D = 8;
  at::Tensor rows = planted_rows(32, 8, H, 4);
  at::Generator gen = at::detail::createCPUGenerator(8);
  at::Tensor scores = at::rand({F, D}, gen).to(at::kDouble);
  SplitInputs in;
  in.num_neurons = F;
  in.gate_rows = rows;
  in.domain_scores = scores;
  SplitOptions o;
  o.method = "hemoe";
  o.modules = 32;
  SplitReport rep;
  Partition p = split_layer(in, o, &rep);
  EXPECT_TRUE(rep.cover.is_partition());
  EXPECT_TRUE(rep.has_placement);
  for (int64_t s : p.sizes()) {
    EXPECT_GE(s, 16);
    EXPECT_LE(s, 64);
    EXPECT_EQ(s % 8, 0);
  }
  // Experts are unions of whole modules of 8 neurons: check with the modules themselves.
  HemoeModules mods = hemoe_modules(rows, scores, 32, o.seed, o.kmeans_max_iter);
  std::vector<int64_t> module_size(32, 0);
  for (int32_t m : mods.module_of_neuron) ++module_size[m];
  EXPECT_EQ(module_size, std::vector<int64_t>(32, 8));
  auto lab = p.labels();
  for (int i = 0; i < F; ++i)
    for (int k = 0; k < F; ++k)
      if (mods.module_of_neuron[i] == mods.module_of_neuron[k]) ASSERT_EQ(lab[i], lab[k]);
  // Module scores are the sums of their neurons' scores.
  double total = 0;
  for (double v : mods.scores) total += v;
  EXPECT_NEAR(total, scores.sum().item<double>(), 1e-9 * total);
  // R=1 → equal sizes.
  o.size_ratio = 1;
  Partition eq = split_layer(in, o);
  EXPECT_EQ(eq.sizes(), std::vector<int64_t>(8, 32));
}

TEST(SplitMethods, BadInputsAreOneLineErrors) {
  SplitInputs in;
  in.num_neurons = 16;
  SplitOptions o;
  o.method = "moefication";
  EXPECT_THROW(split_layer(in, o), Error);
  o.method = "nope";
  EXPECT_THROW(split_layer(in, o), Error);
  o.method = "random-hetero";
  EXPECT_THROW(split_layer(in, o), Error);
}

// A method registered from outside the library runs through build_moe (what `moeforge split`
// calls) like a built-in: the registry entry alone decides its inputs, router and listing.
TEST(SplitMethods, RegisteredMethodRunsThroughBuildMoe) {
  using mf::testing_helpers::error_of;
  const std::string name = "toy-contiguous";
  const int N = 5;
  const int64_t F = 48;  // the tiny llama's intermediate_size
  int runs = 0;
  SplitMethodEntry toy;
  toy.description = "expert e = neurons [e*F/N, (e+1)*F/N)";
  toy.needs_gate_rows = true;  // asked for, so build_moe must hand them over
  toy.default_router = "avgk";
  toy.run = [&runs](const SplitInputs& in, const SplitOptions& opt, SplitReport&) {
    require_rows(in.gate_rows, in.num_neurons, opt.method, "gate rows");
    EXPECT_FALSE(in.domain_scores.defined());  // no profile statistic asked for
    ++runs;
    Partition p;
    p.num_neurons = in.num_neurons;
    p.experts.resize(opt.num_experts);
    for (int e = 0; e < opt.num_experts; ++e)
      for (int64_t i = e * in.num_neurons / opt.num_experts; i < (e + 1) * in.num_neurons / opt.num_experts; ++i)
        p.experts[e].push_back(static_cast<int32_t>(i));
    return p;
  };
  split_method_registry().add(name, toy);
  struct Unregister {  // also when an assertion below returns early
    std::string name;
    ~Unregister() { split_method_registry().remove(name); }
  } unregister{name};

  // Listed after the built-ins, in the CLI's unknown-method message too.
  EXPECT_EQ(split_method_names().back(), name);
  EXPECT_NE(unknown_split_method_message("x").find(", hemoe, toy-contiguous)"), std::string::npos);

  const std::string dense = ::testing::TempDir() + "/mf_split_methods_toy_dense",
                    out = ::testing::TempDir() + "/mf_split_methods_toy_out";
  remove_all(dense);
  remove_all(out);
  save_checkpoint(dense, testing_fixtures::tiny_config_json("llama"), testing_fixtures::tiny_model("llama", 3, 0.2)->hf_tensors());
  BuildMoeOptions o;
  o.split.method = name;
  o.split.num_experts = N;
  o.top_k = 2;
  o.progress = false;
  SplitPlan plan;
  json rep = build_moe(dense, out, o, &plan);

  // 48 neurons into 5: boundaries floor(e*48/5) = 0, 9, 19, 28, 38, 48.
  const std::vector<std::pair<int, int>> ranges = {{0, 9}, {9, 19}, {19, 28}, {28, 38}, {38, 48}};
  const std::vector<int64_t> sizes = {9, 10, 9, 10, 10};
  EXPECT_EQ(runs, 2);  // one call per layer
  ASSERT_EQ(plan.layers.size(), 2u);
  Checkpoint d = Checkpoint::open(dense), m = Checkpoint::open(out);
  const json& c = m.config();
  EXPECT_EQ(c.at("moe_provenance").at("split_method"), name);
  EXPECT_FALSE(c.at("moe_provenance").at("options").contains("kmeans_max_iter"));
  EXPECT_EQ(c.at("router"), (json{{"type", "avgk"}, {"gate", "ones"}, {"aux_loss", "none"}}));
  for (int l = 0; l < 2; ++l) {
    SCOPED_TRACE(l);
    EXPECT_EQ(plan.layers[l].partition.sizes(), sizes);
    EXPECT_TRUE(rep["layers"][l]["is_partition"].get<bool>());
    EXPECT_EQ(c.at("expert_sizes")[l].get<std::vector<int64_t>>(), sizes);
    EXPECT_FALSE(m.contains(cat("model.layers.", l, ".mlp.router.weight")));  // avgk has none
    at::Tensor G = d.get(cat("model.layers.", l, ".mlp.gate_proj.weight"));
    ASSERT_EQ(G.size(0), F);
    for (int e = 0; e < N; ++e) {
      const auto [lo, hi] = ranges[e];
      const std::string p = cat("model.layers.", l, ".mlp.experts.", e, ".");
      EXPECT_TRUE(torch::equal(m.get(p + "neurons"), at::arange(lo, hi, at::kInt))) << e;
      EXPECT_TRUE(torch::equal(m.get(p + "gate_proj.weight"), G.slice(0, lo, hi))) << e;
    }
  }

  // Removed: the name is unknown again.
  split_method_registry().remove(name);
  EXPECT_NE(error_of([&] { build_moe(dense, "", o); }).find("unknown split method 'toy-contiguous'"), std::string::npos);
}

