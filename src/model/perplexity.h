// Rolling-window perplexity as in transformers' perplexity guide: windows of `context`
// tokens advancing by `stride`; each window scores only the tokens not scored before, with
// everything earlier in the window as context. Every token except the first is scored once.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"

namespace mf {

struct PerplexityResult {
  double nll_sum = 0;    // sum of -log p(token | context), nats
  int64_t tokens = 0;    // tokens scored
  int64_t windows = 0;
  double mean_nll() const { return tokens ? nll_sum / tokens : 0.0; }
  double perplexity() const;
};

// `progress(done_tokens, total_tokens)` is called after every window.
PerplexityResult rolling_perplexity(Model& model, const std::vector<int64_t>& ids, int64_t context, int64_t stride,
                                    const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace mf
