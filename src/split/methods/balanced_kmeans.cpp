// Balanced (size-constrained) k-means, the clustering behind MoEfication, EMoE and HEMoE's
// module pre-clustering. Distances via one GEMM per iteration; the exact-size assignment is an
// auction (Bertsekas; "similar objects": cluster j = sizes[j] identical slots) with ε-scaling.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <queue>

#include "split/split.h"
#include "util/error.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

std::vector<int32_t> auction_assignment(const std::vector<double>& benefit, int64_t F, int k,
                                        const std::vector<int64_t>& sizes) {
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  if (static_cast<int>(sizes.size()) != k || total != F)
    fail(cat("balanced assignment: cluster sizes sum to ", total, ", expected ", F));
  double bmin = std::numeric_limits<double>::infinity(), bmax = -bmin;
  for (double b : benefit) bmin = std::min(bmin, b), bmax = std::max(bmax, b);
  double range = std::max(bmax - bmin, 1e-30);
  const double eps_final = range * 1e-9 / std::max<int64_t>(F, 1);
  // Slots: per cluster a min-heap of (price, holder). Prices persist across ε phases.
  using Slot = std::pair<double, int64_t>;
  std::vector<std::priority_queue<Slot, std::vector<Slot>, std::greater<Slot>>> heaps(k);
  std::vector<int32_t> label(F, -1);
  std::vector<std::vector<double>> prices(k);
  for (int j = 0; j < k; ++j) prices[j].assign(sizes[j], 0.0);
  for (double eps = range / 8;; eps = std::max(eps / 8, eps_final)) {
    for (int j = 0; j < k; ++j) {
      heaps[j] = {};
      for (double pr : prices[j]) heaps[j].push({pr, -1});
    }
    std::fill(label.begin(), label.end(), -1);
    std::vector<int64_t> queue(F);
    for (int64_t i = 0; i < F; ++i) queue[i] = F - 1 - i;  // pop from the back: 0, 1, ...
    while (!queue.empty()) {
      int64_t i = queue.back();
      queue.pop_back();
      const double* b = &benefit[static_cast<size_t>(i) * k];
      int best = -1;
      double v1 = -std::numeric_limits<double>::infinity(), v2 = v1;
      for (int j = 0; j < k; ++j) {
        if (sizes[j] == 0) continue;
        double v = b[j] - heaps[j].top().first;
        if (v > v1) v2 = v1, v1 = v, best = j;
        else if (v > v2) v2 = v;
      }
      if (v2 == -std::numeric_limits<double>::infinity()) v2 = v1;  // one cluster: no competition
      // Bid so that the cheapest slot of `best` is worth exactly the runner-up minus ε to i.
      double bid = b[best] - v2 + eps;
      Slot old = heaps[best].top();
      heaps[best].pop();
      heaps[best].push({bid, i});
      label[i] = best;
      if (old.second >= 0) label[old.second] = -1, queue.push_back(old.second);
    }
    for (int j = 0; j < k; ++j) {
      prices[j].clear();
      auto h = heaps[j];
      while (!h.empty()) prices[j].push_back(h.top().first), h.pop();
    }
    if (eps <= eps_final) break;
  }
  return label;
}

BalancedKMeansResult balanced_kmeans(const at::Tensor& rows_in, const std::vector<int64_t>& sizes,
                                     uint64_t seed, int max_iter) {
  if (rows_in.dim() != 2) fail("balanced k-means: expected a 2-D [F, H] tensor");
  at::Tensor X = rows_in.to(at::kDouble).contiguous();
  int64_t F = X.size(0);
  int k = static_cast<int>(sizes.size());
  if (k <= 0 || k > F) fail(cat("balanced k-means: cannot make ", k, " clusters of ", F, " rows"));
  at::Tensor xx = (X * X).sum(1);  // [F]
  // k-means++ seeding: first centre uniform, then proportional to squared distance.
  Rng rng(seed);
  std::vector<int64_t> chosen{static_cast<int64_t>(rng.below(F))};
  at::Tensor d2 = (X - X[chosen[0]]).pow(2).sum(1);
  while (static_cast<int>(chosen.size()) < k) {
    auto acc = d2.accessor<double, 1>();
    double total = 0;
    for (int64_t i = 0; i < F; ++i) total += acc[i];
    int64_t pick = static_cast<int64_t>(rng.below(F));
    if (total > 0) {
      double r = rng.uniform() * total, c = 0;
      for (int64_t i = 0; i < F; ++i) {
        c += acc[i];
        if (c >= r && acc[i] > 0) {
          pick = i;
          break;
        }
      }
    }
    chosen.push_back(pick);
    d2 = at::minimum(d2, (X - X[pick]).pow(2).sum(1));
  }
  at::Tensor C = X.index_select(0, at::tensor(chosen, at::kLong));
  BalancedKMeansResult res;
  std::vector<int32_t> prev;
  for (int it = 0; it < max_iter; ++it) {
    at::Tensor dist = (xx.unsqueeze(1) - 2 * at::mm(X, C.t()) + (C * C).sum(1).unsqueeze(0)).contiguous();
    std::vector<double> benefit(dist.data_ptr<double>(), dist.data_ptr<double>() + dist.numel());
    for (double& b : benefit) b = -b;
    res.labels = auction_assignment(benefit, F, k, sizes);
    res.iterations = it + 1;
    res.inertia = 0;
    for (int64_t i = 0; i < F; ++i) res.inertia -= benefit[static_cast<size_t>(i) * k + res.labels[i]];
    if (res.labels == prev) break;
    prev = res.labels;
    at::Tensor lab = at::tensor(std::vector<int64_t>(res.labels.begin(), res.labels.end()), at::kLong);
    at::Tensor sums = at::zeros_like(C).index_add_(0, lab, X);
    at::Tensor counts = at::zeros({k}, at::kDouble).index_add_(0, lab, at::ones({F}, at::kDouble));
    C = sums / counts.clamp_min(1).unsqueeze(1);
  }
  return res;
}

}  // namespace mf
