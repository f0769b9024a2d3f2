// MoEBERT-style experts (spec §4.2, HeterExpert Split/moebert_split): the `shared` most important
// neurons belong to every expert; the rest are dealt round-robin and each expert is truncated to
// `expert_size` — an overlapping, incomplete cover. The multitask variant takes expert d = the
// top `expert_size` neurons by domain-d score (overlaps allowed, the rest dropped).
// Note: HeterExpert deals the non-shared neurons in *index* order and shuffles; MoEBERT itself
// deals them in importance order. We follow MoEBERT (importance order), which keeps each expert's
// most important private neurons; with unit-weight top-k>1 routing the shared neurons are counted
// k times (the registry entry below adds a warning).
#include <algorithm>
#include <numeric>

#include "split/method_registry.h"
#include "split/split.h"
#include "util/error.h"
#include "util/str.h"

namespace mf {

namespace {
std::vector<int64_t> order_desc(const at::Tensor& v) {
  at::Tensor c = v.to(at::kDouble).contiguous();
  const double* p = c.data_ptr<double>();
  std::vector<int64_t> idx(c.numel());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return p[a] > p[b]; });
  return idx;
}
}  // namespace

Partition split_moebert(const at::Tensor& importance, int n, int64_t shared, int64_t expert_size) {
  if (!importance.defined() || importance.dim() != 1) fail("split: moebert needs a [F] importance vector");
  int64_t F = importance.size(0);
  if (shared < 0 || expert_size < shared || shared > F)
    fail(cat("split: moebert needs 0 <= shared (", shared, ") <= expert size (", expert_size, ") <= F (", F, ")"));
  std::vector<int64_t> order = order_desc(importance);
  Partition p;
  p.num_neurons = F;
  p.experts.assign(n, {});
  for (int j = 0; j < n; ++j) {
    auto& e = p.experts[j];
    for (int64_t r = 0; r < shared; ++r) e.push_back(static_cast<int32_t>(order[r]));
    for (int64_t r = shared + j; r < F && static_cast<int64_t>(e.size()) < expert_size; r += n)
      e.push_back(static_cast<int32_t>(order[r]));
    std::sort(e.begin(), e.end());
  }
  return p;
}

Partition split_moebert_multitask(const at::Tensor& domain_scores, int64_t expert_size) {
  if (!domain_scores.defined() || domain_scores.dim() != 2) fail("split: moebert-multitask needs [F, D] domain scores");
  int64_t F = domain_scores.size(0);
  int D = static_cast<int>(domain_scores.size(1));
  if (expert_size <= 0 || expert_size > F) fail(cat("split: expert size ", expert_size, " outside 1..", F));
  Partition p;
  p.num_neurons = F;
  p.experts.assign(D, {});
  for (int d = 0; d < D; ++d) {
    std::vector<int64_t> order = order_desc(domain_scores.select(1, d));
    for (int64_t r = 0; r < expert_size; ++r) p.experts[d].push_back(static_cast<int32_t>(order[r]));
    std::sort(p.experts[d].begin(), p.experts[d].end());
  }
  return p;
}

namespace {
// Both variants: [F] or [F, D] scores, expert width --moebert-width (default F/N), and the
// warning about shared neurons (the cover overlaps by design).
SplitMethodEntry moebert_entry(const std::string& description, const std::string& stat, bool multitask) {
  SplitMethodEntry e;
  e.description = description;
  e.profile_stat = stat;
  e.run = [multitask](const SplitInputs& in, const SplitOptions& opt, SplitReport& rep) {
    const int64_t F = in.num_neurons;
    const int N = opt.num_experts;
    require_rows(in.domain_scores, F, opt.method, "neuron importance");
    at::Tensor S = in.domain_scores.dim() == 1 ? in.domain_scores.unsqueeze(1) : in.domain_scores;
    int64_t width = opt.moebert_expert_size > 0 ? opt.moebert_expert_size : F / N;
    Partition p;
    if (!multitask) {
      int64_t shared = opt.moebert_shared >= 0 ? opt.moebert_shared : F / N / 2;
      p = split_moebert(S.sum(1), N, shared, width);
    } else {
      if (S.size(1) != N) fail(cat("split: moebert-multitask makes one expert per domain: N=", N, " but ", S.size(1), " domains"));
      p = split_moebert_multitask(S, width);
    }
    rep.warnings.push_back(
        "moebert experts overlap: under unit-weight top-k>1 routing the shared neurons are summed once per selected expert "
        "(counted k times)");
    return p;
  };
  return e;
}
}  // namespace

// Raw importance: HeterExpert's adaptation ranks by the raw sums over domains.
SplitMethodEntry moebert_split_method() {
  return moebert_entry("top F/N/2 neurons shared by all experts, the rest dealt by importance (MoEBERT)",
                       "importance_raw", false);
}

SplitMethodEntry moebert_multitask_split_method() {
  return moebert_entry("expert d = the top F/N neurons by domain-d importance (needs N = domains)", "importance", true);
}

}  // namespace mf
