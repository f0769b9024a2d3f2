#include "split/hemoe_placement.h"

#include <coin/Cbc_C_Interface.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <functional>

#include "split/min_cost_flow.h"
#include "util/error.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// Python's round(): half to even.
int py_round(double v) { return static_cast<int>(std::nearbyint(v)); }

}  // namespace

PlacementProblem PlacementProblem::make(std::vector<double> scores, int M, int D, int N, double R, double l) {
  if (M <= 0 || N <= 0 || D <= 0) fail(cat("hemoe: need M, N, D > 0 (got ", M, ", ", N, ", ", D, ")"));
  if (static_cast<int64_t>(scores.size()) != static_cast<int64_t>(M) * D)
    fail(cat("hemoe: scores have ", scores.size(), " values, expected M*D = ", static_cast<int64_t>(M) * D));
  if (N < D) fail(cat("hemoe: the coherence constraint needs N >= D (N=", N, ", D=", D, ")"));
  if (R < 1) fail(cat("hemoe: size ratio R must be >= 1 (got ", R, ")"));
  for (double s : scores)
    if (!(s >= 0) || !std::isfinite(s)) fail("hemoe: module scores must be finite and >= 0 (the linearisation relies on it)");
  PlacementProblem p;
  p.M = M, p.N = N, p.D = D;
  p.scores = std::move(scores);
  int avg = M / N;
  p.lo = std::max(py_round(avg / std::sqrt(R)), 1);
  p.hi = py_round(avg * std::sqrt(R));
  p.per_domain = py_round((N / D) * l);
  if (static_cast<int64_t>(p.lo) * N > M || static_cast<int64_t>(p.hi) * N < M)
    fail(cat("hemoe: sizes ", p.lo, "..", p.hi, " modules per expert cannot hold M=", M, " modules in N=", N, " experts"));
  if (p.per_domain < 1 || static_cast<int64_t>(p.per_domain) * D < N)
    fail(cat("hemoe: at most ", p.per_domain, " experts per domain cannot cover N=", N, " experts with D=", D,
             " domains (raise l)"));
  return p;
}

double placement_objective(const PlacementProblem& p, const Placement& s) {
  double obj = 0;
  for (int m = 0; m < p.M; ++m) {
    int j = s.expert_of_module[m];
    for (int d = 0; d < p.D; ++d)
      if (s.serves[static_cast<size_t>(j) * p.D + d]) obj += p.score(m, d);
  }
  return obj;
}

void check_placement(const PlacementProblem& p, const Placement& s) {
  if (static_cast<int>(s.expert_of_module.size()) != p.M) fail("hemoe: placement has the wrong number of modules");
  if (static_cast<int64_t>(s.serves.size()) != static_cast<int64_t>(p.N) * p.D) fail("hemoe: y has the wrong shape");
  std::vector<int> size(p.N, 0);
  for (int m = 0; m < p.M; ++m) {
    int j = s.expert_of_module[m];
    if (j < 0 || j >= p.N) fail(cat("hemoe: module ", m, " placed in expert ", j));
    ++size[j];
  }
  for (int j = 0; j < p.N; ++j) {
    if (size[j] < p.lo || size[j] > p.hi)
      fail(cat("hemoe: expert ", j, " has ", size[j], " modules, bounds ", p.lo, "..", p.hi));
    int nd = 0;
    for (int d = 0; d < p.D; ++d) nd += s.serves[static_cast<size_t>(j) * p.D + d] ? 1 : 0;
    if (nd < 1) fail(cat("hemoe: expert ", j, " serves no domain"));
  }
  for (int d = 0; d < p.D; ++d) {
    int ne = 0;
    for (int j = 0; j < p.N; ++j) ne += s.serves[static_cast<size_t>(j) * p.D + d] ? 1 : 0;
    if (ne > p.per_domain) fail(cat("hemoe: domain ", d, " served by ", ne, " experts, at most ", p.per_domain));
  }
}

double placement_upper_bound(const PlacementProblem& p) {
  double lp = 0, per = 0;
  int k = std::min({p.M, p.per_domain * p.hi, p.M - (p.N - std::min(p.N, p.per_domain)) * p.lo});
  std::vector<double> col(p.M);
  for (int d = 0; d < p.D; ++d) {
    for (int m = 0; m < p.M; ++m) col[m] = p.score(m, d), lp += col[m];
    std::partial_sort(col.begin(), col.begin() + k, col.end(), std::greater<double>());
    for (int i = 0; i < k; ++i) per += col[i];
  }
  return std::min(lp, per);
}

Placement best_modules_for(const PlacementProblem& p, const std::vector<uint8_t>& serves) {
  std::vector<double> value(static_cast<size_t>(p.M) * p.N, 0);
  for (int m = 0; m < p.M; ++m)
    for (int j = 0; j < p.N; ++j) {
      double v = 0;
      for (int d = 0; d < p.D; ++d)
        if (serves[static_cast<size_t>(j) * p.D + d]) v += p.score(m, d);
      value[static_cast<size_t>(m) * p.N + j] = v;
    }
  Placement s;
  s.expert_of_module = max_value_assignment(value, p.M, p.N, std::vector<int>(p.N, p.lo), std::vector<int>(p.N, p.hi));
  s.serves = serves;
  s.objective = placement_objective(p, s);
  return s;
}

std::vector<uint8_t> best_domains_for(const PlacementProblem& p, const std::vector<int32_t>& expert_of_module) {
  std::vector<double> e(static_cast<size_t>(p.N) * p.D, 0);  // expert-domain scores
  double total = 0;
  for (int m = 0; m < p.M; ++m)
    for (int d = 0; d < p.D; ++d) e[static_cast<size_t>(expert_of_module[m]) * p.D + d] += p.score(m, d), total += p.score(m, d);
  // Nodes: S, domains, experts, T. Each expert's first unit goes through a -big arc, so coverage
  // (every expert serves >= 1 domain) wins over any score; then scores decide.
  const double big = 2 * total + 1;
  int S = 0, T = 1 + p.D + p.N;
  MinCostFlow g(T + 1);
  for (int d = 0; d < p.D; ++d) g.add_arc(S, 1 + d, p.per_domain, 0);
  std::vector<int> arc(static_cast<size_t>(p.N) * p.D);
  for (int d = 0; d < p.D; ++d)
    for (int j = 0; j < p.N; ++j) arc[static_cast<size_t>(j) * p.D + d] = g.add_arc(1 + d, 1 + p.D + j, 1, -e[static_cast<size_t>(j) * p.D + d]);
  for (int j = 0; j < p.N; ++j) {
    g.add_arc(1 + p.D + j, T, 1, -big);
    if (p.D > 1) g.add_arc(1 + p.D + j, T, p.D - 1, 0);
  }
  g.solve(S, T, static_cast<int64_t>(p.per_domain) * p.D, /*stop_at_nonnegative=*/true);
  std::vector<uint8_t> y(static_cast<size_t>(p.N) * p.D, 0);
  for (size_t k = 0; k < y.size(); ++k) y[k] = g.flow(arc[k]) > 0;
  return y;
}

namespace {

// Makes every expert serve >= 1 domain by taking slots from experts that serve several.
void repair_coverage(const PlacementProblem& p, std::vector<uint8_t>& y, Rng& rng) {
  auto count_j = [&](int j) {
    int c = 0;
    for (int d = 0; d < p.D; ++d) c += y[static_cast<size_t>(j) * p.D + d];
    return c;
  };
  auto count_d = [&](int d) {
    int c = 0;
    for (int j = 0; j < p.N; ++j) c += y[static_cast<size_t>(j) * p.D + d];
    return c;
  };
  for (int j = 0; j < p.N; ++j) {
    if (count_j(j) > 0) continue;
    int start = static_cast<int>(rng.below(p.D));
    bool done = false;
    for (int t = 0; t < p.D && !done; ++t) {  // a domain with a free slot
      int d = (start + t) % p.D;
      if (count_d(d) < p.per_domain) y[static_cast<size_t>(j) * p.D + d] = 1, done = true;
    }
    for (int t = 0; t < p.D && !done; ++t) {  // or steal from a multi-domain expert
      int d = (start + t) % p.D;
      for (int a = 0; a < p.N && !done; ++a)
        if (y[static_cast<size_t>(a) * p.D + d] && count_j(a) >= 2) {
          y[static_cast<size_t>(a) * p.D + d] = 0;
          y[static_cast<size_t>(j) * p.D + d] = 1;
          done = true;
        }
    }
  }
}

std::vector<uint8_t> random_domains(const PlacementProblem& p, Rng& rng) {
  std::vector<uint8_t> y(static_cast<size_t>(p.N) * p.D, 0);
  std::vector<int> perm(p.N);
  for (int d = 0; d < p.D; ++d) {
    for (int j = 0; j < p.N; ++j) perm[j] = j;
    for (int k = 0; k < p.per_domain && k < p.N; ++k) {
      int r = k + static_cast<int>(rng.below(p.N - k));
      std::swap(perm[k], perm[r]);
      y[static_cast<size_t>(perm[k]) * p.D + d] = 1;
    }
  }
  repair_coverage(p, y, rng);
  return y;
}

}  // namespace

PlacementReport solve_placement_fast(const PlacementProblem& p, const FastPlacementOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  double c0 = cpu_now();
  Rng rng(o.seed);
  PlacementReport rep;
  rep.solver = "fast";
  rep.upper_bound = placement_upper_bound(p);
  for (double s : p.scores) rep.lp_bound += s;
  double total = rep.lp_bound;
  const double eps = 1e-12 * (total + 1);
  bool have_best = false;
  auto time_up = [&] { return seconds_since(t0) > o.time_limit_s; };
  auto count_j = [&](const std::vector<uint8_t>& y, int j) {
    int c = 0;
    for (int d = 0; d < p.D; ++d) c += y[static_cast<size_t>(j) * p.D + d];
    return c;
  };

  // Block-coordinate ascent (exact x | y, exact y | x) plus first-improvement local search over
  // y: swap one expert of a domain for another (or add one to an unsaturated domain), each
  // candidate scored with its exact optimal x.
  auto improve = [&](std::vector<uint8_t> y) {
    Placement cur = best_modules_for(p, y);
    while (!time_up()) {
      Placement alt = best_modules_for(p, best_domains_for(p, cur.expert_of_module));
      if (alt.objective > cur.objective + eps) {
        cur = std::move(alt);
        continue;
      }
      bool improved = false;
      y = cur.serves;
      for (int d = 0; d < p.D && !improved && !time_up(); ++d) {
        int served = 0;
        for (int j = 0; j < p.N; ++j) served += y[static_cast<size_t>(j) * p.D + d];
        for (int a = -1; a < p.N && !improved; ++a) {  // a = -1: add without removing
          if (a >= 0 && (!y[static_cast<size_t>(a) * p.D + d] || count_j(y, a) < 2)) continue;
          if (a < 0 && served >= p.per_domain) continue;
          for (int b = 0; b < p.N && !improved; ++b) {
            if (y[static_cast<size_t>(b) * p.D + d]) continue;
            std::vector<uint8_t> cand = y;
            if (a >= 0) cand[static_cast<size_t>(a) * p.D + d] = 0;
            cand[static_cast<size_t>(b) * p.D + d] = 1;
            Placement c = best_modules_for(p, cand);
            if (c.objective > cur.objective + eps) cur = std::move(c), improved = true;
          }
        }
      }
      if (!improved) break;
    }
    return cur;
  };

  for (int start = 0; start < o.max_starts && !(start > 0 && time_up()); ++start) {
    std::vector<uint8_t> y;
    if (start == 0) {  // structured: domain d served by experts d*c, d*c+1, ... (mod N)
      y.assign(static_cast<size_t>(p.N) * p.D, 0);
      for (int d = 0; d < p.D; ++d)
        for (int k = 0; k < p.per_domain; ++k) y[static_cast<size_t>((d * p.per_domain + k) % p.N) * p.D + d] = 1;
      repair_coverage(p, y, rng);
    } else if (start % 2 == 1 || !have_best) {
      y = random_domains(p, rng);
    } else {  // perturb the incumbent: move two random domain slots
      y = rep.best.serves;
      for (int r = 0; r < 2; ++r) {
        int d = static_cast<int>(rng.below(p.D));
        std::vector<int> in, out;
        for (int j = 0; j < p.N; ++j) (y[static_cast<size_t>(j) * p.D + d] ? in : out).push_back(j);
        if (in.empty() || out.empty()) continue;
        y[static_cast<size_t>(in[rng.below(in.size())]) * p.D + d] = 0;
        y[static_cast<size_t>(out[rng.below(out.size())]) * p.D + d] = 1;
      }
      repair_coverage(p, y, rng);
    }
    Placement cand = improve(y);
    ++rep.iterations;
    if (!have_best || cand.objective > rep.best.objective + eps) rep.best = std::move(cand), have_best = true;
  }
  rep.solver_bound = rep.upper_bound;
  rep.gap = rep.upper_bound > 0 ? (rep.upper_bound - rep.best.objective) / rep.upper_bound : 0;
  rep.proven_optimal = rep.gap <= 1e-12;
  rep.seconds = seconds_since(t0);
  rep.cpu_seconds = cpu_now() - c0;
  return rep;
}

PlacementReport solve_placement_cbc(const PlacementProblem& p, const CbcPlacementOptions& o) {
  auto t0 = std::chrono::steady_clock::now();
  double c0 = cpu_now();
  const int M = p.M, N = p.N, D = p.D;
  auto xi = [&](int m, int j) { return m * N + j; };
  auto yi = [&](int j, int d) { return M * N + j * D + d; };
  auto zi = [&](int m, int j, int d) { return M * N + N * D + (m * N + j) * D + d; };
  Cbc_Model* model = Cbc_newModel();
  Cbc_setLogLevel(model, o.log ? 1 : 0);
  Cbc_setObjSense(model, -1);  // maximise
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < N; ++j) Cbc_addCol(model, "", 0, 1, 0, 1, 0, nullptr, nullptr);
  for (int j = 0; j < N; ++j)
    for (int d = 0; d < D; ++d) Cbc_addCol(model, "", 0, 1, 0, 1, 0, nullptr, nullptr);
  // z is continuous: with x, y binary and a maximised non-negative objective, z = x·y at optimum.
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < N; ++j)
      for (int d = 0; d < D; ++d) Cbc_addCol(model, "", 0, 1, p.score(m, d), 0, 0, nullptr, nullptr);
  std::vector<int> cols;
  std::vector<double> coef;
  auto row = [&](char sense, double rhs) {
    Cbc_addRow(model, "", static_cast<int>(cols.size()), cols.data(), coef.data(), sense, rhs);
    cols.clear(), coef.clear();
  };
  for (int m = 0; m < M; ++m) {
    for (int j = 0; j < N; ++j) cols.push_back(xi(m, j)), coef.push_back(1);
    row('E', 1);
  }
  for (int j = 0; j < N; ++j) {
    for (int m = 0; m < M; ++m) cols.push_back(xi(m, j)), coef.push_back(1);
    row('G', p.lo);
    for (int m = 0; m < M; ++m) cols.push_back(xi(m, j)), coef.push_back(1);
    row('L', p.hi);
    for (int d = 0; d < D; ++d) cols.push_back(yi(j, d)), coef.push_back(1);
    row('G', 1);
  }
  for (int d = 0; d < D; ++d) {
    for (int j = 0; j < N; ++j) cols.push_back(yi(j, d)), coef.push_back(1);
    row('L', p.per_domain);
  }
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < N; ++j)
      for (int d = 0; d < D; ++d) {
        cols = {zi(m, j, d), xi(m, j)}, coef = {1, -1};
        row('L', 0);
        cols = {zi(m, j, d), yi(j, d)}, coef = {1, -1};
        row('L', 0);
      }
  if (o.warm_start) {
    const Placement& w = *o.warm_start;
    std::vector<int> idx;
    std::vector<double> val;
    for (int m = 0; m < M; ++m)
      for (int j = 0; j < N; ++j) idx.push_back(xi(m, j)), val.push_back(w.expert_of_module[m] == j);
    for (int j = 0; j < N; ++j)
      for (int d = 0; d < D; ++d) idx.push_back(yi(j, d)), val.push_back(w.serves[j * D + d] ? 1 : 0);
    for (int m = 0; m < M; ++m)
      for (int j = 0; j < N; ++j)
        for (int d = 0; d < D; ++d)
          idx.push_back(zi(m, j, d)), val.push_back(w.expert_of_module[m] == j && w.serves[j * D + d] ? 1 : 0);
    Cbc_setMIPStartI(model, static_cast<int>(idx.size()), idx.data(), val.data());
  }
  Cbc_setMaximumSeconds(model, o.time_limit_s);
  Cbc_setParameter(model, "threads", "1");
  if (!o.cpu_time) Cbc_setParameter(model, "timeMode", "elapsed");
  Cbc_solve(model);
  PlacementReport rep;
  rep.solver = "cbc";
  rep.upper_bound = placement_upper_bound(p);
  for (double s : p.scores) rep.lp_bound += s;
  const double* sol = Cbc_bestSolution(model);
  if (!sol) {
    Cbc_deleteModel(model);
    fail(cat("hemoe: CBC found no feasible placement within ", o.time_limit_s, " s"));
  }
  rep.best.expert_of_module.assign(M, 0);
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < N; ++j)
      if (sol[xi(m, j)] > 0.5) rep.best.expert_of_module[m] = j;
  rep.best.serves.assign(static_cast<size_t>(N) * D, 0);
  for (int j = 0; j < N; ++j)
    for (int d = 0; d < D; ++d) rep.best.serves[j * D + d] = sol[yi(j, d)] > 0.5;
  rep.best.objective = placement_objective(p, rep.best);
  rep.solver_bound = std::abs(Cbc_getBestPossibleObjValue(model));
  rep.proven_optimal = Cbc_isProvenOptimal(model) != 0;
  Cbc_deleteModel(model);
  rep.upper_bound = std::min(rep.upper_bound, std::max(rep.solver_bound, rep.best.objective));
  if (rep.proven_optimal) rep.upper_bound = rep.best.objective;
  rep.gap = rep.upper_bound > 0 ? (rep.upper_bound - rep.best.objective) / rep.upper_bound : 0;
  rep.seconds = seconds_since(t0);
  rep.cpu_seconds = cpu_now() - c0;
  return rep;
}

}  // namespace mf
