// LR schedule, AdamW and gradient clipping against hand-derived values and libtorch's own
// torch::optim::AdamW / clip_grad_norm_ as outside references.
#include <gtest/gtest.h>

#include <cmath>

#include "train/optim.h"
#include "util/error.h"

using namespace mf;

TEST(TrainOptim, WarmupCosineHandValues) {
  LrSchedule s;
  s.lr = 1e-3;
  s.min_lr = 1e-4;
  s.warmup_steps = 10;
  s.max_steps = 110;
  EXPECT_DOUBLE_EQ(s.at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.at(5), 5e-4);  // halfway through warmup
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);  // peak: cos(0) = 1
  // progress 0.25: 1e-4 + 9e-4 * 0.5 * (1 + cos(pi/4)) = 1e-4 + 9e-4 * 0.853553390593
  EXPECT_NEAR(s.at(35), 8.68198051533946e-4, 1e-15);
  EXPECT_NEAR(s.at(60), 5.5e-4, 1e-15);  // progress 0.5: cos(pi/2) = 0
  EXPECT_NEAR(s.at(110), 1e-4, 1e-15);   // end: min_lr
  EXPECT_NEAR(s.at(500), 1e-4, 1e-15);   // past the end: stays at min_lr
}

TEST(TrainOptim, NoWarmupStartsAtPeak) {
  LrSchedule s;
  s.lr = 2.0;
  s.min_lr = 0.0;
  s.warmup_steps = 0;
  s.max_steps = 4;
  EXPECT_DOUBLE_EQ(s.at(0), 2.0);
  EXPECT_NEAR(s.at(2), 1.0, 1e-15);
  EXPECT_NEAR(s.at(4), 0.0, 1e-15);
}

TEST(TrainOptim, AdamWFirstStepByHand) {
  // One step on p = [1, -2], g = [0.5, -1]: after bias correction m_hat = g, v_hat = g^2, so
  // p' = p (1 - lr wd) - lr * g / (|g| + eps).
  at::Tensor p = at::tensor({1.0f, -2.0f}).set_requires_grad(true);
  p.mutable_grad() = at::tensor({0.5f, -1.0f});
  AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.999;
  o.eps = 1e-8;
  o.weight_decay = 0.01;
  AdamW opt({{"p", p, true}}, o);
  opt.step(0.1);
  EXPECT_NEAR(p[0].item<float>(), 1.0 * 0.999 - 0.1 * 0.5 / (0.5 + 1e-8), 1e-6);
  EXPECT_NEAR(p[1].item<float>(), -2.0 * 0.999 + 0.1 * 1.0 / (1.0 + 1e-8), 1e-6);
  EXPECT_EQ(opt.steps_taken(), 1);
}

TEST(TrainOptim, AdamWSecondStepByHandWithoutDecay) {
  // Two steps, scalar, no weight decay (decay = false): g1 = 1, g2 = -0.5, b1 = 0.9, b2 = 0.99.
  // m2 = 0.9*0.1 + 0.1*(-0.5) = 0.04;  v2 = 0.99*0.01 + 0.01*0.25 = 0.0124
  // step 2: lr/(1-0.81) * m2 / (sqrt(v2)/sqrt(1-0.9801) + eps)
  at::Tensor p = at::tensor({3.0f}).set_requires_grad(true);
  AdamWOptions o;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.eps = 1e-8;
  o.weight_decay = 0.5;  // must not apply: decay = false
  AdamW opt({{"bias", p, false}}, o);
  p.mutable_grad() = at::tensor({1.0f});
  opt.step(0.01);
  double expect = 3.0 - 0.01 * 1.0 / (1.0 + 1e-8);
  EXPECT_NEAR(p.item<float>(), expect, 1e-6);
  p.mutable_grad() = at::tensor({-0.5f});
  opt.step(0.01);
  expect -= 0.01 / 0.19 * 0.04 / (std::sqrt(0.0124) / std::sqrt(0.0199) + 1e-8);
  EXPECT_NEAR(p.item<float>(), expect, 1e-6);
}

TEST(TrainOptim, AdamWMatchesLibtorch) {
  torch::manual_seed(3);
  at::Tensor a = torch::randn({5, 7}).set_requires_grad(true);
  at::Tensor b = a.detach().clone().set_requires_grad(true);
  AdamWOptions o;
  o.beta1 = 0.8;
  o.beta2 = 0.95;
  o.eps = 1e-6;
  o.weight_decay = 0.1;
  AdamW mine({{"w", a, true}}, o);
  torch::optim::AdamW ref(std::vector<at::Tensor>{b}, torch::optim::AdamWOptions(0.05).betas({0.8, 0.95}).eps(1e-6).weight_decay(0.1));
  for (int i = 0; i < 4; ++i) {
    at::Tensor g = torch::randn({5, 7});
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g.clone();
    mine.step(0.05);
    ref.step();
  }
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-6)) << (a - b).abs().max().item<float>();
}

TEST(TrainOptim, AdamWStateRoundTrip) {
  at::Tensor p = at::ones({3}).set_requires_grad(true);
  AdamW opt({{"w", p, true}}, AdamWOptions{});
  p.mutable_grad() = at::full({3}, 0.3f);
  opt.step(0.1);
  at::Tensor q = p.detach().clone().set_requires_grad(true);
  AdamW restored({{"w", q, true}}, AdamWOptions{});
  restored.load_state(opt.state_tensors(), opt.steps_taken(), "test");
  p.mutable_grad() = at::full({3}, -0.2f);
  q.mutable_grad() = at::full({3}, -0.2f);
  opt.step(0.1);
  restored.step(0.1);
  EXPECT_TRUE(torch::equal(p, q));
  EXPECT_THROW(restored.load_state({}, 1, "state.safetensors"), mf::Error);
}

TEST(TrainOptim, SelectParamsDedupesTiedAndSkipsDecay) {
  at::Tensor emb = at::zeros({4, 2}).set_requires_grad(true);
  at::Tensor norm = at::ones({2}).set_requires_grad(true);
  at::Tensor frozen = at::ones({2, 2});
  auto sel = select_params({{"embed_tokens.weight", emb}, {"norm.weight", norm}, {"lm_head.weight", emb},
                            {"frozen", frozen}},
                           true, {"embed_tokens"});
  ASSERT_EQ(sel.size(), 2u);
  EXPECT_EQ(sel[0].name, "embed_tokens.weight");
  EXPECT_FALSE(sel[0].decay);
  EXPECT_FALSE(sel[1].decay);
  auto all = select_params({{"w", emb}}, true, {});
  EXPECT_TRUE(all[0].decay);
}

TEST(TrainOptim, ClipByGlobalNorm) {
  at::Tensor a = at::zeros({2}).set_requires_grad(true);
  at::Tensor b = at::zeros({1}).set_requires_grad(true);
  std::vector<NamedParam> ps = {{"a", a, true}, {"b", b, true}};
  // Global norm of [3, 4] and [12] is sqrt(9 + 16 + 144) = 13.
  a.mutable_grad() = at::tensor({3.0f, 4.0f});
  b.mutable_grad() = at::tensor({12.0f});
  EXPECT_NEAR(clip_grad_norm(ps, 20.0), 13.0, 1e-6);
  EXPECT_FLOAT_EQ(a.grad()[1].item<float>(), 4.0f);  // below the limit: untouched
  EXPECT_NEAR(clip_grad_norm(ps, 6.5), 13.0, 1e-6);
  EXPECT_NEAR(a.grad()[0].item<float>(), 1.5, 1e-6);
  EXPECT_NEAR(a.grad()[1].item<float>(), 2.0, 1e-6);
  EXPECT_NEAR(b.grad()[0].item<float>(), 6.0, 1e-6);
  EXPECT_NEAR(clip_grad_norm(ps, 0.0), 6.5, 1e-5);  // off: norm only
}

TEST(TrainOptim, ClipMatchesLibtorch) {
  torch::manual_seed(5);
  at::Tensor a = torch::zeros({3, 4}).set_requires_grad(true);
  at::Tensor b = torch::zeros({3, 4}).set_requires_grad(true);
  at::Tensor g = torch::randn({3, 4}) * 10;
  a.mutable_grad() = g.clone();
  b.mutable_grad() = g.clone();
  double mine = clip_grad_norm({{"a", a, true}}, 1.0);
  double ref = torch::nn::utils::clip_grad_norm_(std::vector<at::Tensor>{b}, 1.0);
  EXPECT_NEAR(mine, ref, 1e-4);
  EXPECT_TRUE(torch::allclose(a.grad(), b.grad(), 1e-5, 1e-7));
}
