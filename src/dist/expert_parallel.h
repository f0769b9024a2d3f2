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

// all_to_all_single (Group) with autograd: the backward sends the gradient back along the
// reversed splits. An unused output's gradient travels as zeros, so every rank's backward takes
// part in the same exchanges.
at::Tensor all_to_all_differentiable(Group& group, const at::Tensor& x, const std::vector<int64_t>& input_split_sizes,
                                     const std::vector<int64_t>& output_split_sizes);

// This rank's experts of a plain (dense) bank, as a bank of their own with copied weights (so the
// other experts' memory can be released); requires_grad follows the source. Other banks (LoRA
// experts) are refused with an mf::Error.
moe::ExpertBank shard_expert_bank(const moe::ExpertBankImpl& bank, ExpertShard shard);

// Makes `layer` expert-parallel over `group`: it keeps only this rank's experts and exchanges
// routed rows in every forward. The layer must be identical on every rank beforehand. A
// single-process group leaves the layer as it is.
void distribute_experts(moe::MoELayerImpl& layer, const std::shared_ptr<Group>& group);

// Every expert-parallel layer's expert parameters in `module` (nested at any depth), for the
// trainer's gradient hook: these are scaled by expert_gradient_scale instead of all-reduced.
std::vector<at::Tensor> distributed_expert_parameters(torch::nn::Module& module);
inline double expert_gradient_scale(const Group& group) { return 1.0 / static_cast<double>(group.world_size()); }

}  // namespace mf::dist
