// HEMoE (HeterExpert): (e) size-constrained k-means of the L2-normalised gate rows into M modules
// of exactly F/M neurons, module scores s[m,d] = Σ_{i∈m} S[i,d]; (f) placement of modules into
// experts (hemoe_placement.h); (g) unpack: neuron i → expert of its module.
#include "split/method_registry.h"
#include "split/split.h"
#include "util/error.h"
#include "util/str.h"

namespace mf {

HemoeModules hemoe_modules(const at::Tensor& gate_rows, const at::Tensor& domain_scores, int M, uint64_t seed,
                           int max_iter) {
  if (!gate_rows.defined() || gate_rows.dim() != 2) fail("split: hemoe needs the [F, H] gate rows");
  if (!domain_scores.defined() || domain_scores.dim() != 2 || domain_scores.size(0) != gate_rows.size(0))
    fail("split: hemoe needs [F, D] domain scores with one row per neuron");
  int64_t F = gate_rows.size(0);
  if (M <= 0 || F % M != 0) fail(cat("split: hemoe needs F (", F, ") divisible by the number of modules M (", M, ")"));
  at::Tensor rows = gate_rows.to(at::kDouble);
  rows = rows / rows.norm(2, {1}, true).clamp_min(1e-12);
  HemoeModules out;
  out.module_of_neuron = balanced_kmeans(rows, std::vector<int64_t>(M, F / M), seed, max_iter).labels;
  int D = static_cast<int>(domain_scores.size(1));
  at::Tensor S = domain_scores.to(at::kDouble).contiguous();
  const double* s = S.data_ptr<double>();
  out.scores.assign(static_cast<size_t>(M) * D, 0);
  for (int64_t i = 0; i < F; ++i)
    for (int d = 0; d < D; ++d) out.scores[static_cast<size_t>(out.module_of_neuron[i]) * D + d] += s[i * D + d];
  return out;
}

Partition hemoe_unpack(const std::vector<int32_t>& module_of_neuron, const Placement& placement, int N) {
  std::vector<int32_t> labels(module_of_neuron.size());
  for (size_t i = 0; i < labels.size(); ++i) labels[i] = placement.expert_of_module.at(module_of_neuron[i]);
  return Partition::from_labels(labels, N);
}

SplitMethodEntry hemoe_split_method() {
  SplitMethodEntry e;
  e.description = "modules of the gate rows placed into experts of unequal size by domain (HEMoE)";
  e.needs_gate_rows = true;
  e.profile_stat = "importance";
  // hemoe_modules() would fail at the first layer; say it before any layer is split.
  e.check = [](const SplitOptions& opt, int64_t F) {
    if (opt.modules <= 0 || F % opt.modules != 0)
      fail(cat("method hemoe needs --modules (", opt.modules, ") to divide the FFN width ", F));
  };
  e.provenance_options = [](const SplitOptions& opt) {
    json j = kmeans_provenance(opt);
    j["modules"] = opt.modules;
    j["size_ratio"] = opt.size_ratio;
    j["coherence"] = opt.coherence;
    j["solver"] = opt.solver;
    j["time_limit_s"] = opt.time_limit_s;
    return j;
  };
  e.run = [](const SplitInputs& in, const SplitOptions& opt, SplitReport& rep) {
    require_rows(in.gate_rows, in.num_neurons, opt.method, "gate rows");
    require_rows(in.domain_scores, in.num_neurons, opt.method, "[F, D] domain scores");
    const int N = opt.num_experts;
    HemoeModules mods = hemoe_modules(in.gate_rows, in.domain_scores, opt.modules, opt.seed, opt.kmeans_max_iter);
    auto prob = PlacementProblem::make(mods.scores, opt.modules, static_cast<int>(in.domain_scores.size(1)), N,
                                       opt.size_ratio, opt.coherence);
    if (opt.solver == "fast") {
      FastPlacementOptions fo;
      fo.seed = opt.seed;
      fo.time_limit_s = opt.time_limit_s;
      rep.placement = solve_placement_fast(prob, fo);
    } else if (opt.solver == "cbc") {
      CbcPlacementOptions co;
      co.time_limit_s = opt.time_limit_s;
      rep.placement = solve_placement_cbc(prob, co);
    } else {
      fail(cat("split: unknown hemoe solver '", opt.solver, "' (fast, cbc)"));
    }
    check_placement(prob, rep.placement.best);
    rep.has_placement = true;
    return hemoe_unpack(mods.module_of_neuron, rep.placement.best, N);
  };
  return e;
}

}  // namespace mf
