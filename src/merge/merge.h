// `moeforge merge`: fewer experts per MoE layer without retraining (spec merge_and_eval.md §A,
// docs/merge.md). One calibration pass of the original model (merge/calibrate.h), then per
// layer a grouping of the N experts into r:
//   hc-smoe  HC-SMoE: agglomerative clustering of the experts' mean outputs o_j (linkage
//            average | single | complete | ward, SciPy's definitions), each cluster merged by
//            usage-frequency-weighted (freq) or plain (average) averaging of its weights;
//   kmeans   the same merge over the reference code's K-means clusters (what its released
//            scripts run, through their `hirarchical` typo), for reproducing it;
//   o-prune  keep the r experts whose pruned layer output is closest to the original on the
//            calibration tokens (exhaustive over subsets, or a seeded sample; merge/oprune.h);
//   f-prune  keep the r most frequently selected experts;
//   s-prune  keep the r experts with the largest mean router probability (SEER-MoE soft counts);
//   reap     keep the r experts with the largest REAP saliency (mean of gate · ‖E_j(x)‖ over
//            the tokens routed to them).
// Output: a stock checkpoint of the same family with r experts. Pruning is exact (router rows
// sliced); a merged cluster's router row is its representative's (`dominant`: the member
// closest to the cluster's mean feature) or the frequency-weighted mean of its members' rows
// (`weighted`), an approximation of the reference's "sum of the members' probabilities",
// whose calibration output error merge_report.json states per layer. `--output exact` (Mixtral)
// keeps the paper's semantics instead: a moeforge-family checkpoint with the original router
// and the N -> r expert map (moe/routers/merged_router.h).
#pragma once
#include <cstdint>
#include <string>

#include "merge/calibrate.h"
#include "util/json.h"

namespace mf {

struct MergeOptions {
  std::string method = "hc-smoe";   // hc-smoe | kmeans | o-prune | f-prune | s-prune | reap
  int64_t experts = 0;              // r, per layer
  std::string linkage = "average";  // hc-smoe
  std::string merge = "freq";       // hc-smoe: freq | average
  std::string router = "dominant";  // merged clusters' router row: dominant | weighted
  std::string output = "stock";     // stock | exact (Mixtral: moeforge family, original router + expert map)
  uint64_t seed = 0;                // kmeans: k-means++ draws; o-prune: the subset sample
  int64_t max_subsets = 100000;     // o-prune: exhaustive up to this many subsets, else a sample
  MergeCalibOptions calib;
  uint64_t max_shard_bytes = 5000000000ull;
  bool overwrite = false;           // replace a non-empty out_dir
};

// Writes the merged checkpoint and its merge_report.json to out_dir; returns the report.
json run_merge(const std::string& model_dir, const MergeOptions& options, const std::string& out_dir);

}  // namespace mf
