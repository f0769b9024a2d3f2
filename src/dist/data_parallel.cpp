#include "dist/data_parallel.h"

#include <unordered_set>

#include "dist/expert_parallel.h"

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

void make_expert_parallel(TrainerOptions& options, const std::shared_ptr<Group>& group, torch::nn::Module& model) {
  if (!group || !group->active()) return;
  distribute_model_experts(model, group);
  std::unordered_set<const void*> experts;
  for (const at::Tensor& p : distributed_expert_parameters(model)) experts.insert(p.unsafeGetTensorImpl());
  auto is_expert = [experts](const at::Tensor& p) { return experts.count(p.unsafeGetTensorImpl()) > 0; };
  options.on_gradients = [group, is_expert](const std::vector<at::Tensor>& params) {
    std::vector<at::Tensor> replicated;
    for (at::Tensor p : params) {
      if (is_expert(p)) {
        if (p.grad().defined()) p.mutable_grad().div_(static_cast<double>(group->world_size()));
        continue;
      }
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
      replicated.push_back(p.grad());
    }
    group->all_reduce_mean_bucketed(replicated);
  };
  options.grad_norm_sq = [group, is_expert](const std::vector<at::Tensor>& params) {
    // As clip_grad_norm: fp32 norms, squares summed in double; the experts' part over all ranks.
    double replicated = 0.0;
    at::Tensor local = at::zeros({1}, at::kDouble);
    for (const at::Tensor& p : params) {
      if (!p.grad().defined()) continue;
      const double n = p.grad().to(at::kFloat).norm().item<double>();
      if (is_expert(p))
        local += n * n;
      else
        replicated += n * n;
    }
    std::vector<at::Tensor> v{local};
    group->all_reduce_sum(v);
    return replicated + local.item<double>();
  };
  torch::nn::Module* m = &model;  // the trainer's model, which outlives the run
  options.complete_tensors = [group, m](std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                        const std::vector<std::string>& prefixes) {
    gather_distributed_experts(*m, *group, tensors, prefixes);
  };
}

}  // namespace mf::dist
