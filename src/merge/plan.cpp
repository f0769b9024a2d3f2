#include "merge/plan.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "merge/fixdom.h"
#include "merge/hclust.h"
#include "merge/kmeans.h"
#include "merge/msmoe.h"
#include "merge/oprune.h"
#include "merge/represent.h"
#include "merge/zipit.h"
#include "model/model.h"
#include "model/moe_ffn.h"
#include "util/error.h"
#include "util/progress.h"
#include "util/str.h"

namespace mf::merge {

std::vector<double> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

bool is_pruning(const std::string& method) {
  return method == "f-prune" || method == "s-prune" || method == "o-prune" || method == "reap";
}

std::string representation_name(const MergeOptions& o) {
  if (!o.representation.empty()) return o.representation;
  return o.method == "m-smoe" ? "router-logits" : "expert-output";
}

namespace {

std::vector<int64_t> sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<int64_t> pruned_set(const LayerCalibration& c, const MergeOptions& o, const ModelConfig& cfg,
                                json& extra) {
  if (o.method == "f-prune") return sorted(most_frequent(to_vector(c.frequency), o.experts));
  if (o.method == "s-prune") return sorted(most_frequent(to_vector(c.soft_score), o.experts));
  if (o.method == "reap") return sorted(most_frequent(to_vector(c.reap), o.experts));
  OPruneInput in;
  in.tokens = c.gram.size(0);
  in.experts = c.logits.size(1);
  in.k = cfg.num_experts_per_tok;
  in.renormalize = cfg.norm_topk_prob;
  const at::Tensor logits = c.logits.narrow(0, 0, in.tokens).contiguous(), gram = c.gram.contiguous();
  in.logits = logits.data_ptr<float>();
  in.gram = gram.data_ptr<double>();
  const OPruneResult res = o_prune(in, o.experts, o.max_subsets, o.seed + static_cast<uint64_t>(c.layer));
  extra["o_prune"] = {{"subsets", res.subsets}, {"exhaustive", res.exhaustive}, {"squared_error", res.loss}};
  return res.kept;
}

std::shared_ptr<MoeFFN> moe_block(Model& model, int64_t layer) {
  auto block = std::dynamic_pointer_cast<MoeFFN>(model.ffn(layer));
  if (!block) fail(cat("merge: layer ", layer, " is not an MoE layer"));
  return block;
}

// The Gram matrix of the experts' flattened gate, down and up weights (fp64), from the loaded
// model in chunks of about 2^22 values at a time (plus one projection's contiguous copy when the
// weights are views).
std::vector<double> weight_gram(MoeFFN& block) {
  const int64_t E = block.num_experts();
  at::Tensor G = at::zeros({E, E}, at::kDouble);
  for (int p = 0; p < 3; ++p) {
    std::vector<at::Tensor> flat;
    for (const auto& e : block.experts) {
      const at::Tensor& w = p == 0 ? e->gate->weight : p == 1 ? e->down->weight : e->up->weight;
      flat.push_back(w.detach().contiguous().reshape({-1}));
    }
    const int64_t numel = flat.front().numel();
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 22) / E);
    for (int64_t off = 0; off < numel; off += chunk) {
      const int64_t len = std::min(chunk, numel - off);
      std::vector<at::Tensor> parts;
      for (const at::Tensor& f : flat) parts.push_back(f.narrow(0, off, len));
      const at::Tensor C = at::stack(parts, 0).to(at::kDouble);
      G += C.mm(C.t());
    }
  }
  return to_vector(G);
}

Geometry geometry_of(const LayerCalibration& c, Representation rep, Model& model, int64_t tokens) {
  const int64_t E = c.mean_output.size(0);
  switch (rep) {
    case Representation::ExpertOutput:
      return geometry_from_features(to_vector(c.mean_output), E, c.mean_output.size(1));
    case Representation::RouterLogits:
      return geometry_from_gram(to_vector(c.logit_gram), E, static_cast<double>(tokens));
    case Representation::Weights: {
      auto block = moe_block(model, c.layer);
      const auto& e0 = block->experts.front();
      const double dim = static_cast<double>(e0->gate->weight.numel() + e0->up->weight.numel() +
                                             e0->down->weight.numel());
      return geometry_from_gram(weight_gram(*block), E, dim);
    }
  }
  fail("merge: unknown representation");
}

// The reference's K-means on one representation, or on several (spec §A.4: per representation
// the distances to the centres divided by its dimension and standardised per centre column, then
// averaged with weights 1 — merge/kmeans.h). expert-output runs on the vectors themselves (divided
// by d), router-logits and weights on the embedding with exactly their distances, divided by the
// vectors' true dimension (T, or 3·m·d) as the reference does. The first representation is the one
// k-means++ draws from. A single representation is exactly the one-feature-set call.
KMeansResult kmeans_layer(const LayerCalibration& c, const std::vector<Representation>& reps, Model& model,
                          int64_t tokens, int64_t groups, uint64_t seed) {
  const int64_t E = c.mean_output.size(0);
  std::vector<Representation> distinct;
  for (Representation rep : reps)
    if (std::find(distinct.begin(), distinct.end(), rep) == distinct.end()) distinct.push_back(rep);
  // One set of values per distinct representation (a repeat shares them); sized up front so that
  // the pointers below stay valid.
  std::vector<std::vector<double>> values(distinct.size());
  std::vector<KMeansFeatures> by_rep(distinct.size());
  for (size_t r = 0; r < distinct.size(); ++r) {
    if (distinct[r] == Representation::ExpertOutput) {
      values[r] = to_vector(c.mean_output);
      by_rep[r] = KMeansFeatures{&values[r], c.mean_output.size(1), 1.0, 0.0};
    } else {
      const Geometry g = geometry_of(c, distinct[r], model, tokens);
      values[r] = embedding(g);
      by_rep[r] = KMeansFeatures{&values[r], E, 1.0, g.dim};
    }
  }
  std::vector<KMeansFeatures> features;
  for (Representation rep : reps)
    features.push_back(by_rep[static_cast<size_t>(std::find(distinct.begin(), distinct.end(), rep) - distinct.begin())]);
  KMeansOptions ko;
  ko.seed = seed;
  return kmeans(features, E, groups, ko);
}

// The kept calibration rows routed to each expert: top-k of the kept logits with the model's k.
at::Tensor routed_mask(const LayerCalibration& c, const ModelConfig& cfg) {
  const int64_t S = c.logits.size(0), E = c.logits.size(1);
  const at::Tensor top = std::get<1>(c.logits.topk(std::min<int64_t>(cfg.num_experts_per_tok, E), -1));
  return at::zeros({S, E}, at::kBool).scatter_(1, top, true);  // [S, E]
}

// A cluster's routed rows: the kept inputs routed to each member, member by member (a token once
// per member routed to — the reference's concatenation of its members' row sets).
at::Tensor cluster_rows(const LayerCalibration& c, const at::Tensor& routed, const std::vector<int64_t>& members) {
  const at::Tensor X = c.inputs.narrow(0, 0, routed.size(0));
  std::vector<at::Tensor> rows;
  for (int64_t j : members) rows.push_back(routed.select(1, j).nonzero().reshape({-1}));
  return X.index_select(0, at::cat(rows, 0));
}

// fix-dom: the neuron maps of every merged cluster, on its routed rows.
void fix_dom_maps(LayerPlan& p, const LayerCalibration& c, const ModelConfig& cfg, Model& model) {
  auto block = moe_block(model, c.layer);
  const at::Tensor routed = routed_mask(c, cfg);
  json tokens = json::array();
  p.neuron_maps.assign(p.members.size(), {});
  for (size_t i = 0; i < p.members.size(); ++i) {
    const std::vector<int64_t>& m = p.members[i];
    if (m.size() < 2) {
      tokens.push_back(0);
      continue;
    }
    const at::Tensor Xc = cluster_rows(c, routed, m);
    tokens.push_back(Xc.size(0));
    const int64_t dom = p.representative[i];
    const int64_t width = block->experts[dom]->gate->weight.size(0);
    std::vector<int64_t> identity(static_cast<size_t>(width));
    std::iota(identity.begin(), identity.end(), 0);
    if (Xc.size(0) < 2) {  // no correlation to align by: a plain average of the members
      p.neuron_maps[i].assign(m.size(), identity);
      continue;
    }
    const at::Tensor A = swiglu_activations(Xc, block->experts[dom]->gate->weight, block->experts[dom]->up->weight);
    for (int64_t j : m)
      p.neuron_maps[i].push_back(j == dom ? identity
                                          : align_neurons(A, swiglu_activations(Xc, block->experts[j]->gate->weight,
                                                                                block->experts[j]->up->weight)));
  }
  p.extra["fix_dom_tokens"] = tokens;
}

// zipit: per merged cluster, per member the output neuron each of its neurons is averaged into
// (merge/zipit.h), on the same routed rows as fix-dom.
void zipit_plan_maps(LayerPlan& p, const LayerCalibration& c, const ModelConfig& cfg, Model& model) {
  auto block = moe_block(model, c.layer);
  const at::Tensor routed = routed_mask(c, cfg);
  json tokens = json::array();
  p.neuron_maps.assign(p.members.size(), {});
  for (size_t i = 0; i < p.members.size(); ++i) {
    const std::vector<int64_t>& m = p.members[i];
    if (m.size() < 2) {
      tokens.push_back(0);
      continue;
    }
    const at::Tensor Xc = cluster_rows(c, routed, m);
    tokens.push_back(Xc.size(0));
    std::vector<at::Tensor> gates, ups;
    for (int64_t j : m) {
      gates.push_back(block->experts[j]->gate->weight);
      ups.push_back(block->experts[j]->up->weight);
    }
    p.neuron_maps[i] = zipit_maps(Xc, gates, ups, kZipitAlpha);
  }
  p.extra["zipit_tokens"] = tokens;
}

LayerPlan plan_layer(const LayerCalibration& c, const MergeOptions& o, const ModelConfig& cfg, Model& model,
                     int64_t groups, int64_t tokens) {
  const int64_t E = c.mean_output.size(0);
  const std::vector<double> freq = to_vector(c.frequency);
  LayerPlan p;
  if (is_pruning(o.method)) {
    for (int64_t j : pruned_set(c, o, cfg, p.extra)) {
      p.members.push_back({j});
      p.weights.push_back({1.0});
      p.representative.push_back(j);
    }
    return p;
  }
  // One representation, or K-means' combination of two or three (validated in merge.cpp).
  const std::vector<Representation> reps = parse_representations(representation_name(o));
  const Representation rep = reps.front();
  std::vector<int64_t> labels;
  if (o.method == "kmeans") {
    const KMeansResult km = kmeans_layer(c, reps, model, tokens, groups, o.seed);
    labels = km.labels;
    p.representative = km.dominant;
  } else if (rep == Representation::ExpertOutput && o.method != "m-smoe") {
    // The paper's path, on the vectors themselves (distances summed like SciPy's pdist).
    const int64_t d = c.mean_output.size(1);
    const std::vector<double> X = to_vector(c.mean_output);
    const Dendrogram tree = linkage(X, E, d, parse_linkage(o.linkage));
    p.heights = tree.heights;
    labels = cut_tree(tree, E, groups);
    p.representative = representatives(X, E, d, labels);
  } else {
    const Geometry g = geometry_of(c, rep, model, tokens);
    if (o.method == "m-smoe") {
      const DominantGroups dg = group_by_dominants(freq, cosine_similarity(g), E, groups, o.group_limit);
      labels = dg.labels;
      p.representative = dg.dominant;
      p.extra["m_smoe_moved"] = dg.moved;
    } else {
      const Dendrogram tree = linkage_from_distances(distances(g), E, parse_linkage(o.linkage));
      p.heights = tree.heights;
      labels = cut_tree(tree, E, groups);
      p.representative = representatives_from_squared_distances(squared_distances(g), E, labels);
    }
  }
  p.members = cluster_members(labels);
  for (const auto& m : p.members) {
    double total = 0;
    for (int64_t j : m) total += freq[j];
    std::vector<double> w;
    // freq (and the weighted router of fix-dom and zipit): f_j / Σ f; a cluster nobody selected is
    // averaged (the reference makes it a zero expert).
    for (int64_t j : m)
      w.push_back(o.merge != "average" && total > 0 ? freq[j] / total : 1.0 / static_cast<double>(m.size()));
    p.weights.push_back(w);
  }
  if (o.merge == "fix-dom") fix_dom_maps(p, c, cfg, model);
  if (o.merge == "zipit") zipit_plan_maps(p, c, cfg, model);
  return p;
}

}  // namespace

MergePlan plan_merge(const MergeCalibration& calib, const MergeOptions& o, const ModelConfig& cfg, Model& model) {
  MergePlan out;
  const int64_t N = calib.layers.front().mean_output.size(0);
  std::vector<int64_t> counts(calib.layers.size(), o.experts);
  const bool msmoe = o.method == "m-smoe";
  if (msmoe || o.method == "hc-smoe" || o.method == "kmeans") {
    // Groups per layer: r everywhere, or r_l from M-SMoE's global frequency threshold (spec §A.8.1;
    // for hc-smoe and kmeans the reference's `dynamic_group`, §A.5). The default is m-smoe's
    // global and the clustering methods' uniform, as in the reference.
    const std::string allocation = !o.allocation.empty() ? o.allocation : msmoe ? "global" : "uniform";
    if (msmoe) out.summary["group_limit"] = o.group_limit;
    out.summary["allocation"] = allocation;
    if (allocation == "global") {
      // m-smoe: at least ⌈N / group_limit⌉ groups, so that the limit can be met; clustering has no
      // group limit (spec §A.5): at least one cluster.
      const int64_t min_groups = msmoe ? (N + o.group_limit - 1) / o.group_limit : 1;
      std::vector<std::vector<double>> freq;
      for (const LayerCalibration& c : calib.layers) freq.push_back(to_vector(c.frequency));
      const GlobalAllocation a = global_allocation(freq, o.experts, min_groups);
      counts = a.counts;
      out.summary["frequency_threshold"] = std::isfinite(a.threshold) ? json(a.threshold) : json(nullptr);
      out.summary[msmoe ? "layers_raised_to_group_limit_minimum" : "layers_raised_to_one_cluster"] = a.raised;
    }
  }
  Progress bar("group", static_cast<int64_t>(calib.layers.size()), "layer");
  for (size_t i = 0; i < calib.layers.size(); ++i) {
    const LayerCalibration& c = calib.layers[i];
    out.layers[c.layer] = plan_layer(c, o, cfg, model, counts[i], calib.tokens);
    bar.advance();
  }
  bar.finish();
  return out;
}

}  // namespace mf::merge
