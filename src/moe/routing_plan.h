// The routing plan: which (token, slot) pairs go to which expert, in which order, and which
// were dropped by capacity. Built by a counting sort (histogram + prefix sum + scatter) of the
// selected expert ids; shared by dispatch (gather), the expert GEMMs and combine, forward and
// backward. No one-hot [T, E, C] tensors anywhere.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "moe/config.h"

namespace mf::moe {

struct RoutingPlan {
  int64_t tokens = 0;       // T
  int64_t experts = 0;      // E
  int64_t slots = 0;        // K: selected-expert slots per token (k, or max_k for top-p / dyn-k)
  int64_t capacity = -1;    // per expert and group; -1 = dropless
  int64_t routed = 0;       // non-empty (token, slot) pairs
  int64_t dropped = 0;      // of those, dropped by capacity
  at::Tensor idx;           // [T, K] int64 expert per slot, -1 = empty slot
  at::Tensor loc;           // [T, K] int64 location inside the expert's group buffer, -1 = dropped/empty
  std::vector<int64_t> counts;   // [E] kept rows per expert
  std::vector<int64_t> offsets;  // [E + 1] row offsets of each expert's block
  at::Tensor row_token;     // [N] int64 token of each kept row, rows grouped by expert
  at::Tensor row_slot;      // [N] int64 flat slot (t * K + j) of each kept row
  at::Tensor slot_row;      // [T * K] int64 row of each slot, -1 = not kept

  int64_t rows() const { return offsets.empty() ? 0 : offsets.back(); }
};

// idx: [T, K] int64 (-1 = empty). priority: [T] scores for batch-prioritized routing (higher
// first), ignored for token order. k_for_capacity: the k in Tutel's capacity formula.
RoutingPlan build_routing_plan(const at::Tensor& idx, int64_t num_experts, const CapacityConfig& cfg,
                               const at::Tensor& priority = {}, int64_t k_for_capacity = -1);

// rows[i] = x[plan.row_token[i]] for x [T, d] (any dtype): parallel row copies.
// `out` (optional) is a preallocated [N, d] buffer of x's dtype to write into.
at::Tensor gather_token_rows(const at::Tensor& x, const RoutingPlan& plan, at::Tensor out = {});

// y[t] = sum over kept slots j of token t: gate[row] * rows[row], accumulated in fp32 (fp64 for
// double); gates undefined = 1. rows: [N, d]; returns [T, d] in `out_dtype`.
at::Tensor combine_rows(const at::Tensor& rows, const at::Tensor& gates, const RoutingPlan& plan,
                        at::ScalarType out_dtype);
// Backward of combine: d_rows[row] = gate[row] * dy[token(row)] (dtype of `rows_dtype`) and,
// when `rows` is defined, d_gate[row] = <dy[token(row)], rows[row]> (fp32, fp64 for double).
std::pair<at::Tensor, at::Tensor> combine_rows_backward(const at::Tensor& dy, const at::Tensor& rows,
                                                        const at::Tensor& gates, const RoutingPlan& plan,
                                                        at::ScalarType rows_dtype);

}  // namespace mf::moe
