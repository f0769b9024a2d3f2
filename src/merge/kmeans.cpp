#include "merge/kmeans.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "util/error.h"
#include "util/str.h"

namespace mf::merge {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A uniform double in [0, 1) from the top 53 bits (the same on every standard library).
double unit(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0); }

double euclidean(const double* a, const double* b, int64_t d) {
  double s = 0.0;
  for (int64_t c = 0; c < d; ++c) {
    const double t = a[c] - b[c];
    s += t * t;
  }
  return std::sqrt(s);
}

void check(const std::vector<KMeansFeatures>& features, int64_t n, int64_t k, const KMeansOptions& o) {
  if (n < 1) fail(cat("kmeans: no experts to cluster (n = ", n, ")"));
  if (k < 1 || k > n) fail(cat("kmeans: cannot form ", k, " clusters of ", n, " experts (need 1 <= k <= ", n, ")"));
  if (features.empty()) fail("kmeans: no feature set given");
  if (o.max_iter < 1) fail(cat("kmeans: max_iter must be at least 1, not ", o.max_iter));
  if (!std::isfinite(o.tol)) fail("kmeans: tol must be finite");
  double weight_sum = 0.0;
  for (size_t f = 0; f < features.size(); ++f) {
    const KMeansFeatures& F = features[f];
    if (F.values == nullptr) fail(cat("kmeans: feature set ", f, " has no values"));
    if (F.d < 1) fail(cat("kmeans: feature set ", f, ": the dimension must be at least 1, not ", F.d));
    if (static_cast<int64_t>(F.values->size()) != n * F.d)
      fail(cat("kmeans: feature set ", f, ": ", F.values->size(), " values for ", n, " experts of dimension ", F.d,
               " (expected ", n * F.d, ")"));
    for (size_t i = 0; i < F.values->size(); ++i)
      if (!std::isfinite((*F.values)[i]))
        fail(cat("kmeans: feature set ", f, ": non-finite value ", (*F.values)[i], " (expert ",
                 static_cast<int64_t>(i) / F.d, ", feature ", static_cast<int64_t>(i) % F.d, ")"));
    if (!std::isfinite(F.weight) || F.weight < 0)
      fail(cat("kmeans: feature set ", f, ": weight ", F.weight, " is not a finite non-negative number"));
    if (!std::isfinite(F.divisor) || F.divisor < 0)
      fail(cat("kmeans: feature set ", f, ": divisor ", F.divisor, " is not a finite non-negative number"));
    weight_sum += F.weight;
  }
  if (!(weight_sum > 0)) fail("kmeans: the feature-set weights sum to 0");
  if (!o.init.empty()) {
    if (static_cast<int64_t>(o.init.size()) != k)
      fail(cat("kmeans: ", o.init.size(), " initial centres given for k = ", k));
    for (int64_t idx : o.init)
      if (idx < 0 || idx >= n) fail(cat("kmeans: initial centre ", idx, " is not an expert index (0..", n - 1, ")"));
  }
}

// k-means++ on one feature set: indices of the k initial centres in draw order.
std::vector<int64_t> kmeans_plus_plus(const std::vector<double>& X, int64_t n, int64_t d, int64_t k,
                                      std::mt19937_64& rng) {
  std::vector<int64_t> chosen;
  chosen.reserve(static_cast<size_t>(k));
  std::vector<char> is_chosen(static_cast<size_t>(n), 0);
  const int64_t first = std::min<int64_t>(static_cast<int64_t>(unit(rng) * static_cast<double>(n)), n - 1);
  chosen.push_back(first);
  is_chosen[first] = 1;
  std::vector<double> nearest(static_cast<size_t>(n), kInf);  // distance to the nearest chosen centre
  while (static_cast<int64_t>(chosen.size()) < k) {
    const int64_t last = chosen.back();
    double total = 0.0;
    std::vector<double> w(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      nearest[i] = std::min(nearest[i], euclidean(X.data() + i * d, X.data() + last * d, d));
      w[i] = nearest[i] * nearest[i];
      total += w[i];
    }
    int64_t next = -1;
    if (total > 0 && std::isfinite(total)) {
      const double target = unit(rng) * total;
      double acc = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        if (w[i] <= 0) continue;
        acc += w[i];
        next = i;  // the last positive weight is the fallback for rounding at the top end
        if (target < acc) break;
      }
    } else {
      // Every point sits on a chosen centre: draw uniformly among the points not chosen yet.
      std::vector<int64_t> unchosen;
      for (int64_t i = 0; i < n; ++i)
        if (!is_chosen[i]) unchosen.push_back(i);
      const int64_t pick = std::min<int64_t>(static_cast<int64_t>(unit(rng) * static_cast<double>(unchosen.size())),
                                             static_cast<int64_t>(unchosen.size()) - 1);
      next = unchosen[pick];
    }
    chosen.push_back(next);
    is_chosen[next] = 1;
  }
  return chosen;
}

// cdist(X, C) / d, standardised per column (std with n−1 divisor, + 1e-6), shifted to minimum 0,
// added with weight w into acc (n × k).
void add_standardised(const std::vector<double>& X, const std::vector<double>& C, int64_t n, int64_t d, int64_t k,
                      double w, double divisor, std::vector<double>& acc) {
  std::vector<double> D(static_cast<size_t>(n * k));
  const double div = divisor > 0 ? divisor : static_cast<double>(d);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < k; ++c)
      D[i * k + c] = euclidean(X.data() + i * d, C.data() + c * d, d) / div;
  for (int64_t c = 0; c < k; ++c) {
    double mean = 0.0;
    for (int64_t i = 0; i < n; ++i) mean += D[i * k + c];
    mean /= static_cast<double>(n);
    double var = 0.0;
    for (int64_t i = 0; i < n; ++i) var += (D[i * k + c] - mean) * (D[i * k + c] - mean);
    const double sd = n > 1 ? std::sqrt(var / static_cast<double>(n - 1)) : 0.0;
    for (int64_t i = 0; i < n; ++i) D[i * k + c] = (D[i * k + c] - mean) / (sd + 1e-6);
  }
  const double lo = *std::min_element(D.begin(), D.end());
  for (size_t t = 0; t < D.size(); ++t) acc[t] += w * (D[t] - lo);
}

// Means of each cluster's members, per feature set (k × d_f). Every cluster has a member here.
std::vector<std::vector<double>> means(const std::vector<KMeansFeatures>& features, const std::vector<int64_t>& assign,
                                       int64_t n, int64_t k) {
  std::vector<int64_t> count(static_cast<size_t>(k), 0);
  for (int64_t i = 0; i < n; ++i) ++count[assign[i]];
  std::vector<std::vector<double>> out;
  for (const KMeansFeatures& F : features) {
    const std::vector<double>& X = *F.values;
    std::vector<double> C(static_cast<size_t>(k * F.d), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < F.d; ++c) C[assign[i] * F.d + c] += X[i * F.d + c];
    for (int64_t j = 0; j < k; ++j)
      for (int64_t c = 0; c < F.d; ++c) C[j * F.d + c] /= static_cast<double>(count[j]);
    out.push_back(std::move(C));
  }
  return out;
}

}  // namespace

KMeansResult kmeans(const std::vector<double>& X, int64_t n, int64_t d, int64_t k, const KMeansOptions& options) {
  return kmeans(std::vector<KMeansFeatures>{KMeansFeatures{&X, d, 1.0, 0.0}}, n, k, options);
}

KMeansResult kmeans(const std::vector<KMeansFeatures>& features, int64_t n, int64_t k, const KMeansOptions& options) {
  check(features, n, k, options);
  KMeansResult res;
  std::mt19937_64 rng(options.seed);
  const KMeansFeatures& first = features.front();
  res.initial = options.init.empty() ? kmeans_plus_plus(*first.values, n, first.d, k, rng) : options.init;

  // Centres per feature set: the rows of the initial indices.
  std::vector<std::vector<double>> centers;
  for (const KMeansFeatures& F : features) {
    std::vector<double> C(static_cast<size_t>(k * F.d));
    for (int64_t j = 0; j < k; ++j)
      std::copy_n(F.values->data() + res.initial[j] * F.d, F.d, C.data() + j * F.d);
    centers.push_back(std::move(C));
  }
  double weight_sum = 0.0;
  for (const KMeansFeatures& F : features) weight_sum += F.weight;

  std::vector<int64_t> assign(static_cast<size_t>(n), 0);
  std::vector<std::vector<double>> updated;
  for (int64_t it = 0; it < options.max_iter; ++it) {
    res.iterations = it + 1;
    std::vector<double> D(static_cast<size_t>(n * k), 0.0);
    for (size_t f = 0; f < features.size(); ++f)
      add_standardised(*features[f].values, centers[f], n, features[f].d, k, features[f].weight / weight_sum,
                       features[f].divisor, D);
    std::vector<int64_t> count(static_cast<size_t>(k), 0);
    for (int64_t i = 0; i < n; ++i) {
      int64_t best = 0;
      for (int64_t c = 1; c < k; ++c)
        if (D[i * k + c] < D[i * k + best]) best = c;
      assign[i] = best;
      ++count[best];
    }
    // Re-seed empty clusters with the point farthest from its own centre (from a cluster of >= 2).
    for (int64_t j = 0; j < k; ++j) {
      if (count[j] > 0) continue;
      int64_t pick = -1;
      for (int64_t i = 0; i < n; ++i) {
        if (count[assign[i]] < 2) continue;
        if (pick < 0 || D[i * k + assign[i]] > D[pick * k + assign[pick]]) pick = i;
      }
      --count[assign[pick]];
      assign[pick] = j;
      count[j] = 1;
      ++res.reseeded;
    }
    updated = means(features, assign, n, k);
    double max_diff = 0.0;
    for (size_t f = 0; f < features.size(); ++f)
      for (size_t t = 0; t < updated[f].size(); ++t)
        max_diff = std::max(max_diff, std::abs(updated[f][t] - centers[f][t]));
    if (max_diff < options.tol) {
      res.converged = true;
      break;
    }
    centers = updated;
  }

  // Dominant expert: the member nearest the final centre (Σ over feature sets of the distance).
  std::vector<int64_t> dominant(static_cast<size_t>(k), -1);
  std::vector<double> best_dist(static_cast<size_t>(k), kInf);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = assign[i];
    double dist = 0.0;
    for (size_t f = 0; f < features.size(); ++f) {
      const int64_t d = features[f].d;
      dist += euclidean(features[f].values->data() + i * d, updated[f].data() + j * d, d);
    }
    if (dominant[j] < 0 || dist < best_dist[j]) {
      dominant[j] = i;
      best_dist[j] = dist;
    }
  }

  // Renumber the clusters by their lowest member.
  std::vector<int64_t> relabel(static_cast<size_t>(k), -1);
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i)
    if (relabel[assign[i]] < 0) relabel[assign[i]] = next++;
  res.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) res.labels[i] = relabel[assign[i]];
  res.dominant.assign(static_cast<size_t>(k), -1);
  res.centers.assign(static_cast<size_t>(k * first.d), 0.0);
  for (int64_t j = 0; j < k; ++j) {
    res.dominant[relabel[j]] = dominant[j];
    std::copy_n(updated[0].data() + j * first.d, first.d, res.centers.data() + relabel[j] * first.d);
  }
  return res;
}

}  // namespace mf::merge
