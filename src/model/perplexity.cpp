#include "model/perplexity.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace mf {

double PerplexityResult::perplexity() const { return std::exp(mean_nll()); }

PerplexityResult rolling_perplexity(Model& model, const std::vector<int64_t>& ids, int64_t context, int64_t stride,
                                    const std::function<void(int64_t, int64_t)>& progress) {
  if (context < 2) throw UsageError("--context must be at least 2");
  if (stride < 1 || stride > context) throw UsageError("--stride must be between 1 and --context");
  at::NoGradGuard guard;
  PerplexityResult r;
  const int64_t L = static_cast<int64_t>(ids.size());
  if (L < 2) fail("perplexity needs at least 2 tokens (got " + std::to_string(L) + ")");
  at::Tensor all = at::tensor(ids, at::kLong);
  int64_t scored_until = 1;  // tokens [0, scored_until) are done; token 0 is never scored
  for (int64_t begin = 0; scored_until < L; begin += stride) {
    const int64_t end = std::min(begin + context, L);
    const int64_t first = std::max(scored_until, begin + 1);  // first target scored in this window
    if (first >= end) continue;
    at::Tensor h = model.forward_hidden(all.slice(0, begin, end).view({1, -1}));
    // Predictions for targets [first, end) come from positions [first-1, end-1).
    at::Tensor logits = model.lm_head(h[0].slice(0, first - 1 - begin, end - 1 - begin));
    at::Tensor targets = all.slice(0, first, end).to(logits.device());
    at::Tensor nll = at::cross_entropy_loss(logits, targets, {}, at::Reduction::Sum);
    r.nll_sum += nll.item<double>();
    r.tokens += end - first;
    r.windows++;
    scored_until = end;
    if (progress) progress(scored_until, L);
  }
  return r;
}

}  // namespace mf
