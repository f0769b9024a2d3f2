// `moeforge merge` (src/merge): r = N gives the model back bit for bit; experts that are exact
// copies (an upcycled model before training) merge with zero output error; the freq / average
// merge arithmetic written out in the test; pruning slices router rows and copies experts; bad
// input is a one-line error with nothing written.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>

#include "io/checkpoint.h"
#include "merge/calibrate.h"
#include "merge/merge.h"
#include "merge/oprune.h"
#include "model/model.h"
#include "model/moe_ffn.h"
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

TEST(Merge, KeepingAllExpertsGivesTheModelBackBitForBit) {
  for (const std::string method : {"hc-smoe", "f-prune", "s-prune"}) {
    const std::string out = fresh("identity_" + method);
    run_merge(mixtral(true), options(method, 4), out);
    const Checkpoint a = Checkpoint::open(mixtral(true)), b = Checkpoint::open(out);
    ASSERT_EQ(a.names(), b.names()) << method;
    for (const std::string& name : a.names()) EXPECT_TRUE(torch::equal(a.get(name), b.get(name))) << method << " " << name;
    EXPECT_EQ(b.config()["num_local_experts"], 4);
  }
}

TEST(Merge, ExactCopiesMergeWithZeroOutputError) {
  const std::string out = fresh("copies_out");
  const json report = run_merge(mixtral(false), options("hc-smoe", 2), out);
  ASSERT_EQ(report["layers"].size(), 2u);
  for (const json& l : report["layers"]) {
    EXPECT_LT(l["output_error"].get<double>(), 1e-6) << l.dump();
    for (double h : l["merge_heights"].get<std::vector<double>>()) EXPECT_LT(h, 1e-6);  // identical o_j
  }
  const Checkpoint a = Checkpoint::open(mixtral(false)), b = Checkpoint::open(out);
  EXPECT_EQ(b.config()["num_local_experts"], 2);
  const at::Tensor w = a.get("model.layers.1.block_sparse_moe.experts.0.w1.weight");
  EXPECT_TRUE(at::allclose(b.get("model.layers.1.block_sparse_moe.experts.1.w1.weight"), w, 1e-6, 1e-7));
  EXPECT_FALSE(b.contains("model.layers.1.block_sparse_moe.experts.2.w1.weight"));
}

TEST(Merge, FreqAndAverageWeightsAsWrittenOut) {
  // r = 1: one cluster of all four experts, so the merged weight is Σ f_j W_j / Σ f_j (freq)
  // or the plain mean (average), with f the frequencies the report states.
  for (const std::string mode : {"freq", "average"}) {
    MergeOptions o = options("hc-smoe", 1);
    o.merge = mode;
    o.router = "weighted";
    const std::string out = fresh("r1_" + mode);
    const json report = run_merge(mixtral(true), o, out);
    const Checkpoint a = Checkpoint::open(mixtral(true)), b = Checkpoint::open(out);
    EXPECT_EQ(b.config()["num_experts_per_tok"], 1);  // top-k capped at r
    for (const json& l : report["layers"]) {
      const int64_t layer = l["layer"].get<int64_t>();
      const std::vector<double> f = l["frequency"].get<std::vector<double>>();
      double fs = 0;
      for (double v : f) fs += v;
      EXPECT_NEAR(fs, 1.0, 1e-9);
      const std::string pre = cat("model.layers.", layer, ".block_sparse_moe.");
      for (const char* proj : {"w1", "w2", "w3"}) {
        at::Tensor expect = at::zeros_like(a.get(pre + "experts.0." + proj + ".weight"));
        for (int j = 0; j < 4; ++j)
          expect += a.get(cat(pre, "experts.", j, ".", proj, ".weight")) * (mode == "freq" ? f[j] / fs : 0.25);
        EXPECT_TRUE(at::allclose(b.get(pre + "experts.0." + proj + ".weight"), expect, 1e-5, 1e-6)) << mode << proj;
      }
      at::Tensor row = at::zeros({16});
      for (int j = 0; j < 4; ++j) row += a.get(pre + "gate.weight")[j] * (mode == "freq" ? f[j] / fs : 0.25);
      EXPECT_TRUE(at::allclose(b.get(pre + "gate.weight")[0], row, 1e-5, 1e-6)) << mode;
    }
  }
}

TEST(Merge, PruningKeepsTheTopExpertsAndSlicesTheirRouterRows) {
  for (const std::string method : {"f-prune", "s-prune"}) {
    const std::string out = fresh("prune_" + method);
    const json report = run_merge(mixtral(true), options(method, 2), out);
    const Checkpoint a = Checkpoint::open(mixtral(true)), b = Checkpoint::open(out);
    for (const json& l : report["layers"]) {
      const int64_t layer = l["layer"].get<int64_t>();
      const std::vector<double> score = l[method == "f-prune" ? "frequency" : "soft_score"].get<std::vector<double>>();
      const auto kept = l["clusters"].get<std::vector<std::vector<int64_t>>>();
      ASSERT_EQ(kept.size(), 2u);
      // Every kept expert scores at least as high as every dropped one.
      for (int j = 0; j < 4; ++j) {
        const bool is_kept = j == kept[0][0] || j == kept[1][0];
        if (!is_kept) EXPECT_LE(score[j], std::min(score[kept[0][0]], score[kept[1][0]])) << method;
      }
      const std::string pre = cat("model.layers.", layer, ".block_sparse_moe.");
      for (int i = 0; i < 2; ++i) {
        EXPECT_TRUE(torch::equal(b.get(pre + "gate.weight")[i], a.get(pre + "gate.weight")[kept[i][0]]));
        EXPECT_TRUE(torch::equal(b.get(cat(pre, "experts.", i, ".w2.weight")),
                                 a.get(cat(pre, "experts.", kept[i][0], ".w2.weight"))));
      }
    }
  }
}

TEST(Merge, BadInputIsOneLineAndWritesNothing) {
  const std::string out = fresh("bad_out");
  const std::string short_calib = fresh("short.jsonl");
  std::ofstream(short_calib) << "{\"text\": \"too short\"}\n";
  const std::string dense = fresh("dense");
  testing_fixtures::save_tiny_spm_llama(dense);
  const std::string m = mixtral(true);
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {m + " --experts 5 --calib " + calib_file(), "more than the model's 4 experts"},
      {m + " --experts 0 --calib " + calib_file(), "--experts"},
      {dense + " --experts 2 --calib " + calib_file(), "not an MoE model"},
      {m + " --experts 2 --seq-len 64 --calib " + short_calib, "too short for one calibration block"},
      {m + " --experts 2 --method nope --calib " + calib_file(), "unknown method 'nope'"},
      {m + " --experts 2 --linkage nope --calib " + calib_file(), "nope"},
      {m + " --experts 2 --dtype float16 --calib " + calib_file(), "--dtype: 'float16' is not auto, float32 or bfloat16"},
  };
  for (const Case& c : cases) {
    const auto r = run_moeforge("merge " + c.args + " --out " + out);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    // One line; a usage error adds the --help hint.
    const bool usage = r.code == 2;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), usage ? 2 : 1) << r.err;
    EXPECT_FALSE(path_exists(out)) << c.args;
  }
}

TEST(Merge, OPruneEqualsBruteForceOverPrunedOutputs) {
  // Random expert outputs and logits; the naive reference runs every subset: logits of dropped
  // experts at −inf, softmax, top-k (renormalised or not), Y_S = Σ w E_j(x), ‖Y − Y_S‖².
  torch::manual_seed(4);
  const int64_t T = 40, N = 6, d = 5, k = 2;
  const at::Tensor outs = at::randn({T, N, d}, at::kDouble), logits = at::randn({T, N});
  const at::Tensor gram = at::bmm(outs, outs.transpose(1, 2)).contiguous();
  for (bool renorm : {true, false}) {
    auto output = [&](const std::vector<uint8_t>& keep) {
      at::Tensor z = logits.to(at::kDouble).clone();
      for (int64_t j = 0; j < N; ++j)
        if (!keep[j]) z.select(1, j).fill_(-INFINITY);
      at::Tensor p = at::softmax(z, -1);
      auto [w, idx] = p.topk(k, -1);
      if (renorm) w = w / w.sum(-1, true);
      at::Tensor dense = at::zeros({T, N}, at::kDouble).scatter(1, idx, w);
      return at::bmm(dense.unsqueeze(1), outs).squeeze(1);  // [T, d]
    };
    const at::Tensor y = output(std::vector<uint8_t>(N, 1));
    merge::OPruneInput in;
    in.tokens = T;
    in.experts = N;
    in.k = k;
    in.renormalize = renorm;
    in.logits = logits.data_ptr<float>();
    in.gram = gram.data_ptr<double>();
    double best = INFINITY;
    std::vector<int64_t> best_set;
    for (int64_t a = 0; a < N; ++a)
      for (int64_t b = a + 1; b < N; ++b)
        for (int64_t c = b + 1; c < N; ++c) {
          std::vector<uint8_t> keep(N, 0);
          keep[a] = keep[b] = keep[c] = 1;
          const double l = (y - output(keep)).pow(2).sum().item<double>();
          EXPECT_NEAR(merge::o_prune_loss(in, keep), l, 1e-9 * std::max(1.0, l));
          if (l < best) best = l, best_set = {a, b, c};
        }
    const merge::OPruneResult res = merge::o_prune(in, 3);
    EXPECT_TRUE(res.exhaustive);
    EXPECT_EQ(res.subsets, 20);
    EXPECT_EQ(res.kept, best_set) << renorm;
    EXPECT_NEAR(res.loss, best, 1e-9 * std::max(1.0, best));
    const merge::OPruneResult sampled = merge::o_prune(in, 3, 5, 7);
    EXPECT_FALSE(sampled.exhaustive);
    EXPECT_GE(sampled.loss, res.loss);
  }
}

TEST(Merge, OPruneHasTheLowestOutputErrorOfThePruningMethods) {
  // O-prune minimises the output error on the very tokens the report measures it on, and a
  // 4-expert layer has only 6 subsets of 2: no other pruning can do better there.
  std::map<std::string, json> reports;
  for (const std::string method : {"o-prune", "f-prune", "s-prune", "reap"})
    reports[method] = run_merge(mixtral(true), options(method, 2), fresh("errors_" + method));
  for (size_t l = 0; l < 2; ++l) {
    const json& o = reports["o-prune"]["layers"][l];
    EXPECT_TRUE(o["o_prune"]["exhaustive"].get<bool>());
    EXPECT_EQ(o["o_prune"]["subsets"], 6);
    for (const auto& [method, r] : reports)
      EXPECT_LE(o["output_error"].get<double>(), r["layers"][l]["output_error"].get<double>() * (1 + 1e-6) + 1e-9)
          << method << " layer " << l;
  }
}

TEST(Merge, ExactOutputReproducesTheInMemoryMergedModel) {
  // In memory: the original Mixtral with every expert's weights replaced by its cluster's merged
  // weights (tied experts, the paper's forward: original router, original top-k). Saved: the
  // moeforge-family checkpoint with the original router and the expert map.
  MergeOptions o = options("hc-smoe", 2);
  o.output = "exact";
  const std::string out = fresh("exact");
  const json report = run_merge(mixtral(true), o, out);
  const Checkpoint merged = Checkpoint::open(out);
  EXPECT_EQ(merged.config()["model_type"], "moeforge");
  EXPECT_EQ(merged.config()["router"]["type"], "merged");
  std::shared_ptr<Model> tied = tied_merged_model(mixtral(true), report, merged);
  std::shared_ptr<Model> exact = Model::load(out, {at::kFloat, at::kCPU});
  tied->eval();
  exact->eval();
  at::NoGradGuard ng;
  const at::Tensor ids = at::tensor({1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889}, at::kLong)
                             .unsqueeze(0);
  const at::Tensor a = tied->forward(ids), b = exact->forward(ids);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-5);
  // The paper's forward differs from the stock approximation.
  MergeOptions s = options("hc-smoe", 2);
  const std::string stock_dir = fresh("exact_vs_stock");
  run_merge(mixtral(true), s, stock_dir);
  EXPECT_GT((Model::load(stock_dir, {at::kFloat, at::kCPU})->forward(ids) - a).abs().max().item<double>(), 1e-4);
}

// The calibration pass runs the experts in the model's dtype. In bf16: the pass's sums and norms
// are those of the expert outputs it keeps (summed here in fp64), and those outputs are the
// expert's function (a naive fp64 SwiGLU on the same weights and inputs, within bf16 rounding).
TEST(Merge, ExpertPassInBf16SumsTheExpertsOwnOutputs) {
  torch::manual_seed(3);
  MoeFfnSpec spec;
  spec.hidden = 40;
  spec.widths = {16, 16, 16};
  spec.router.selection.k = 2;
  MoeFFN block(spec);
  at::NoGradGuard no_grad;
  for (auto& p : block.parameters()) p.normal_(0, 0.2);
  block.to(at::kBFloat16);
  const int64_t T = 70;  // more than one 64-row chunk, and d not a multiple of 16
  const at::Tensor x = at::randn({T, 40}).to(at::kBFloat16);
  const ExpertPass pass = every_expert_pass(block, x, T);
  ASSERT_EQ(pass.kept.sizes(), at::IntArrayRef({T, 3, 40}));
  const at::Tensor xd = x.to(at::kDouble);
  for (int64_t e = 0; e < 3; ++e) {
    const at::Tensor y = pass.kept.select(1, e);  // [T, d]
    EXPECT_LE((pass.out_sum[e] - y.sum(0)).abs().max().item<double>(), 1e-5 * y.abs().sum(0).max().item<double>());
    EXPECT_LE((pass.norms.select(1, e) - y.norm(2, -1)).abs().max().item<double>(), 1e-5 * y.norm(2, -1).max().item<double>());
    const auto& ex = block.experts[static_cast<size_t>(e)];
    const at::Tensor naive = (at::silu(xd.mm(ex->gate->weight.to(at::kDouble).t())) * xd.mm(ex->up->weight.to(at::kDouble).t()))
                                 .mm(ex->down->weight.to(at::kDouble).t());
    EXPECT_LE((y - naive).norm().item<double>(), 2e-2 * naive.norm().item<double>()) << e;
  }
}

// `--dtype auto` runs a bf16 checkpoint in bf16 (as the reference runs its models), an fp32 one in
// fp32; --dtype float32 overrides; the report says which.
TEST(Merge, ComputeDtypeFollowsTheCheckpoint) {
  const std::string src = stock_moe("olmoe");
  const std::string bf16 = fresh("olmoe_bf16");
  {
    json cfg = Checkpoint::open(src).config();
    cfg["torch_dtype"] = "bfloat16";
    auto m = Model::load(src, {at::kBFloat16, at::kCPU});
    SaveOptions so;
    so.copy_aux_from = src;
    save_checkpoint(bf16, cfg, m->hf_tensors(), so);
  }
  const json r16 = run_merge(bf16, options("hc-smoe", 2), fresh("bf16_out"));
  EXPECT_EQ(r16["calibration"]["dtype"], "bfloat16");
  EXPECT_TRUE(std::isfinite(r16["mean_output_error"].get<double>()));
  MergeOptions o = options("hc-smoe", 2);
  o.dtype = "float32";
  const json r32 = run_merge(bf16, o, fresh("bf16_fp32_out"));
  EXPECT_EQ(r32["calibration"]["dtype"], "float32");
  // bf16 rounding moves the mean outputs a little, not this small model's clusters.
  for (size_t l = 0; l < r16["layers"].size(); ++l)
    EXPECT_EQ(r16["layers"][l]["clusters"], r32["layers"][l]["clusters"]) << l;
  EXPECT_EQ(run_merge(src, options("hc-smoe", 2), fresh("fp32_out"))["calibration"]["dtype"], "float32");
}
