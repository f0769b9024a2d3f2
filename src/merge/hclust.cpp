#include "merge/hclust.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "util/error.h"
#include "util/str.h"

namespace mf::merge {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// One merge before relabelling: two slots (point indices standing for their current clusters).
struct RawMerge {
  int64_t a = 0, b = 0;
  double height = 0;
};

void check_features(const std::vector<double>& X, int64_t n, int64_t d, const char* what) {
  if (n < 1) fail(cat(what, ": no experts to cluster (n = ", n, ")"));
  if (d < 1) fail(cat(what, ": the feature dimension must be at least 1, not ", d));
  if (static_cast<int64_t>(X.size()) != n * d)
    fail(cat(what, ": ", X.size(), " feature values for ", n, " experts of dimension ", d, " (expected ", n * d, ")"));
  for (size_t i = 0; i < X.size(); ++i)
    if (!std::isfinite(X[i]))
      fail(cat(what, ": non-finite feature value ", X[i], " (expert ", static_cast<int64_t>(i) / d, ", feature ",
               static_cast<int64_t>(i) % d, ")"));
}

// SciPy's Lance–Williams updates (scipy/cluster/_hierarchy_distance_update.pxi), with the same
// order of floating-point operations: the distance from cluster i to the union of x and y.
double new_distance(Linkage method, double d_xi, double d_yi, double d_xy, int64_t nx, int64_t ny, int64_t ni) {
  switch (method) {
    case Linkage::Single:
      return std::min(d_xi, d_yi);
    case Linkage::Complete:
      return std::max(d_xi, d_yi);
    case Linkage::Average:
      return (static_cast<double>(nx) * d_xi + static_cast<double>(ny) * d_yi) / static_cast<double>(nx + ny);
    case Linkage::Ward: {
      const double t = 1.0 / static_cast<double>(nx + ny + ni);
      const double v = static_cast<double>(ni + nx) * t * d_xi * d_xi + static_cast<double>(ni + ny) * t * d_yi * d_yi -
                       static_cast<double>(ni) * t * d_xy * d_xy;
      // Non-negative in exact arithmetic for Euclidean input; clamp the rounding (SciPy gives NaN).
      return std::sqrt(std::max(v, 0.0));
    }
  }
  return 0.0;
}

// scipy _hierarchy.nn_chain: the nearest-neighbour chain. D is the full n×n matrix (modified).
std::vector<RawMerge> nn_chain(std::vector<double>& D, int64_t n, Linkage method) {
  std::vector<RawMerge> rows(static_cast<size_t>(n - 1));
  std::vector<int64_t> size(static_cast<size_t>(n), 1);
  std::vector<int64_t> chain;
  chain.reserve(static_cast<size_t>(n));
  int64_t y = 0;
  for (int64_t k = 0; k < n - 1; ++k) {
    if (chain.empty()) {
      for (int64_t i = 0; i < n; ++i)
        if (size[i] > 0) {
          chain.push_back(i);
          break;
        }
    }
    int64_t x = 0;
    double current_min = kInf;
    // Walk the chain of nearest neighbours until two clusters are each other's nearest.
    for (;;) {
      x = chain.back();
      const bool has_prev = chain.size() > 1;
      // Prefer the previous element of the chain on ties, so the walk cannot cycle.
      if (has_prev) {
        y = chain[chain.size() - 2];
        current_min = D[x * n + y];
      } else {
        current_min = kInf;
      }
      for (int64_t i = 0; i < n; ++i) {
        if (size[i] == 0 || i == x) continue;
        const double dist = D[x * n + i];
        if (dist < current_min) {
          current_min = dist;
          y = i;
        }
      }
      if (has_prev && y == chain[chain.size() - 2]) break;
      chain.push_back(y);
    }
    chain.pop_back();
    chain.pop_back();
    int64_t a = x, b = y;
    if (a > b) std::swap(a, b);
    const int64_t na = size[a], nb = size[b];
    rows[k] = {a, b, current_min};
    size[a] = 0;        // cluster a is dropped
    size[b] = na + nb;  // slot b holds the union
    for (int64_t i = 0; i < n; ++i) {
      const int64_t ni = size[i];
      if (ni == 0 || i == b) continue;
      const double v = new_distance(method, D[i * n + a], D[i * n + b], current_min, na, nb, ni);
      D[i * n + b] = v;
      D[b * n + i] = v;
    }
  }
  return rows;
}

// scipy _hierarchy.mst_single_linkage: Prim's minimum spanning tree (single linkage).
std::vector<RawMerge> mst_single(const std::vector<double>& D, int64_t n) {
  std::vector<RawMerge> rows(static_cast<size_t>(n - 1));
  std::vector<char> merged(static_cast<size_t>(n), 0);
  std::vector<double> best(static_cast<size_t>(n), kInf);
  int64_t x = 0, y = 0;
  for (int64_t k = 0; k < n - 1; ++k) {
    double current_min = kInf;
    merged[x] = 1;
    for (int64_t i = 0; i < n; ++i) {
      if (merged[i]) continue;
      const double dist = D[x * n + i];
      if (best[i] > dist) best[i] = dist;
      if (best[i] < current_min) {
        y = i;
        current_min = best[i];
      }
    }
    rows[k] = {x, y, current_min};
    x = y;
  }
  return rows;
}

int64_t find_root(std::vector<int64_t>& parent, int64_t x) {
  int64_t root = x;
  while (parent[root] != root) root = parent[root];
  while (parent[x] != root) {
    const int64_t next = parent[x];
    parent[x] = root;
    x = next;
  }
  return root;
}

// Stable sort by height, then scipy's label(): cluster ids n+k in row order, smaller id first.
Dendrogram relabel(std::vector<RawMerge> rows, int64_t n) {
  std::stable_sort(rows.begin(), rows.end(),
                   [](const RawMerge& p, const RawMerge& q) { return p.height < q.height; });
  Dendrogram z;
  z.merged.reserve(rows.size());
  z.heights.reserve(rows.size());
  z.sizes.reserve(rows.size());
  const size_t total = static_cast<size_t>(2 * n - 1);
  std::vector<int64_t> parent(total), size(total, 1);
  std::iota(parent.begin(), parent.end(), int64_t{0});
  int64_t next = n;
  for (const RawMerge& row : rows) {
    const int64_t ra = find_root(parent, row.a), rb = find_root(parent, row.b);
    z.merged.push_back({std::min(ra, rb), std::max(ra, rb)});
    z.heights.push_back(row.height);
    parent[ra] = next;
    parent[rb] = next;
    size[next] = size[ra] + size[rb];
    z.sizes.push_back(size[next]);
    ++next;
  }
  return z;
}

void check_dendrogram(const Dendrogram& z, int64_t n) {
  const size_t rows = static_cast<size_t>(n - 1);
  if (z.merged.size() != rows || z.heights.size() != rows || z.sizes.size() != rows)
    fail(cat("cut_tree: the dendrogram has ", z.merged.size(), " merges (", z.heights.size(), " heights, ",
             z.sizes.size(), " sizes) for ", n, " experts (expected ", n - 1, ")"));
  std::vector<char> used(static_cast<size_t>(2 * n - 1), 0);
  for (int64_t i = 0; i < n - 1; ++i) {
    for (int64_t id : z.merged[i]) {
      if (id < 0 || id >= n + i) fail(cat("cut_tree: merge ", i, " refers to cluster ", id, ", not formed before it"));
      if (used[id]) fail(cat("cut_tree: cluster ", id, " is merged twice"));
      used[id] = 1;
    }
    if (!std::isfinite(z.heights[i])) fail(cat("cut_tree: merge ", i, " has a non-finite height"));
  }
}

}  // namespace

Linkage parse_linkage(const std::string& name) {
  if (name == "average") return Linkage::Average;
  if (name == "single") return Linkage::Single;
  if (name == "complete") return Linkage::Complete;
  if (name == "ward") return Linkage::Ward;
  fail("unknown linkage '" + name + "' (average | single | complete | ward)");
}

const char* to_string(Linkage method) {
  switch (method) {
    case Linkage::Average:
      return "average";
    case Linkage::Single:
      return "single";
    case Linkage::Complete:
      return "complete";
    case Linkage::Ward:
      return "ward";
  }
  return "?";
}

std::vector<double> pairwise_distances(const std::vector<double>& X, int64_t n, int64_t d) {
  check_features(X, n, d, "hierarchical clustering");
  std::vector<double> D(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const double* xi = X.data() + i * d;
    for (int64_t j = i + 1; j < n; ++j) {
      const double* xj = X.data() + j * d;
      double s = 0.0;
      for (int64_t c = 0; c < d; ++c) {
        const double t = xi[c] - xj[c];
        s += t * t;
      }
      const double dist = std::sqrt(s);
      D[i * n + j] = dist;
      D[j * n + i] = dist;
    }
  }
  return D;
}

Dendrogram linkage_from_distances(const std::vector<double>& D, int64_t n, Linkage method) {
  if (n < 1) fail(cat("hierarchical clustering: no experts to cluster (n = ", n, ")"));
  if (static_cast<int64_t>(D.size()) != n * n)
    fail(cat("hierarchical clustering: a distance matrix of ", D.size(), " values for ", n, " experts (expected ",
             n * n, ")"));
  // The upper triangle is the input; mirror it so both halves agree.
  std::vector<double> W(D.size(), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) {
      const double v = D[i * n + j];
      if (!std::isfinite(v) || v < 0)
        fail(cat("hierarchical clustering: distance ", v, " between experts ", i, " and ", j,
                 " is not a finite non-negative number"));
      W[i * n + j] = v;
      W[j * n + i] = v;
    }
  if (n == 1) return {};
  std::vector<RawMerge> rows = method == Linkage::Single ? mst_single(W, n) : nn_chain(W, n, method);
  return relabel(std::move(rows), n);
}

Dendrogram linkage(const std::vector<double>& X, int64_t n, int64_t d, Linkage method) {
  return linkage_from_distances(pairwise_distances(X, n, d), n, method);
}

std::vector<int64_t> cut_tree(const Dendrogram& z, int64_t n, int64_t r) {
  if (n < 1) fail(cat("cut_tree: no experts to cluster (n = ", n, ")"));
  if (r < 1 || r > n) fail(cat("cut_tree: cannot form ", r, " clusters of ", n, " experts (need 1 <= r <= ", n, ")"));
  check_dendrogram(z, n);
  const int64_t m = n - 1;

  // scipy's _order_cluster_tree: breadth-first from the root (right child queued before the left),
  // each node insort_left'ed by height, i.e. sorted by height with equal heights in reverse
  // breadth-first order. The height used is the largest in the node's subtree, equal to its own
  // for the monotone dendrograms of these linkages; it keeps every child ahead of its parent even
  // when rounding makes a parent 1 ulp lower.
  std::vector<int64_t> bfs_pos(static_cast<size_t>(m), 0);
  if (m > 0) {
    std::vector<int64_t> queue{2 * n - 2};
    int64_t seen = 0;
    for (size_t q = 0; q < queue.size(); ++q) {
      const int64_t node = queue[q];
      if (node < n) continue;
      bfs_pos[node - n] = seen++;
      queue.push_back(z.merged[node - n][1]);
      queue.push_back(z.merged[node - n][0]);
    }
  }
  std::vector<double> eff(static_cast<size_t>(m), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    double h = z.heights[i];
    for (int64_t c : z.merged[i])
      if (c >= n) h = std::max(h, eff[c - n]);
    eff[i] = h;
  }
  std::vector<int64_t> order(static_cast<size_t>(m));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::sort(order.begin(), order.end(), [&](int64_t p, int64_t q) {
    if (eff[p] != eff[q]) return eff[p] < eff[q];
    return bfs_pos[p] > bfs_pos[q];
  });

  // Apply the first n−r merges; rep[id] is a point of cluster id.
  std::vector<int64_t> rep(static_cast<size_t>(n + m)), parent(static_cast<size_t>(n));
  std::iota(parent.begin(), parent.end(), int64_t{0});
  for (int64_t i = 0; i < n; ++i) rep[i] = i;
  for (int64_t i = 0; i < m; ++i) rep[n + i] = rep[z.merged[i][0]];
  for (int64_t t = 0; t < n - r; ++t) {
    const auto& row = z.merged[order[t]];
    const int64_t a = find_root(parent, rep[row[0]]), b = find_root(parent, rep[row[1]]);
    if (a != b) parent[std::max(a, b)] = std::min(a, b);
  }
  std::vector<int64_t> labels(static_cast<size_t>(n)), label_of_root(static_cast<size_t>(n), -1);
  int64_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t root = find_root(parent, i);
    if (label_of_root[root] < 0) label_of_root[root] = next++;
    labels[i] = label_of_root[root];
  }
  return labels;
}

std::vector<int64_t> hierarchical_clusters(const std::vector<double>& X, int64_t n, int64_t d, int64_t r,
                                           Linkage method) {
  check_features(X, n, d, "hierarchical clustering");
  if (r < 1 || r > n)
    fail(cat("hierarchical clustering: cannot form ", r, " clusters of ", n, " experts (need 1 <= r <= ", n, ")"));
  return cut_tree(linkage(X, n, d, method), n, r);
}

std::vector<std::vector<int64_t>> cluster_members(const std::vector<int64_t>& labels) {
  int64_t count = 0;
  for (int64_t l : labels) {
    if (l < 0) fail(cat("cluster labels must be non-negative, not ", l));
    count = std::max(count, l + 1);
  }
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(count));
  for (size_t i = 0; i < labels.size(); ++i) members[labels[i]].push_back(static_cast<int64_t>(i));
  return members;
}

int64_t representative(const std::vector<double>& X, int64_t n, int64_t d, const std::vector<int64_t>& labels,
                       int64_t cluster) {
  check_features(X, n, d, "representative expert");
  if (static_cast<int64_t>(labels.size()) != n)
    fail(cat("representative expert: ", labels.size(), " labels for ", n, " experts"));
  std::vector<double> mean(static_cast<size_t>(d), 0.0);
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] != cluster) continue;
    ++count;
    for (int64_t c = 0; c < d; ++c) mean[c] += X[i * d + c];
  }
  if (count == 0) fail(cat("representative expert: cluster ", cluster, " has no member"));
  for (double& v : mean) v /= static_cast<double>(count);
  int64_t best = -1;
  double best_dist = kInf;
  for (int64_t i = 0; i < n; ++i) {
    if (labels[i] != cluster) continue;
    double s = 0.0;
    for (int64_t c = 0; c < d; ++c) {
      const double t = X[i * d + c] - mean[c];
      s += t * t;
    }
    if (best < 0 || s < best_dist) {
      best = i;
      best_dist = s;
    }
  }
  return best;
}

std::vector<int64_t> representatives(const std::vector<double>& X, int64_t n, int64_t d,
                                     const std::vector<int64_t>& labels) {
  const std::vector<std::vector<int64_t>> members = cluster_members(labels);
  std::vector<int64_t> reps;
  reps.reserve(members.size());
  for (size_t k = 0; k < members.size(); ++k) reps.push_back(representative(X, n, d, labels, static_cast<int64_t>(k)));
  return reps;
}

}  // namespace mf::merge
