#include "dist/data_parallel.h"

namespace mf::dist {

void make_data_parallel(TrainerOptions& options, const std::shared_ptr<Group>& group) {
  if (!group || !group->active()) return;
  options.rank = group->rank();
  options.world_size = group->world_size();
  options.progress = options.progress && group->rank() == 0;
  options.on_gradients = [group](const std::vector<at::Tensor>& params) {
    // A parameter this rank's batch did not reach (an expert no token chose) still takes part,
    // with zeros: every rank must reduce the same list.
    std::vector<at::Tensor> grads;
    grads.reserve(params.size());
    for (at::Tensor p : params) {
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
      grads.push_back(p.grad());
    }
    group->all_reduce_mean_bucketed(grads);
  };
  options.average_over_ranks = [group](std::vector<double>& values) {
    at::Tensor t = at::tensor(values, at::kDouble);
    std::vector<at::Tensor> v{t};
    group->all_reduce_sum(v);
    t = t / static_cast<double>(group->world_size());
    for (size_t i = 0; i < values.size(); ++i) values[i] = t[static_cast<int64_t>(i)].item<double>();
  };
}

}  // namespace mf::dist
