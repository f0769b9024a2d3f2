// Data parallelism for the training loop (docs/distributed.md): each rank trains on its slice of
// every global batch (the trainer's rank / world_size), gradients are averaged with bucketed
// all-reduces before clipping (as DDP), the logged loss and loss terms are averaged too, and only
// rank 0 writes checkpoints, metrics and the final model and shows the progress bar. With W ranks
// x batch b a run then equals one rank x batch W*b (up to summation order).
#pragma once
#include <memory>

#include "dist/dist.h"
#include "train/trainer.h"

namespace mf::dist {

// Sets `options` up for `group` (nothing changes for a single-process group).
void make_data_parallel(TrainerOptions& options, const std::shared_ptr<Group>& group);

// Expert parallelism on top of data parallelism (dist/expert_parallel.h): spreads the experts of
// every MoE block of `model` over expert groups of `expert_group_size` consecutive ranks (0 = the
// whole job; e.g. the GPUs of one node) and sets `options` up for it: the replicated (dense)
// gradients are averaged over the job as above; an expert's gradient (which already holds its
// expert group's tokens) is summed over the expert's replicas in the other groups and divided by
// the world size; the clipping norm counts every expert once; checkpoints gather the experts to
// rank 0. Call after make_data_parallel and before the optimizer is built. With W ranks x batch b
// the run equals one process x batch W*b. mf::Error when the size does not divide the job.
void make_expert_parallel(TrainerOptions& options, const std::shared_ptr<Group>& group, torch::nn::Module& model,
                          int64_t expert_group_size = 0);

}  // namespace mf::dist
