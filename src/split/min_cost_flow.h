// Min-cost flow by successive shortest paths (Dijkstra on reduced costs, Johnson potentials,
// Bellman-Ford once at the start so negative arc costs are allowed as long as there is no
// negative cycle). Integer capacities, double costs. Small graphs only (HEMoE placement:
// ~140 nodes, ~1.2k arcs; every augmentation is one Dijkstra).
#pragma once
#include <cstdint>
#include <vector>

namespace mf {

class MinCostFlow {
 public:
  explicit MinCostFlow(int num_nodes);
  // Returns the arc id (for flow()).
  int add_arc(int from, int to, int64_t capacity, double cost);
  struct Result {
    int64_t flow = 0;
    double cost = 0;
  };
  // Sends up to max_flow units from s to t at minimum cost. With stop_at_nonnegative, stops
  // as soon as the cheapest augmenting path costs >= 0 (min-cost flow of any amount ≤ max_flow).
  Result solve(int s, int t, int64_t max_flow, bool stop_at_nonnegative = false);
  int64_t flow(int arc) const;

 private:
  struct Arc {
    int to;
    int64_t cap;
    double cost;
  };
  int n_;
  std::vector<Arc> arcs_;           // arc 2k forward, 2k+1 reverse
  std::vector<std::vector<int>> adj_;
  std::vector<int64_t> cap0_;
};

// Bounded transportation: assign each of `rows` items to exactly one of `cols` bins maximising
// Σ value[i*cols + bin(i)] subject to lo[j] ≤ |bin j| ≤ hi[j]. Exact. Returns bin per item;
// throws mf::Error when the bounds admit no assignment.
std::vector<int32_t> max_value_assignment(const std::vector<double>& value, int rows, int cols,
                                          const std::vector<int>& lo, const std::vector<int>& hi);

}  // namespace mf
