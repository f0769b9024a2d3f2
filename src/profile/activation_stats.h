// Per-neuron activation statistics of one FFN layer over the real (non-padding) tokens of the
// calibration data: mean of a, mean of |a|, and the fraction of tokens with a > 0, where a is
// the FFN intermediate (act(gate x) * up x for gated FFNs, act(W1 x + b1) otherwise).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace mf {

class BatchSharding;

class ActivationStats {
 public:
  explicit ActivationStats(int64_t width);
  // a [n, F] (any float dtype); valid bool [n] (true = real token) or undefined (all real).
  void add(const at::Tensor& a, const at::Tensor& valid = {});
  // Data parallel: the sums and token counts of every rank's batches (every rank calls it).
  void sum_over_ranks(const BatchSharding& sharding);

  int64_t tokens() const { return tokens_; }
  // float32 [F] each; zeros when no token was seen.
  at::Tensor mean() const;
  at::Tensor abs_mean() const;
  at::Tensor positive_fraction() const;

 private:
  at::Tensor sum_, abs_sum_, pos_count_;  // float64 [F]: exact counts, no drift over millions of tokens
  int64_t tokens_ = 0;
};

}  // namespace mf
