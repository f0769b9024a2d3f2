// The MoE layer: dense equivalence of a partitioned FFN (heterogeneous widths, k = N, unit
// weights), agreement of the three execution paths with an independent per-token reference,
// the HF block semantics (Mixtral, Qwen2-MoE shared expert, OLMoE), capacity drops, EMoE
// avg-k, the MoEfication MLP router and telemetry.
#include <gtest/gtest.h>

#include <numeric>

#include "moe/expert_bank.h"
#include "moe/kernels.h"
#include "moe/moe_layer.h"
#include "moe/plan_padding.h"
#include "util/compat.h"
#include "moe/routers/avgk_router.h"
#include "moe/routers/linear_router.h"
#include "moe/routers/mlp_router.h"
#include "moe_test_util.h"
#include "util/error.h"

using namespace mf::moe;

namespace {

enum class Path { Autograd, Grouped, Fused };

at::Tensor run(MoELayer& layer, const at::Tensor& x, Path path) {
  if (path == Path::Autograd) return layer->forward(x);
  at::NoGradGuard ng;
  layer->options().small_batch_tokens = path == Path::Fused ? 1 << 20 : 0;
  at::Tensor y = layer->forward(x);
  layer->options().small_batch_tokens = 16;
  return y;
}

// A random partition of F neurons into parts of the given sizes.
std::vector<std::vector<int64_t>> random_partition(const std::vector<int64_t>& sizes, uint64_t seed) {
  const int64_t F = std::accumulate(sizes.begin(), sizes.end(), int64_t(0));
  torch::manual_seed(seed);
  at::Tensor perm = at::randperm(F, at::kLong);
  std::vector<std::vector<int64_t>> parts;
  int64_t o = 0;
  for (int64_t s : sizes) {
    std::vector<int64_t> p;
    for (int64_t i = 0; i < s; ++i) p.push_back(perm[o + i].item<int64_t>());
    o += s;
    parts.push_back(p);
  }
  return parts;
}

SelectionConfig unit_topk(int64_t k) {
  SelectionConfig s;
  s.k = k;
  s.gate = GateMode::UnitST;
  return s;
}

}  // namespace

TEST(MoeLayer, HeterogeneousPartitionWithAllExpertsReproducesDenseFfn) {
  torch::manual_seed(0);
  const int64_t d = 32;
  const std::vector<int64_t> sizes = {8, 16, 40, 24, 8};  // F = 96, heterogeneous
  const int64_t F = 96;
  at::Tensor G = at::randn({F, d}) * 0.2, U = at::randn({F, d}) * 0.2, D = at::randn({d, F}) * 0.2;
  at::Tensor x = at::randn({20, d});
  at::Tensor dense = at::mm(at::silu(at::mm(x, G.t())) * at::mm(x, U.t()), D.t());
  auto parts = random_partition(sizes, 1);
  DenseExpertBank bank = expert_bank_from_partition(G, U, D, parts, Act::SiLU);
  EXPECT_FALSE(bank->homogeneous());
  EXPECT_EQ(bank->total_width(), F);
  MoELayer layer(bank, LinearRouter(d, 5, unit_topk(5), ScoreFn::Softmax, RouterNoise{}, false, 1e-3).ptr());
  for (Path p : {Path::Autograd, Path::Grouped, Path::Fused}) {
    at::Tensor y = run(layer, x, p);
    EXPECT_LT((y - dense).abs().max().item<float>(), 1e-5) << "path " << int(p);
  }
}

TEST(MoeLayer, EmoeAvgKWithBiasSplitReproducesDenseGeluFfn) {
  // 2-matrix GELU FFN with biases; b2 stored as b2 / k in each expert (EMoE), k = E.
  torch::manual_seed(2);
  const int64_t d = 24, F = 64, E = 4;
  at::Tensor W1 = at::randn({F, d}) * 0.2, b1 = at::randn({F}) * 0.1, W2 = at::randn({d, F}) * 0.2,
             b2 = at::randn({d}) * 0.1;
  at::Tensor x = at::randn({9, d});
  at::Tensor dense = at::linear(at::gelu(at::linear(x, W1, b1)), W2, b2);
  auto parts = random_partition({16, 16, 16, 16}, 3);
  DenseExpertBank bank = expert_bank_from_partition(W1, at::Tensor(), W2, parts, Act::GELU, b1, b2, 1.0 / E);
  EXPECT_TRUE(bank->homogeneous());
  SelectionConfig sel;
  sel.k = E;
  sel.gate = GateMode::Ones;
  AvgKRouter router(*bank, sel);
  // The avg-k gate is the mean key of each expert.
  at::Tensor want = W1.index_select(0, at::tensor(parts[2], at::kLong)).mean(0);
  EXPECT_LT((router->gate()[2] - want).abs().max().item<float>(), 1e-6);
  MoELayer layer(bank, router.ptr());
  for (Path p : {Path::Autograd, Path::Grouped, Path::Fused})
    EXPECT_LT((run(layer, x, p) - dense).abs().max().item<float>(), 1e-5) << "path " << int(p);
  // Refresh after an "optimizer step" tracks the new keys.
  {
    at::NoGradGuard ng;
    bank->w_in(2).add_(1.0);
  }
  router->after_optimizer_step(*bank);
  EXPECT_LT((router->gate()[2] - (want + 1.0)).abs().max().item<float>(), 1e-5);
}

TEST(MoeLayer, MixtralAndOlmoeMatchPerTokenReference) {
  torch::manual_seed(4);
  const int64_t d = 16, f = 24, E = 6;
  at::Tensor gate = at::randn({E, f, d}) * 0.3, up = at::randn({E, f, d}) * 0.3, down = at::randn({E, d, f}) * 0.3;
  at::Tensor rw = at::randn({E, d});
  std::vector<at::Tensor> gl, ul, dl;
  for (int64_t e = 0; e < E; ++e) {
    gl.push_back(gate[e]);
    ul.push_back(up[e]);
    dl.push_back(down[e]);
  }
  at::Tensor x = at::randn({13, d});
  for (bool renorm : {true, false}) {
    const int64_t k = renorm ? 2 : 3;
    MoELayer layer = mf::moe::testing::softmax_topk_layer(rw, expert_bank_from_stacked(gate, up, down), k, renorm);
    layer->eval();
    at::Tensor ref = mf::moe::testing::ref_moe(x, rw, gl, ul, dl, k, renorm);
    for (Path p : {Path::Autograd, Path::Grouped, Path::Fused})
      EXPECT_LT((run(layer, x, p).to(at::kDouble) - ref).abs().max().item<double>(), 2e-5)
          << "renorm " << renorm << " path " << int(p);
  }
}

TEST(MoeLayer, Qwen2SharedExpertWithSigmoidGate) {
  torch::manual_seed(5);
  const int64_t d = 12, f = 8, E = 4, fs = 20;
  at::Tensor gate = at::randn({E, f, d}) * 0.3, up = at::randn({E, f, d}) * 0.3, down = at::randn({E, d, f}) * 0.3;
  at::Tensor sg = at::randn({1, fs, d}) * 0.3, su = at::randn({1, fs, d}) * 0.3, sd = at::randn({1, d, fs}) * 0.3;
  at::Tensor gw = at::randn({1, d});
  at::Tensor rw = at::randn({E, d});
  MoELayer layer = mf::moe::testing::softmax_topk_layer(rw, expert_bank_from_stacked(gate, up, down), 2, false,
                                                        expert_bank_from_stacked(sg, su, sd), gw);
  std::vector<at::Tensor> gl, ul, dl;
  for (int64_t e = 0; e < E; ++e) {
    gl.push_back(gate[e]);
    ul.push_back(up[e]);
    dl.push_back(down[e]);
  }
  at::Tensor x = at::randn({7, d});
  at::Tensor ref = mf::moe::testing::ref_moe(x, rw, gl, ul, dl, 2, false);
  for (int64_t t = 0; t < 7; ++t) {
    at::Tensor xt = x[t].to(at::kDouble);
    const double s = 1.0 / (1.0 + std::exp(-at::dot(gw[0].to(at::kDouble), xt).item<double>()));
    ref[t] += s * mf::moe::testing::ref_swiglu(xt, sg[0].to(at::kDouble), su[0].to(at::kDouble), sd[0].to(at::kDouble));
  }
  for (Path p : {Path::Autograd, Path::Grouped, Path::Fused})
    EXPECT_LT((run(layer, x, p).to(at::kDouble) - ref).abs().max().item<double>(), 2e-5) << "path " << int(p);
}

TEST(MoeLayer, Bf16PathsAgree) {
  torch::manual_seed(6);
  const int64_t d = 64;
  auto parts = random_partition({32, 64, 96, 64}, 7);
  at::Tensor G = at::randn({256, d}) * 0.1, U = at::randn({256, d}) * 0.1, D = at::randn({d, 256}) * 0.1;
  DenseExpertBank bank = expert_bank_from_partition(G, U, D, parts, Act::SiLU);
  SelectionConfig sel;
  sel.k = 2;
  MoELayer layer(bank, LinearRouter(d, 4, sel).ptr());
  at::Tensor x = at::randn({11, 2, d});
  at::Tensor ref;
  {
    at::NoGradGuard ng;
    ref = layer->forward(x.reshape({-1, d})).reshape({11, 2, d});
  }
  layer->to_dtype(at::kBFloat16);
  EXPECT_EQ(layer->router().parameters()[0].scalar_type(), at::kFloat);
  const at::Tensor xb = x.to(at::kBFloat16);
  const double scale = ref.abs().max().item<double>();
  for (Path p : {Path::Autograd, Path::Grouped, Path::Fused}) {
    at::Tensor y = run(layer, xb, p);
    EXPECT_EQ(y.sizes(), x.sizes());
    EXPECT_EQ(y.scalar_type(), at::kBFloat16);
    EXPECT_LT((y.to(at::kFloat) - ref).abs().max().item<double>(), 0.03 * scale) << "path " << int(p);
  }
}

TEST(MoeLayer, DroppedTokensContributeZero) {
  torch::manual_seed(8);
  const int64_t d = 8, E = 2;
  at::Tensor gate = at::randn({E, 4, d}), up = at::randn({E, 4, d}), down = at::randn({E, d, 4});
  // Router that sends every token to expert 0 (Switch top-1, gate = max prob).
  at::Tensor rw = at::zeros({E, d});
  SelectionConfig sel;
  sel.k = 1;
  sel.gate = GateMode::Prob;
  MoELayerOptions opt;
  opt.capacity.mode = CapacityMode::Factor;
  opt.capacity.factor = 0.75;  // T = 8 -> C = 3
  MoELayer layer(expert_bank_from_stacked(gate, up, down), LinearRouter(rw, sel).ptr(), opt);
  at::Tensor x = at::randn({8, d});
  for (Path p : {Path::Autograd, Path::Grouped, Path::Fused}) {
    at::Tensor y = run(layer, x, p);
    for (int64_t t = 0; t < 8; ++t) {
      const double n = y[t].abs().max().item<double>();
      if (t < 3) {
        EXPECT_GT(n, 0.0);
      } else {
        EXPECT_EQ(n, 0.0) << "token " << t << " path " << int(p);
      }
    }
  }
  MoEOutput o = layer->forward_full(x);
  MoETelemetry tel = layer->telemetry(o);
  EXPECT_DOUBLE_EQ(tel.dropped_fraction, 5.0 / 8.0);
  EXPECT_EQ(tel.tokens_per_expert[0], 3);
  EXPECT_NEAR(tel.routing_entropy, std::log(2.0), 1e-6);  // zero logits: uniform probabilities
}

TEST(MoeLayer, TelemetryActiveParametersAndMask) {
  torch::manual_seed(9);
  const int64_t d = 8;
  auto parts = random_partition({4, 12}, 10);
  at::Tensor G = at::randn({16, d}), U = at::randn({16, d}), D = at::randn({d, 16});
  DenseExpertBank bank = expert_bank_from_partition(G, U, D, parts, Act::SiLU);
  MoELayer layer(bank, LinearRouter(d, 2, unit_topk(2)).ptr());
  at::Tensor x = at::randn({5, d});
  MoEOutput o = layer->forward_full(x);
  at::Tensor mask = at::tensor({1, 1, 1, 0, 0}).to(at::kBool);
  MoETelemetry t = layer->telemetry(o, mask);
  EXPECT_EQ(t.tokens, 3);
  EXPECT_EQ(t.tokens_per_expert, (std::vector<int64_t>{3, 3}));
  // k = E: every token activates all 3*16*8 expert parameters plus the 16 router weights.
  EXPECT_DOUBLE_EQ(t.active_params_per_token, 3.0 * 16 * 8 + 16);
  EXPECT_NEAR(t.load_entropy, std::log(2.0), 1e-12);
}

TEST(MoeLayer, MlpRouterStartsFromCentres) {
  torch::manual_seed(12);
  const int64_t d = 10, E = 4;
  at::Tensor gate = at::randn({E, 6, d}), up = at::randn({E, 6, d}), down = at::randn({E, d, 6});
  DenseExpertBank bank = expert_bank_from_stacked(gate, up, down);
  at::Tensor centres = mlp_router_centres(*bank);
  EXPECT_LT((centres.norm(2, 1) - 1).abs().max().item<float>(), 1e-5);
  SelectionConfig sel;
  sel.k = 2;
  sel.gate = GateMode::Ones;
  auto r = std::make_shared<MlpRouterImpl>(centres, sel);
  at::Tensor x = at::randn({6, d});
  RouterOutput o = r->route(x, false);
  // Identity second layer: the scores are tanh(centres x / |x|) (MoEfication normalises the input).
  const at::Tensor xn = x / x.norm(2, 1, true);
  EXPECT_LT((o.logits - at::tanh(at::mm(xn, centres.t()))).abs().max().item<float>(), 1e-6);
  at::Tensor want = std::get<1>(at::tanh(at::mm(xn, centres.t())).topk(2, 1));
  EXPECT_TRUE(at::equal(std::get<0>(o.idx.sort(1)), std::get<0>(want.sort(1))));
}

TEST(MoeLayer, RejectsMismatchedRouter) {
  at::Tensor gate = at::randn({4, 6, 8}), up = at::randn({4, 6, 8}), down = at::randn({4, 8, 6});
  SelectionConfig sel;
  EXPECT_THROW(MoELayer(expert_bank_from_stacked(gate, up, down), LinearRouter(8, 3, sel).ptr()), mf::Error);
  EXPECT_THROW(expert_bank_from_stacked(gate, up, at::randn({4, 8, 5})), mf::Error);
}

TEST(MoeLayer, FusedActivationKernelMatchesLibtorch) {
  torch::manual_seed(14);
  const int64_t f = 37;  // not a multiple of 16: exercises the masked tail
  at::Tensor h = at::randn({5, 2 * f}) * 6;
  at::Tensor b = at::randn({2 * f});
  for (Act act : {Act::SiLU, Act::GELU, Act::GELUTanh, Act::ReLU}) {
    at::Tensor hd = h.to(at::kDouble), bd = b.to(at::kDouble);  // exact reference in fp64
    at::Tensor g = hd.narrow(1, 0, f) + bd.narrow(0, 0, f), u = hd.narrow(1, f, f) + bd.narrow(0, f, f);
    at::Tensor a = act == Act::SiLU ? at::silu(g) : act == Act::GELU ? at::gelu(g) : act == Act::GELUTanh ? at::gelu(g, "tanh") : at::relu(g);
    at::Tensor want = a * u;
    at::Tensor got = expert_activation(h, b, f, true, act).to(at::kDouble);
    EXPECT_LT(((got - want).abs() / (want.abs() + 1)).max().item<double>(), 2e-6) << to_string(act);
    at::Tensor got_bf16 = expert_activation(h.to(at::kBFloat16), b, f, true, act).to(at::kDouble);
    EXPECT_LT(((got_bf16 - want).abs() / (want.abs() + 1)).max().item<double>(), 0.05) << to_string(act);
    EXPECT_LT((expert_activation(h.narrow(1, 0, f), {}, f, false, act) - (act == Act::SiLU ? at::silu(h.narrow(1, 0, f)) : act == Act::GELU ? at::gelu(h.narrow(1, 0, f)) : act == Act::GELUTanh ? at::gelu(h.narrow(1, 0, f), "tanh") : at::relu(h.narrow(1, 0, f)))).abs().max().item<float>(), 1e-5);
  }
}

TEST(MoeLayer, InferenceModeAndNoGradCallsMix) {
  // The grouped path reuses per-thread buffers; they must survive switching between
  // InferenceMode and NoGradGuard (inference tensors cannot be written outside InferenceMode).
  torch::manual_seed(15);
  const int64_t d = 16, E = 4;
  MoELayer layer = mf::moe::testing::softmax_topk_layer(
      at::randn({E, d}), expert_bank_from_stacked(at::randn({E, 8, d}), at::randn({E, 8, d}), at::randn({E, d, 8})), 2,
      true);
  layer->options().small_batch_tokens = 0;
  at::Tensor x = at::randn({40, d});
  at::Tensor a, b, c;
  {
    c10::InferenceMode im;
    a = layer->forward(x).clone();
  }
  {
    at::NoGradGuard ng;
    b = layer->forward(x);
  }
  {
    c10::InferenceMode im;
    c = layer->forward(x).clone();
  }
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_TRUE(at::equal(a, c));
}

TEST(MoeLayer, InferencePathsIgnoreCpuAutocast) {
  // A bf16 trainer validates under CPU autocast with fp32 weights: the grouped and fused paths
  // keep their own dtypes, so the result is the plain fp32 one, bit for bit.
  torch::manual_seed(16);
  const int64_t d = 16, E = 4;
  MoELayer layer = mf::moe::testing::softmax_topk_layer(
      at::randn({E, d}), expert_bank_from_stacked(at::randn({E, 8, d}), at::randn({E, 8, d}), at::randn({E, d, 8})), 2,
      true);
  at::NoGradGuard ng;
  for (int64_t tokens : {4, 40}) {
    at::Tensor x = at::randn({tokens, d});
    at::Tensor plain = layer->forward(x).clone(), mixed;
    {
      mf::CpuAutocast autocast(true, at::kBFloat16);
      mixed = layer->forward(x);
    }
    EXPECT_TRUE(at::equal(plain, mixed)) << tokens;
  }
}

TEST(MoeLayer, ExpertParallelGroupedPathMatchesSerial) {
  // With >= 2 threads and >= 2 experts per thread the grouped path runs whole experts per
  // thread; the result must not depend on the thread count.
  torch::manual_seed(16);
  const int64_t d = 32;
  auto parts = random_partition({8, 24, 16, 40, 8, 32, 16, 16}, 17);
  at::Tensor G = at::randn({160, d}) * 0.2, U = at::randn({160, d}) * 0.2, D = at::randn({d, 160}) * 0.2;
  SelectionConfig sel;
  sel.k = 3;
  MoELayer layer(expert_bank_from_partition(G, U, D, parts, Act::SiLU), LinearRouter(d, 8, sel).ptr());
  layer->eval();
  layer->options().small_batch_tokens = 0;
  at::Tensor x = at::randn({50, d});
  at::NoGradGuard ng;
  const int saved = at::get_num_threads();
  at::set_num_threads(1);
  at::Tensor serial = layer->forward(x);
  at::set_num_threads(2);
  at::Tensor parallel = layer->forward(x);
  at::set_num_threads(saved);
  EXPECT_TRUE(at::allclose(serial, parallel, 1e-6, 1e-6));
  at::Tensor ref;
  {
    at::AutoGradMode on(true);
    ref = layer->forward(x);
  }
  EXPECT_LT((parallel - ref).abs().max().item<float>(), 1e-5);
}

TEST(MoeLayer, PaddedTrainingBlocksEqualUnpaddedForwardAndGradients) {
  // Bucket sizes by hand: multiples of max(8, 2^floor(log2 n) / 8).
  EXPECT_EQ(padded_block_rows(0), 0);
  EXPECT_EQ(padded_block_rows(1), 8);
  EXPECT_EQ(padded_block_rows(9), 16);
  EXPECT_EQ(padded_block_rows(100), 104);   // octave 64 -> multiple 8
  EXPECT_EQ(padded_block_rows(256), 256);
  EXPECT_EQ(padded_block_rows(257), 288);   // octave 256 -> multiple 32
  EXPECT_EQ(padded_block_rows(1000), 1024); // octave 512 -> multiple 64
  // The training path pads expert blocks; a per-expert observer forces the unpadded path.
  // Same output, same gradients for input, router, experts and shared-expert gate.
  torch::manual_seed(21);
  const int64_t d = 16, E = 6, T = 37;
  at::Tensor gate = at::randn({E, 8, d}) * 0.3, up = at::randn({E, 8, d}) * 0.3, down = at::randn({E, d, 8}) * 0.3;
  SelectionConfig sel;
  sel.k = 2;
  MoELayer layer(expert_bank_from_stacked(gate, up, down), LinearRouter(d, E, sel).ptr());
  layer->set_shared_expert(expert_bank_from_stacked(at::randn({1, 8, d}) * 0.3, at::randn({1, 8, d}) * 0.3,
                                                    at::randn({1, d, 8}) * 0.3),
                           at::randn({1, d}) * 0.3);
  layer->train();
  const at::Tensor x0 = at::randn({T, d}), dy = at::randn({T, d});
  MoECallbacks observe;
  observe.expert_output = [](int64_t, const at::Tensor& y, const at::Tensor&) { return y; };
  std::vector<at::Tensor> outs, grads;
  for (const MoECallbacks* cb : std::vector<const MoECallbacks*>{nullptr, &observe}) {
    layer->zero_grad();
    at::Tensor x = x0.clone().set_requires_grad(true);
    at::Tensor y = layer->forward_full(x, cb).y;
    (y * dy).sum().backward();
    outs.push_back(y.detach());
    grads.push_back(x.grad());
    for (const auto& p : layer->parameters()) grads.push_back(p.grad().defined() ? p.grad().clone() : at::zeros({1}));
  }
  EXPECT_TRUE(at::allclose(outs[0], outs[1], 1e-6, 1e-6)) << (outs[0] - outs[1]).abs().max().item<float>();
  const size_t n = grads.size() / 2;
  for (size_t i = 0; i < n; ++i)
    EXPECT_TRUE(at::allclose(grads[i], grads[n + i], 1e-5, 1e-6)) << "gradient " << i;
}
