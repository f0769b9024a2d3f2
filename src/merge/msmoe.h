// M-SMoE's grouping (Li et al., ICLR 2024, as HC-SMoE's code runs it: `dominant=frequency`,
// `similarity_base=router-logits`, `merge=freq`; spec merge_and_eval.md §A.8.1):
//
// (ii) Per-layer group counts from one global frequency threshold: the usage frequencies of the
//      N experts of all L merged layers (each layer's summing to 1) sorted in descending order,
//      τ = the value at 0-based index r·L, and layer l keeps r_l = #{j : f_j > τ} groups (so
//      Σ r_l = r·L unless frequencies tie at τ). r = N keeps every expert (the index is past the
//      end). Deviations, on purpose: the reference counts f_j ≥ τ (one group more than r·L in
//      total when nothing ties); and a layer never gets fewer than `min_groups` (≥ 1, and
//      ⌈N / group_limit⌉ so that the group limit can be met) nor more than N — the reference
//      fails on a layer with no group and can loop forever when r_l · group_limit < N.
//      hc-smoe and kmeans use the same counts with --allocation global (the reference's
//      dynamic_group, spec §A.5), with min_groups 1 (clustering has no group limit).
// (iii) The dominant experts of a layer are its r_l most frequent (ties: the lower index).
// (iv) Every other expert, in index order, joins the dominant expert it is most similar to
//      (ties: the more frequent dominant). When that group then has more than `group_limit`
//      members, the member least similar to the group's dominant expert (never the dominant
//      itself; ties: the earliest joined) is moved out, its similarity to that dominant is set to
//      −100 so it never returns, and it joins its most similar dominant expert — which may
//      overflow in turn (the reference's cascade). Deviation: when every dominant expert is
//      banned for the moved expert (the reference would cycle), it joins the most similar group
//      that still has room (one always has, given r_l · group_limit ≥ N), which ends the cascade.
//
// Plain C++; no torch.
#pragma once
#include <cstdint>
#include <vector>

namespace mf::merge {

struct GlobalAllocation {
  std::vector<int64_t> counts;  // r_l per layer
  double threshold = 0.0;       // τ (−inf when r = N)
  int64_t raised = 0;           // layers raised to min_groups
};

// freq: per layer the N usage frequencies. Throws mf::Error on inconsistent sizes or r outside 1..N.
GlobalAllocation global_allocation(const std::vector<std::vector<double>>& freq, int64_t r, int64_t min_groups);

struct DominantGroups {
  std::vector<int64_t> labels;    // n, groups numbered by their lowest member
  std::vector<int64_t> dominant;  // per group, its dominant expert
  int64_t moved = 0;              // experts moved out of a full group
};

// similarity: n×n row-major (larger = more similar). 1 ≤ groups ≤ n, group_limit ≥ 1 and
// groups · group_limit ≥ n, else mf::Error.
DominantGroups group_by_dominants(const std::vector<double>& freq, const std::vector<double>& similarity, int64_t n,
                                  int64_t groups, int64_t group_limit);

// The `count` largest frequencies' indices in descending order of frequency (ties: lower index).
std::vector<int64_t> most_frequent(const std::vector<double>& freq, int64_t count);

}  // namespace mf::merge
