// Min-cost flow and the bounded transportation problem against exhaustive enumeration.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "split/min_cost_flow.h"
#include "util/error.h"
#include "util/rng.h"

using namespace mf;

namespace {
// Best Σ value over all assignments of rows items to cols bins within [lo, hi] (enumeration).
double brute_best(const std::vector<double>& v, int rows, int cols, const std::vector<int>& lo, const std::vector<int>& hi) {
  double best = -1e300;
  std::vector<int> a(rows, 0), size(cols, 0);
  std::function<void(int, double)> rec = [&](int i, double acc) {
    if (i == rows) {
      for (int j = 0; j < cols; ++j)
        if (size[j] < lo[j] || size[j] > hi[j]) return;
      best = std::max(best, acc);
      return;
    }
    for (int j = 0; j < cols; ++j) {
      if (size[j] == hi[j]) continue;
      ++size[j];
      rec(i + 1, acc + v[i * cols + j]);
      --size[j];
    }
  };
  rec(0, 0);
  return best;
}
}  // namespace

TEST(SplitFlow, TextbookInstance) {
  // Hand-solved: s=0 → 1 (cap 2, cost 1), s → 2 (cap 1, cost 2), 1 → 2 (cap 1, cost 0),
  // 1 → t=3 (cap 1, cost 3), 2 → t (cap 2, cost 1). Max flow 3; cheapest: s-1-2-t (1+0+1=2),
  // s-2-t (2+1=3), s-1-t (1+3=4) → cost 9.
  MinCostFlow g(4);
  g.add_arc(0, 1, 2, 1);
  g.add_arc(0, 2, 1, 2);
  int a12 = g.add_arc(1, 2, 1, 0);
  g.add_arc(1, 3, 1, 3);
  g.add_arc(2, 3, 2, 1);
  auto r = g.solve(0, 3, 100);
  EXPECT_EQ(r.flow, 3);
  EXPECT_NEAR(r.cost, 9.0, 1e-12);
  EXPECT_EQ(g.flow(a12), 1);
}

TEST(SplitFlow, NegativeCostsAndEarlyStop) {
  // Paths: s-1-t cost -5, s-2-t cost +4. Stopping at non-negative paths sends only 1 unit.
  MinCostFlow g(4);
  g.add_arc(0, 1, 1, -2);
  g.add_arc(1, 3, 1, -3);
  g.add_arc(0, 2, 1, 1);
  g.add_arc(2, 3, 1, 3);
  auto r = g.solve(0, 3, 10, true);
  EXPECT_EQ(r.flow, 1);
  EXPECT_NEAR(r.cost, -5, 1e-12);
}

TEST(SplitFlow, BoundedTransportMatchesBruteForce) {
  Rng rng(7);
  for (int trial = 0; trial < 60; ++trial) {
    int rows = 2 + static_cast<int>(rng.below(6));  // 2..7
    int cols = 1 + static_cast<int>(rng.below(3));  // 1..3
    std::vector<int> lo(cols), hi(cols);
    int slo = 0, shi = 0;
    for (int j = 0; j < cols; ++j) {
      lo[j] = static_cast<int>(rng.below(3));
      hi[j] = lo[j] + static_cast<int>(rng.below(4));
      slo += lo[j], shi += hi[j];
    }
    std::vector<double> v(rows * cols);
    for (double& x : v) x = std::floor(rng.uniform() * 20) - 5;  // integers, incl. negatives and ties
    if (slo > rows || shi < rows) {
      EXPECT_THROW(max_value_assignment(v, rows, cols, lo, hi), Error);
      continue;
    }
    auto bin = max_value_assignment(v, rows, cols, lo, hi);
    std::vector<int> size(cols, 0);
    double got = 0;
    for (int i = 0; i < rows; ++i) ++size[bin[i]], got += v[i * cols + bin[i]];
    for (int j = 0; j < cols; ++j) {
      EXPECT_GE(size[j], lo[j]);
      EXPECT_LE(size[j], hi[j]);
    }
    EXPECT_NEAR(got, brute_best(v, rows, cols, lo, hi), 1e-9) << "trial " << trial;
  }
}
