// MoEfication co-activation split (adj.py → gpmetis → trans_gp.py): threshold the co-activation
// counts at the smallest non-zero decile (×0.99), keep edges with weight floor(adj/thr) >= 1,
// k-way partition with METIS, then rebalance to exactly F/N by moving random surplus neurons
// from oversize to undersize experts (seeded), as the reference does.
#include <metis.h>

#include <algorithm>
#include <cmath>

#include "split/method_registry.h"
#include "split/split.h"
#include "util/error.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

Partition split_moefication_coact(const at::Tensor& coactivation, int n, uint64_t seed) {
  if (!coactivation.defined() || coactivation.dim() != 2 || coactivation.size(0) != coactivation.size(1))
    fail("split: moefication-coact needs a square [F, F] co-activation matrix");
  at::Tensor A = coactivation.to(at::kDouble).contiguous();
  int64_t F = A.size(0);
  std::vector<int64_t> sizes = equal_sizes(F, n);
  const double* a = A.data_ptr<double>();
  // numpy percentile (linear interpolation) at 10, 20, ...: first non-zero one is the threshold.
  std::vector<double> sorted(a, a + F * F);
  std::sort(sorted.begin(), sorted.end());
  double thr = 0;
  for (int pct = 10; pct <= 100 && thr <= 0; pct += 10) {
    double pos = (sorted.size() - 1) * pct / 100.0;
    size_t lo = static_cast<size_t>(std::floor(pos));
    size_t hi = std::min(lo + 1, sorted.size() - 1);
    thr = sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
  }
  std::vector<int32_t> label(F, 0);
  if (n > 1 && thr > 0) {
    thr *= 0.99;
    std::vector<idx_t> xadj{0}, adjncy, adjwgt;
    for (int64_t i = 0; i < F; ++i) {
      for (int64_t j = 0; j < F; ++j) {
        if (i == j) continue;
        // Symmetrise (METIS requires it) by taking the max of both directions.
        double w = std::floor(std::max(a[i * F + j], a[j * F + i]) / thr);
        if (w >= 1) adjncy.push_back(static_cast<idx_t>(j)), adjwgt.push_back(static_cast<idx_t>(std::min(w, 1e9)));
      }
      xadj.push_back(static_cast<idx_t>(adjncy.size()));
    }
    idx_t nv = static_cast<idx_t>(F), ncon = 1, nparts = n, objval = 0;
    idx_t options[METIS_NOPTIONS];
    METIS_SetDefaultOptions(options);
    options[METIS_OPTION_SEED] = static_cast<idx_t>(seed & 0x7fffffff);
    std::vector<idx_t> part(F, 0);
    int rc = METIS_PartGraphKway(&nv, &ncon, xadj.data(), adjncy.empty() ? nullptr : adjncy.data(), nullptr, nullptr,
                                 adjwgt.empty() ? nullptr : adjwgt.data(), &nparts, nullptr, nullptr, options, &objval,
                                 part.data());
    if (rc != METIS_OK) fail(cat("split: METIS_PartGraphKway failed (code ", rc, ")"));
    for (int64_t i = 0; i < F; ++i) label[i] = static_cast<int32_t>(part[i]);
  } else if (n > 1) {  // no co-activation at all: contiguous blocks
    for (int64_t i = 0, j = 0, c = 0; i < F; ++i) {
      if (c == sizes[j]) ++j, c = 0;
      label[i] = static_cast<int32_t>(j), ++c;
    }
  }
  // Rebalance to the exact sizes.
  Rng rng(seed);
  std::vector<std::vector<int32_t>> members(n);
  for (int64_t i = 0; i < F; ++i) members[label[i]].push_back(static_cast<int32_t>(i));
  return repair_to_sizes(std::move(members), sizes, F, rng);
}

SplitMethodEntry moefication_coact_split_method() {
  SplitMethodEntry e;
  e.description = "METIS k-way cut of the profile's co-activation graph, F/N each (MoEfication)";
  e.profile_stat = "coactivation";
  e.equal_division = true;
  e.run = [](const SplitInputs& in, const SplitOptions& opt, SplitReport&) {
    require_rows(in.coactivation, in.num_neurons, opt.method, "a co-activation matrix");
    return split_moefication_coact(in.coactivation, opt.num_experts, opt.seed);
  };
  return e;
}

}  // namespace mf
