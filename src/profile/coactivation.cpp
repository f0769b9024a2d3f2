#include "profile/coactivation.h"

#include "profile/batch_sharding.h"

namespace mf {

Coactivation::Coactivation(int64_t width, bool values, int64_t group) : values_(values), group_(group) {
  adj_ = at::zeros({width, width}, at::TensorOptions().dtype(at::kFloat));
}

void Coactivation::add(const at::Tensor& a_in) {
  at::Tensor a = a_in.detach().to(at::kFloat);
  if (adj_.device() != a.device()) adj_ = adj_.to(a.device());  // count where the activations live
  a = values_ ? a : a.gt(0).to(at::kFloat);
  const int64_t n = a.size(0);
  at::Tensor prod = at::empty_like(adj_);
  for (int64_t s = 0; s < n; s += group_) {
    at::Tensor b = a.slice(0, s, std::min(n, s + group_));  // [g, F]
    at::mm_out(prod, b.t(), b);
    prod.clamp_max_(1.0f);
    adj_.add_(prod);
    ++groups_;
  }
}

void Coactivation::sum_over_ranks(const BatchSharding& sharding) {
  sharding.sum({adj_});
  groups_ = sharding.sum(groups_);
}

}  // namespace mf
