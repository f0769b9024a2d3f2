#include "split/min_cost_flow.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <queue>

#include "util/error.h"
#include "util/str.h"

namespace mf {

MinCostFlow::MinCostFlow(int num_nodes) : n_(num_nodes), adj_(num_nodes) {}

int MinCostFlow::add_arc(int from, int to, int64_t capacity, double cost) {
  int id = static_cast<int>(arcs_.size());
  arcs_.push_back({to, capacity, cost});
  arcs_.push_back({from, 0, -cost});
  adj_[from].push_back(id);
  adj_[to].push_back(id + 1);
  cap0_.push_back(capacity);
  return id / 2;
}

int64_t MinCostFlow::flow(int arc) const { return cap0_[arc] - arcs_[2 * arc].cap; }

MinCostFlow::Result MinCostFlow::solve(int s, int t, int64_t max_flow, bool stop_at_nonnegative) {
  const double inf = std::numeric_limits<double>::infinity();
  // Bellman-Ford (queue-based) potentials from s over arcs with residual capacity.
  std::vector<double> pot(n_, inf);
  {
    std::vector<char> inq(n_, 0);
    std::deque<int> q{s};
    pot[s] = 0;
    inq[s] = 1;
    int64_t relax = 0, limit = static_cast<int64_t>(n_) * static_cast<int64_t>(arcs_.size() + 1);
    while (!q.empty()) {
      int u = q.front();
      q.pop_front();
      inq[u] = 0;
      for (int a : adj_[u]) {
        const Arc& e = arcs_[a];
        if (e.cap > 0 && pot[u] + e.cost < pot[e.to]) {
          pot[e.to] = pot[u] + e.cost;
          if (!inq[e.to]) q.push_back(e.to), inq[e.to] = 1;
        }
      }
      if (++relax > limit) fail("min-cost flow: negative cycle in the initial graph");
    }
  }
  for (double& p : pot)
    if (p == inf) p = 0;  // unreachable nodes never enter a shortest path from s
  Result res;
  std::vector<double> dist(n_);
  std::vector<int> prev_arc(n_);
  using Item = std::pair<double, int>;
  while (res.flow < max_flow) {
    std::fill(dist.begin(), dist.end(), inf);
    std::fill(prev_arc.begin(), prev_arc.end(), -1);
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> pq;
    dist[s] = 0;
    pq.push({0, s});
    while (!pq.empty()) {
      auto [d, u] = pq.top();
      pq.pop();
      if (d > dist[u]) continue;
      for (int a : adj_[u]) {
        const Arc& e = arcs_[a];
        if (e.cap <= 0) continue;
        // Reduced costs are >= 0 up to rounding; clamp tiny negatives.
        double rc = e.cost + pot[u] - pot[e.to];
        if (rc < 0) rc = 0;
        double nd = d + rc;
        if (nd < dist[e.to]) {
          dist[e.to] = nd;
          prev_arc[e.to] = a;
          pq.push({nd, e.to});
        }
      }
    }
    if (dist[t] == inf) break;
    // min(dist, dist[t]) keeps every residual reduced cost >= 0, reachable or not.
    for (int v = 0; v < n_; ++v) pot[v] += std::min(dist[v], dist[t]);
    // True path cost = pot[t] - pot[s].
    double path_cost = pot[t] - pot[s];
    if (stop_at_nonnegative && path_cost >= 0) break;
    int64_t push = max_flow - res.flow;
    for (int v = t; v != s; v = arcs_[prev_arc[v] ^ 1].to) push = std::min(push, arcs_[prev_arc[v]].cap);
    for (int v = t; v != s; v = arcs_[prev_arc[v] ^ 1].to) {
      arcs_[prev_arc[v]].cap -= push;
      arcs_[prev_arc[v] ^ 1].cap += push;
    }
    res.flow += push;
    res.cost += push * path_cost;
  }
  return res;
}

std::vector<int32_t> max_value_assignment(const std::vector<double>& value, int rows, int cols,
                                          const std::vector<int>& lo, const std::vector<int>& hi) {
  int64_t sum_lo = 0, sum_hi = 0;
  for (int j = 0; j < cols; ++j) {
    if (lo[j] < 0 || hi[j] < lo[j]) fail(cat("assignment: bin ", j, " has bounds ", lo[j], "..", hi[j]));
    sum_lo += lo[j];
    sum_hi += hi[j];
  }
  if (sum_lo > rows || sum_hi < rows)
    fail(cat("assignment: ", rows, " items cannot fill bins with total bounds ", sum_lo, "..", sum_hi));
  double vmax = -std::numeric_limits<double>::infinity(), vmin = -vmax;
  for (double v : value) vmax = std::max(vmax, v), vmin = std::min(vmin, v);
  // Successive shortest paths on the flow network source → items → bins → sink, where a bin's
  // first lo[j] units earn a bonus `big` (so every min-cost flow fills the lower bounds first).
  // Items are inserted one at a time (the Hungarian row-by-row scheme: after k insertions the
  // assignment is optimal for those k items), and the residual graph is contracted onto the bins:
  // arc a→b costs min over items q in a of (value[q,a] − value[q,b]) — moving q from a to b —
  // and Bellman-Ford on cols+1 nodes finds the shortest path (there is no negative cycle because
  // the current assignment is optimal). O(rows² · cols + rows · cols³).
  const double big = (vmax - vmin + 1) * (rows + 1);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<int32_t> bin(rows, -1);
  std::vector<std::vector<int>> members(cols);
  std::vector<int> size(cols, 0);
  std::vector<double> w(static_cast<size_t>(cols) * cols), dist(cols);
  std::vector<int> arg(static_cast<size_t>(cols) * cols), prev(cols);
  auto val = [&](int i, int j) { return value[static_cast<size_t>(i) * cols + j]; };
  for (int i = 0; i < rows; ++i) {
    std::fill(w.begin(), w.end(), inf);
    for (int a = 0; a < cols; ++a)
      for (int q : members[a])
        for (int b = 0; b < cols; ++b) {
          if (b == a) continue;
          double c = val(q, a) - val(q, b);
          if (c < w[static_cast<size_t>(a) * cols + b]) w[static_cast<size_t>(a) * cols + b] = c, arg[static_cast<size_t>(a) * cols + b] = q;
        }
    for (int a = 0; a < cols; ++a) dist[a] = vmax - val(i, a), prev[a] = -1;
    for (int round = 0; round < cols; ++round) {
      bool changed = false;
      for (int a = 0; a < cols; ++a) {
        if (dist[a] == inf) continue;
        for (int b = 0; b < cols; ++b) {
          double c = w[static_cast<size_t>(a) * cols + b];
          if (c < inf && dist[a] + c < dist[b] - 1e-12 * (std::abs(dist[b]) + 1)) dist[b] = dist[a] + c, prev[b] = a, changed = true;
        }
      }
      if (!changed) break;
    }
    int end = -1;
    double best = inf;
    for (int b = 0; b < cols; ++b) {
      if (size[b] >= hi[b]) continue;
      double t = dist[b] + (size[b] < lo[b] ? -big : 0.0);
      if (t < best) best = t, end = b;
    }
    if (end < 0) fail("assignment: no feasible assignment");
    // Walk back: each hop a→b moves its argmin item from a to b; the new item enters the first bin.
    ++size[end];
    int b = end;
    while (prev[b] >= 0) {
      int a = prev[b];
      int q = arg[static_cast<size_t>(a) * cols + b];
      auto& ma = members[a];
      ma.erase(std::find(ma.begin(), ma.end(), q));
      members[b].push_back(q);
      bin[q] = b;
      b = a;
    }
    members[b].push_back(i);
    bin[i] = b;
  }
  return bin;
}

}  // namespace mf
