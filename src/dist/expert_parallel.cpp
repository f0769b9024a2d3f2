#include "dist/expert_parallel.h"

#include <numeric>
#include <unordered_map>

#include "model/moe_ffn.h"
#include "moe/routing_plan.h"
#include "util/error.h"
#include "util/str.h"

namespace mf::dist {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct AllToAllFn : public torch::autograd::Function<AllToAllFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Group* group, std::vector<int64_t> in_splits,
                            std::vector<int64_t> out_splits) {
    ctx->saved_data["group"] = reinterpret_cast<int64_t>(group);
    ctx->saved_data["in"] = in_splits;
    ctx->saved_data["out"] = out_splits;
    at::Tensor y = group->all_to_all_single(x.contiguous(), in_splits, out_splits);
    ctx->saved_data["shape"] = y.sizes().vec();
    ctx->saved_data["dtype"] = static_cast<int64_t>(y.scalar_type());
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    Group* group = reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
    const std::vector<int64_t> in = ctx->saved_data["in"].toIntVector();
    const std::vector<int64_t> out = ctx->saved_data["out"].toIntVector();
    at::Tensor g = grads[0];
    if (!g.defined())  // the output did not reach the loss: its gradient is zero, and still travels
      g = at::zeros(ctx->saved_data["shape"].toIntVector(),
                    at::TensorOptions().dtype(static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt())));
    return {group->all_to_all_single(g.contiguous(), out, in), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::vector<int64_t> shard_sizes(int64_t num_experts, int64_t world) {
  std::vector<int64_t> sizes;
  for (int64_t r = 0; r < world; ++r) sizes.push_back(expert_shard(num_experts, r, world).count);
  return sizes;
}

// Steps 1-4 of the header for one forward of one layer.
at::Tensor exchange_and_run(Group& group, const moe::ExpertBankImpl& local, const at::Tensor& rows,
                            const moe::RoutingPlan& plan) {
  const int64_t W = group.world_size(), E = plan.experts, n_local = local.num_experts();
  const std::vector<int64_t> experts_of = shard_sizes(E, W);
  // 1. Row counts per (source rank, local expert).
  const at::Tensor counts = at::tensor(plan.counts, at::kLong);
  const at::Tensor got =
      group.all_to_all_single(counts, experts_of, std::vector<int64_t>(static_cast<size_t>(W), n_local));
  const int64_t* gp = got.data_ptr<int64_t>();
  std::vector<int64_t> send(static_cast<size_t>(W), 0), recv(static_cast<size_t>(W), 0);
  for (int64_t r = 0, e = 0; r < W; ++r)
    for (int64_t j = 0; j < experts_of[r]; ++j, ++e) send[r] += plan.counts[e];
  for (int64_t r = 0; r < W; ++r) recv[r] = std::accumulate(gp + r * n_local, gp + (r + 1) * n_local, int64_t{0});
  // 2. Rows to the owners: they arrive by source rank, then by local expert.
  const at::Tensor received = all_to_all_differentiable(group, rows, send, recv);
  // 3. The local experts on them, through a plan that groups the received rows by expert (each
  //    received row is one "token" with one slot).
  at::Tensor outputs;
  if (received.size(0) == 0) {
    outputs = received;  // nothing to compute; keeps the backward exchange connected
  } else {
    std::vector<int64_t> expert_of_row;
    expert_of_row.reserve(static_cast<size_t>(received.size(0)));
    for (int64_t r = 0; r < W; ++r)
      for (int64_t e = 0; e < n_local; ++e) expert_of_row.insert(expert_of_row.end(), gp[r * n_local + e], e);
    const at::Tensor idx = at::tensor(expert_of_row, at::kLong).view({-1, 1});
    const moe::RoutingPlan local_plan = moe::build_routing_plan(idx, n_local, moe::CapacityConfig{});
    outputs = local.forward_rows(received, local_plan, nullptr).index_select(0, local_plan.slot_row);
  }
  // 4. Back to the ranks the rows came from, in their plan order.
  return all_to_all_differentiable(group, outputs, recv, send);
}

}  // namespace

ExpertShard expert_shard(int64_t num_experts, int64_t rank, int64_t world_size) {
  if (world_size < 1 || rank < 0 || rank >= world_size || num_experts < 0)
    fail(cat("expert parallelism: no shard for rank ", rank, " of ", world_size));
  const int64_t base = num_experts / world_size, extra = num_experts % world_size;
  return {rank * base + std::min(rank, extra), base + (rank < extra ? 1 : 0)};
}

int64_t expert_owner(int64_t num_experts, int64_t expert, int64_t world_size) {
  const int64_t base = num_experts / world_size, extra = num_experts % world_size, boundary = extra * (base + 1);
  return expert < boundary ? expert / (base + 1) : extra + (expert - boundary) / base;
}

at::Tensor all_to_all_differentiable(Group& group, const at::Tensor& x, const std::vector<int64_t>& input_split_sizes,
                                     const std::vector<int64_t>& output_split_sizes) {
  return AllToAllFn::apply(x, &group, input_split_sizes, output_split_sizes);
}

moe::ExpertBank shard_expert_bank(const moe::ExpertBankImpl& bank, ExpertShard shard) {
  const moe::DenseExpertBankImpl* dense = bank.as_dense();
  if (!dense) fail(cat("expert parallelism: experts of kind '", bank.kind(), "' cannot be spread over processes"));
  if (shard.first < 0 || shard.count < 0 || shard.first + shard.count > bank.num_experts())
    fail(cat("expert parallelism: experts [", shard.first, ", ", shard.first + shard.count, ") of ", bank.num_experts()));
  auto copy = [](const at::Tensor& t) { return t.defined() ? t.detach().clone() : at::Tensor(); };
  std::vector<at::Tensor> w_in, w_out, b_in, b_out;
  for (int64_t e = shard.first; e < shard.first + shard.count; ++e) {
    w_in.push_back(copy(dense->w_in(e)));
    w_out.push_back(copy(dense->w_out(e)));
    if (dense->has_bias_in()) b_in.push_back(copy(dense->b_in(e)));
    if (dense->has_bias_out()) b_out.push_back(copy(dense->b_out(e)));
  }
  moe::DenseExpertBank out;
  if (shard.count == 0) {
    // A rank without experts (more ranks than experts): an empty stacked bank of the right width.
    const int64_t nin = dense->gated() ? 2 : 1, f = dense->width(0);
    const auto opts = dense->w_in(0).options();
    out = std::make_shared<moe::DenseExpertBankImpl>(at::empty({0, nin * f, dense->dim()}, opts),
                                                     at::empty({0, dense->dim(), f}, opts), dense->act(), dense->gated());
  } else if (dense->homogeneous()) {
    auto stack = [](const std::vector<at::Tensor>& v) { return v.empty() ? at::Tensor() : at::stack(v); };
    out = std::make_shared<moe::DenseExpertBankImpl>(stack(w_in), stack(w_out), dense->act(), dense->gated(),
                                                     stack(b_in), stack(b_out));
  } else {
    out = std::make_shared<moe::DenseExpertBankImpl>(w_in, w_out, dense->act(), dense->gated(), b_in, b_out);
  }
  const bool trainable = dense->w_in(0).requires_grad();
  for (at::Tensor p : out->parameters()) p.set_requires_grad(trainable);
  return out;
}

moe::RemoteExperts remote_experts(const std::shared_ptr<Group>& group, const moe::ExpertBank& local) {
  // The closure keeps the group alive as long as the layer; the bank is owned by the layer.
  const moe::ExpertBankImpl* bank = local.get();
  return [group, bank](const at::Tensor& rows, const moe::RoutingPlan& plan) {
    return exchange_and_run(*group, *bank, rows, plan);
  };
}

void distribute_experts(moe::MoELayerImpl& layer, const std::shared_ptr<Group>& group) {
  if (!group || !group->active()) return;
  if (layer.experts_distributed()) fail("expert parallelism: the layer's experts are already distributed");
  const ExpertShard shard = expert_shard(layer.num_experts(), group->rank(), group->world_size());
  moe::ExpertBank local = shard_expert_bank(layer.experts(), shard);
  moe::RemoteExperts run = remote_experts(group, local);
  layer.distribute_experts(std::move(local), std::move(run));
}

namespace {

// The model's MoE blocks with their module paths, in module order (the same on every rank).
std::vector<std::pair<std::string, MoeFFN*>> moe_blocks(torch::nn::Module& model) {
  std::vector<std::pair<std::string, MoeFFN*>> out;
  for (const auto& item : model.named_modules())
    if (auto* block = dynamic_cast<MoeFFN*>(item.value().get())) out.emplace_back(item.key(), block);
  return out;
}

}  // namespace

int64_t distribute_model_experts(torch::nn::Module& model, const std::shared_ptr<Group>& group) {
  const auto blocks = moe_blocks(model);
  if (!group || !group->active()) return static_cast<int64_t>(blocks.size());
  for (const auto& [path, block] : blocks) {
    if (block->num_experts() < group->world_size())
      fail(cat("expert parallelism: ", path, " has ", block->num_experts(), " experts, fewer than the ",
               group->world_size(), " ranks"));
    const ExpertShard shard = expert_shard(block->num_experts(), group->rank(), group->world_size());
    block->distribute_experts(shard.first, shard.count,
                              [group](const moe::ExpertBank& local) { return remote_experts(group, local); });
  }
  return static_cast<int64_t>(blocks.size());
}

void gather_distributed_experts(torch::nn::Module& model, Group& group,
                                std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                const std::vector<std::string>& prefixes, int64_t expert_group_size) {
  const int64_t S = expert_group_size > 0 ? expert_group_size : group.world_size();
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < tensors.size(); ++i) index[tensors[i].first] = i;
  for (const auto& [path, block] : moe_blocks(model)) {
    if (!block->experts_distributed()) continue;
    const MoeFfnSpec& spec = block->spec();
    const bool trainable = block->experts.front()->gate->weight.requires_grad();
    const at::ScalarType dtype = block->experts.front()->gate->weight.scalar_type();
    for (const std::string& prefix : prefixes) {
      if (!prefix.empty() && !trainable) continue;  // frozen experts have no optimizer state
      for (int64_t e = 0; e < block->num_experts(); ++e) {
        const int64_t owner = expert_owner(block->num_experts(), e, S);
        const int64_t f = spec.widths[e], H = spec.hidden;
        const std::pair<const std::string*, std::vector<int64_t>> weights[] = {
            {&spec.gate_name, {f, H}}, {&spec.up_name, {f, H}}, {&spec.down_name, {H, f}}};
        for (const auto& [name, shape] : weights) {
          const std::string key = cat(prefix, path, ".experts.", e, ".", *name, ".weight");
          at::Tensor t;
          if (owner == group.rank()) {
            auto it = index.find(key);
            if (it == index.end()) fail(cat("expert parallelism: rank ", group.rank(), " holds no tensor ", key));
            t = tensors[it->second].second.detach().contiguous();
          } else {
            t = at::empty(shape, dtype);
          }
          group.broadcast(t, owner);
          if (owner != group.rank()) tensors.emplace_back(key, t);
        }
      }
    }
  }
}

std::vector<at::Tensor> distributed_expert_parameters(torch::nn::Module& module) {
  std::vector<at::Tensor> out;
  for (const auto& m : module.modules(/*include_self=*/true)) {
    if (auto* layer = dynamic_cast<moe::MoELayerImpl*>(m.get()); layer && layer->experts_distributed())
      for (const at::Tensor& p : layer->experts().parameters()) out.push_back(p);
    if (auto* block = dynamic_cast<MoeFFN*>(m.get()); block && block->experts_distributed())
      for (const auto& expert : block->experts)
        for (const at::Tensor& p : expert->parameters()) out.push_back(p);
  }
  return out;
}

}  // namespace mf::dist
