#include "moe/moe_layer.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <optional>

#include "moe/autograd.h"
#include "moe/kernels.h"
#include "moe/plan_padding.h"
#include "util/compat.h"
#include "util/error.h"
#include "util/str.h"

namespace mf::moe {

MoELayerImpl::MoELayerImpl(ExpertBank experts, Router router, MoELayerOptions opt)
    : experts_(std::move(experts)), router_(std::move(router)), opt_(opt) {
  if (experts_->num_experts() != router_->num_experts())
    fail(cat("MoE layer: router has ", router_->num_experts(), " experts, bank has ", experts_->num_experts()));
  if (experts_->dim() != router_->dim())
    fail(cat("MoE layer: router width ", router_->dim(), " differs from expert width ", experts_->dim()));
  register_module("experts", experts_);
  register_module("router", router_);
}

MoELayerImpl::MoELayerImpl(ExpertBank local, Router router, RemoteExperts run, std::vector<int64_t> expert_params,
                           MoELayerOptions opt)
    : experts_(std::move(local)), router_(std::move(router)), opt_(opt), remote_(std::move(run)),
      expert_params_(std::move(expert_params)) {
  if (static_cast<int64_t>(expert_params_.size()) != router_->num_experts())
    fail(cat("MoE layer: router has ", router_->num_experts(), " experts, ", expert_params_.size(), " sizes given"));
  if (experts_->dim() != router_->dim())
    fail(cat("MoE layer: router width ", router_->dim(), " differs from expert width ", experts_->dim()));
  register_module("experts", experts_);
  register_module("router", router_);
}

void MoELayerImpl::set_shared_expert(ExpertBank shared, const at::Tensor& gate_weight) {
  if (shared->num_experts() != 1 || shared->dim() != dim())
    fail(cat("MoE layer: the shared expert must be one expert of width d = ", dim()));
  shared_ = register_module("shared_expert", std::move(shared));
  if (gate_weight.defined()) {
    if (gate_weight.numel() != dim()) fail(cat("MoE layer: shared expert gate must be [1, ", dim(), "]"));
    // A copy, but not detached: a caller's differentiable weight still receives gradients.
    shared_gate_w_ = register_parameter("shared_expert_gate", gate_weight.reshape({1, dim()}).clone());
  }
}

void MoELayerImpl::distribute_experts(ExpertBank local, RemoteExperts run) {
  if (local->dim() != dim()) fail(cat("MoE layer: the local experts have width ", local->dim(), ", expected ", dim()));
  for (int64_t e = 0; e < num_experts(); ++e) expert_params_.push_back(experts_->expert_params(e));
  experts_ = replace_module("experts", std::move(local));
  remote_ = std::move(run);
}

void MoELayerImpl::to_dtype(at::ScalarType dtype) {
  experts_->to(dtype);
  if (shared_) shared_->to(dtype);
  if (shared_gate_w_.defined()) shared_gate_w_.set_data(shared_gate_w_.data().to(dtype));
}

MoEOutput MoELayerImpl::forward_full(const at::Tensor& x_in, const MoECallbacks* cb) {
  const int64_t d = dim();
  if (x_in.size(-1) != d) fail(cat("MoE layer: input width ", x_in.size(-1), ", expected ", d));
  const at::Tensor x = x_in.reshape({-1, d});
  MoEOutput o;
  {
    // Routing is fp32 whatever a surrounding CPU autocast says (top-k on bf16 logits flips ties).
    CpuAutocast fp32_routing(false, at::kBFloat16);
    o.route = router_->route(x, is_training());
    if (cb && cb->router_logits) {
      const at::Tensor l = cb->router_logits(o.route.logits);
      if (!l.is_same(o.route.logits)) o.route = router_->rescore(l);
    }
  }
  at::Tensor prio;
  if (opt_.capacity.priority == Priority::BatchPrioritized) prio = std::get<0>(o.route.probs.detach().max(1));
  o.plan = build_routing_plan(o.route.idx, num_experts(), opt_.capacity, prio, router_->selection().k);

  at::Tensor sg;
  if (shared_ && shared_gate_w_.defined()) {
    const at::ScalarType rd = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    sg = at::sigmoid(apply_linear(x.to(rd), shared_gate_w_.to(rd)));
    o.shared_gate = sg;
  }

  at::Tensor y;
  const bool grad = at::GradMode::is_enabled();
  const at::ScalarType wd = experts_->dtype();
  const bool fusable = (wd == at::kBFloat16 || wd == at::kFloat) && experts_->as_dense() &&
                       (!shared_ || (shared_->dtype() == wd && shared_->as_dense()));
  const bool observed = cb && cb->per_expert();
  if (remote_) {
    if (observed) fail("MoE layer: single experts cannot be observed when the experts are spread over processes");
    y = run_remote(x, o);
  }
  // The inference paths pick their own dtypes (the weights', fp32 accumulation); CPU autocast
  // (a bf16 trainer's validation pass) would recast the inputs of their out= GEMMs.
  std::optional<CpuAutocast> no_autocast;
  if (!grad && !observed) no_autocast.emplace(false, at::kBFloat16);
  if (!remote_ && !grad && !observed && fusable && x.size(0) <= opt_.small_batch_tokens) {
    y = run_fused(x, o, static_cast<bool>(shared_), sg);
    o.y = y.reshape(x_in.sizes());
    return o;
  }
  if (!remote_)
    y = grad || observed || !experts_->as_dense() ? run_autograd(x, o, observed ? cb : nullptr) : run_grouped(x, o);
  if (shared_) {
    at::Tensor s;
    if (observed) {
      at::Tensor h = shared_->forward_hidden(0, x.to(shared_->dtype()));
      if (cb->expert_hidden) h = cb->expert_hidden(-1, h, {});
      s = shared_->forward_output(0, h);
      if (cb->expert_output) s = cb->expert_output(-1, s, {});
    } else {
      s = shared_->forward_expert(0, x.to(shared_->dtype()));
    }
    if (sg.defined()) s = s.to(sg.scalar_type()) * sg;
    y = y + s.to(y.scalar_type());
  }
  o.y = y.reshape(x_in.sizes());
  return o;
}

at::Tensor MoELayerImpl::run_autograd(const at::Tensor& x, const MoEOutput& o, const MoECallbacks* cb) {
  if (!cb && experts_->as_dense()) {
    // Training a dense bank: expert blocks padded to recurring row counts (moe/plan_padding.h).
    const RoutingPlan padded = pad_expert_blocks(o.plan);
    const at::Tensor ys = experts_->forward_rows(x, padded, nullptr);
    const at::Tensor g = at::constant_pad_nd(o.route.gates.reshape({-1}), {0, 1}).index_select(0, padded.row_slot);
    return combine(ys, g, padded, x.scalar_type());
  }
  const RoutingPlan& p = o.plan;
  const at::Tensor ys = experts_->forward_rows(x, p, cb);
  const at::Tensor g = o.route.gates.reshape({-1}).index_select(0, p.row_slot);
  return combine(ys, g, p, x.scalar_type());
}

at::Tensor MoELayerImpl::run_remote(const at::Tensor& x, const MoEOutput& o) {
  const RoutingPlan& p = o.plan;
  const at::Tensor ys = remote_(gather_rows(x.to(experts_->dtype()), p), p);
  const at::Tensor g = o.route.gates.reshape({-1}).index_select(0, p.row_slot);
  return combine(ys, g, p, x.scalar_type());
}

at::Tensor MoELayerImpl::run_grouped(const at::Tensor& x, const MoEOutput& o) {
  const RoutingPlan& p = o.plan;
  const DenseExpertBankImpl& bank = *experts_->as_dense();
  // Two [rows, d] buffers per thread, reused across calls and layers: fresh allocations of
  // this size are mmap'd and page-faulted on every call, which costs more than the copy.
  static thread_local at::Tensor ws_x, ws_y;
  auto take = [&](at::Tensor& ws) {
    const int64_t n = p.rows() * dim();
    // An inference tensor cannot be written by an out= op outside InferenceMode (nor the reverse).
    if (!ws.defined() || ws.numel() < n || ws.scalar_type() != experts_->dtype() ||
        ws.is_inference() != c10::InferenceMode::is_enabled())
      ws = at::empty({std::max<int64_t>(n, 1)}, x.options().dtype(experts_->dtype()));
    return ws.narrow(0, 0, n).view({p.rows(), dim()});
  };
  const at::Tensor xs = gather_token_rows(x.to(experts_->dtype()), p, take(ws_x));
  at::Tensor ys = take(ws_y);
  // Experts with tokens, and their cost (rows x width).
  std::vector<int64_t> active;
  for (int64_t e = 0; e < num_experts(); ++e)
    if (p.counts[e] > 0) active.push_back(e);
  auto run_expert = [&](int64_t e) {
    bank.forward_expert_into(e, xs.narrow(0, p.offsets[e], p.counts[e]), ys.narrow(0, p.offsets[e], p.counts[e]));
  };
  const int64_t nthr = at::get_num_threads();
  if (opt_.whole_experts_per_thread && nthr > 1 && static_cast<int64_t>(active.size()) >= 2 * nthr) {
    // Expert parallelism: each thread runs whole experts with single-threaded GEMMs (one
    // parallel region per layer instead of three per expert; the per-region fork/join cost
    // dominates on busy machines). Longest-processing-time-first assignment by cost.
    std::vector<int64_t> order = active;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return p.counts[a] * experts_->width(a) > p.counts[b] * experts_->width(b);
    });
    std::vector<std::vector<int64_t>> lists(nthr);
    std::vector<int64_t> load(nthr, 0);
    for (int64_t e : order) {
      const int64_t t = std::min_element(load.begin(), load.end()) - load.begin();
      lists[t].push_back(e);
      load[t] += p.counts[e] * experts_->width(e);
    }
    // Worker threads start with default thread-local state (grad mode on, no InferenceMode);
    // the experts' out= GEMMs need the caller's.
    const at::ThreadLocalState caller_state;
    at::parallel_for(0, nthr, 1, [&](int64_t t0, int64_t t1) {
      at::ThreadLocalStateGuard same_state(caller_state);
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t e : lists[t]) run_expert(e);
    });
  } else {
    for (int64_t e : active) run_expert(e);
  }
  const at::Tensor g = o.route.gates.detach().reshape({-1}).index_select(0, p.row_slot);
  return combine_rows(ys, g, p, x.scalar_type());
}

at::Tensor MoELayerImpl::run_fused(const at::Tensor& x, const MoEOutput& o, bool with_shared,
                                   const at::Tensor& shared_gate) {
  const RoutingPlan& p = o.plan;
  const int64_t T = x.size(0), d = dim();
  const bool bf16 = experts_->dtype() == at::kBFloat16;
  // The kernel reads bf16 or fp32 inputs; anything else (fp64, fp16) becomes fp32.
  const at::Tensor xk = x.scalar_type() == at::kBFloat16 ? x.contiguous() : x.to(at::kFloat).contiguous();
  const at::Tensor gates = o.route.gates.detach().to(at::kFloat).contiguous();
  const float* gp = gates.data_ptr<float>();
  const int64_t* rt = p.row_token.data_ptr<int64_t>();
  const int64_t* rs = p.row_slot.data_ptr<int64_t>();
  std::vector<DecodeJob> jobs;
  std::vector<at::Tensor> keep;  // fp32 biases alive for the call
  auto add_job = [&](const DenseExpertBankImpl& bank, int64_t e) -> DecodeJob& {
    DecodeJob j;
    const at::Tensor wi = bank.w_in(e), wo = bank.w_out(e);
    TORCH_CHECK(wi.is_contiguous() && wo.is_contiguous(), "expert weights must be contiguous");
    j.w_in = wi.data_ptr();
    j.w_out = wo.data_ptr();
    j.f = bank.width(e);
    j.gated = bank.gated();
    j.act = bank.act();
    if (bank.has_bias_in()) {
      keep.push_back(bank.b_in(e).to(at::kFloat).contiguous());
      j.b_in = keep.back().data_ptr<float>();
    }
    if (bank.has_bias_out()) {
      keep.push_back(bank.b_out(e).to(at::kFloat).contiguous());
      j.b_out = keep.back().data_ptr<float>();
    }
    jobs.push_back(std::move(j));
    return jobs.back();
  };
  for (int64_t e = 0; e < num_experts(); ++e) {
    if (p.counts[e] == 0) continue;
    DecodeJob& j = add_job(*experts_->as_dense(), e);
    for (int64_t r = p.offsets[e]; r < p.offsets[e + 1]; ++r) {
      j.tokens.push_back(rt[r]);
      j.gates.push_back(gp[rs[r]]);
    }
  }
  at::Tensor sgf;
  if (with_shared) {
    DecodeJob& j = add_job(*shared_->as_dense(), 0);
    if (shared_gate.defined()) sgf = shared_gate.to(at::kFloat).contiguous();
    for (int64_t t = 0; t < T; ++t) {
      j.tokens.push_back(t);
      j.gates.push_back(sgf.defined() ? sgf.data_ptr<float>()[t] : 1.f);
    }
  }
  at::Tensor y = at::zeros({T, d}, at::kFloat);
  fused_small_batch(xk.data_ptr(), xk.scalar_type() == at::kBFloat16, T, d, bf16, jobs, y.data_ptr<float>());
  return y.scalar_type() == x.scalar_type() ? y : y.to(x.scalar_type());
}

MoETelemetry MoELayerImpl::telemetry(const MoEOutput& out, const at::Tensor& mask) const {
  std::vector<int64_t> params = expert_params_;
  if (params.empty())
    for (int64_t e = 0; e < num_experts(); ++e) params.push_back(experts_->expert_params(e));
  int64_t always = router_->param_count();
  if (shared_) always += shared_->expert_params(0) + (shared_gate_w_.defined() ? shared_gate_w_.numel() : 0);
  return compute_telemetry(out.plan, out.route.probs, mask, params, always);
}

}  // namespace mf::moe
