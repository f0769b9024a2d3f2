#include "merge/oprune.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "util/error.h"
#include "util/str.h"

namespace mf::merge {

namespace {

// Per token: experts by descending logit (ties: lower index), exp(z − max), and the original
// sparse weights a_t.
struct TokenRouting {
  std::vector<int32_t> order;   // [T, N]
  std::vector<double> ex;       // [T, N]
  std::vector<int32_t> a_idx;   // [T, k]
  std::vector<double> a_w;      // [T, k]
};

// Weights of the top-k experts among `keep` for token t: writes up to k (index, weight) pairs.
int64_t routed(const OPruneInput& in, const TokenRouting& tr, int64_t t, const std::vector<uint8_t>& keep,
               int32_t* idx, double* w) {
  const int64_t N = in.experts;
  const int32_t* order = tr.order.data() + t * N;
  const double* ex = tr.ex.data() + t * N;
  double denom = 0.0;
  if (!in.renormalize)
    for (int64_t j = 0; j < N; ++j)
      if (keep[j]) denom += ex[j];
  int64_t n = 0;
  double top = 0.0;
  for (int64_t p = 0; p < N && n < in.k; ++p)
    if (keep[order[p]]) {
      idx[n] = order[p];
      top += ex[order[p]];
      ++n;
    }
  const double d = in.renormalize ? top : denom;
  for (int64_t i = 0; i < n; ++i) w[i] = ex[idx[i]] / d;
  return n;
}

TokenRouting prepare(const OPruneInput& in) {
  const int64_t T = in.tokens, N = in.experts;
  TokenRouting tr;
  tr.order.resize(T * N);
  tr.ex.resize(T * N);
  tr.a_idx.resize(T * in.k);
  tr.a_w.resize(T * in.k);
  const std::vector<uint8_t> all(N, 1);
  for (int64_t t = 0; t < T; ++t) {
    const float* z = in.logits + t * N;
    int32_t* order = tr.order.data() + t * N;
    std::iota(order, order + N, 0);
    std::stable_sort(order, order + N, [&](int32_t a, int32_t b) { return z[a] > z[b]; });
    const double mx = z[order[0]];
    for (int64_t j = 0; j < N; ++j) tr.ex[t * N + j] = std::exp(static_cast<double>(z[j]) - mx);
    routed(in, tr, t, all, tr.a_idx.data() + t * in.k, tr.a_w.data() + t * in.k);
  }
  return tr;
}

double loss_of(const OPruneInput& in, const TokenRouting& tr, const std::vector<uint8_t>& keep) {
  const int64_t N = in.experts, k = in.k;
  std::vector<int32_t> idx(2 * k);
  std::vector<double> diff(2 * k);
  std::vector<int32_t> b_idx(k);
  std::vector<double> b_w(k);
  double total = 0.0;
  for (int64_t t = 0; t < in.tokens; ++t) {
    const int64_t nb = routed(in, tr, t, keep, b_idx.data(), b_w.data());
    // a − b on the union of both supports.
    int64_t n = 0;
    for (int64_t i = 0; i < k; ++i) {
      idx[n] = tr.a_idx[t * k + i];
      diff[n++] = tr.a_w[t * k + i];
    }
    for (int64_t i = 0; i < nb; ++i) {
      int64_t at = 0;
      while (at < n && idx[at] != b_idx[i]) ++at;
      if (at == n) {
        idx[n] = b_idx[i];
        diff[n++] = 0.0;
      }
      diff[at] -= b_w[i];
    }
    const double* G = in.gram + t * N * N;
    double e = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) e += diff[i] * diff[j] * G[idx[i] * N + idx[j]];
    total += e;
  }
  return total;
}

// C(n, r), saturating at `cap` + 1.
int64_t binomial_capped(int64_t n, int64_t r, int64_t cap) {
  r = std::min(r, n - r);
  double c = 1.0;
  for (int64_t i = 1; i <= r; ++i) {
    c = c * static_cast<double>(n - r + i) / static_cast<double>(i);
    if (c > static_cast<double>(cap)) return cap + 1;
  }
  return static_cast<int64_t>(std::llround(c));
}

}  // namespace

double o_prune_loss(const OPruneInput& in, const std::vector<uint8_t>& keep) {
  return loss_of(in, prepare(in), keep);
}

OPruneResult o_prune(const OPruneInput& in, int64_t r, int64_t max_subsets, uint64_t seed) {
  const int64_t N = in.experts;
  if (r < 1 || r > N) fail(cat("O-prune: cannot keep ", r, " of ", N, " experts"));
  if (in.tokens < 1) fail("O-prune: no calibration tokens");
  const TokenRouting tr = prepare(in);

  // The candidate subsets, as index lists: every combination in lexicographic order, or a sample.
  std::vector<std::vector<int32_t>> subsets;
  OPruneResult res;
  res.exhaustive = binomial_capped(N, r, max_subsets) <= max_subsets;
  if (res.exhaustive) {
    std::vector<int32_t> c(r);
    std::iota(c.begin(), c.end(), 0);
    while (true) {
      subsets.push_back(c);
      int64_t i = r - 1;
      while (i >= 0 && c[i] == N - r + i) --i;
      if (i < 0) break;
      ++c[i];
      for (int64_t j = i + 1; j < r; ++j) c[j] = c[j - 1] + 1;
    }
  } else {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> perm(N);
    for (int64_t s = 0; s < max_subsets; ++s) {
      std::iota(perm.begin(), perm.end(), 0);
      for (int64_t i = 0; i < r; ++i) std::swap(perm[i], perm[i + rng() % (N - i)]);
      std::vector<int32_t> c(perm.begin(), perm.begin() + r);
      std::sort(c.begin(), c.end());
      subsets.push_back(std::move(c));
    }
  }
  res.subsets = static_cast<int64_t>(subsets.size());
  std::vector<double> loss(subsets.size());
  at::parallel_for(0, res.subsets, 1, [&](int64_t s0, int64_t s1) {
    std::vector<uint8_t> keep(N);
    for (int64_t s = s0; s < s1; ++s) {
      std::fill(keep.begin(), keep.end(), 0);
      for (int32_t j : subsets[s]) keep[j] = 1;
      loss[s] = loss_of(in, tr, keep);
    }
  });
  const int64_t best = std::min_element(loss.begin(), loss.end()) - loss.begin();
  res.kept.assign(subsets[best].begin(), subsets[best].end());
  res.loss = loss[best];
  return res;
}

}  // namespace mf::merge
