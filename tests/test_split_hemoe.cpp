// HEMoE placement: constraints, bounds and optimality against exhaustive enumeration.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "split/hemoe_placement.h"
#include "util/error.h"
#include "util/rng.h"

using namespace mf;

namespace {

std::vector<double> lognormal_scores(int M, int D, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> s(static_cast<size_t>(M) * D);
  for (double& x : s) x = std::exp(rng.normal());
  return s;
}

// Exhaustive optimum of the bilinear problem, written straight from the model (all x, all y).
double brute_force_optimum(const std::vector<double>& s, int M, int N, int D, int lo, int hi, int cap) {
  double best = -1;
  std::vector<int> x(M, 0);
  std::function<void(int)> rec = [&](int m) {
    if (m < M) {
      for (int j = 0; j < N; ++j) x[m] = j, rec(m + 1);
      return;
    }
    std::vector<int> size(N, 0);
    for (int j : x) ++size[j];
    for (int j = 0; j < N; ++j)
      if (size[j] < lo || size[j] > hi) return;
    std::vector<double> e(N * D, 0);
    for (int i = 0; i < M; ++i)
      for (int d = 0; d < D; ++d) e[x[i] * D + d] += s[i * D + d];
    for (uint32_t ymask = 0; ymask < (1u << (N * D)); ++ymask) {
      auto y = [&](int j, int d) { return (ymask >> (j * D + d)) & 1u; };
      bool ok = true;
      for (int j = 0; j < N && ok; ++j) {
        int c = 0;
        for (int d = 0; d < D; ++d) c += y(j, d);
        ok = c >= 1;
      }
      for (int d = 0; d < D && ok; ++d) {
        int c = 0;
        for (int j = 0; j < N; ++j) c += y(j, d);
        ok = c <= cap;
      }
      if (!ok) continue;
      double v = 0;
      for (int j = 0; j < N; ++j)
        for (int d = 0; d < D; ++d)
          if (y(j, d)) v += e[j * D + d];
      best = std::max(best, v);
    }
  };
  rec(0);
  return best;
}

}  // namespace

TEST(SplitHemoe, BoundsFollowTheReference) {
  // Spec §1.2(f): M=128, N=8, R=4 → 8..32 modules (512..2048 neurons at F=8192); l=2, D=8 → 2.
  auto p = PlacementProblem::make(lognormal_scores(128, 8, 1), 128, 8, 8, 4, 2);
  EXPECT_EQ(p.lo, 8);
  EXPECT_EQ(p.hi, 32);
  EXPECT_EQ(p.per_domain, 2);
  auto p9 = PlacementProblem::make(lognormal_scores(128, 8, 1), 128, 8, 8, 9, 2);
  EXPECT_EQ(p9.lo, 5);  // 320 neurons
  EXPECT_EQ(p9.hi, 48); // 3072 neurons
  auto p1 = PlacementProblem::make(lognormal_scores(128, 8, 1), 128, 8, 8, 1, 2);
  EXPECT_EQ(p1.lo, 16);
  EXPECT_EQ(p1.hi, 16);
  EXPECT_THROW(PlacementProblem::make(lognormal_scores(16, 8, 1), 16, 8, 4, 4, 2), Error);  // N < D
  std::vector<double> neg = lognormal_scores(16, 2, 1);
  neg[3] = -1;
  EXPECT_THROW(PlacementProblem::make(neg, 16, 2, 4, 4, 2), Error);
}

TEST(SplitHemoe, TinyInstancesFastAndCbcMatchBruteForce) {
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    const int M = 6, N = 3, D = 2;
    // R=4: avg 2, lo 1, hi 4; l=2: per_domain = round((3//2)*2) = 2.
    auto s = lognormal_scores(M, D, seed);
    auto p = PlacementProblem::make(s, M, D, N, 4, 2);
    ASSERT_EQ(p.lo, 1);
    ASSERT_EQ(p.hi, 4);
    ASSERT_EQ(p.per_domain, 2);
    double opt = brute_force_optimum(s, M, N, D, p.lo, p.hi, p.per_domain);
    FastPlacementOptions fo;
    fo.seed = seed;
    auto fast = solve_placement_fast(p, fo);
    check_placement(p, fast.best);
    EXPECT_NEAR(fast.best.objective, opt, 1e-9 * opt) << "seed " << seed;
    EXPECT_NEAR(placement_objective(p, fast.best), fast.best.objective, 1e-12 * opt);
    EXPECT_GE(fast.upper_bound, opt * (1 - 1e-12));
    auto cbc = solve_placement_cbc(p, {});
    check_placement(p, cbc.best);
    EXPECT_TRUE(cbc.proven_optimal);
    EXPECT_NEAR(cbc.best.objective, opt, 1e-6 * opt) << "seed " << seed;
    EXPECT_GE(cbc.solver_bound, opt * (1 - 1e-6));
  }
}

TEST(SplitHemoe, UpperBoundIsValidOnBruteForceInstances) {
  // M=7, N=3, D=3, R=4 (lo 1, hi 4), l=1 (1 expert per domain): bound ≥ optimum.
  for (uint64_t seed = 10; seed < 13; ++seed) {
    auto s = lognormal_scores(7, 3, seed);
    auto p = PlacementProblem::make(s, 7, 3, 3, 4, 1);
    double opt = brute_force_optimum(s, 7, 3, 3, p.lo, p.hi, p.per_domain);
    EXPECT_GE(placement_upper_bound(p), opt * (1 - 1e-12));
    auto fast = solve_placement_fast(p, {});
    EXPECT_NEAR(fast.best.objective, opt, 1e-9 * opt);
  }
}

TEST(SplitHemoe, FullSizeInstanceRespectsConstraints) {
  // M=128, N=8, D=8, R=4, l=2 with a small start budget (the benchmark runs the real one).
  auto p = PlacementProblem::make(lognormal_scores(128, 8, 3), 128, 8, 8, 4, 2);
  FastPlacementOptions fo;
  fo.max_starts = 2;
  auto r = solve_placement_fast(p, fo);
  check_placement(p, r.best);
  EXPECT_LE(r.best.objective, r.upper_bound);
  EXPECT_GE(r.gap, 0);
  // Far above a random placement scored with its best y.
  Rng rng(5);
  Placement rnd;
  for (int m = 0; m < 128; ++m) rnd.expert_of_module.push_back(m % 8);
  for (int m = 127; m > 0; --m) std::swap(rnd.expert_of_module[m], rnd.expert_of_module[rng.below(m + 1)]);
  rnd.serves = best_domains_for(p, rnd.expert_of_module);
  check_placement(p, rnd);
  EXPECT_GT(r.best.objective, 1.2 * placement_objective(p, rnd));
}

TEST(SplitHemoe, RatioOneGivesEqualSizes) {
  auto p = PlacementProblem::make(lognormal_scores(32, 4, 9), 32, 4, 8, 1, 2);
  auto r = solve_placement_fast(p, {});
  check_placement(p, r.best);
  std::vector<int> size(8, 0);
  for (int j : r.best.expert_of_module) ++size[j];
  for (int j = 0; j < 8; ++j) EXPECT_EQ(size[j], 4);
}

TEST(SplitHemoe, SubproblemsAreExact) {
  // For a fixed y, no single module move or swap improves best_modules_for (it is optimal);
  // for a fixed x, best_domains_for beats every single y flip that stays feasible.
  auto s = lognormal_scores(12, 2, 21);
  auto p = PlacementProblem::make(s, 12, 2, 4, 4, 2);
  std::vector<uint8_t> y = {1, 0, 0, 1, 1, 0, 0, 1};
  Placement x = best_modules_for(p, y);
  check_placement(p, x);
  std::vector<int> size(4, 0);
  for (int j : x.expert_of_module) ++size[j];
  for (int m = 0; m < 12; ++m)
    for (int b = 0; b < 4; ++b) {
      Placement t = x;
      int a = t.expert_of_module[m];
      if (a == b || size[a] - 1 < p.lo || size[b] + 1 > p.hi) continue;
      t.expert_of_module[m] = b;
      EXPECT_LE(placement_objective(p, t), x.objective + 1e-12);
    }
  auto y2 = best_domains_for(p, x.expert_of_module);
  Placement z{x.expert_of_module, y2, 0};
  check_placement(p, z);
  double best = placement_objective(p, z);
  for (size_t k = 0; k < y2.size(); ++k) {
    Placement t = z;
    t.serves[k] ^= 1;
    try {
      check_placement(p, t);
    } catch (const Error&) {
      continue;
    }
    EXPECT_LE(placement_objective(p, t), best + 1e-12);
  }
}
