#include "moe/autograd.h"

#include <torch/torch.h>

namespace mf::moe {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The backward passes need only these parts of the plan.
void save_plan(AutogradContext* ctx, const RoutingPlan& p) {
  ctx->saved_data["row_token"] = p.row_token;
  ctx->saved_data["slot_row"] = p.slot_row;
  ctx->saved_data["tokens"] = p.tokens;
  ctx->saved_data["slots"] = p.slots;
}

RoutingPlan load_plan(AutogradContext* ctx) {
  RoutingPlan p;
  p.row_token = ctx->saved_data["row_token"].toTensor();
  p.slot_row = ctx->saved_data["slot_row"].toTensor();
  p.tokens = ctx->saved_data["tokens"].toInt();
  p.slots = ctx->saved_data["slots"].toInt();
  p.offsets = {0, p.row_token.size(0)};
  return p;
}

struct GatherRowsFn : public torch::autograd::Function<GatherRowsFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const RoutingPlan* plan) {
    save_plan(ctx, *plan);
    ctx->saved_data["dtype"] = static_cast<int64_t>(x.scalar_type());
    return gather_token_rows(x, *plan);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const RoutingPlan p = load_plan(ctx);
    const auto dt = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {combine_rows(grads[0], at::Tensor(), p, dt), at::Tensor()};
  }
};

struct CombineFn : public torch::autograd::Function<CombineFn> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& gates,
                            const RoutingPlan* plan, int64_t out_dtype) {
    save_plan(ctx, *plan);
    ctx->save_for_backward({rows, gates});
    return combine_rows(rows, gates, *plan, static_cast<at::ScalarType>(out_dtype));
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const RoutingPlan p = load_plan(ctx);
    auto saved = ctx->get_saved_variables();
    const at::Tensor& rows = saved[0];
    const at::Tensor& gates = saved[1];
    const bool need_gate = ctx->needs_input_grad(1);
    auto res = combine_rows_backward(grads[0], need_gate ? rows : at::Tensor(), gates, p, rows.scalar_type());
    at::Tensor dg = need_gate ? res.second.to(gates.scalar_type()) : at::Tensor();
    return {res.first, dg, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor gather_rows(const at::Tensor& x, const RoutingPlan& plan) { return GatherRowsFn::apply(x, &plan); }

at::Tensor combine(const at::Tensor& rows, const at::Tensor& gates, const RoutingPlan& plan,
                   at::ScalarType out_dtype) {
  return CombineFn::apply(rows, gates, &plan, static_cast<int64_t>(out_dtype));
}

}  // namespace mf::moe
