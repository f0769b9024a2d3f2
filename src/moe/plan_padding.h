// Expert blocks padded to a few row counts, for the training path of dense expert banks.
// oneDNN compiles a GEMM kernel for every new shape (about 0.5 ms on the CPUs here, 10-20x the
// GEMM of a fine-grained expert) and caches 1024 of them; the row count of an expert changes
// with every batch, so unpadded blocks missed the cache on almost every expert GEMM, forward and
// backward. Padded, each block's row count is one of ~8 per octave (at most 1/8 more rows).
#pragma once
#include <cstdint>

#include "moe/routing_plan.h"

namespace mf::moe {

// n rounded up to a multiple of max(8, 2^(floor(log2 n) - 3)); 0 stays 0.
int64_t padded_block_rows(int64_t n);

// The plan with every expert's block padded to padded_block_rows(count) rows. Padding rows
// repeat the block's first token (so gathered inputs stay finite), are referenced by no slot
// (combine and the gather's backward ignore them) and have row_slot = tokens * slots, one past
// the last slot: index a gate vector padded with one zero with it, and they get gate 0 and
// receive no gradient.
RoutingPlan pad_expert_blocks(const RoutingPlan& plan);

}  // namespace mf::moe
