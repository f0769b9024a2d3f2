// The LoRA-MoE FFN block (moe_routing_training.md §4.1, §4.5, §6.6) on the tiny random Llama in
// fp64: all B = 0 gives the base model for every routing; LoRAMoE's soft routing equals the
// explicit weighted sum and MixLoRA's top-2 a naive per-token loop, both over experts merged
// here as W + s B A; top-p selection on hand-made probabilities; gradients reach only the LoRA
// tensors and the router (finite differences of A, B and the router weight); MoLA's per-layer
// counts and the one-line errors; trainable parameters against the formula; GMoE's two losses
// against direct calls of moe/gmoe_losses.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "model/lora_moe_ffn.h"
#include "model/model.h"
#include "model_fixtures.h"
#include "moe/gmoe_losses.h"
#include "moe_test_util.h"
#include "test_helpers.h"

using namespace mf;
using mf::moe::testing::fd_check;
using mf::moe::testing::ref_moe;
using mf::moe::testing::ref_swiglu;
using mf::testing_helpers::error_of;

namespace {

constexpr int64_t kHidden = 32;  // the tiny Llama: d 32, f 48, 2 layers, vocab 64

std::shared_ptr<Model> fp64_llama() {
  auto m = testing_fixtures::tiny_model("llama", 3, 0.1);
  m->to(at::kDouble);
  return m;
}

struct Converted {
  std::shared_ptr<Model> model;
  std::vector<std::shared_ptr<LoraMoeFFN>> blocks;
};

Converted converted(const LoraMoeOptions& opt, bool fp64 = true, uint64_t seed = 11) {
  Converted c{fp64 ? fp64_llama() : testing_fixtures::tiny_model("llama", 3, 0.1), {}};
  convert_to_lora_moe(*c.model, opt, seed);
  for (int64_t l = 0; l < c.model->config().num_layers; ++l) {
    c.blocks.push_back(std::dynamic_pointer_cast<LoraMoeFFN>(c.model->ffn(l)));
    EXPECT_TRUE(c.blocks.back()) << "layer " << l << " was not converted";
  }
  return c;
}

// Non-zero B everywhere, so that the experts differ.
void randomize_lora_B(LoraMoeFFN& b, double std) {
  at::NoGradGuard ng;
  for (int64_t e = 0; e < b.num_experts(); ++e)
    for (const auto& t : b.options().targets) {
      at::Tensor B = b.lora_B(e, t);
      B.normal_(0.0, std);
    }
}

at::Tensor router_weight(const LoraMoeFFN& b) { return b.router->named_parameters()["weight"]; }

// The frozen FFN in plain ops.
at::Tensor base_ffn(const LoraMoeFFN& b, const at::Tensor& x) {
  const GatedMLP& g = b.base();
  return at::linear(at::silu(at::linear(x, g.gate->weight)) * at::linear(x, g.up->weight), g.down->weight);
}

// Every expert's projections merged: W + s B_e A_e (plain W where the projection is not a target).
struct ExpertWeights {
  std::vector<at::Tensor> gate, up, down;
};
ExpertWeights merged_experts(const LoraMoeFFN& b) {
  ExpertWeights w;
  const GatedMLP& g = b.base();
  const double s = b.lora_scale();
  auto merged = [&](const at::Tensor& W, int64_t e, const char* t) {
    const at::Tensor& A = b.lora_A(e, t);
    return (A.defined() ? W + s * at::mm(b.lora_B(e, t), A) : W).detach();
  };
  for (int64_t e = 0; e < b.num_experts(); ++e) {
    w.gate.push_back(merged(g.gate->weight, e, "gate_proj"));
    w.up.push_back(merged(g.up->weight, e, "up_proj"));
    w.down.push_back(merged(g.down->weight, e, "down_proj"));
  }
  return w;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

int64_t trainable_params(Model& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

}  // namespace

TEST(LoraMoe, AllBZeroGivesTheBaseModelForEveryRouting) {
  torch::manual_seed(1);
  const at::Tensor ids = at::randint(0, 64, {2, 7}, at::kLong);
  at::NoGradGuard ng;
  const at::Tensor want = fp64_llama()->forward_hidden(ids);
  for (const auto& routing : lora_moe_routings()) {
    SCOPED_TRACE(routing);
    LoraMoeOptions opt = lora_moe_defaults(routing);
    // Switch and dynamic routing weight the expert by its probability without renormalising
    // (mLoRA), so even B = 0 scales the FFN: that is the next test. Renormalised here.
    opt.gate = moe::GateMode::Renorm;
    opt.capacity = 0;
    Converted c = converted(opt);
    EXPECT_LE(max_diff(c.model->forward_hidden(ids), want), 1e-12);
  }
}

TEST(LoraMoe, ProbabilityGatesScaleTheBaseByTheKeptProbabilityMass) {
  for (const std::string routing : {"mixlora-switch", "mixlora-dynamic"}) {
    SCOPED_TRACE(routing);
    torch::manual_seed(2);
    Converted c = converted(lora_moe_defaults(routing));
    LoraMoeFFN& b = *c.blocks[1];
    at::NoGradGuard ng;
    const at::Tensor x = at::randn({12, kHidden}, at::kDouble);  // 12 tokens: under Switch's capacity 32
    const at::Tensor y = b.forward(x, FfnContext{});
    const at::Tensor sel = b.last_selection();
    const at::Tensor kept = sel.ge(0);
    const at::Tensor mass = (b.last_probs().gather(1, sel.clamp_min(0)) * kept).sum(1, true);
    EXPECT_LE(max_diff(y, mass * base_ffn(b, x)), 1e-12);
    if (routing == "mixlora-switch") EXPECT_EQ(sel.size(1), 1);
  }
}

TEST(LoraMoe, LoraMoeSoftRoutingEqualsTheExplicitWeightedSum) {
  torch::manual_seed(3);
  Converted c = converted(lora_moe_defaults("loramoe"));
  LoraMoeFFN& b = *c.blocks[0];
  randomize_lora_B(b, 0.3);
  at::NoGradGuard ng;
  const at::Tensor x = at::randn({9, kHidden}, at::kDouble);
  const at::Tensor y = b.forward(x, FfnContext{});
  ASSERT_EQ(b.last_selection().size(1), 8);  // k = E: every expert, every token
  const ExpertWeights w = merged_experts(b);
  const at::Tensor G = router_weight(b);
  at::Tensor want = at::zeros_like(x);
  for (int64_t t = 0; t < x.size(0); ++t) {
    const at::Tensor p = at::softmax(at::mv(G, x[t]), 0);
    for (int64_t e = 0; e < 8; ++e) want[t] += p[e] * ref_swiglu(x[t], w.gate[e], w.up[e], w.down[e]);
  }
  EXPECT_LE(max_diff(y, want), 1e-12);
  EXPECT_GT(max_diff(y, base_ffn(b, x)), 1e-3);  // the experts do act
}

TEST(LoraMoe, MixLoraTop2EqualsANaivePerTokenLoop) {
  torch::manual_seed(4);
  for (const std::vector<std::string>& targets :
       {std::vector<std::string>{"gate_proj", "up_proj", "down_proj"}, std::vector<std::string>{"w1", "w2"}}) {
    LoraMoeOptions opt = lora_moe_defaults("mixlora");
    opt.targets = targets;
    Converted c = converted(opt);
    LoraMoeFFN& b = *c.blocks[1];
    randomize_lora_B(b, 0.3);
    at::NoGradGuard ng;
    const at::Tensor x = at::randn({17, kHidden}, at::kDouble);
    const at::Tensor y = b.forward(x, FfnContext{});
    const ExpertWeights w = merged_experts(b);
    EXPECT_LE(max_diff(y, ref_moe(x, router_weight(b), w.gate, w.up, w.down, 2, true)), 1e-12);
  }
}

TEST(LoraMoe, TopPPicksTheShortestPrefixReachingP) {
  Converted c = converted(lora_moe_defaults("mixlora-dynamic"));
  LoraMoeFFN& b = *c.blocks[0];
  // Token t is the unit vector e_t, so its logits are column t of the router weight: log p.
  const std::vector<std::vector<double>> probs = {
      {0.05, 0.60, 0.25, 0.04, 0.03, 0.01, 0.01, 0.01},  // 0.60 + 0.25 = 0.85 -> {1, 2}
      {0.90, 0.02, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01},  // {0}
      {0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125},  // 6/8 < 0.8 <= 7/8 -> {0..6}
      {0.30, 0.30, 0.30, 0.02, 0.02, 0.02, 0.02, 0.02},  // 0.6 < 0.8 <= 0.9 -> {0, 1, 2}
  };
  at::NoGradGuard ng;
  at::Tensor W = router_weight(b);
  W.zero_();
  for (size_t t = 0; t < probs.size(); ++t) W.select(1, static_cast<int64_t>(t)).copy_(at::log(at::tensor(probs[t], at::kDouble)));
  b.forward(at::eye(kHidden, at::kDouble).narrow(0, 0, 4), FfnContext{});
  const at::Tensor want = at::tensor(std::vector<int64_t>{1, 2, -1, -1, -1, -1, -1, -1,  //
                                                          0, -1, -1, -1, -1, -1, -1, -1,  //
                                                          0, 1, 2, 3, 4, 5, 6, -1,        //
                                                          0, 1, 2, -1, -1, -1, -1, -1},
                                     at::kLong)
                             .view({4, 8});
  EXPECT_TRUE(at::equal(b.last_selection(), want)) << b.last_selection();
}

TEST(LoraMoe, OnlyLoraTensorsAndTheRouterGetGradients) {
  torch::manual_seed(5);
  Converted c = converted(lora_moe_defaults("mixlora"));
  for (auto& b : c.blocks) randomize_lora_B(*b, 0.3);
  c.model->train();
  const at::Tensor ids = at::randint(0, 64, {2, 12}, at::kLong);
  const at::Tensor loss = c.model->forward_hidden(ids).pow(2).mean() + c.model->aux_loss();
  loss.backward();
  int lora_with_grad = 0, routers_with_grad = 0;
  for (const auto& p : c.model->named_parameters()) {
    const std::string& n = p.key();
    const bool lora = n.find(".lora_A.") != std::string::npos || n.find(".lora_B.") != std::string::npos;
    const bool router = n.find(".mlp.router.") != std::string::npos;
    if (!lora && !router) {
      EXPECT_FALSE(p.value().requires_grad()) << n;
      EXPECT_FALSE(p.value().grad().defined()) << n;
      continue;
    }
    EXPECT_TRUE(p.value().requires_grad()) << n;
    if (p.value().grad().defined()) (lora ? lora_with_grad : routers_with_grad) += 1;
  }
  EXPECT_EQ(routers_with_grad, 2);
  EXPECT_GT(lora_with_grad, 12);  // experts without a routed token have none
}

TEST(LoraMoe, BlockGradientsMatchFiniteDifferences) {
  torch::manual_seed(6);
  Converted c = converted(lora_moe_defaults("mixlora"));
  LoraMoeFFN& b = *c.blocks[0];
  randomize_lora_B(b, 0.3);
  const at::Tensor x = at::randn({10, kHidden}, at::kDouble);
  const at::Tensor R = at::randn({10, kHidden}, at::kDouble);
  auto f = [&] { return (b.forward(x, FfnContext{}) * R).sum(); };
  f().backward();
  const int64_t e = b.last_selection()[0][0].item<int64_t>();  // an expert with a routed token
  const at::Tensor A = b.lora_A(e, "up_proj"), B = b.lora_B(e, "down_proj"), G = router_weight(b);
  ASSERT_TRUE(A.grad().defined() && B.grad().defined() && G.grad().defined());
  EXPECT_LT(fd_check(f, A, A.grad()), 1e-6);
  EXPECT_LT(fd_check(f, B, B.grad()), 1e-6);
  EXPECT_LT(fd_check(f, G, G.grad()), 1e-6);
  EXPECT_GT(A.grad().abs().max().item<double>(), 1e-6);
}

TEST(LoraMoe, TensorNamesAndSeededInitialisation) {
  Converted c = converted(lora_moe_defaults("mixlora"));
  const auto params = c.model->named_parameters();
  for (const char* n : {"model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.down_proj.weight",
                        "model.layers.0.mlp.experts.0.gate_proj.lora_A.weight",
                        "model.layers.1.mlp.experts.7.down_proj.lora_B.weight", "model.layers.1.mlp.router.weight"})
    EXPECT_TRUE(params.contains(n)) << n;
  LoraMoeFFN& b = *c.blocks[1];
  EXPECT_EQ(b.lora_A(3, "down_proj").sizes(), (std::vector<int64_t>{8, 48}));
  EXPECT_EQ(b.lora_B(3, "down_proj").sizes(), (std::vector<int64_t>{kHidden, 8}));
  // A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0; one stream per (layer, expert, projection).
  const at::Tensor A = b.lora_A(3, "gate_proj");
  EXPECT_LE(A.abs().max().item<double>(), 1.0 / std::sqrt(32.0));
  EXPECT_GT(A.abs().max().item<double>(), 0.5 / std::sqrt(32.0));
  EXPECT_EQ(b.lora_B(3, "gate_proj").abs().max().item<double>(), 0.0);
  EXPECT_FALSE(at::equal(A, b.lora_A(4, "gate_proj")));
  EXPECT_FALSE(at::equal(A, c.blocks[0]->lora_A(3, "gate_proj")));
  Converted again = converted(lora_moe_defaults("mixlora"));
  EXPECT_TRUE(at::equal(A, again.blocks[1]->lora_A(3, "gate_proj")));
  EXPECT_TRUE(at::equal(router_weight(b), router_weight(*again.blocks[1])));
  Converted other = converted(lora_moe_defaults("mixlora"), true, 12);
  EXPECT_FALSE(at::equal(A, other.blocks[1]->lora_A(3, "gate_proj")));
  // Targets: aliases, canonical order, untargeted projections have no tensors.
  LoraMoeOptions opt = lora_moe_defaults("mixlora");
  opt.targets = {"down_proj", "w1", "gate_proj"};
  EXPECT_EQ(checked_lora_moe_options(opt).targets, (std::vector<std::string>{"gate_proj", "down_proj"}));
  Converted partial = converted(opt);
  EXPECT_FALSE(partial.blocks[0]->lora_A(0, "up_proj").defined());
  EXPECT_FALSE(partial.model->named_parameters().contains("model.layers.0.mlp.experts.0.up_proj.lora_A.weight"));
}

TEST(LoraMoe, MolaGivesEachLayerItsOwnExpertCount) {
  EXPECT_EQ(mola_layer_experts(2), (std::vector<int64_t>{5, 9}));
  std::vector<int64_t> yi;  // GMoE's MoLA list for Yi-9B's 48 layers
  for (int64_t n : {5, 7, 9, 11}) yi.insert(yi.end(), 12, n);
  EXPECT_EQ(lora_moe_layer_experts(lora_moe_defaults("mola"), 48), yi);

  LoraMoeOptions opt = lora_moe_defaults("mola");
  opt.layer_experts = {3, 6};
  Converted c = converted(opt);
  EXPECT_EQ(c.blocks[0]->num_experts(), 3);
  EXPECT_EQ(c.blocks[1]->num_experts(), 6);
  EXPECT_EQ(router_weight(*c.blocks[1]).sizes(), (std::vector<int64_t>{6, kHidden}));
  EXPECT_EQ(trainable_params(*c.model), lora_moe_trainable_params(c.model->config(), opt));
  at::NoGradGuard ng;
  const at::Tensor h = c.model->forward_hidden(at::randint(0, 64, {1, 5}, at::kLong));
  EXPECT_EQ(h.sizes(), (std::vector<int64_t>{1, 5, kHidden}));
  EXPECT_EQ(c.blocks[1]->last_selection().size(1), 2);

  opt.layer_experts = {3, 6, 9};  // sized for another model: the reference indexes past the end
  auto m = fp64_llama();
  const std::string err = error_of([&] { convert_to_lora_moe(*m, opt, 1); });
  EXPECT_NE(err.find("layer_experts has 3 entries, expected 2"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos);
  EXPECT_TRUE(std::dynamic_pointer_cast<GatedMLP>(m->ffn(0)));  // nothing changed
}

TEST(LoraMoe, BadOptionsAndModelsAreOneLineErrors) {
  auto one_line = [](const std::string& e, const std::string& want) {
    EXPECT_NE(e.find(want), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  };
  one_line(error_of([] { lora_moe_defaults("mixlora-turbo"); }), "unknown routing 'mixlora-turbo'");
  auto m = fp64_llama();
  LoraMoeOptions opt = lora_moe_defaults("mixlora");
  opt.targets = {"gate_proj", "q_proj"};
  one_line(error_of([&] { convert_to_lora_moe(*m, opt, 1); }), "unknown target module 'q_proj'");
  opt = lora_moe_defaults("mixlora");
  opt.routing = "moe-lora";
  one_line(error_of([&] { convert_to_lora_moe(*m, opt, 1); }), "unknown routing 'moe-lora'");
  opt = lora_moe_defaults("mixlora");
  opt.top_k = 9;
  one_line(error_of([&] { convert_to_lora_moe(*m, opt, 1); }), "top_k 9 exceeds the 8 experts of layer 0");
  opt = lora_moe_defaults("gmoe");
  opt.r = 0;
  one_line(error_of([&] { convert_to_lora_moe(*m, opt, 1); }), "r must be >= 1");
  EXPECT_TRUE(std::dynamic_pointer_cast<GatedMLP>(m->ffn(1)));
  EXPECT_TRUE(m->parameters().front().requires_grad());  // not frozen either
  for (const char* family : {"gpt2", "mixtral"}) {
    auto other = testing_fixtures::tiny_model(family);
    one_line(error_of([&] { convert_to_lora_moe(*other, lora_moe_defaults("mixlora"), 1); }), "not a dense gated");
  }
}

TEST(LoraMoe, TrainableParametersMatchTheFormula) {
  // Per layer: E r (d + f) per target + router (linear E d; graph 2 d g + L_g g^2 + g + 2).
  const std::map<std::string, int64_t> want = {{"mixlora", 2 * (8 * 8 * 80 * 3 + 8 * 32)},
                                               {"gmoe", 2 * (8 * 2 * 80 * 3 + 2 * 32 * 128 + 2 * 128 * 128 + 128 + 2)}};
  for (const auto& [routing, n] : want) {
    SCOPED_TRACE(routing);
    const LoraMoeOptions opt = lora_moe_defaults(routing);
    Converted c = converted(opt, false);
    EXPECT_EQ(lora_moe_trainable_params(c.model->config(), opt), n);
    EXPECT_EQ(trainable_params(*c.model), n);
  }
}

TEST(LoraMoe, GmoeLossesEqualDirectCallsOnTheKeptProbabilities) {
  torch::manual_seed(7);
  Converted c = converted(lora_moe_defaults("gmoe"));
  auto& g = *c.blocks[0]->graph_router();
  EXPECT_EQ(g.options().activation, moe::Act::SiLU);  // the model's FFN activation
  EXPECT_EQ(g.named_buffers()["edges"].scalar_type(), at::kLong);
  c.model->train();
  const at::Tensor ids = at::randint(0, 64, {2, 9}, at::kLong);
  c.model->forward_hidden(ids);
  std::map<std::string, at::Tensor> got;
  std::map<std::string, int> entries;
  for (const auto& a : c.model->aux_losses()) {
    got[a.name] = got.count(a.name) ? got[a.name] + a.value : a.value;
    ++entries[a.name];
  }
  EXPECT_EQ(entries, (std::map<std::string, int>{{"normal_loss", 2}, {"poisson_loss", 2}}));
  std::vector<at::Tensor> probs, lambdas, counts, sigmas;
  for (const auto& b : c.blocks) {
    ASSERT_TRUE(b->last_probs().requires_grad());
    probs.push_back(b->last_probs());
    lambdas.push_back(b->graph_router()->poisson_lambda());
    counts.push_back(b->last_counts());
    sigmas.push_back(b->graph_router()->normal_sigma());
  }
  // The blocks' shares sum to the losses over all layers (means over layers, coefficients applied).
  const double p = moe::kGmoePoissonLossCoef * moe::poisson_distinction_loss(probs, lambdas).item<double>();
  const double n = moe::kGmoeNormalLossCoef * moe::normal_balance_loss(counts, sigmas).item<double>();
  EXPECT_NEAR(got["poisson_loss"].item<double>(), p, 1e-12 * std::max(1.0, std::abs(p)));
  EXPECT_NEAR(got["normal_loss"].item<double>(), n, 1e-12 * std::max(1.0, std::abs(n)));
  // The running counts grow with every training forward and carry no history's gradient.
  const double before = counts[0].sum().item<double>();
  c.model->forward_hidden(ids);
  EXPECT_GT(c.blocks[0]->last_counts().sum().item<double>(), before + 1.0);
  // Nothing is kept for the losses outside training.
  c.model->eval();
  c.model->forward_hidden(ids);
  EXPECT_TRUE(c.model->aux_losses().empty());
}

// reference_compat: padding counts in every loss, MixLoRA's balance loss takes softmax of the
// probabilities (HF's Mixtral formula on softmax(p), written out here), and GMoE's Normal target is
// normalised over all layers (equal sigmas at init: each layer's target / L) by the model-level loss.
TEST(LoraMoe, ReferenceCompatReproducesTheReferencesLossNumerics) {
  torch::manual_seed(3);
  const at::Tensor ids = at::randint(0, 64, {2, 7}, at::kLong);
  at::Tensor mask = at::ones({2, 7}, at::kLong);
  mask.index_put_({1, at::indexing::Slice(4, 7)}, 0);  // right padding in the second row
  {
    LoraMoeOptions opt = lora_moe_defaults("mixlora");
    opt.reference_compat = true;
    Converted c = converted(opt);
    c.model->train();
    c.model->forward_hidden(ids, mask);
    double want = 0, got = 0;
    for (const auto& a : c.model->aux_losses()) got += a.value.item<double>();
    for (const auto& b : c.blocks) {
      const at::Tensor P = at::softmax(b->last_probs().detach(), -1);  // softmax of probabilities
      const at::Tensor sel = b->last_selection();
      const int64_t N = P.size(0), E = P.size(1);
      ASSERT_EQ(N, 14);  // padding included
      at::Tensor mean_p = P.mean(0);
      double lb = 0;
      for (int64_t j = 0; j < sel.size(1); ++j)
        for (int64_t e = 0; e < E; ++e)
          lb += (sel.select(1, j) == e).sum().item<double>() / N * mean_p[e].item<double>();
      want += E * lb * opt.aux_coef / static_cast<double>(c.blocks.size());
    }
    EXPECT_NEAR(got, want, 1e-12);
  }
  LoraMoeOptions opt = lora_moe_defaults("gmoe");
  opt.reference_compat = true;
  Converted c = converted(opt);
  c.model->train();
  c.model->forward_hidden(ids, mask);
  std::map<std::string, int> entries;
  for (const auto& a : c.model->aux_losses()) ++entries[a.name];
  EXPECT_EQ(entries, (std::map<std::string, int>{{"poisson_loss", 2}}));  // Normal: the model-level loss
  const double L = static_cast<double>(c.blocks.size());
  double want = 0;
  for (const auto& b : c.blocks) {
    // Counts over all 14 tokens: k * sum of the selected (pre-renormalisation) probabilities.
    const at::Tensor p = b->last_probs().detach(), sel = b->last_selection();
    const at::Tensor counts = b->last_counts().detach();
    EXPECT_NEAR(counts.sum().item<double>(), 2.0 * p.gather(1, sel).sum().item<double>(), 1e-10);
    const at::Tensor v_a = std::get<0>(counts.sort(0, true)) / counts.sum();
    const at::Tensor target = moe::normal_target(b->num_experts(), b->graph_router()->normal_sigma().detach()) / L;
    want += (target * (target / (v_a + 1e-8)).log().abs()).sum().item<double>() / L;
  }
  want *= opt.normal_coef;
  EXPECT_NEAR(lora_moe_reference_normal_loss(*c.model).item<double>(), want, 1e-10 * std::max(1.0, want));
}

TEST(LoraMoe, TelemetryCountsTheRoutedTokens) {
  Converted c = converted(lora_moe_defaults("mixlora"));
  at::NoGradGuard ng;
  c.model->forward_hidden(at::randint(0, 64, {2, 6}, at::kLong));
  const auto stats = c.model->moe_stats();
  ASSERT_EQ(stats.size(), 2u);
  int64_t routed = 0;
  for (int64_t t : stats[1].tokens_per_expert) routed += t;
  EXPECT_EQ(stats[1].layer, 1);
  EXPECT_EQ(stats[1].tokens, 12);
  EXPECT_EQ(routed, 24);
  EXPECT_DOUBLE_EQ(stats[1].active_ffn_fraction, 2.0);
}
