// Custom autograd functions of the MoE layer (all of them live here). Each replaces a chain
// of generic libtorch ops whose backward would allocate [T*K, d] temporaries or scatter with
// index_add: gather of the routed rows, and the gate-weighted combine (whose backward also
// yields the gate gradient as one dot product per routed row). Validated against finite
// differences in fp64 (tests/test_moe_autograd.cpp).
#pragma once
#include <ATen/ATen.h>

#include "moe/routing_plan.h"

namespace mf::moe {

// rows[i] = x[plan.row_token[i]]; backward sums the row gradients of each token (fp32 accumulate).
at::Tensor gather_rows(const at::Tensor& x, const RoutingPlan& plan);

// y[t] = sum over kept slots of gates[row] * rows[row], accumulated in fp32, returned in
// out_dtype; gradients for rows and gates.
at::Tensor combine(const at::Tensor& rows, const at::Tensor& gates, const RoutingPlan& plan,
                   at::ScalarType out_dtype);

}  // namespace mf::moe
