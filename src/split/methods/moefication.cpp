// MoEfication parameter-clustering split (thunlp ParamSplit): balanced k-means on the
// L2-normalised rows of W1 / gate_proj into N experts of exactly F/N neurons. EMoE builds its
// experts the same way (it differs only in the avg-k gate, which lives in the router), so
// `--method emoe` calls this too.
#include "split/method_registry.h"
#include "split/split.h"
#include "util/error.h"

namespace mf {

Partition split_moefication(const at::Tensor& gate_rows, int n, uint64_t seed, int max_iter) {
  if (!gate_rows.defined() || gate_rows.dim() != 2) fail("split: moefication needs the [F, H] gate rows");
  at::Tensor rows = gate_rows.to(at::kDouble);
  rows = rows / rows.norm(2, {1}, true).clamp_min(1e-12);
  int64_t F = rows.size(0);
  auto km = balanced_kmeans(rows, equal_sizes(F, n), seed, max_iter);
  return Partition::from_labels(km.labels, n);
}

json kmeans_provenance(const SplitOptions& opt) { return {{"kmeans_max_iter", opt.kmeans_max_iter}}; }

namespace {
SplitMethodEntry kmeans_of_gate_rows(const std::string& description) {
  SplitMethodEntry e;
  e.description = description;
  e.needs_gate_rows = true;
  e.equal_division = true;
  e.provenance_options = kmeans_provenance;
  e.run = [](const SplitInputs& in, const SplitOptions& opt, SplitReport&) {
    require_rows(in.gate_rows, in.num_neurons, opt.method, "gate rows");
    return split_moefication(in.gate_rows, opt.num_experts, opt.seed, opt.kmeans_max_iter);
  };
  return e;
}
}  // namespace

SplitMethodEntry moefication_split_method() {
  return kmeans_of_gate_rows("balanced k-means of the normalised gate rows, F/N each (MoEfication)");
}

// EMoE's experts are MoEfication's; only its default router differs (avg-k, no parameters).
SplitMethodEntry emoe_split_method() {
  SplitMethodEntry e = kmeans_of_gate_rows("moefication's experts with EMoE's avg-k router");
  e.default_router = "avgk";
  return e;
}

}  // namespace mf
