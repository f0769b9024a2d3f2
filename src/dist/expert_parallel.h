// Expert parallelism for the MoE layer (docs/distributed.md), as Tutel and DeepSpeed-MoE do it:
// the experts of each MoE layer are spread over the ranks of a group in contiguous blocks, every
// rank keeps the router and all other (dense) weights, and routes its own tokens. Per layer and
// forward:
//   1. the per-expert row counts go to the experts' owners (an all-to-all of E integers);
//   2. the routed rows go to the owners (all_to_all_single with per-rank split sizes from the
//      routing plan);
//   3. each owner runs its experts on the rows it received (grouped by expert);
//   4. the outputs travel back along the reversed splits, and each rank combines its own tokens.
// The two row exchanges are autograd functions whose backward is the exchange with the splits
// swapped, so training works unchanged; every rank must run the same layers in the same order
// (a rank without tokens still takes part, with empty pieces).
//
// Gradients: the dense weights (router included) are replicated and averaged over the ranks as in
// data parallelism; each expert's gradient already sums the contributions of all ranks' tokens,
// so it is divided by the world size instead of all-reduced (expert_gradient_scale).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "dist/dist.h"
#include "moe/moe_layer.h"

namespace mf::dist {

// Experts [first, first + count) of one rank: contiguous blocks, the first E % W ranks one more.
struct ExpertShard {
  int64_t first = 0, count = 0;
};
ExpertShard expert_shard(int64_t num_experts, int64_t rank, int64_t world_size);
// The rank whose shard holds `expert` (0 <= expert < num_experts).
int64_t expert_owner(int64_t num_experts, int64_t expert, int64_t world_size);

// all_to_all_single (Group) with autograd: the backward sends the gradient back along the
// reversed splits. An unused output's gradient travels as zeros, so every rank's backward takes
// part in the same exchanges.
at::Tensor all_to_all_differentiable(Group& group, const at::Tensor& x, const std::vector<int64_t>& input_split_sizes,
                                     const std::vector<int64_t>& output_split_sizes);

// This rank's experts of a plain (dense) bank, as a bank of their own with copied weights (so the
// other experts' memory can be released); requires_grad follows the source. Other banks (LoRA
// experts) are refused with an mf::Error.
moe::ExpertBank shard_expert_bank(const moe::ExpertBankImpl& bank, ExpertShard shard);

// The exchange of routed rows for an MoE layer whose local experts are `local` (steps 1-4 above).
moe::RemoteExperts remote_experts(const std::shared_ptr<Group>& group, const moe::ExpertBank& local);

// Makes `layer` expert-parallel over `group`: it keeps only this rank's experts and exchanges
// routed rows in every forward. The layer must be identical on every rank beforehand. A
// single-process group leaves the layer as it is.
void distribute_experts(moe::MoELayerImpl& layer, const std::shared_ptr<Group>& group);

// Makes every MoE block of a runtime model (model/moe_ffn.h) expert-parallel over `group`: each
// rank keeps its shard of each layer's experts and releases the others' weights. Returns the
// number of MoE blocks. A single-process group changes nothing. Every layer needs at least as
// many experts as there are ranks (mf::Error otherwise), and experts computed from the others
// (avg-k routers) cannot be spread.
int64_t distribute_model_experts(torch::nn::Module& model, const std::shared_ptr<Group>& group);

// Checkpoints of an expert-parallel model: adds to `tensors` (name -> tensor, as this rank has
// them) the experts' tensors that other ranks hold, for each name prefix ("" for the model's
// weights, "exp_avg." / "exp_avg_sq." for AdamW's moments of trainable experts). A collective
// over the whole job `group`: every rank calls it with the same prefixes; each expert tensor is
// broadcast by its owner in the first expert group (job ranks 0 .. expert_group_size - 1; 0 =
// the whole job is one expert group).
void gather_distributed_experts(torch::nn::Module& model, Group& group,
                                std::vector<std::pair<std::string, at::Tensor>>& tensors,
                                const std::vector<std::string>& prefixes, int64_t expert_group_size = 0);

// The expert parameters of every expert-parallel MoE layer and MoE block in `module` (nested at
// any depth; this rank's experts, LoRA adapters on them not included), for the
// trainer's gradient hook: these are scaled by expert_gradient_scale instead of all-reduced.
std::vector<at::Tensor> distributed_expert_parameters(torch::nn::Module& module);
inline double expert_gradient_scale(const Group& group) { return 1.0 / static_cast<double>(group.world_size()); }

}  // namespace mf::dist
