// HEMoE step (f): place M neuron modules into N experts and choose which experts serve each of
// D domains, maximising  Σ_j Σ_d y[j,d] · Σ_m s[m,d] x[m,j]  subject to
//   Σ_j x[m,j] = 1,  lo ≤ Σ_m x[m,j] ≤ hi,  Σ_d y[j,d] ≥ 1,  Σ_j y[j,d] ≤ per_domain.
// Two solvers: the linearised MIP on CBC (z[m,j,d] ≤ x[m,j], z ≤ y[j,d]; exact given time), and
// a fast alternating solver (default) — see docs/split.md for the algorithm and the bound.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mf {

struct PlacementProblem {
  int M = 0, N = 0, D = 0;
  std::vector<double> scores;  // [M*D], module scores s[m,d] >= 0
  int lo = 0, hi = 0;          // modules per expert
  int per_domain = 0;          // max experts per domain (coherence)

  // Bounds as the reference computes them (Python round = half to even):
  // avg = M // N, lo = max(round(avg/√R), 1), hi = round(avg·√R), per_domain = round((N // D)·l).
  // Throws mf::Error for N < D, negative scores or infeasible bounds.
  static PlacementProblem make(std::vector<double> scores, int M, int D, int N, double R, double l);
  double score(int m, int d) const { return scores[static_cast<size_t>(m) * D + d]; }
};

struct Placement {
  std::vector<int32_t> expert_of_module;  // [M]
  std::vector<uint8_t> serves;            // [N*D], y[j,d]
  double objective = 0;
};

struct PlacementReport {
  Placement best;
  double upper_bound = 0;  // valid bound on the optimum (see placement_upper_bound)
  double gap = 0;          // (upper_bound - objective) / upper_bound
  double lp_bound = 0;     // LP relaxation of the linearised MIP (= Σ s, see docs)
  double solver_bound = 0; // CBC's best possible value at stop (CBC only; else = upper_bound)
  double seconds = 0;      // wall-clock
  double cpu_seconds = 0;  // process CPU time spent in the solver (single-threaded)
  int64_t iterations = 0;  // fast: local-search starts; CBC: 0
  bool proven_optimal = false;
  std::string solver;      // "fast" | "cbc"
};

double placement_objective(const PlacementProblem& p, const Placement& s);
// Throws mf::Error naming the first violated constraint.
void check_placement(const PlacementProblem& p, const Placement& s);
// min over {Σ_{m,d} s[m,d] (LP bound), Σ_d top-k_d of s[:,d] with k_d = min(M, per_domain·hi, M-(N-per_domain)·lo)}.
double placement_upper_bound(const PlacementProblem& p);

// For fixed y: the exact optimal x (bounded transportation, min-cost flow).
Placement best_modules_for(const PlacementProblem& p, const std::vector<uint8_t>& serves);
// For fixed x: the exact optimal y (b-matching with coverage, min-cost flow).
std::vector<uint8_t> best_domains_for(const PlacementProblem& p, const std::vector<int32_t>& expert_of_module);

struct FastPlacementOptions {
  uint64_t seed = 42;
  int max_starts = 48;        // starts (1 structured + random / perturbed); deterministic if time allows
  double time_limit_s = 10;   // hard cap per layer
};
PlacementReport solve_placement_fast(const PlacementProblem& p, const FastPlacementOptions& o = {});

struct CbcPlacementOptions {
  double time_limit_s = 300;
  bool cpu_time = false;  // limit counts CPU seconds (CBC's own default) instead of wall-clock
  bool log = false;
  const Placement* warm_start = nullptr;  // optional MIP start
};
PlacementReport solve_placement_cbc(const PlacementProblem& p, const CbcPlacementOptions& o = {});

}  // namespace mf
