// Auxiliary losses: values at perfect balance (moe_routing_training.md §6.6 items 2, 3),
// hand-computed cases, padding masks, and finite-difference gradients (item 10).
#include <gtest/gtest.h>

#include <cmath>

#include "moe/losses.h"
#include "moe_test_util.h"

using namespace mf::moe;
using mf::moe::testing::fd_check;

namespace {
// T = m * E tokens; token t's logits are a cyclic shift of v by t: over the batch every
// expert sees every value equally often, so P is uniform and every top-k slot is balanced.
at::Tensor cyclic_logits(int64_t E, int64_t m, uint64_t seed) {
  torch::manual_seed(seed);
  at::Tensor v = at::randn({E}, at::kDouble);
  std::vector<at::Tensor> rows;
  for (int64_t t = 0; t < m * E; ++t) rows.push_back(at::roll(v, {t % E}, {0}));
  return at::stack(rows);
}
}  // namespace

TEST(MoeLosses, ValuesAtPerfectBalance) {
  const int64_t E = 8;
  at::Tensor logits = cyclic_logits(E, 3, 5);
  at::Tensor probs = at::softmax(logits, -1);
  at::Tensor top1 = std::get<1>(probs.max(1));
  EXPECT_NEAR(switch_balance_loss(probs, top1).item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(gshard_balance_loss(probs).item<double>(), 1.0, 1e-12);
  for (int64_t k : {1, 2, 4})
    EXPECT_NEAR(mixtral_balance_loss({logits, cyclic_logits(E, 2, 7)}, k).item<double>(), double(k), 1e-12);
  EXPECT_NEAR(mixtral_balance_loss({logits, cyclic_logits(E, 2, 7)}, 2, {}, false).item<double>(), 2.0, 1e-12);
}

TEST(MoeLosses, ZLossOfZeroLogits) {
  for (int64_t E : {2, 8, 64}) {
    at::Tensor z = z_loss(at::zeros({5, E}, at::kDouble));
    EXPECT_NEAR(z.item<double>(), std::log(double(E)) * std::log(double(E)), 1e-12);
  }
}

TEST(MoeLosses, PooledVersusPerLayer) {
  // Layer 1 sends everything to expert 0, layer 2 to expert 1: pooled statistics cancel.
  at::Tensor l1 = at::tensor({10.0, 0.0}, at::kDouble).repeat({4, 1});
  at::Tensor l2 = at::tensor({0.0, 10.0}, at::kDouble).repeat({4, 1});
  EXPECT_NEAR(mixtral_balance_loss({l1, l2}, 1).item<double>(), 1.0, 1e-12);
  const double p = 1.0 / (1.0 + std::exp(-10.0));
  EXPECT_NEAR(mixtral_balance_loss({l1, l2}, 1, {}, false).item<double>(), 2.0 * p, 1e-12);
}

TEST(MoeLosses, PaddingMaskIgnoresPaddedTokens) {
  const int64_t E = 4;
  at::Tensor logits = cyclic_logits(E, 2, 9);
  at::Tensor padded = at::cat({logits, at::tensor({50.0, 0.0, 0.0, 0.0}, at::kDouble).repeat({3, 1})});
  at::Tensor mask = at::cat({at::ones({logits.size(0)}, at::kBool), at::zeros({3}, at::kBool)});
  at::Tensor probs = at::softmax(padded, -1);
  at::Tensor top1 = std::get<1>(probs.max(1));
  EXPECT_NEAR(switch_balance_loss(probs, top1, mask).item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(gshard_balance_loss(probs, mask).item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(mixtral_balance_loss({padded, padded}, 2, mask).item<double>(), 2.0, 1e-12);
  EXPECT_NEAR(z_loss(padded, mask).item<double>(), z_loss(logits).item<double>(), 1e-12);
  EXPECT_GT(gshard_balance_loss(probs).item<double>(), 1.0);  // without the mask, imbalance shows
}

TEST(MoeLosses, SwitchDroppedTokensAndGroups) {
  // 4 tokens, E = 2, uniform probs; tokens 2 and 3 dropped.
  at::Tensor probs = at::full({4, 2}, 0.5, at::kDouble);
  at::Tensor ex = at::tensor({1, 1, -1, -1}, at::kLong);
  // f = (0, 0.5): 2 * (0 * .5 + .5 * .5) = 0.5; HF quirk counts the dropped as expert 0: f = (.5, .5) -> 1.
  EXPECT_NEAR(switch_balance_loss(probs, ex).item<double>(), 0.5, 1e-12);
  EXPECT_NEAR(switch_balance_loss(probs, ex, {}, 0, true).item<double>(), 1.0, 1e-12);
  // Groups of 2: group 1 has f = (0, 1) -> 1; group 2 has f = 0 -> 0; mean 0.5.
  EXPECT_NEAR(switch_balance_loss(probs, ex, {}, 2).item<double>(), 0.5, 1e-12);
}

TEST(MoeLosses, HemoeSizeWeightedBalanceByHand) {
  at::Tensor w = at::tensor({1.0, 0.0, 1.0, 1.0}, at::kDouble).reshape({2, 2});
  at::Tensor p = at::tensor({0.6, 0.4, 0.3, 0.7}, at::kDouble).reshape({2, 2});
  // f = (1, .5), P = (.45, .55), r = (.25, .75): sum = .1125 + .20625 = .31875; x T=2 x lambda.
  EXPECT_NEAR(hemoe_balance_loss(w, p, {1, 3}, {}, 5e-4).item<double>(), 5e-4 * 2 * 0.31875, 1e-15);
  EXPECT_NEAR(hemoe_balance_loss(w, p, {1, 3}, {}, 1.0, false).item<double>(), 2 * 0.31875, 1e-12);
}

TEST(MoeLosses, CvSquaredAndShazeer) {
  EXPECT_NEAR(cv_squared(at::tensor({1.0, 2.0, 3.0}, at::kDouble)).item<double>(), (2.0 / 3.0) / 4.0, 1e-9);
  EXPECT_NEAR(cv_squared(at::full({4}, 3.0, at::kDouble)).item<double>(), 0.0, 1e-12);
  // Load probabilities are in [0, 1] and sum to about k per token when the noise is small.
  torch::manual_seed(4);
  at::Tensor clean = at::randn({64, 8}, at::kDouble) * 3;
  at::Tensor noisy = clean + at::randn({64, 8}, at::kDouble) * 0.01;
  at::Tensor load = shazeer_load(clean, noisy, 0.01, 2);
  EXPECT_NEAR(load.sum().item<double>(), 128.0, 2.0);
}

TEST(MoeLosses, FiniteDifferenceGradients) {
  torch::manual_seed(11);
  const int64_t T = 6, E = 4;
  at::Tensor logits = at::randn({T, E}, at::kDouble).requires_grad_(true);
  at::Tensor mask = at::tensor({1, 1, 0, 1, 1, 1}).to(at::kBool);
  at::Tensor clean0 = logits.detach().clone();
  at::Tensor noise = at::randn({T, E}, at::kDouble) * 0.5;
  at::Tensor w = at::rand({T, E}, at::kDouble).requires_grad_(true);
  std::vector<std::function<at::Tensor()>> fns = {
      [&] { return z_loss(logits, mask); },
      [&] { return gshard_balance_loss(at::softmax(logits, -1), mask); },
      [&] { return mixtral_balance_loss({logits, logits * 0.5}, 2, mask); },
      [&] { return mixtral_balance_loss({logits, logits * 0.5}, 2, mask, false); },
      [&] { return switch_balance_loss(at::softmax(logits, -1), at::tensor({0, 1, 2, 3, 0, 1}, at::kLong), mask, 3); },
      [&] { return hemoe_balance_loss(w, at::softmax(logits, -1), {1, 2, 3, 2}, mask, 1.0); },
      [&] { return shazeer_cv2_loss(at::softmax(logits, -1), shazeer_load(logits, clean0 + noise, 0.5, 2, mask), mask); },
  };
  for (size_t i = 0; i < fns.size(); ++i) {
    if (logits.grad().defined()) logits.grad().zero_();
    if (w.grad().defined()) w.grad().zero_();
    fns[i]().backward();
    EXPECT_LT(fd_check(fns[i], logits.detach(), logits.grad()), 1e-7) << "loss " << i;
    if (i == 5) EXPECT_LT(fd_check(fns[i], w.detach(), w.grad()), 1e-7);
  }
}
