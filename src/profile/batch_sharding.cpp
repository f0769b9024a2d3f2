#include "profile/batch_sharding.h"

#include <utility>

#include "dist/dist.h"

namespace mf {

BatchSharding::BatchSharding(std::shared_ptr<dist::Group> group) : group_(std::move(group)) {
  if (group_) {
    rank_ = group_->rank();
    world_size_ = group_->world_size();
  }
}

void BatchSharding::sum(const std::vector<at::Tensor>& tensors) const {
  if (!active()) return;
  std::vector<at::Tensor> handles = tensors;  // all_reduce_sum writes through the handles
  group_->all_reduce_sum(handles);
}

int64_t BatchSharding::sum(int64_t value) const {
  if (!active()) return value;
  std::vector<at::Tensor> t{at::full({1}, value, at::kLong)};
  group_->all_reduce_sum(t);
  return t[0].item<int64_t>();
}

void BatchSharding::finish() const {
  if (active()) group_->close();
}

}  // namespace mf
