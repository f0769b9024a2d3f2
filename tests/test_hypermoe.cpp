// HyperMoE (moe_routing_training.md §3, §6.6 item 7): the HyperExpert's grouped and factorised
// paths against a naive implementation written here that generates both adapter matrices per
// token, as the reference does (fp64: outputs and every gradient <= 1e-10); the bilinear
// contraction against finite differences and across chunk sizes; the init-scale bound; the
// noisy top-k router and Shazeer's load estimate against formulas written out; a moeforge
// checkpoint with HyperMoE saved and loaded back (logits bit-identical) and its bad inputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <regex>

#include "io/checkpoint.h"
#include "model/hypermoe_ffn.h"
#include "model/model.h"
#include "moe/hyper_expert.h"
#include "moe/losses.h"
#include "moe/routers/noisy_router.h"
#include "test_helpers.h"
#include "util/fs.h"
#include "util/json.h"

using namespace mf;
using mf::testing_helpers::error_of;

namespace {

moe::HyperMoeOptions small_options() {
  moe::HyperMoeOptions o;
  o.experts_embedding_dim = 6;
  o.process_dim = 8;
  o.hypernet_input = 5;
  o.hypernetwork_bottleneck = 7;
  o.layer_emb_dim = 3;
  o.adapter_dim = 4;
  return o;
}

struct Hyper {
  moe::HyperExpert expert{nullptr};
  moe::HyperGenerator gen{nullptr};
};

// fp64 modules; the heads re-drawn at a larger scale so that the adapter is far from zero and
// every gradient is visible.
Hyper make_hyper(int64_t E, int64_t d, int64_t layers, uint64_t seed) {
  torch::manual_seed(seed);
  Hyper h{moe::HyperExpert(E, small_options()), moe::HyperGenerator(d, layers, small_options())};
  h.expert->to(at::kDouble);
  h.gen->to(at::kDouble);
  torch::NoGradGuard ng;
  for (auto& p : h.gen->parameters()) p.uniform_(-0.3, 0.3);
  return h;
}

// The reference's computation: per token, both adapter matrices generated from h_t.
at::Tensor naive_output(Hyper& hy, int64_t layer, const at::Tensor& x, const at::Tensor& idx) {
  const int64_t T = x.size(0), d = x.size(1), E = hy.expert->expert_embedding->weight.size(0);
  const int64_t a = hy.gen->adapter_dim();
  const at::Tensor emb = hy.expert->expert_embedding->weight;
  std::vector<at::Tensor> rows;
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor s = at::zeros({emb.size(1)}, emb.options());
    for (int64_t j = 0; j < E; ++j) {
      bool selected = false;
      for (int64_t k = 0; k < idx.size(1); ++k) selected = selected || idx[t][k].item<int64_t>() == j;
      if (!selected) s = s + emb[j];
    }
    at::Tensor z = hy.expert->processor->forward(s.unsqueeze(0));
    at::Tensor in = at::cat({z, hy.gen->layer_embedding->weight[layer].unsqueeze(0)}, 1);
    at::Tensor h = at::relu(hy.gen->bottleneck->forward(in));
    at::Tensor Wd = hy.gen->down_weight->forward(h).view({d, a});
    at::Tensor bd = hy.gen->down_bias->forward(h).view({a});
    at::Tensor Wu = hy.gen->up_weight->forward(h).view({a, d});
    at::Tensor bu = hy.gen->up_bias->forward(h).view({d});
    at::Tensor act = at::relu(x[t].unsqueeze(0).mm(Wd) + bd);
    rows.push_back(act.mm(Wu) + bu);
  }
  return at::cat(rows);
}

// Random distinct experts per token; `holes` leaves the last slot empty (-1) on some tokens.
at::Tensor random_selection(int64_t T, int64_t E, int64_t k, bool holes) {
  at::Tensor idx = at::empty({T, k}, at::kLong);
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor perm = at::randperm(E, at::kLong);
    for (int64_t j = 0; j < k; ++j) idx[t][j] = perm[j];
    if (holes && t % 3 == 0) idx[t][k - 1] = -1;
  }
  return idx;
}

std::vector<at::Tensor> grads_of(const Hyper& hy, const at::Tensor& x) {
  std::vector<at::Tensor> g{x.grad().clone()};
  for (auto& p : hy.expert->parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
  for (auto& p : hy.gen->parameters()) g.push_back(p.grad().defined() ? p.grad().clone() : at::zeros_like(p));
  return g;
}

void zero_grads(const Hyper& hy, at::Tensor& x) {
  x.mutable_grad() = at::Tensor();
  for (auto& p : hy.expert->parameters()) p.mutable_grad() = at::Tensor();
  for (auto& p : hy.gen->parameters()) p.mutable_grad() = at::Tensor();
}

}  // namespace

TEST(HyperMoe, BothPathsEqualTheNaivePerTokenWeightsInFp64) {
  const int64_t d = 10, T = 36;
  for (auto [E, k] : std::vector<std::pair<int64_t, int64_t>>{{4, 1}, {4, 2}, {6, 3}, {8, 1}}) {
    for (bool holes : {false, true}) {
      SCOPED_TRACE("E=" + std::to_string(E) + " k=" + std::to_string(k) + (holes ? " with empty slots" : ""));
      Hyper hy = make_hyper(E, d, 3, 100 + static_cast<uint64_t>(E * 10 + k));
      at::Tensor x = at::randn({T, d}, at::kDouble).requires_grad_();
      at::Tensor idx = random_selection(T, E, k, holes);
      at::Tensor R = at::randn({T, d}, at::kDouble);
      const int64_t layer = 2;

      at::Tensor ref = naive_output(hy, layer, x, idx);
      (ref * R).sum().backward();
      const std::vector<at::Tensor> gref = grads_of(hy, x);
      ASSERT_GT(ref.abs().max().item<double>(), 1e-2);  // the adapter is not negligible here

      for (moe::HyperPath path : {moe::HyperPath::Grouped, moe::HyperPath::Factorised}) {
        zero_grads(hy, x);
        at::Tensor y = moe::hyper_expert_output(*hy.expert, *hy.gen, layer, x, idx, path);
        EXPECT_LE((y - ref).abs().max().item<double>(), 1e-10);
        (y * R).sum().backward();
        const std::vector<at::Tensor> g = grads_of(hy, x);
        ASSERT_EQ(g.size(), gref.size());
        for (size_t i = 0; i < g.size(); ++i) {
          EXPECT_LE((g[i] - gref[i]).abs().max().item<double>(), 1e-10) << "gradient " << i;
          if (i == 0) EXPECT_GT(g[i].abs().max().item<double>(), 1e-3);
        }
      }
    }
  }
}

TEST(HyperMoe, BilinearContractionMatchesEinsumAcrossChunksAndFiniteDifferences) {
  torch::manual_seed(3);
  // q <= p (u first) and q > p (outer product first).
  for (auto [p, q] : std::vector<std::pair<int64_t, int64_t>>{{9, 4}, {4, 9}}) {
    const int64_t T = 11, m = 5;
    at::Tensor u = at::randn({T, p}, at::kDouble).requires_grad_();
    at::Tensor h = at::randn({T, m}, at::kDouble).requires_grad_();
    at::Tensor W = at::randn({p, q, m}, at::kDouble).requires_grad_();
    at::Tensor R = at::randn({T, q}, at::kDouble);
    at::Tensor ref = at::einsum("pqm,tp,tm->tq", {W, u, h});
    auto [gu, gh, gW] = [&] {
      auto g = torch::autograd::grad({(ref * R).sum()}, {u, h, W});
      return std::make_tuple(g[0], g[1], g[2]);
    }();
    for (int64_t chunk : {0, 1, 3, 4, 100}) {
      at::Tensor y = moe::bilinear_contract(u, h, W, chunk);
      EXPECT_LE((y - ref).abs().max().item<double>(), 1e-12);
      auto g = torch::autograd::grad({(y * R).sum()}, {u, h, W});
      EXPECT_LE((g[0] - gu).abs().max().item<double>(), 1e-12);
      EXPECT_LE((g[1] - gh).abs().max().item<double>(), 1e-12);
      EXPECT_LE((g[2] - gW).abs().max().item<double>(), 1e-12);
    }
    // Central differences on a few entries of each input.
    auto f = [&](const at::Tensor& uu, const at::Tensor& hh, const at::Tensor& ww) {
      return (moe::bilinear_contract(uu, hh, ww, 2) * R).sum().item<double>();
    };
    const double eps = 1e-6;
    auto g = torch::autograd::grad({(moe::bilinear_contract(u, h, W, 2) * R).sum()}, {u, h, W});
    at::NoGradGuard ng;
    for (int which = 0; which < 3; ++which) {
      for (int64_t i : {0L, 7L, 17L}) {
        at::Tensor uu = u.detach().clone(), hh = h.detach().clone(), ww = W.detach().clone();
        at::Tensor& t = which == 0 ? uu : which == 1 ? hh : ww;
        const double base = t.view(-1)[i].item<double>();
        t.view(-1)[i] = base + eps;
        const double up = f(uu, hh, ww);
        t.view(-1)[i] = base - eps;
        const double down = f(uu, hh, ww);
        EXPECT_NEAR((up - down) / (2 * eps), g[static_cast<size_t>(which)].view(-1)[i].item<double>(), 1e-7);
      }
    }
  }
}

TEST(HyperMoe, FiniteDifferencesOfTheWholeHyperExpert) {
  const int64_t E = 5, d = 6, T = 9;
  Hyper hy = make_hyper(E, d, 2, 11);
  at::Tensor x = at::randn({T, d}, at::kDouble);
  at::Tensor idx = random_selection(T, E, 2, false);
  at::Tensor R = at::randn({T, d}, at::kDouble);
  for (moe::HyperPath path : {moe::HyperPath::Grouped, moe::HyperPath::Factorised}) {
    auto loss = [&] { return (moe::hyper_expert_output(*hy.expert, *hy.gen, 1, x, idx, path) * R).sum(); };
    std::vector<at::Tensor> params{hy.expert->expert_embedding->weight, hy.gen->layer_embedding->weight,
                                   hy.gen->bottleneck->weight, hy.gen->down_weight->weight, hy.gen->up_bias->weight};
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    loss().backward();
    for (auto& p : params) {
      at::Tensor g = p.grad().clone();
      for (int64_t i : {0L, 5L}) {
        const double eps = 1e-6;
        double base, up, down;
        {
          at::NoGradGuard ng;
          base = p.view(-1)[i].item<double>();
          p.view(-1)[i] = base + eps;
          up = loss().item<double>();
          p.view(-1)[i] = base - eps;
          down = loss().item<double>();
          p.view(-1)[i] = base;
        }
        EXPECT_NEAR((up - down) / (2 * eps), g.view(-1)[i].item<double>(), 1e-6);
      }
    }
  }
}

TEST(HyperMoe, AtInitialisationTheAdapterStaysWithinTheHyperfaninBound) {
  // The reference's hyper-parameters at a GPT-2-like width: generated weights are
  // Ud h + 0 with |Ud| <= 1e-3 sqrt(3 / (m d)), so |(x W_down)_j| <= B_d |h|_1 |x|_1, |b_down| <=
  // B_b |h|_1, and o likewise through the up head (B_u = 1e-3 sqrt(3 / (m a))).
  torch::manual_seed(5);
  const int64_t E = 8, d = 96, T = 64;
  moe::HyperMoeOptions opt;
  moe::HyperExpert ex(E, opt);
  moe::HyperGenerator gen(d, 4, opt);
  at::Tensor x = at::randn({T, d});
  at::Tensor idx = random_selection(T, E, 1, false);
  at::Tensor o = moe::hyper_expert_output(*ex, *gen, 3, x, idx);
  const double m = static_cast<double>(opt.hypernetwork_bottleneck), a = static_cast<double>(opt.adapter_dim);
  const double Bd = 1e-3 * std::sqrt(3 / (m * d)), Bu = 1e-3 * std::sqrt(3 / (m * a)), Bb = 1e-3 * std::sqrt(3 / m);
  at::NoGradGuard ng;
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor sel = at::zeros({1, E});
    sel[0][idx[t][0].item<int64_t>()] = 1;
    const double h1 = gen->hidden(ex->process(sel), 3).abs().sum().item<double>();
    const double act1 = a * (Bd * h1 * x[t].abs().sum().item<double>() + Bb * h1);  // bound on |act|_1
    const double bound = Bu * h1 * act1 + Bb * h1;
    EXPECT_LE(o[t].abs().max().item<double>(), bound * (1 + 1e-5)) << "token " << t;
  }
  EXPECT_GT(o.abs().max().item<double>(), 0.0);
  EXPECT_LT(o.abs().max().item<double>(), 1e-3 * x.abs().max().item<double>());
}

TEST(HyperMoe, NoisyRouterStartsAtZeroWithUnitGatesAndLearnedNoise) {
  moe::SelectionConfig sel;
  sel.k = 1;
  sel.gate = moe::GateMode::Renorm;
  moe::NoisyTopKRouter r(16, 8, sel, 0.01);
  at::Tensor x = at::randn({20, 16});
  moe::RouterOutput eval = r->route(x, false);
  EXPECT_TRUE(eval.idx.eq(0).all().item<bool>());  // all-zero logits: ties go to the lowest index
  EXPECT_TRUE(eval.gates.eq(1).all().item<bool>());
  EXPECT_FALSE(eval.noise_stddev.defined());
  moe::RouterOutput tr = r->route(x, true);
  EXPECT_NEAR(tr.noise_stddev.max().item<double>(), std::log(2.0) + 0.01, 1e-6);  // softplus(0) + eps
  EXPECT_TRUE(tr.clean_logits.eq(0).all().item<bool>());
  EXPECT_GT(tr.idx.max().item<int64_t>(), 0);  // the noise spreads tokens over experts
  EXPECT_TRUE(tr.gates.eq(1).all().item<bool>());
}

TEST(HyperMoe, ShazeerLoadWithLearnedNoiseMatchesTheFormulaAndTheReferenceVariant) {
  // Two tokens, three experts, k = 1.
  at::Tensor clean = at::tensor({0.5, 0.1, -0.2, 0.0, 0.3, 0.2}, at::kDouble).view({2, 3});
  at::Tensor noisy = at::tensor({0.9, 0.2, -0.5, -0.1, 0.7, 0.6}, at::kDouble).view({2, 3});
  at::Tensor sd = at::tensor({0.5, 0.4, 0.3, 0.6, 0.7, 0.8}, at::kDouble).view({2, 3});
  auto Phi = [](double z) { return 0.5 * (1 + std::erf(z / std::sqrt(2.0))); };
  // Shazeer: for the selected expert the threshold is the 2nd largest noisy logit, else the 1st.
  const double want[3] = {Phi((0.5 - 0.2) / 0.5) + Phi((0.0 - 0.7) / 0.6), Phi((0.1 - 0.9) / 0.4) + Phi((0.3 - 0.6) / 0.7),
                          Phi((-0.2 - 0.9) / 0.3) + Phi((0.2 - 0.7) / 0.8)};
  at::Tensor load = moe::shazeer_load(clean, noisy, sd, 1, {}, false);
  for (int e = 0; e < 3; ++e) EXPECT_NEAR(load[e].item<double>(), want[e], 1e-12);
  // Reference: thresholds are softmax probabilities of the noisy logits, compared with logits.
  at::Tensor p = at::softmax(noisy, 1);
  double ref[3] = {0, 0, 0};
  for (int t = 0; t < 2; ++t) {
    auto row = std::get<0>(p[t].topk(2));
    const double thr_in = row[1].item<double>(), thr_out = row[0].item<double>();
    for (int e = 0; e < 3; ++e) {
      const double thr = noisy[t][e].item<double>() > thr_in ? thr_in : thr_out;
      ref[e] += Phi((clean[t][e].item<double>() - thr) / sd[t][e].item<double>());
    }
  }
  at::Tensor load_ref = moe::shazeer_load(clean, noisy, sd, 1, {}, true);
  for (int e = 0; e < 3; ++e) EXPECT_NEAR(load_ref[e].item<double>(), ref[e], 1e-12);
  // Unbiased cv^2, as torch's .var().
  at::Tensor v = at::tensor({1.0, 2.0, 4.0}, at::kDouble);
  EXPECT_NEAR(moe::cv_squared(v, true).item<double>(), (7.0 / 3.0) / (49.0 / 9.0), 1e-9);
}

namespace {

json hypermoe_config() {
  return {{"model_type", "moeforge"},
          {"base_model_type", "llama"},
          {"architectures", {"MoeforgeForCausalLM"}},
          {"vocab_size", 48},
          {"hidden_size", 16},
          {"intermediate_size", 24},
          {"num_hidden_layers", 3},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 64},
          {"moe_layers", {0, 2}},
          {"num_experts", 4},
          {"num_experts_per_tok", 1},
          {"expert_sizes", {{24, 24, 24, 24}, {24, 24, 24, 24}}},
          {"router",
           {{"type", "noisy_topk"}, {"gate", "renorm"}, {"aux_loss", "shazeer"}, {"aux_loss_coef", 0.01}}},
          {"hypermoe", moe::to_json(small_options())}};
}

// A stock Mixtral config (no HyperMoE).
json mixtral_config() {
  return {{"model_type", "mixtral"},  {"architectures", {"MixtralForCausalLM"}}, {"vocab_size", 48},
          {"hidden_size", 16},        {"intermediate_size", 24},                {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"num_key_value_heads", 2},               {"max_position_embeddings", 64},
          {"num_local_experts", 4},   {"num_experts_per_tok", 2}};
}

std::string fresh_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/mf_hypermoe_" + name;
  remove_all(d);
  return d;
}

}  // namespace

TEST(HyperMoe, CheckpointRoundTripReproducesLogitsAndNamesItsTensors) {
  const json cfg = hypermoe_config();
  auto m = Model::create(parse_model_config(cfg, "hypermoe/config.json"));
  m->init_random(9, 0.3);
  m->eval();
  std::set<std::string> names;
  for (const auto& [name, t] : m->hf_tensors()) names.insert(name);
  for (const char* n : {"hypermoe.down_weight.weight", "hypermoe.layer_embedding.weight",
                        "model.layers.0.mlp.hyper_expert.expert_embedding.weight",
                        "model.layers.2.mlp.hyper_expert.processor.2.bias", "model.layers.2.mlp.router.noise.weight"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_FALSE(names.count("model.layers.1.mlp.hyper_expert.expert_embedding.weight"));  // dense layer

  const std::string dir = fresh_dir("roundtrip");
  save_checkpoint(dir, cfg, m->hf_tensors());
  auto back = Model::load(dir);
  at::Tensor ids = at::randint(0, 48, {2, 7}, at::kLong);
  EXPECT_TRUE(at::equal(m->forward(ids), back->forward(ids)));
  // The HyperExpert changes the output: a copy without the "hypermoe" object differs.
  json plain = cfg;
  plain.erase("hypermoe");
  auto base = Model::create(parse_model_config(plain, "plain/config.json"));
  base->set_weights([&](const std::string& n) { return m->named_parameters()[n]; });
  base->eval();
  EXPECT_FALSE(at::allclose(base->forward(ids), m->forward(ids), 0, 1e-7));
}

TEST(HyperMoe, BadCheckpointsAndConfigsAreOneLineErrors) {
  const json cfg = hypermoe_config();
  auto m = Model::create(parse_model_config(cfg, "hypermoe/config.json"));
  m->init_random(1);
  auto tensors = m->hf_tensors();
  // A generator head of the wrong width (another adapter_dim).
  for (auto& [name, t] : tensors)
    if (name == "hypermoe.up_bias.weight") t = at::zeros({17, t.size(1)});
  const std::string dir = fresh_dir("bad_shape");
  save_checkpoint(dir, cfg, tensors);
  std::string e = error_of([&] { Model::load(dir); });
  EXPECT_NE(e.find("hypermoe.up_bias.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("[17, 7]"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  // A missing per-layer tensor.
  tensors = m->hf_tensors();
  tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                               [](const auto& p) { return p.first == "model.layers.2.mlp.hyper_expert.processor.0.bias"; }),
                tensors.end());
  const std::string dir2 = fresh_dir("missing");
  save_checkpoint(dir2, cfg, tensors);
  e = error_of([&] { Model::load(dir2); });
  EXPECT_NE(e.find("missing tensor model.layers.2.mlp.hyper_expert.processor.0.bias"), std::string::npos) << e;
  // Bad hypermoe keys.
  json bad = cfg;
  bad["hypermoe"]["adapter_dim"] = 0;
  e = error_of([&] { parse_model_config(bad, "x/config.json"); });
  EXPECT_NE(e.find("hypermoe.adapter_dim must be an integer"), std::string::npos) << e;
  bad = cfg;
  bad["hypermoe"]["adaptor_dim"] = 8;
  e = error_of([&] { parse_model_config(bad, "x/config.json"); });
  EXPECT_NE(e.find("unknown key 'hypermoe.adaptor_dim'"), std::string::npos) << e;
}

TEST(HyperMoe, TrainFlagOnADenseModelIsAOneLineError) {
  const std::string src = MOEFORGE_SOURCE_DIR;
  auto r = mf::testing_helpers::run_moeforge("-q train --recipe pretrain --config " + src +
                                                 "/configs/pretrain-tiny-dense-continued.json --init " + src +
                                                 "/models/tiny --hypermoe --output " + fresh_dir("cli"),
                                             true);
  EXPECT_NE(r.code, 0);
  EXPECT_EQ(r.out.rfind("error: ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("models/tiny/config.json: --hypermoe needs an MoE model, this one is dense"), std::string::npos)
      << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
}

TEST(HyperMoe, KvCacheDecodingEqualsTheFullForward) {
  auto m = Model::create(parse_model_config(hypermoe_config(), "hypermoe/config.json"));
  m->init_random(4, 0.3);
  m->eval();
  at::Tensor ids = at::randint(0, 48, {2, 10}, at::kLong);
  at::Tensor full = m->forward(ids);
  KvCache cache = m->make_cache(4);
  std::vector<at::Tensor> parts{m->forward(ids.narrow(1, 0, 4), {}, &cache)};
  for (int64_t t = 4; t < 10; ++t) parts.push_back(m->forward(ids.narrow(1, t, 1), {}, &cache));
  EXPECT_LE((at::cat(parts, 1) - full).abs().max().item<double>(), 1e-5);
}

TEST(HyperMoe, CopiedExpertsWithTheZeroNoisyRouterEqualTheDenseModel) {
  // §6.6 item 6: every FFN copied into E experts, k = 1, W_g = W_n = 0 -> the dense model (the
  // gate is exactly 1; the routed GEMMs only change the summation blocking).
  json dense_cfg = hypermoe_config();
  for (const char* k : {"base_model_type", "moe_layers", "num_experts", "num_experts_per_tok", "expert_sizes", "router",
                        "hypermoe"})
    dense_cfg.erase(k);
  dense_cfg["model_type"] = "llama";
  dense_cfg["architectures"] = {"LlamaForCausalLM"};
  auto dense = Model::create(parse_model_config(dense_cfg, "dense/config.json"));
  dense->init_random(12, 0.3);
  dense->eval();
  json moe_cfg = hypermoe_config();
  moe_cfg.erase("hypermoe");
  moe_cfg["moe_layers"] = {0, 1, 2};
  moe_cfg["expert_sizes"] = json::array({{24, 24, 24, 24}, {24, 24, 24, 24}, {24, 24, 24, 24}});
  auto moe = Model::create(parse_model_config(moe_cfg, "moe/config.json"));
  auto dp = dense->named_parameters();
  moe->set_weights([&](const std::string& n) {
    static const std::regex expert(R"(^(model\.layers\.\d+\.mlp\.)experts\.\d+\.(\w+)\.weight$)");
    std::smatch m;
    if (std::regex_match(n, m, expert)) return dp[m[1].str() + m[2].str() + ".weight"];
    if (n.find(".router.") != std::string::npos) return at::zeros({4, 16});
    return dp[n];
  });
  moe->eval();
  at::Tensor ids = at::randint(0, 48, {3, 9}, at::kLong);
  at::Tensor a = dense->forward(ids), b = moe->forward(ids);
  EXPECT_LE((a - b).abs().max().item<double>(), 1e-5 * a.abs().max().item<double>());
}

TEST(HyperMoe, TrainFlagAddsFreshHyperMoeToAMixtralCheckpointAsWrappedMoeforge) {
  const std::string dir = fresh_dir("train_mixtral");
  json cfg = mixtral_config();
  cfg["vocab_size"] = 8192;  // models/tiny's tokenizer
  auto m = Model::create(parse_model_config(cfg, "mixtral/config.json"));
  m->init_random(2, 0.05);
  save_checkpoint(dir + "/init", cfg, m->hf_tensors());
  std::string text;
  for (int i = 0; i < 40; ++i) text += "{\"text\": \"Line " + std::to_string(i) + " about routers and experts.\"}\n";
  write_file_atomic(dir + "/train.jsonl", text);
  write_file_atomic(dir + "/train.json",
                    json({{"training",
                           {{"seq_len", 16}, {"batch_size", 2}, {"lr", 1e-3}, {"max_steps", 2}, {"warmup_steps", 1},
                            {"train_data", dir + "/train.jsonl"}, {"tokenizer", std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny"},
                            {"output_dir", dir + "/run"}}}})
                        .dump());
  auto r = mf::testing_helpers::run_moeforge(
      "-q train --recipe pretrain --config " + dir + "/train.json --init " + dir + "/init --hypermoe", true);
  ASSERT_EQ(r.code, 0) << r.out;
  const json out_cfg = read_json_file(dir + "/run/final/config.json");
  EXPECT_EQ(out_cfg.at("model_type"), "moeforge");
  EXPECT_EQ(out_cfg.at("base_model_type"), "mixtral");
  auto trained = Model::load(dir + "/run/final");
  EXPECT_TRUE(trained->named_parameters().contains("model.layers.1.block_sparse_moe.hyper_expert.processor.0.weight"));
}

TEST(HyperMoe, TrainFlagAddsFreshHyperMoeToAMoeforgeCheckpointAndTheResultLoads) {
  const std::string dir = fresh_dir("train");
  json cfg = hypermoe_config();
  cfg.erase("hypermoe");
  cfg["vocab_size"] = 8192;  // models/tiny's tokenizer
  auto m = Model::create(parse_model_config(cfg, "moe/config.json"));
  m->init_random(2, 0.05);
  save_checkpoint(dir + "/init", cfg, m->hf_tensors());
  std::string text;
  for (int i = 0; i < 40; ++i)
    text += "{\"text\": \"Line " + std::to_string(i) + " of a small training file about routers and experts.\"}\n";
  write_file_atomic(dir + "/train.jsonl", text);
  const std::string src = MOEFORGE_SOURCE_DIR;
  write_file_atomic(dir + "/train.json", json({{"training",
                                                {{"seq_len", 16}, {"batch_size", 2}, {"lr", 1e-3}, {"max_steps", 3},
                                                 {"warmup_steps", 1}, {"seed", 3}, {"train_data", dir + "/train.jsonl"},
                                                 {"tokenizer", src + "/models/tiny"}, {"output_dir", dir + "/run"}}}})
                                              .dump());
  auto r = mf::testing_helpers::run_moeforge(
      "-q train --recipe pretrain --config " + dir + "/train.json --init " + dir + "/init --hypermoe", true);
  ASSERT_EQ(r.code, 0) << r.out;
  const json out_cfg = read_json_file(dir + "/run/final/config.json");
  EXPECT_EQ(out_cfg.at("hypermoe"), moe::to_json(moe::HyperMoeOptions{}));
  auto trained = Model::load(dir + "/run/final");
  auto p = trained->named_parameters();
  EXPECT_EQ(p["hypermoe.down_weight.weight"].size(0), 16 * 64);
  // The routers were trained through the Shazeer loss (they start at zero).
  EXPECT_GT(p["model.layers.0.mlp.router.noise.weight"].abs().max().item<double>(), 0.0);
  EXPECT_TRUE(at::isfinite(trained->forward(at::randint(0, 8192, {1, 8}, at::kLong))).all().item<bool>());
  const std::string metrics = read_file(dir + "/run/metrics.jsonl");
  EXPECT_NE(metrics.find("\"balance_loss\""), std::string::npos);
}

TEST(HyperMoe, StockMoeFamiliesCarryHyperMoeAsModelTypeMoeforgeWithTheirOwnTensorNames) {
  json stock = mixtral_config();
  stock["hypermoe"] = moe::to_json(small_options());
  std::string e = error_of([&] { parse_model_config(stock, "m/config.json"); });
  EXPECT_NE(e.find("key 'hypermoe' needs \"model_type\": \"moeforge\" with \"base_model_type\": \"mixtral\""),
            std::string::npos)
      << e;
  json wrapped = stock;
  wrapped["model_type"] = "moeforge";
  wrapped["base_model_type"] = "mixtral";
  auto m = Model::create(parse_model_config(wrapped, "w/config.json"));
  m->init_random(6, 0.3);
  m->eval();
  auto params = m->named_parameters();
  for (const char* n : {"model.layers.1.block_sparse_moe.gate.weight", "model.layers.1.block_sparse_moe.experts.3.w2.weight",
                        "model.layers.0.block_sparse_moe.hyper_expert.expert_embedding.weight",
                        "hypermoe.layer_embedding.weight"})
    EXPECT_TRUE(params.contains(n)) << n;
  EXPECT_EQ(params["hypermoe.layer_embedding.weight"].size(0), 2);
  const std::string dir = fresh_dir("wrapped");
  save_checkpoint(dir, wrapped, m->hf_tensors());
  at::Tensor ids = at::randint(0, 48, {2, 6}, at::kLong);
  EXPECT_TRUE(at::equal(Model::load(dir)->forward(ids), m->forward(ids)));
  // llama.cpp has no HyperExpert: GGUF export refuses instead of dropping it.
  auto r = mf::testing_helpers::run_moeforge("-q convert " + dir + " --to gguf --out " + dir + ".gguf", true);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("HyperMoE"), std::string::npos) << r.out;
  EXPECT_FALSE(path_exists(dir + ".gguf"));
}
