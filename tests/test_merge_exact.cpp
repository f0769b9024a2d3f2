// `moeforge merge --output exact` for Qwen2-MoE and OLMoE (issue 16): the family itself wrapped as
// moeforge (base_model_type qwen2_moe / olmoe) with the original N-row router and the N -> r
// expert map. Checked three independent ways on tiny random models: the saved checkpoint's logits
// equal those of the in-memory merged model (the original model with tied experts); with r = N
// (every cluster a singleton) they equal the original model's; and one layer's output equals a
// naive per-token sum written out here from the checkpoint's tensors (softmax over the N logits,
// top-k, the raw probabilities summed per merged expert, each merged expert run once, plus the
// shared expert times its sigmoid gate). Pruning stays refused with --output exact; its stock
// output is checked against the same naive layer with the dropped experts at −∞.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <map>

#include "io/checkpoint.h"
#include "merge/merge.h"
#include "model/model.h"
#include "model/moe_ffn.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"
#include "merge_fixtures.h"

using namespace mf;
using namespace mf::merge_fixtures;

namespace {

const std::vector<std::string>& families() {
  static const std::vector<std::string> f{"qwen2_moe", "olmoe"};
  return f;
}

// The MoE layers of the fixtures (Qwen2-MoE: layer 1 is dense) and the one the hand check uses:
// the second MoE layer, so that the expert map is looked up past the first entry.
int64_t checked_layer(const std::string& family) { return family == "qwen2_moe" ? 2 : 1; }

at::Tensor token_ids() {
  return at::tensor({1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889}, at::kLong).unsqueeze(0);
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

using Swiglu = std::array<at::Tensor, 3>;  // gate [f, H], up [f, H], down [H, f] (fp64)

// down(silu(gate x) ⊙ up x) for one token x [H].
at::Tensor swiglu(const Swiglu& w, const at::Tensor& x) {
  const at::Tensor g = at::mv(w[0], x);
  return at::mv(w[2], g * at::sigmoid(g) * at::mv(w[1], x));
}

// One MoE layer written out per token in fp64: logits of the N router rows (experts not in `keep`
// at −∞), softmax, the k largest (ties: the lower index), weights renormalised iff `renorm`, the
// selected experts' weights summed per output expert map[i], each output expert run once, plus
// sigmoid(shared_gate · x) × shared(x) when the layer has a shared expert.
struct NaiveMoe {
  at::Tensor router;  // [N, H]
  std::vector<int64_t> map;
  std::vector<bool> keep;
  std::vector<Swiglu> experts;  // per output expert
  Swiglu shared;                // undefined tensors: none
  at::Tensor shared_gate;       // [1, H]
  int64_t k = 2;
  bool renorm = false;
  int64_t grouped_tokens = 0;  // tokens whose top-k held two members of one output expert

  at::Tensor forward(const at::Tensor& x_in) {
    const at::Tensor x = x_in.to(at::kDouble);
    const int64_t T = x.size(0), N = router.size(0);
    at::Tensor y = at::zeros_like(x);
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor xt = x[t];
      const at::Tensor z = at::mv(router, xt);
      std::vector<double> p(static_cast<size_t>(N), 0.0);
      double top = -std::numeric_limits<double>::infinity(), sum = 0;
      for (int64_t i = 0; i < N; ++i)
        if (keep[i]) top = std::max(top, z[i].item<double>());
      for (int64_t i = 0; i < N; ++i)
        if (keep[i]) sum += p[i] = std::exp(z[i].item<double>() - top);
      for (double& v : p) v /= sum;
      std::vector<int64_t> chosen;
      for (int64_t s = 0; s < k; ++s) {
        int64_t best = -1;
        for (int64_t i = 0; i < N; ++i) {
          if (!keep[i] || std::find(chosen.begin(), chosen.end(), i) != chosen.end()) continue;
          if (best < 0 || p[i] > p[best]) best = i;
        }
        chosen.push_back(best);
      }
      double norm = 1;
      if (renorm) {
        norm = 0;
        for (int64_t i : chosen) norm += p[i];
      }
      std::map<int64_t, double> weight;  // output expert -> summed weight
      for (int64_t i : chosen) weight[map[i]] += p[i] / norm;
      if (weight.size() < chosen.size()) ++grouped_tokens;
      at::Tensor yt = at::zeros_like(xt);
      for (const auto& [c, w] : weight) yt += w * swiglu(experts[c], xt);
      if (shared_gate.defined()) yt += at::sigmoid(at::dot(shared_gate[0], xt)) * swiglu(shared, xt);
      y[t].copy_(yt);
    }
    return y;
  }
};

// Layer `layer` of a checkpoint in a stock family's tensor names (also the wrapped exact output):
// router `mlp.gate.weight`, `outputs` experts, the shared expert if present; identity map.
NaiveMoe naive_layer(const Checkpoint& ck, int64_t layer, int64_t outputs) {
  const std::string pre = cat("model.layers.", layer, ".mlp.");
  auto get = [&](const std::string& n) { return ck.get(pre + n).to(at::kDouble); };
  auto mlp = [&](const std::string& p) {
    return Swiglu{get(p + "gate_proj.weight"), get(p + "up_proj.weight"), get(p + "down_proj.weight")};
  };
  NaiveMoe m;
  m.router = get("gate.weight");
  const int64_t N = m.router.size(0);
  for (int64_t i = 0; i < N; ++i) m.map.push_back(i);
  m.keep.assign(static_cast<size_t>(N), true);
  for (int64_t e = 0; e < outputs; ++e) m.experts.push_back(mlp(cat("experts.", e, ".")));
  if (ck.contains(pre + "shared_expert_gate.weight")) {
    m.shared = mlp("shared_expert.");
    m.shared_gate = get("shared_expert_gate.weight");
  }
  m.k = ck.config()["num_experts_per_tok"].get<int64_t>();
  m.renorm = ck.config().value("norm_topk_prob", false);
  return m;
}

// The position of `layer` among the family's MoE layers (the index into router.expert_maps).
size_t moe_index(const std::string& family, int64_t layer) { return family == "qwen2_moe" ? (layer == 2 ? 1 : 0) : layer; }

MergeOptions exact_options(const std::string& method, int64_t r) {
  MergeOptions o = options(method, r);
  o.output = "exact";
  return o;
}

}  // namespace

TEST(MergeExact, QwenAndOlmoeReproduceTheInMemoryMergedModel) {
  // hc-smoe 4 -> 2, and m-smoe with the global allocation (per-layer counts; a layer with fewer
  // groups is padded with width-1 experts that nothing maps to).
  for (const std::string& family : families())
    for (const auto& [method, r] : std::vector<std::pair<std::string, int64_t>>{{"hc-smoe", 2}, {"m-smoe", 3}}) {
      const std::string what = family + " " + method;
      const std::string out = fresh("exact_" + family + "_" + method);
      const json report = run_merge(stock_moe(family), exact_options(method, r), out);
      const Checkpoint merged = Checkpoint::open(out), original = Checkpoint::open(stock_moe(family));
      const json& c = merged.config();
      EXPECT_EQ(c["model_type"], "moeforge") << what;
      EXPECT_EQ(c["base_model_type"], family) << what;
      EXPECT_EQ(c["router"]["type"], "merged") << what;
      EXPECT_EQ(c["router"]["num_source_experts"], 4) << what;
      EXPECT_EQ(c["num_experts_per_tok"], 2) << what;
      EXPECT_EQ(c["norm_topk_prob"], false) << what;
      const auto counts = report["experts_per_layer"].get<std::vector<int64_t>>();
      ASSERT_EQ(counts.size(), 2u) << what;
      const int64_t width = *std::max_element(counts.begin(), counts.end());
      EXPECT_EQ(c["num_experts"], width) << what;
      const std::vector<int64_t> moe_layers = family == "qwen2_moe" ? std::vector<int64_t>{0, 2}
                                                                     : std::vector<int64_t>{0, 1};
      for (size_t li = 0; li < moe_layers.size(); ++li) {
        const std::string pre = cat("model.layers.", moe_layers[li], ".mlp.");
        // The router is the original one, N rows, under the family's own name.
        EXPECT_TRUE(torch::equal(merged.get(pre + "gate.weight"), original.get(pre + "gate.weight"))) << what;
        // Every original expert maps into this layer's groups, as the report's clusters say.
        const auto map = c["router"]["expert_maps"][li].get<std::vector<int64_t>>();
        const auto clusters = report["layers"][li]["clusters"].get<std::vector<std::vector<int64_t>>>();
        ASSERT_EQ(map.size(), 4u) << what;
        for (size_t g = 0; g < clusters.size(); ++g)
          for (int64_t j : clusters[g]) EXPECT_EQ(map[j], static_cast<int64_t>(g)) << what;
        std::vector<int64_t> sizes(static_cast<size_t>(counts[li]), 12);
        sizes.resize(static_cast<size_t>(width), 1);
        EXPECT_EQ(c["expert_sizes"][li].get<std::vector<int64_t>>(), sizes) << what;
        EXPECT_FALSE(merged.contains(cat(pre, "experts.", width, ".up_proj.weight"))) << what;
        if (family == "qwen2_moe") {  // the shared expert and its gate are untouched
          for (const char* n : {"shared_expert.gate_proj.weight", "shared_expert.down_proj.weight",
                                "shared_expert_gate.weight"})
            EXPECT_TRUE(torch::equal(merged.get(pre + n), original.get(pre + n))) << what << " " << n;
        }
      }
      if (family == "olmoe")  // QK-norm travels unchanged
        EXPECT_TRUE(torch::equal(merged.get("model.layers.1.self_attn.q_norm.weight"),
                                 original.get("model.layers.1.self_attn.q_norm.weight")));
      else  // the dense layer too
        EXPECT_TRUE(torch::equal(merged.get("model.layers.1.mlp.up_proj.weight"),
                                 original.get("model.layers.1.mlp.up_proj.weight")));

      std::shared_ptr<Model> tied = tied_merged_model(stock_moe(family), report, merged);
      std::shared_ptr<Model> exact = Model::load(out, {at::kFloat, at::kCPU});
      tied->eval();
      exact->eval();
      at::NoGradGuard ng;
      const at::Tensor a = tied->forward(token_ids()), b = exact->forward(token_ids());
      EXPECT_LT(max_diff(a, b), 1e-5) << what;
      // Merging changed something: the original model's logits differ.
      std::shared_ptr<Model> before = Model::load(stock_moe(family), {at::kFloat, at::kCPU});
      before->eval();
      EXPECT_GT(max_diff(before->forward(token_ids()), b), 1e-4) << what;
    }
}

TEST(MergeExact, KeepingAllExpertsGivesTheOriginalLogits) {
  // r = N: every cluster a singleton, the map a permutation; the exact checkpoint computes the
  // original model.
  for (const std::string& family : families()) {
    const std::string out = fresh("exact_all_" + family);
    run_merge(stock_moe(family), exact_options("hc-smoe", 4), out);
    const Checkpoint merged = Checkpoint::open(out);
    for (const json& map : merged.config()["router"]["expert_maps"]) {
      auto m = map.get<std::vector<int64_t>>();
      std::sort(m.begin(), m.end());
      EXPECT_EQ(m, (std::vector<int64_t>{0, 1, 2, 3})) << family;
    }
    std::shared_ptr<Model> before = Model::load(stock_moe(family), {at::kFloat, at::kCPU});
    std::shared_ptr<Model> exact = Model::load(out, {at::kFloat, at::kCPU});
    before->eval();
    exact->eval();
    at::NoGradGuard ng;
    EXPECT_LT(max_diff(before->forward(token_ids()), exact->forward(token_ids())), 1e-5) << family;
  }
}

TEST(MergeExact, OneLayerEqualsTheNaiveSumOverMergedExperts) {
  for (const std::string& family : families()) {
    const std::string out = fresh("exact_hand_" + family);
    run_merge(stock_moe(family), exact_options("hc-smoe", 2), out);
    const Checkpoint merged = Checkpoint::open(out);
    const int64_t layer = checked_layer(family);
    NaiveMoe naive = naive_layer(merged, layer, merged.config()["num_experts"].get<int64_t>());
    EXPECT_EQ(naive.router.size(0), 4) << family;
    EXPECT_FALSE(naive.renorm) << family;
    EXPECT_EQ(naive.shared_gate.defined(), family == "qwen2_moe");
    naive.map = merged.config()["router"]["expert_maps"][moe_index(family, layer)].get<std::vector<int64_t>>();
    torch::manual_seed(7);
    const at::Tensor x = at::randn({64, 16});
    std::shared_ptr<Model> exact = Model::load(out, {at::kFloat, at::kCPU});
    exact->eval();
    at::NoGradGuard ng;
    const at::Tensor y = exact->ffn(layer)->forward(x, FfnContext{});
    const at::Tensor expect = naive.forward(x);
    EXPECT_LT(max_diff(y, expect), 1e-5 * std::max(1.0, expect.abs().max().item<double>())) << family;
    // Some tokens selected two members of one merged expert: the summed weight was exercised.
    EXPECT_GT(naive.grouped_tokens, 0) << family;
  }
}

TEST(MergeExact, PruningIsRefusedAndItsStockOutputIsThePrunedLayer) {
  for (const std::string& family : families()) {
    EXPECT_THROW(run_merge(stock_moe(family), exact_options("f-prune", 2), fresh("exact_prune_" + family)), Error);
    // The stock pruned layer = the original layer with the dropped experts' logits at −∞ (softmax
    // over the kept ones, top-k, raw probabilities, kept experts, shared expert).
    const std::string out = fresh("prune_" + family);
    const json report = run_merge(stock_moe(family), options("f-prune", 2), out);
    const Checkpoint original = Checkpoint::open(stock_moe(family));
    const int64_t layer = checked_layer(family);
    NaiveMoe naive = naive_layer(original, layer, 4);
    naive.keep.assign(4, false);
    const json& l = report["layers"][moe_index(family, layer)];
    ASSERT_EQ(l["layer"], layer);
    for (const auto& kept : l["clusters"].get<std::vector<std::vector<int64_t>>>()) {
      ASSERT_EQ(kept.size(), 1u);
      naive.keep[kept[0]] = true;
    }
    torch::manual_seed(8);
    const at::Tensor x = at::randn({32, 16});
    std::shared_ptr<Model> pruned = Model::load(out, {at::kFloat, at::kCPU});
    pruned->eval();
    at::NoGradGuard ng;
    const at::Tensor expect = naive.forward(x);
    EXPECT_LT(max_diff(pruned->ffn(layer)->forward(x, FfnContext{}), expect),
              1e-5 * std::max(1.0, expect.abs().max().item<double>()))
        << family;
  }
}

TEST(MergeExact, WrappedConfigErrorsAreOneLine) {
  // The wrapped family's merged keys are validated like the moeforge family's.
  const std::string out = fresh("exact_cfg");
  run_merge(stock_moe("olmoe"), exact_options("hc-smoe", 2), out);
  const json good = Checkpoint::open(out).config();
  struct Case {
    std::function<void(json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](json& c) { c["router"]["type"] = "linear"; }, "is not supported with base_model_type olmoe"},
      {[](json& c) { c["router"]["expert_maps"][0][1] = 5; }, "not an expert index"},
      {[](json& c) { c["router"]["expert_maps"].erase(1); }, "one list per MoE layer"},
      {[](json& c) { c["expert_sizes"][0] = json::array({12}); }, "expert_sizes[0] has 1 entries"},
      {[](json& c) { c.erase("router"); }, "needs a 'router' of type merged"},
      {[](json& c) { c["hypermoe"] = json::object(); }, "'hypermoe' together"},
  };
  for (const Case& k : cases) {
    json c = good;
    k.edit(c);
    try {
      parse_model_config(c, "x/config.json");
      ADD_FAILURE() << "accepted: " << k.message;
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(k.message), std::string::npos) << m;
      EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    }
  }
  // Without expert_sizes every expert has the family's width.
  json c = good;
  c.erase("expert_sizes");
  const ModelConfig cfg = parse_model_config(c, "x/config.json");
  EXPECT_EQ(cfg.layer_expert_widths(1), (std::vector<int64_t>{12, 12}));
  EXPECT_EQ(cfg.router.num_source_experts, 4);
}
