// The grouping step of `moeforge merge` (merge/merge.h): from the calibration statistics, per
// MoE layer, which original experts become each output expert and how they are combined.
//   hc-smoe   agglomerative clustering (merge/hclust.h) of the experts' representation
//             (merge/represent.h: expert-output | router-logits | weights), cut at r clusters;
//   kmeans    the reference's K-means (merge/kmeans.h) on the same representation, or on two or
//             three of them (each one's standardised distances averaged);
//   m-smoe    frequency-dominant experts and similarity grouping with a group limit, r_l groups
//             per layer from the global frequency threshold or r everywhere (merge/msmoe.h);
//   o-prune, f-prune, s-prune, reap: the r kept experts.
// hc-smoe and kmeans cluster every layer into r clusters, or into r_l from the same global
// frequency threshold (--allocation global, the reference's dynamic_group).
// Merged clusters are combined with usage-frequency weights (freq), plainly (average),
// neuron-aligned into their dominant expert (fix-dom, merge/fixdom.h), or zipped neuron by neuron
// by activation correlation (zipit, merge/zipit.h).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "merge/calibrate.h"
#include "merge/merge.h"
#include "util/json.h"

namespace mf {

class Model;
struct ModelConfig;

namespace merge {

// One layer's grouping: output expert i = Σ_j weights[i][j] · expert members[i][j] (freq,
// average), members[i] neuron-aligned into representative[i] (fix-dom), or members[i] zipped
// (zipit).
struct LayerPlan {
  std::vector<std::vector<int64_t>> members;  // ascending original indices
  std::vector<std::vector<double>> weights;   // sum to 1; fix-dom, zipit: the weights of the `weighted` router
  std::vector<int64_t> representative;        // the dominant member (router row of `dominant`; fix-dom's δ)
  std::vector<double> heights;                // hc-smoe: the dendrogram's merge heights
  // fix-dom: per output expert (empty for singletons), per member the dominant neuron each of its
  // neurons is averaged into (the dominant's own map is the identity); zipit: per member the output
  // neuron each of its neurons is averaged into. Either way output neuron k is the mean of the
  // member neurons mapped to it (merge::fix_dom_combine).
  std::vector<std::vector<std::vector<int64_t>>> neuron_maps;
  at::Tensor router_rows;                     // --router fit: [r, d] fp32
  json extra = json::object();                // method-specific report fields
};

struct MergePlan {
  std::map<int64_t, LayerPlan> layers;
  json summary = json::object();  // method-wide report fields (the allocation)
};

bool is_pruning(const std::string& method);
// --representation, or the method's default (m-smoe: router-logits; otherwise expert-output);
// kmeans: possibly a combination "a+b[+c]".
std::string representation_name(const MergeOptions& o);
std::vector<double> to_vector(const at::Tensor& t);

MergePlan plan_merge(const MergeCalibration& calib, const MergeOptions& o, const ModelConfig& cfg, Model& model);

}  // namespace merge
}  // namespace mf
