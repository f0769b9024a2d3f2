// `moeforge merge`: fewer experts per MoE layer without retraining (spec merge_and_eval.md §A,
// docs/merge.md). One calibration pass of the original model (merge/calibrate.h), then per
// layer a grouping of the N experts (merge/plan.h):
//   hc-smoe  HC-SMoE: agglomerative clustering of the experts' representation (expert-output,
//            the paper's: mean outputs o_j; router-logits; weights — merge/represent.h), linkage
//            average | single | complete | ward (SciPy's definitions), cut at r clusters;
//   kmeans   the reference code's K-means on the same representation (what its released
//            scripts run, through their `hirarchical` typo), for reproducing it, or on the
//            reference's combinations of representations (router-logits+expert-output, …);
//   m-smoe   M-SMoE as HC-SMoE's code runs it: the most frequently selected experts dominate,
//            every other expert joins its most similar dominant expert (router-logit cosine by
//            default) with at most group_limit (4) experts per group, and the number of groups
//            per layer comes from one global frequency threshold (non-uniform; merge/msmoe.h);
//   o-prune  keep the r experts whose pruned layer output is closest to the original on the
//            calibration tokens (exhaustive over subsets, or a seeded sample; merge/oprune.h);
//   f-prune  keep the r most frequently selected experts;
//   s-prune  keep the r experts with the largest mean router probability (SEER-MoE soft counts);
//   reap     keep the r experts with the largest REAP saliency (mean of gate · ‖E_j(x)‖ over
//            the tokens routed to them).
// A group of experts is merged by usage-frequency-weighted (freq) or plain (average) averaging of
// its weights, neuron-aligned into its dominant expert (fix-dom, merge/fixdom.h), or zipped: its
// neurons merged greedily by activation correlation into one expert's width (zipit, merge/zipit.h).
// Output: a stock checkpoint of the same family with r experts. Pruning is exact (router rows
// sliced); a merged cluster's router row is its representative's (`dominant`), the merge-weighted
// mean of its members' rows (`weighted`), or a least-squares fit to the cluster's summed routing
// mass on the calibration tokens (`fit`, merge/router_fit.h) — approximations of the reference's
// "sum of the members' probabilities", whose calibration output error merge_report.json states
// per layer. `--output exact` keeps the paper's semantics instead: the original router and the
// N -> r expert map (moe/routers/merged_router.h) — for Mixtral a moeforge-family checkpoint, for
// Qwen2-MoE and OLMoE the family itself wrapped as moeforge (shared expert, QK-norm and
// norm_topk_prob kept); it also holds different expert counts per layer (m-smoe's, and hc-smoe's
// and kmeans' with --allocation global), which a stock config cannot.
#pragma once
#include <cstdint>
#include <string>

#include "merge/calibrate.h"
#include "util/json.h"

namespace mf {

struct MergeOptions {
  std::string method = "hc-smoe";   // hc-smoe | kmeans | m-smoe | o-prune | f-prune | s-prune | reap
  int64_t experts = 0;              // r, per layer (global allocation: on average)
  // expert-output | router-logits | weights; kmeans also "a+b[+c]" of them (merge/represent.h);
  // "" = the method's default
  std::string representation;
  std::string linkage = "average";  // hc-smoe
  std::string merge = "freq";       // merging methods: freq | average | fix-dom | zipit
  std::string router = "dominant";  // merged clusters' router row: dominant | weighted | fit
  // hc-smoe, kmeans, m-smoe: global (r_l from M-SMoE's frequency threshold; m-smoe's default, the
  // reference's dynamic_group for the clustering methods) | uniform (r; hc-smoe's and kmeans' default)
  std::string allocation;
  int64_t group_limit = 4;          // m-smoe: at most this many experts per group
  int64_t fit_tokens = 8192;        // MoE inputs kept per layer for --router fit and --merge fix-dom / zipit
  std::string output = "stock";     // stock | exact (original router + expert map; docs/format.md)
  uint64_t seed = 0;                // kmeans: k-means++ draws; o-prune: the subset sample
  int64_t max_subsets = 100000;     // o-prune: exhaustive up to this many subsets, else a sample
  std::string dtype = "auto";       // the models' compute dtype: auto (checkpoint's torch_dtype) | float32 | bfloat16
  MergeCalibOptions calib;
  uint64_t max_shard_bytes = 5000000000ull;
  bool overwrite = false;           // replace a non-empty out_dir
};

// Writes the merged checkpoint and its merge_report.json to out_dir; returns the report. Data
// parallel (options.calib.sharding): every rank takes part in the calibration pass, then rank 0
// alone plans, writes and returns the report; the other ranks return null.
json run_merge(const std::string& model_dir, const MergeOptions& options, const std::string& out_dir);

}  // namespace mf
