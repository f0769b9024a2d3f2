// GMoE's coordination losses (moe_routing_training.md §4.3, §6.3, §6.6 items 8 and 10): the
// Poisson and Normal targets against the spec's printed values and the formulas written out
// here, both losses against naive loops and hand-derived values (the reference-compat "bug"
// example included), padding masks, the running count, finite differences in fp64.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "moe/gmoe_losses.h"
#include "moe_test_util.h"

using namespace mf::moe;
using mf::moe::testing::fd_check;

namespace {

at::Tensor scalar(double v, bool grad = false) { return at::full({1}, v, at::kDouble).requires_grad_(grad); }

std::vector<double> values(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kDouble).contiguous().view({-1});
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

// e^-l l^i / i! for ranks i = 1..E (ranks past 32 take rank 32's value), normalised.
std::vector<double> naive_poisson(int64_t E, double lambda) {
  std::vector<double> q;
  double sum = 0;
  for (int64_t i = 1; i <= E; ++i) {
    const double r = static_cast<double>(std::min<int64_t>(i, 32));
    q.push_back(std::exp(-lambda) * std::pow(lambda, r) / std::tgamma(r + 1));
    sum += q.back();
  }
  for (double& v : q) v /= sum;
  return q;
}

// Gaussian pdf N(i; E/2, sigma) at i = 0..E-1 (unnormalised, unsorted).
std::vector<double> naive_pdf(int64_t E, double sigma) {
  std::vector<double> v;
  for (int64_t i = 0; i < E; ++i) {
    const double z = (static_cast<double>(i) - E / 2.0) / sigma;
    v.push_back(std::exp(-0.5 * z * z) / (sigma * std::sqrt(2 * M_PI)));
  }
  return v;
}

// The per-layer Normal target: pdf normalised, sorted descending.
std::vector<double> naive_normal(int64_t E, double sigma) {
  std::vector<double> v = naive_pdf(E, sigma);
  double sum = 0;
  for (double x : v) sum += x;
  for (double& x : v) x /= sum;
  std::sort(v.rbegin(), v.rend());
  return v;
}

// Per token: sorted probs vs q, summed |log ratio|; averaged over layers and real tokens.
double naive_poisson_loss(const std::vector<at::Tensor>& probs, const std::vector<double>& lambdas,
                          const std::vector<bool>& real) {
  double total = 0, n = 0;
  for (size_t l = 0; l < probs.size(); ++l) {
    const int64_t T = probs[l].size(0), E = probs[l].size(1);
    const std::vector<double> q = naive_poisson(E, lambdas[l]);
    for (int64_t t = 0; t < T; ++t) {
      if (!real[t]) continue;
      std::vector<double> p = values(probs[l][t]);
      std::sort(p.rbegin(), p.rend());
      for (int64_t i = 0; i < E; ++i) total += q[i] * std::abs(std::log(q[i] / (p[i] + 1e-16)));
      n += 1;
    }
  }
  return total / n;
}

}  // namespace

TEST(GmoeLoss, PoissonTargetsMatchTheSpecAndTheFormula) {
  // §4.3, printed to three decimals.
  const std::map<double, std::vector<double>> printed = {{1.0, {.582, .291, .097, .024, .005, .001, .000, .000}},
                                                         {2.0, {.313, .313, .209, .104, .042, .014, .004, .001}}};
  for (const auto& [lambda, want] : printed) {
    const std::vector<double> q = values(poisson_target(8, scalar(lambda)));
    for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(q[i], want[i], 5e-4) << "lambda " << lambda << " rank " << i + 1;
  }
  // lambda = 1.5 (the init): §6.6 to four decimals, §4.3's "~[0.43, 0.32, 0.16, 0.06, 0.02, ...]".
  const std::vector<double> q = values(poisson_target(8, scalar(1.5)));
  const std::vector<double> four = {.4308, .3231, .1616, .0606, .0182, .0045, .0010, .0002};
  const std::vector<double> two = {.43, .32, .16, .06, .02};
  for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(q[i], four[i], 5e-5) << "rank " << i + 1;
  for (size_t i = 0; i < 5; ++i) EXPECT_NEAR(q[i], two[i], 5e-3) << "rank " << i + 1;
  for (double lambda : {1.0, 1.2, 1.5, 1.77, 2.0}) {
    const std::vector<double> got = values(poisson_target(8, scalar(lambda)));
    const std::vector<double> ref = naive_poisson(8, lambda);
    for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(got[i], ref[i], 1e-12) << "lambda " << lambda;
  }
}

TEST(GmoeLoss, PoissonRanksBeyond32RepeatThe32ndBeforeNormalisation) {
  const std::vector<double> q = values(poisson_target(40, scalar(1.5)));
  const std::vector<double> ref = naive_poisson(40, 1.5);
  double sum = 0;
  for (size_t i = 0; i < 40; ++i) {
    EXPECT_NEAR(q[i], ref[i], 1e-12) << "rank " << i + 1;
    sum += q[i];
  }
  EXPECT_NEAR(sum, 1.0, 1e-12);
  for (size_t i = 32; i < 40; ++i) EXPECT_EQ(q[i], q[31]) << "rank " << i + 1;
}

TEST(GmoeLoss, PoissonLambdaIsClampedToOneTwo) {
  EXPECT_TRUE(torch::equal(poisson_target(8, scalar(0.3)), poisson_target(8, scalar(1.0))));
  EXPECT_TRUE(torch::equal(poisson_target(8, scalar(2.7)), poisson_target(8, scalar(2.0))));
  // The first rank's target: 0.582 at lambda = 1, 0.313 at 2 (a slope of about -0.27).
  const at::Tensor w = at::zeros({8}, at::kDouble).index_fill_(0, at::tensor({0}, at::kLong), 1.0);
  for (double lambda : {0.3, 2.7}) {
    at::Tensor lam = scalar(lambda, true);
    (poisson_target(8, lam) * w).sum().backward();
    EXPECT_EQ(lam.grad().item<double>(), 0.0) << "lambda " << lambda;
  }
  at::Tensor lam = scalar(1.4, true);
  auto f = [&] { return (poisson_target(8, lam) * w).sum(); };
  f().backward();
  EXPECT_GT(std::abs(lam.grad().item<double>()), 1e-3);
  EXPECT_LT(fd_check(f, lam, lam.grad()), 1e-8);
}

TEST(GmoeLoss, PoissonLossOfUniformProbsIsTheSpecValue) {
  // p = 1/8 everywhere: the loss is sum_i q_i |log(8 q_i)| = 0.9814 (§6.6); the paper's KL
  // form sum_i q_i log(8 q_i) would be 0.7816.
  const at::Tensor probs = at::full({5, 8}, 1.0 / 8, at::kDouble);
  const double loss = poisson_distinction_loss({probs}, {scalar(1.5)}).item<double>();
  const std::vector<double> q = naive_poisson(8, 1.5);
  double abs_log = 0, kl = 0;
  for (double v : q) {
    abs_log += v * std::abs(std::log(8 * v));
    kl += v * std::log(8 * v);
  }
  EXPECT_NEAR(loss, abs_log, 1e-12);
  EXPECT_NEAR(loss, 0.9814, 5e-5);
  EXPECT_NEAR(kl, 0.7816, 5e-5);
}

TEST(GmoeLoss, PoissonLossEqualsNaiveLoopsAndIgnoresMaskedTokens) {
  torch::manual_seed(3);
  const std::vector<at::Tensor> probs = {at::softmax(at::randn({6, 5}, at::kDouble) * 2, -1),
                                         at::softmax(at::randn({6, 5}, at::kDouble) * 2, -1)};
  const std::vector<at::Tensor> lambdas = {scalar(1.3), scalar(1.8)};
  const std::vector<bool> all(6, true), real = {true, false, true, true, false, true};
  EXPECT_NEAR(poisson_distinction_loss(probs, lambdas).item<double>(), naive_poisson_loss(probs, {1.3, 1.8}, all),
              1e-12);
  const at::Tensor mask = at::tensor({1, 0, 1, 1, 0, 1}).to(at::kBool);
  const double masked = poisson_distinction_loss(probs, lambdas, mask).item<double>();
  EXPECT_NEAR(masked, naive_poisson_loss(probs, {1.3, 1.8}, real), 1e-12);
  const at::Tensor keep = at::tensor({0, 2, 3, 5}, at::kLong);
  EXPECT_NEAR(masked,
              poisson_distinction_loss({probs[0].index_select(0, keep), probs[1].index_select(0, keep)}, lambdas)
                  .item<double>(),
              1e-12);
}

TEST(GmoeLoss, PoissonLossFiniteDifferences) {
  torch::manual_seed(4);
  at::Tensor p0 = at::softmax(at::randn({4, 6}, at::kDouble) * 0.5, -1).requires_grad_();
  at::Tensor p1 = at::softmax(at::randn({4, 6}, at::kDouble) * 0.5, -1).requires_grad_();
  at::Tensor l0 = scalar(1.3, true), l1 = scalar(1.7, true);
  const at::Tensor mask = at::tensor({1, 1, 0, 1}).to(at::kBool);
  auto f = [&] { return poisson_distinction_loss({p0, p1}, {l0, l1}, mask); };
  f().backward();
  for (const at::Tensor& t : {p0, p1, l0, l1}) EXPECT_LT(fd_check(f, t, t.grad()), 1e-6);
  EXPECT_EQ(p0.grad()[2].abs().max().item<double>(), 0.0);  // the padded token
}

TEST(GmoeLoss, NormalTargetMatchesTheSpecAndTheFormula) {
  const std::vector<double> v = values(normal_target(8, scalar(4.0)));
  const std::vector<double> three = {.147, .142, .142, .129, .129, .111, .111, .089};
  const std::vector<double> four = {.1466, .1421, .1421, .1294, .1294, .1107, .1107, .0889};
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_NEAR(v[i], three[i], 5e-4) << i;
    EXPECT_NEAR(v[i], four[i], 5e-5) << i;
  }
  for (int64_t E : {5, 8, 13})
    for (double sigma : {0.7, 2.5, 4.0, 7.3}) {
      const std::vector<double> got = values(normal_target(E, scalar(sigma)));
      const std::vector<double> ref = naive_normal(E, sigma);
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], ref[i], 1e-12) << "E " << E << " sigma " << sigma;
    }
  EXPECT_TRUE(at::allclose(normal_target(8, scalar(-4.0)), normal_target(8, scalar(4.0)), 0, 1e-15));
}

TEST(GmoeLoss, ReferenceCompatTargetsAreNormalisedOverAllLayers) {
  const std::vector<at::Tensor> same(28, scalar(4.0));
  const at::Tensor t = normal_targets(8, same, true);
  ASSERT_EQ(t.sizes(), (std::vector<int64_t>{28, 8}));
  const std::vector<double> per_layer = naive_normal(8, 4.0);
  for (int64_t l = 0; l < 28; ++l) {
    EXPECT_NEAR(t[l].sum().item<double>(), 1.0 / 28, 1e-12);
    for (int64_t i = 0; i < 8; ++i) EXPECT_NEAR(t[l][i].item<double>(), per_layer[i] / 28, 1e-12);
  }
  EXPECT_TRUE(at::allclose(normal_targets(8, same, false)[5], normal_target(8, scalar(4.0)), 0, 1e-15));
  // Different sigmas: pdf values over the whole [3 x 8] table, normalised by its sum.
  const std::vector<double> sigmas = {3.0, 4.0, 6.0};
  double total = 0;
  std::vector<std::vector<double>> pdf;
  for (double s : sigmas) {
    pdf.push_back(naive_pdf(8, s));
    std::sort(pdf.back().rbegin(), pdf.back().rend());
    for (double x : pdf.back()) total += x;
  }
  const at::Tensor mixed = normal_targets(8, {scalar(3.0), scalar(4.0), scalar(6.0)}, true);
  EXPECT_NEAR(mixed.sum().item<double>(), 1.0, 1e-12);
  for (int64_t l = 0; l < 3; ++l)
    for (int64_t i = 0; i < 8; ++i) EXPECT_NEAR(mixed[l][i].item<double>(), pdf[l][i] / total, 1e-12);
}

TEST(GmoeLoss, NormalLossReproducesTheSpecValuesAndTheCompatSignFlip) {
  // v = the per-layer target (E = 8, sigma = 4); with reference_compat each of the Lyr = 28
  // layers' targets is v / 28. When every a_i >= v_i / 28 all log-ratios are negative and the
  // loss is sum_i (v_i/28)(log 28 - log(v_i / a_i)) = (log 28 - KL(v || a)) / 28:
  //   a = v (target-shaped counts): log(28)/28 = 0.1190
  //   a = 1/8 (uniform):            (log 28 - log 8 + H(v)) / 28 = 0.1186
  //   a = [.93, .01 x 7] (collapse): (log 28 - KL(v || a)) / 28 = 0.0521
  // so the reference's loss falls as routing collapses (§4.3). The 1e-8 inside the log moves
  // these by < 1e-7.
  const std::vector<double> v = naive_normal(8, 4.0);
  const std::vector<double> uniform(8, 1.0 / 8), collapse = {.93, .01, .01, .01, .01, .01, .01, .01};
  double entropy = 0, kl_collapse = 0, abs_uniform = 0;
  for (size_t i = 0; i < 8; ++i) {
    entropy -= v[i] * std::log(v[i]);
    kl_collapse += v[i] * std::log(v[i] / collapse[i]);
    abs_uniform += v[i] * std::abs(std::log(8 * v[i]));
  }
  auto loss = [](const std::vector<double>& counts, bool compat) {
    const at::Tensor c = at::tensor(counts, at::kDouble) * 1000.0;  // counts, not fractions
    return normal_balance_loss(std::vector<at::Tensor>(28, c), std::vector<at::Tensor>(28, scalar(4.0)), compat)
        .item<double>();
  };
  const double L28 = std::log(28.0);
  EXPECT_NEAR(loss(v, true), L28 / 28, 1e-7);
  EXPECT_NEAR(loss(v, true), 0.1190, 5e-5);
  EXPECT_NEAR(loss(uniform, true), (L28 - std::log(8.0) + entropy) / 28, 1e-7);
  EXPECT_NEAR(loss(uniform, true), 0.1186, 5e-5);
  EXPECT_NEAR(loss(collapse, true), (L28 - kl_collapse) / 28, 1e-7);
  EXPECT_NEAR(loss(collapse, true), 0.0521, 5e-5);
  // Per-layer normalisation (the paper): 0 at the target, 0.1261 for uniform counts (KL: 0.0117),
  // and collapse costs more than uniform, as it should.
  EXPECT_NEAR(loss(v, false), 0.0, 1e-6);
  EXPECT_NEAR(loss(uniform, false), abs_uniform, 1e-7);
  EXPECT_NEAR(loss(uniform, false), 0.1261, 5e-5);
  EXPECT_NEAR(std::log(8.0) - entropy, 0.0117, 5e-5);
  EXPECT_GT(loss(collapse, false), loss(uniform, false));
  // Counts in any order: the loss sorts them.
  EXPECT_NEAR(loss({.01, .01, .93, .01, .01, .01, .01, .01}, true), loss(collapse, true), 1e-12);
}

TEST(GmoeLoss, NormalLossFiniteDifferences) {
  torch::manual_seed(6);
  const int64_t E = 5, T = 6;
  at::Tensor p0 = at::softmax(at::randn({T, E}, at::kDouble), -1).requires_grad_();
  at::Tensor p1 = at::softmax(at::randn({T, E}, at::kDouble), -1).requires_grad_();
  // Top-2 selections with an empty slot on token 3; token 5 is padding.
  at::Tensor idx0 = std::get<1>(p0.detach().topk(2, 1)), idx1 = std::get<1>(p1.detach().topk(2, 1));
  idx0[3][1] = -1;
  const at::Tensor mask = at::tensor({1, 1, 1, 1, 1, 0}).to(at::kBool);
  const at::Tensor r0 = at::tensor({3.1, 0.4, 2.2, 1.0, 0.7}, at::kDouble);  // running counts (detached)
  const at::Tensor r1 = at::tensor({0.2, 1.9, 0.8, 2.6, 1.3}, at::kDouble);
  at::Tensor s0 = scalar(2.1, true), s1 = scalar(3.4, true);
  for (bool compat : {false, true}) {
    SCOPED_TRACE(compat ? "reference_compat" : "per layer");
    auto f = [&] {
      return normal_balance_loss({r0 + gmoe_batch_counts(p0, idx0, mask), r1 + gmoe_batch_counts(p1, idx1, mask)},
                                 {s0, s1}, compat);
    };
    for (at::Tensor t : {p0, p1, s0, s1}) t.mutable_grad() = at::Tensor();
    f().backward();
    for (const at::Tensor& t : {p0, p1, s0, s1}) EXPECT_LT(fd_check(f, t, t.grad()), 1e-6);
    EXPECT_EQ(p0.grad()[5].abs().max().item<double>(), 0.0);  // padding adds nothing
  }
}

TEST(GmoeLoss, BalanceStateKeepsARunningDetachedCount) {
  torch::manual_seed(7);
  const int64_t E = 4, T = 5, k = 2;
  // k * sum over real tokens of the selected (pre-renormalisation) probabilities, by hand.
  auto naive = [&](const at::Tensor& p, const at::Tensor& idx, const std::vector<bool>& real) {
    std::vector<double> c(E, 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = idx[t][j].item<int64_t>();
        if (real[t] && e >= 0) c[e] += k * p[t][e].item<double>();
      }
    return at::tensor(c, at::kDouble);
  };
  at::Tensor pa = at::softmax(at::randn({T, E}, at::kDouble), -1).requires_grad_();
  at::Tensor pb = at::softmax(at::randn({T, E}, at::kDouble), -1).requires_grad_();
  at::Tensor ia = std::get<1>(pa.detach().topk(k, 1)), ib = std::get<1>(pb.detach().topk(k, 1));
  ia[1][1] = -1;
  const at::Tensor mask_b = at::tensor({1, 0, 1, 1, 1}).to(at::kBool);

  GmoeBalanceState state(2);
  const at::Tensor ca = state.update(0, pa, ia);
  const at::Tensor want_a = naive(pa, ia, std::vector<bool>(T, true));
  EXPECT_TRUE(at::allclose(ca, want_a, 0, 1e-12));
  EXPECT_FALSE(state.running(0).requires_grad());
  EXPECT_FALSE(state.running(1).defined());

  const at::Tensor cb = state.update(0, pb, ib, mask_b);
  EXPECT_TRUE(at::allclose(cb, want_a + naive(pb, ib, {true, false, true, true, true}), 0, 1e-12));
  EXPECT_TRUE(at::allclose(state.running(0), cb.detach(), 0, 0));
  cb.sum().backward();
  EXPECT_TRUE(pb.grad().defined());
  EXPECT_FALSE(pa.grad().defined());  // the running part carries no gradient
  state.reset();
  EXPECT_FALSE(state.running(0).defined());
}
