// Neuron co-activation counts for MoEfication's graph split (spec dense_to_moe.md §2.2 B):
// tokens are taken in groups of 8 (consecutive real tokens), and for every group
//     Adj += min(1, Σ_{t ∈ group} b_t b_tᵀ)            (elementwise clamp at 1)
// where b_t is
//   - ReLU FFNs: the activation vector a_t itself (the reference code's relu(X W1ᵀ)), so one
//     group adds at most 1 to a pair, less when the activations are small;
//   - every other activation (SwiGLU, GELU): the indicator 1[a_t > 0]. |a_t| > 0 holds for
//     almost every SwiGLU neuron on every token, so it carries no information; a_t > 0
//     ("fires positively") is the analogue of ReLU's support. A group then adds 1 to a pair iff
//     both neurons are positive on a common token of the group.
// Groups do not span calibration batches (a batch's last group may be shorter), so the counts are
// a sum over batches: data-parallel ranks sum theirs (float32; the ReLU form's fractional values
// then differ from one process's by the summation order only; the indicator counts are integers,
// exact below 2^24).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace mf {

class BatchSharding;

class Coactivation {
 public:
  // `values`: true = ReLU form (use activation values), false = indicator of a > 0.
  Coactivation(int64_t width, bool values, int64_t group = 8);
  // a [n, F]: real tokens only, in order.
  void add(const at::Tensor& a);
  // Data parallel: the counts of every rank's batches (every rank calls it).
  void sum_over_ranks(const BatchSharding& sharding);
  // float32 [F, F], symmetric, on the device of the activations.
  const at::Tensor& counts() const { return adj_; }
  int64_t groups() const { return groups_; }

 private:
  at::Tensor adj_;
  bool values_;
  int64_t group_, groups_ = 0;
};

}  // namespace mf
