#include "profile/activation_stats.h"

#include "profile/batch_sharding.h"

namespace mf {

ActivationStats::ActivationStats(int64_t width) {
  auto opts = at::TensorOptions().dtype(at::kDouble);
  sum_ = at::zeros({width}, opts);
  abs_sum_ = at::zeros({width}, opts);
  pos_count_ = at::zeros({width}, opts);
}

void ActivationStats::add(const at::Tensor& a_in, const at::Tensor& valid) {
  at::Tensor a = a_in.detach();
  if (valid.defined()) a = a.index_select(0, valid.to(a.device()).nonzero().view(-1));
  if (a.size(0) == 0) return;
  a = a.to(at::kFloat);
  // Column sums in fp32 per batch (a batch has at most a few thousand rows), accumulated in fp64.
  sum_ += a.sum(0).to(at::kCPU, at::kDouble);
  abs_sum_ += a.abs().sum(0).to(at::kCPU, at::kDouble);
  pos_count_ += a.gt(0).sum(0).to(at::kCPU, at::kDouble);
  tokens_ += a.size(0);
}

void ActivationStats::sum_over_ranks(const BatchSharding& sharding) {
  sharding.sum({sum_, abs_sum_, pos_count_});
  tokens_ = sharding.sum(tokens_);
}

static at::Tensor divide(const at::Tensor& t, int64_t n) {
  return (n > 0 ? t / static_cast<double>(n) : t).to(at::kFloat);
}

at::Tensor ActivationStats::mean() const { return divide(sum_, tokens_); }
at::Tensor ActivationStats::abs_mean() const { return divide(abs_sum_, tokens_); }
at::Tensor ActivationStats::positive_fraction() const { return divide(pos_count_, tokens_); }

}  // namespace mf
