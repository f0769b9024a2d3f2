// Expert selection and combine weights, shared by every router family.
#pragma once
#include <ATen/ATen.h>

#include "moe/config.h"

namespace mf::moe {

// Number of slots per token the selection produces: k for top-k, max_k (or E) otherwise.
int64_t selection_slots(const SelectionConfig& cfg, int64_t num_experts);

// Deterministic selection on scores [T, E] (float or double): ties go to the lowest expert
// index, slots are ordered by decreasing score. Returns idx [T, K] int64, -1 = empty slot.
at::Tensor select_experts(const at::Tensor& scores, const SelectionConfig& cfg);

// Combine weights [T, K] of the selected slots from the router scores [T, E], differentiable
// with respect to `scores` as the gate mode says; 0 in empty slots.
at::Tensor gate_values(const at::Tensor& scores, const at::Tensor& idx, GateMode mode);

// Scatters per-slot values [T, K] into a dense [T, E] matrix (empty slots ignored); keeps autograd.
at::Tensor dense_from_slots(const at::Tensor& idx, const at::Tensor& values, int64_t num_experts);

}  // namespace mf::moe
