// Routing: selection identities, deterministic ties, capacity (moe_routing_training.md §6.6
// items 1, 4, 5) and the structure of the routing plan.
#include <gtest/gtest.h>

#include <cmath>

#include "moe/config.h"
#include "moe/routers/linear_router.h"
#include "moe/routers/selection.h"
#include "moe/routing_plan.h"

using namespace mf::moe;

TEST(MoeRouting, SoftmaxTopkRenormEqualsTopkThenSoftmax) {
  torch::manual_seed(1);
  at::Tensor logits = at::randn({32, 8}, at::kFloat);
  SelectionConfig sel;
  sel.k = 3;
  at::Tensor probs = at::softmax(logits, -1);
  at::Tensor idx = select_experts(probs, sel);
  at::Tensor renorm = gate_values(probs, idx, GateMode::Renorm);
  // Top-k on the raw logits, then softmax over the k selected logits only.
  at::Tensor idx2 = select_experts(logits, sel);
  EXPECT_TRUE(at::equal(idx, idx2));
  at::Tensor direct = at::softmax(logits.gather(1, idx2), -1);
  EXPECT_LT((renorm - direct).abs().max().item<float>(), 1e-6);
  // Qwen2 with norm_topk_prob = false: weights are plain probabilities, summing to < 1.
  at::Tensor prob = gate_values(probs, idx, GateMode::Prob);
  EXPECT_TRUE((prob.sum(1) < 1.0).all().item<bool>());
  EXPECT_LT((renorm.sum(1) - 1).abs().max().item<float>(), 1e-6);
}

TEST(MoeRouting, TiesGoToLowestIndex) {
  at::Tensor s = at::zeros({2, 6});
  s[1][4] = 1.0;
  SelectionConfig sel;
  sel.k = 3;
  at::Tensor idx = select_experts(s, sel);
  EXPECT_EQ(idx[0][0].item<int64_t>(), 0);
  EXPECT_EQ(idx[0][1].item<int64_t>(), 1);
  EXPECT_EQ(idx[0][2].item<int64_t>(), 2);
  EXPECT_EQ(idx[1][0].item<int64_t>(), 4);
  EXPECT_EQ(idx[1][1].item<int64_t>(), 0);
  EXPECT_EQ(idx[1][2].item<int64_t>(), 1);
}

TEST(MoeRouting, TopPAndDynK) {
  at::Tensor p = at::tensor({0.05f, 0.5f, 0.3f, 0.15f}).reshape({1, 4});
  SelectionConfig sel;
  sel.selection = Selection::TopP;
  sel.top_p = 0.8;  // 0.5 + 0.3 reaches 0.8 exactly: two experts
  at::Tensor idx = select_experts(p, sel);
  ASSERT_EQ(idx.size(1), 4);
  EXPECT_EQ(idx[0][0].item<int64_t>(), 1);
  EXPECT_EQ(idx[0][1].item<int64_t>(), 2);
  EXPECT_EQ(idx[0][2].item<int64_t>(), -1);
  sel.top_p = 0.81;  // the element that crosses the threshold is kept
  idx = select_experts(p, sel);
  EXPECT_EQ(idx[0][2].item<int64_t>(), 3);
  EXPECT_EQ(idx[0][3].item<int64_t>(), -1);
  sel.selection = Selection::DynKMax;
  sel.dynk_tau = 0.3;  // keep p >= 0.15
  idx = select_experts(p, sel);
  EXPECT_EQ(idx[0][0].item<int64_t>(), 1);
  EXPECT_EQ(idx[0][1].item<int64_t>(), 2);
  EXPECT_EQ(idx[0][2].item<int64_t>(), 3);
  EXPECT_EQ(idx[0][3].item<int64_t>(), -1);
  // Unit straight-through weights: forward exactly 1 in kept slots, 0 in empty ones.
  at::Tensor g = gate_values(p, idx, GateMode::UnitST);
  EXPECT_FLOAT_EQ(g[0][0].item<float>(), 1.f);
  EXPECT_FLOAT_EQ(g[0][3].item<float>(), 0.f);
}

TEST(MoeRouting, UnitStraightThroughGradientIsProbabilityGradient) {
  at::Tensor p = at::tensor({0.1, 0.6, 0.3}, at::kDouble).reshape({1, 3}).requires_grad_(true);
  at::Tensor idx = at::tensor({1, 2}, at::kLong).reshape({1, 2});
  at::Tensor g = gate_values(p, idx, GateMode::UnitST);
  (g * at::tensor({2.0, 5.0}, at::kDouble).reshape({1, 2})).sum().backward();
  EXPECT_DOUBLE_EQ(p.grad()[0][0].item<double>(), 0.0);
  EXPECT_DOUBLE_EQ(p.grad()[0][1].item<double>(), 2.0);
  EXPECT_DOUBLE_EQ(p.grad()[0][2].item<double>(), 5.0);
}

TEST(MoeRouting, SwitchCapacityKeepsFirstThreeTokens) {
  // T=8, E=2, all tokens to expert 0, cf such that C = 3 (k * int(cf * ceil(8/2)) = int(0.75*4)).
  at::Tensor idx = at::zeros({8, 1}, at::kLong);
  CapacityConfig cap;
  cap.mode = CapacityMode::Factor;
  cap.factor = 0.75;
  RoutingPlan p = build_routing_plan(idx, 2, cap);
  EXPECT_EQ(p.capacity, 3);
  EXPECT_EQ(p.dropped, 5);
  EXPECT_EQ(p.counts[0], 3);
  for (int64_t t = 0; t < 8; ++t) EXPECT_EQ(p.loc[t][0].item<int64_t>(), t < 3 ? t : -1);
  // Batch-prioritized routing keeps the three highest-probability tokens instead.
  at::Tensor prio = at::tensor({0.1f, 0.9f, 0.2f, 0.8f, 0.3f, 0.7f, 0.4f, 0.6f});
  cap.priority = Priority::BatchPrioritized;
  p = build_routing_plan(idx, 2, cap, prio);
  std::vector<int64_t> kept;
  for (int64_t t = 0; t < 8; ++t)
    if (p.loc[t][0].item<int64_t>() >= 0) kept.push_back(t);
  EXPECT_EQ(kept, (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(p.loc[1][0].item<int64_t>(), 0);
  EXPECT_EQ(p.loc[3][0].item<int64_t>(), 1);
}

TEST(MoeRouting, TutelCapacityFormula) {
  // T=10, E=4, k=2, cf=1.25 -> spe=3, C = 2*int(3.75) = 6; cf=0 (dropless) -> max location + 1.
  CapacityConfig cap;
  cap.mode = CapacityMode::Factor;
  cap.factor = 1.25;
  EXPECT_EQ(capacity_for(cap, 10, 4, 2, 99), 6);
  at::Tensor idx = at::tensor({0, 1, 0, 1, 0, 2, 0, 3, 0, 1, 0, 2, 0, 3, 0, 1, 2, 3, 0, 2}, at::kLong).reshape({10, 2});
  RoutingPlan p = build_routing_plan(idx, 4, cap);
  EXPECT_EQ(p.capacity, 6);
  EXPECT_EQ(p.counts[0], 6);  // expert 0 got 9 slot-0 choices: 3 dropped
  EXPECT_EQ(p.dropped, 3);
  cap.mode = CapacityMode::None;
  p = build_routing_plan(idx, 4, cap);
  EXPECT_EQ(p.dropped, 0);
  EXPECT_EQ(p.loc.max().item<int64_t>() + 1, 9);
  EXPECT_EQ(p.counts[0], 9);
  EXPECT_EQ(capacity_for(cap, 10, 4, 2, 8), 8);
  cap.mode = CapacityMode::Bounded;
  EXPECT_EQ(capacity_for(cap, 10, 4, 2, 5), 5);
  EXPECT_EQ(capacity_for(cap, 10, 4, 2, 8), 6);
}

TEST(MoeRouting, SlotMajorPriorityAndPlanConsistency) {
  // Slot-1 choices get locations only after every slot-0 choice of the same expert.
  at::Tensor idx = at::tensor({1, 0, 0, 1, 1, 0}, at::kLong).reshape({3, 2});
  RoutingPlan p = build_routing_plan(idx, 2, {});
  EXPECT_EQ(p.loc[0][0].item<int64_t>(), 0);  // token 0 slot 0 -> expert 1
  EXPECT_EQ(p.loc[2][0].item<int64_t>(), 1);  // token 2 slot 0 -> expert 1
  EXPECT_EQ(p.loc[1][1].item<int64_t>(), 2);  // token 1 slot 1 -> expert 1 after slot-0 ones
  EXPECT_EQ(p.loc[1][0].item<int64_t>(), 0);
  // Every kept slot maps to a row whose token and slot point back to it.
  for (int64_t s = 0; s < 6; ++s) {
    const int64_t row = p.slot_row[s].item<int64_t>();
    ASSERT_GE(row, 0);
    EXPECT_EQ(p.row_slot[row].item<int64_t>(), s);
    EXPECT_EQ(p.row_token[row].item<int64_t>(), s / 2);
    const int64_t e = idx.view({-1})[s].item<int64_t>();
    EXPECT_GE(row, p.offsets[e]);
    EXPECT_LT(row, p.offsets[e + 1]);
  }
}

TEST(MoeRouting, GroupCapacityRestartsPerSequence) {
  // Two sequences of 4 tokens, absolute capacity 2 per group: 2 kept in each.
  at::Tensor idx = at::zeros({8, 1}, at::kLong);
  CapacityConfig cap;
  cap.mode = CapacityMode::Absolute;
  cap.absolute = 2;
  cap.group_size = 4;
  RoutingPlan p = build_routing_plan(idx, 2, cap);
  EXPECT_EQ(p.dropped, 4);
  for (int64_t t = 0; t < 8; ++t) EXPECT_EQ(p.loc[t][0].item<int64_t>() >= 0, (t % 4) < 2);
}

TEST(MoeRouting, NoiseOnlyInTraining) {
  torch::manual_seed(3);
  SelectionConfig sel;
  sel.k = 2;
  LinearRouter r(16, 4, sel, ScoreFn::Softmax, RouterNoise{NoiseKind::Gauss, 1.0});
  at::Tensor x = at::randn({5, 16});
  RouterOutput a = r->route(x, false), b = r->route(x, false);
  EXPECT_TRUE(at::equal(a.logits, b.logits));
  EXPECT_EQ(a.noise_std, 0.0);
  RouterOutput c = r->route(x, true);
  EXPECT_FALSE(at::equal(a.logits, c.logits));
  EXPECT_DOUBLE_EQ(c.noise_std, 0.25);
  EXPECT_TRUE(at::equal(a.logits, c.clean_logits));
  LinearRouter j(16, 4, sel, ScoreFn::Softmax, RouterNoise{NoiseKind::Jitter, 0.01});
  EXPECT_TRUE(at::equal(j->route(x, false).logits, j->route(x, false).logits));
  EXPECT_FALSE(at::equal(j->route(x, false).logits, j->route(x, true).logits));
}

TEST(MoeRouting, RouterRunsInFp32ForBf16Input) {
  SelectionConfig sel;
  LinearRouter r(8, 4, sel);
  RouterOutput o = r->route(at::randn({3, 8}).to(at::kBFloat16), false);
  EXPECT_EQ(o.logits.scalar_type(), at::kFloat);
  EXPECT_EQ(o.gates.scalar_type(), at::kFloat);
}

TEST(MoeRouting, SigmoidScoresWithRenormalisation) {
  torch::manual_seed(13);
  at::Tensor w = at::randn({5, 6});
  at::Tensor x = at::randn({4, 6});
  SelectionConfig sel;
  sel.k = 2;
  sel.gate = GateMode::Renorm;
  LinearRouter r(w, sel, ScoreFn::Sigmoid);
  RouterOutput o = r->route(x, false);
  at::Tensor s = at::sigmoid(at::mm(x, w.t()));
  EXPECT_LT((o.probs - s).abs().max().item<float>(), 1e-6);
  at::Tensor sel_s = s.gather(1, o.idx);
  EXPECT_LT((o.gates - sel_s / sel_s.sum(1, true)).abs().max().item<float>(), 1e-6);
  EXPECT_TRUE((std::get<0>(sel_s.min(1)) >= std::get<0>(s.topk(2, 1)).select(1, 1) - 1e-7).all().item<bool>());
}

TEST(MoeRouting, GateValuesLoopEqualsDifferentiableOps) {
  // Inference computes the gates in one loop, training through autograd ops: same values, empty
  // (-1) slots included (top-p leaves some).
  torch::manual_seed(4);
  for (at::ScalarType dt : {at::kFloat, at::kDouble}) {
    at::Tensor probs = at::softmax(at::randn({16, 6}, dt) * 2, -1);
    SelectionConfig sel;
    sel.selection = Selection::TopP;
    sel.top_p = 0.5;
    at::Tensor idx = select_experts(probs, sel);
    ASSERT_TRUE((idx < 0).any().item<bool>());
    for (GateMode mode : {GateMode::Ones, GateMode::Prob, GateMode::Renorm, GateMode::UnitST}) {
      at::Tensor loop = gate_values(probs, idx, mode);
      at::Tensor ops = gate_values(probs.clone().requires_grad_(true), idx, mode).detach();
      EXPECT_LE((loop - ops).abs().max().item<double>(), dt == at::kFloat ? 1e-7 : 1e-15) << int(mode);
      EXPECT_EQ(loop.scalar_type(), dt);
    }
  }
}
