#include "dist/data_parallel.h"

#include <unordered_set>

#include "dist/expert_parallel.h"
#include "util/error.h"
#include "util/str.h"

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

void make_expert_parallel(TrainerOptions& options, const std::shared_ptr<Group>& group, torch::nn::Module& model,
                          int64_t expert_group_size) {
  if (!group || !group->active()) return;
  const int64_t W = group->world_size(), S = expert_group_size > 0 ? expert_group_size : W;
  if (S > W || W % S != 0)
    fail(cat("expert parallelism: expert groups of ", S, " ranks do not divide the job's ", W, " ranks"));
  // Expert group: ranks [g*S, (g+1)*S); replicas of an expert: the ranks with the same place in
  // every group. Each rank creates the two groups it belongs to (torch.distributed.new_group).
  const int64_t g = group->rank() / S, place = group->rank() % S;
  std::vector<int64_t> members, replicas;
  for (int64_t r = 0; r < S; ++r) members.push_back(g * S + r);
  for (int64_t k = 0; k < W / S; ++k) replicas.push_back(k * S + place);
  std::shared_ptr<Group> experts_group = S == W ? group : group->subgroup(members, cat("experts_", g));
  std::shared_ptr<Group> replica_group = S == W ? nullptr : group->subgroup(replicas, cat("expert_replicas_", place));
  if (distribute_model_experts(model, experts_group) == 0) fail("expert parallelism: the model has no MoE layers");

  std::unordered_set<const void*> experts;
  for (const at::Tensor& p : distributed_expert_parameters(model)) experts.insert(p.unsafeGetTensorImpl());
  auto is_expert = [experts](const at::Tensor& p) { return experts.count(p.unsafeGetTensorImpl()) > 0; };
  const double groups = static_cast<double>(W / S);
  options.on_gradients = [group, replica_group, is_expert, S](const std::vector<at::Tensor>& params) {
    std::vector<at::Tensor> replicated, expert_grads;
    for (at::Tensor p : params) {
      // A parameter this rank's batch did not reach takes part with zeros (every rank of a
      // reduction must pass the same list).
      if (!p.grad().defined() && (!is_expert(p) || replica_group)) p.mutable_grad() = at::zeros_like(p);
      if (!p.grad().defined()) continue;
      (is_expert(p) ? expert_grads : replicated).push_back(p.grad());
    }
    group->all_reduce_mean_bucketed(replicated);
    // sum over the replicas / W = mean over the G replicas / S
    if (replica_group) replica_group->all_reduce_mean_bucketed(expert_grads);
    for (at::Tensor& grad : expert_grads) grad.div_(static_cast<double>(S));
  };
  options.grad_norm_sq = [group, is_expert, groups](const std::vector<at::Tensor>& params) {
    // As clip_grad_norm: fp32 norms, squares summed in double; the experts' part over all ranks,
    // each expert counted once (its replicas hold the same gradient).
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
    return replicated + local.item<double>() / groups;
  };
  torch::nn::Module* m = &model;  // the trainer's model, which outlives the run
  options.complete_tensors = [group, m, S](std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                           const std::vector<std::string>& prefixes) {
    gather_distributed_experts(*m, *group, tensors, prefixes, S);
  };
}

}  // namespace mf::dist
