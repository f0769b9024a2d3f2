// MoEfication parameter-clustering split (thunlp ParamSplit): balanced k-means on the
// L2-normalised rows of W1 / gate_proj into N experts of exactly F/N neurons. EMoE builds its
// experts the same way (it differs only in the avg-k gate, which lives in the router), so
// `--method emoe` calls this too.
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

}  // namespace mf
