#include "split/split.h"

#include "util/error.h"
#include "util/str.h"

namespace mf {

Partition split_layer(const SplitInputs& in, const SplitOptions& opt, SplitReport* report) {
  SplitReport local;
  SplitReport& rep = report ? *report : local;
  const std::string& m = opt.method;
  const int N = opt.num_experts;
  int64_t F = in.num_neurons;
  if (F <= 0) fail("split: the layer has no neurons");
  if (N <= 0 || N > F) fail(cat("split: cannot make ", N, " experts from ", F, " neurons"));
  auto need_rows = [&](const at::Tensor& t, const char* what) {
    if (!t.defined() || t.dim() < 1 || t.size(0) != F) fail(cat("split: method ", m, " needs ", what, " with ", F, " rows"));
  };
  Partition p;
  if (m == "random") {
    p = split_random(F, equal_sizes(F, N), opt.seed);
  } else if (m == "random-hetero") {
    if (static_cast<int>(in.target_sizes.size()) != N)
      fail(cat("split: random-hetero needs ", N, " target sizes, got ", in.target_sizes.size()));
    p = split_random(F, in.target_sizes, opt.seed);
  } else if (m == "moefication" || m == "emoe") {
    need_rows(in.gate_rows, "gate rows");
    p = split_moefication(in.gate_rows, N, opt.seed, opt.kmeans_max_iter);
  } else if (m == "moefication-coact") {
    need_rows(in.coactivation, "a co-activation matrix");
    p = split_moefication_coact(in.coactivation, N, opt.seed);
  } else if (m == "moebert" || m == "moebert-multitask") {
    need_rows(in.domain_scores, "neuron importance");
    at::Tensor S = in.domain_scores.dim() == 1 ? in.domain_scores.unsqueeze(1) : in.domain_scores;
    int64_t width = opt.moebert_expert_size > 0 ? opt.moebert_expert_size : F / N;
    if (m == "moebert") {
      int64_t shared = opt.moebert_shared >= 0 ? opt.moebert_shared : F / N / 2;
      p = split_moebert(S.sum(1), N, shared, width);
    } else {
      if (S.size(1) != N) fail(cat("split: moebert-multitask makes one expert per domain: N=", N, " but ", S.size(1), " domains"));
      p = split_moebert_multitask(S, width);
    }
    rep.warnings.push_back(
        "moebert experts overlap: under unit-weight top-k>1 routing the shared neurons are summed once per selected expert "
        "(counted k times)");
  } else if (m == "hemoe") {
    need_rows(in.gate_rows, "gate rows");
    need_rows(in.domain_scores, "[F, D] domain scores");
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
    p = hemoe_unpack(mods.module_of_neuron, rep.placement.best, N);
  } else {
    fail(cat("split: unknown method '", m,
             "' (random, random-hetero, moefication, moefication-coact, emoe, moebert, moebert-multitask, hemoe)"));
  }
  rep.cover = validate(p);
  return p;
}

}  // namespace mf
