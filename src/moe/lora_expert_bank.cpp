#include "moe/lora_expert_bank.h"

#include "moe/autograd.h"
#include "util/error.h"
#include "util/str.h"

namespace mf::moe {

namespace {

void check_delta(const LoraDelta& d, int64_t in, int64_t out, const std::string& what) {
  if (!d.defined()) return;
  if (!d.B.defined() || d.A.dim() != 2 || d.B.dim() != 2 || d.A.size(1) != in || d.B.size(0) != out ||
      d.A.size(0) != d.B.size(1))
    fail(cat("LoRA expert bank: ", what, ": A ", d.A.sizes(), " / B ", d.B.sizes(), " do not fit [", out, ", ", in,
             "]"));
}

int64_t delta_params(const LoraDelta& d) { return d.defined() ? d.A.numel() + d.B.numel() : 0; }

}  // namespace

LoraExpertBankImpl::LoraExpertBankImpl(DenseExpertBank base, std::vector<LoraExpertDeltas> deltas, double dropout)
    : base_(std::move(base)), deltas_(std::move(deltas)), dropout_(dropout) {
  if (!base_) fail("LoRA expert bank: no base weights");
  const int64_t E = static_cast<int64_t>(deltas_.size());
  if (E < 1) fail("LoRA expert bank: no experts");
  shared_ = base_->num_experts() == 1 && E > 1;
  if (!shared_ && base_->num_experts() != E)
    fail(cat("LoRA expert bank: ", E, " experts over a base of ", base_->num_experts(), " (need 1 or ", E, ")"));
  num_experts_ = E;
  dim_ = base_->dim();
  act_ = base_->act();
  gated_ = base_->gated();
  for (int64_t e = 0; e < E; ++e) {
    const int64_t f = base_->width(base_expert(e));
    widths_.push_back(f);
    check_delta(deltas_[e].gate, dim_, f, cat("expert ", e, " gate"));
    check_delta(deltas_[e].up, dim_, f, cat("expert ", e, " up"));
    check_delta(deltas_[e].down, f, dim_, cat("expert ", e, " down"));
    if (!gated_ && deltas_[e].up.defined()) fail("LoRA expert bank: an up delta on experts without an up projection");
  }
  register_module("base", base_);
}

int64_t LoraExpertBankImpl::expert_params(int64_t e) const {
  const LoraExpertDeltas& d = deltas_[e];
  return base_->expert_params(base_expert(e)) + delta_params(d.gate) + delta_params(d.up) + delta_params(d.down);
}

at::Tensor LoraExpertBankImpl::delta(const LoraDelta& d, const at::Tensor& x) const {
  at::Tensor h = (dropout_ > 0 && is_training()) ? at::dropout(x, dropout_, true) : x;
  if (h.scalar_type() == d.A.scalar_type()) return at::linear(at::linear(h, d.A), d.B) * d.scale;
  return (at::linear(at::linear(h.to(d.A.scalar_type()), d.A), d.B) * d.scale).to(x.scalar_type());
}

at::Tensor LoraExpertBankImpl::hidden_from(int64_t e, at::Tensor pre, const at::Tensor& x) const {
  const LoraExpertDeltas& d = deltas_[e];
  const int64_t f = widths_[e];
  if (!gated_) return expert_hidden_from_preact(d.gate.defined() ? pre + delta(d.gate, x) : pre, f, false, act_);
  const std::vector<at::Tensor> gu = pre.split(f, 1);  // one cat in the backward (see expert_bank.cpp)
  at::Tensor g = gu[0], u = gu[1];
  if (d.gate.defined()) g = g + delta(d.gate, x);
  if (d.up.defined()) u = u + delta(d.up, x);
  return expert_hidden_from_preact(at::cat({g, u}, 1), f, true, act_);
}

at::Tensor LoraExpertBankImpl::forward_hidden(int64_t e, const at::Tensor& x) const {
  const int64_t b = base_expert(e);
  return hidden_from(e, at::linear(x, base_->w_in(b), base_->b_in(b)), x);
}

at::Tensor LoraExpertBankImpl::forward_output(int64_t e, const at::Tensor& hidden) const {
  const int64_t b = base_expert(e);
  at::Tensor y = at::linear(hidden, base_->w_out(b), base_->b_out(b));
  return deltas_[e].down.defined() ? y + delta(deltas_[e].down, hidden) : y;
}

at::Tensor LoraExpertBankImpl::forward_rows(const at::Tensor& x, const RoutingPlan& p, const ExpertCallbacks* cb) const {
  if (!shared_) return ExpertBankImpl::forward_rows(x, p, cb);
  // One base projection per token, gathered per routed row; the deltas act on the gathered rows.
  const at::Tensor xd = x.to(dtype());
  const at::Tensor pre = gather_rows(at::linear(xd, base_->w_in(0), base_->b_in(0)), p);
  const at::Tensor xs = gather_rows(xd, p);
  // Split once for all experts (not a narrow per expert: see rows_per_expert in expert_bank.cpp).
  const std::vector<at::Tensor> pre_e = pre.split_with_sizes(p.counts, 0), xs_e = xs.split_with_sizes(p.counts, 0);
  std::vector<at::Tensor> outs;
  for (int64_t e = 0; e < num_experts(); ++e) {
    if (p.counts[e] == 0) continue;
    const int64_t o = p.offsets[e], n = p.counts[e];
    const at::Tensor tokens = cb ? p.row_token.narrow(0, o, n) : at::Tensor();
    at::Tensor h = hidden_from(e, pre_e[static_cast<size_t>(e)], xs_e[static_cast<size_t>(e)]);
    if (cb && cb->expert_hidden) h = cb->expert_hidden(e, h, tokens);
    at::Tensor y = forward_output(e, h);
    if (cb && cb->expert_output) y = cb->expert_output(e, y, tokens);
    outs.push_back(y);
  }
  return outs.empty() ? at::zeros({0, dim()}, xd.options()) : at::cat(outs, 0);
}

std::shared_ptr<const DenseExpertBankImpl> LoraExpertBankImpl::dense_equivalent() const {
  at::NoGradGuard ng;
  auto merged = [](const at::Tensor& w, const LoraDelta& d) {
    if (!d.defined()) return w.detach().clone();
    // Merged in fp32 (fp64 weights stay fp64), rounded once to the weights' dtype.
    const at::ScalarType acc = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    at::Tensor bd = at::mm(d.B.detach().to(acc), d.A.detach().to(acc)) * d.scale;
    return (w.detach().to(acc) + bd).to(w.scalar_type());
  };
  std::vector<at::Tensor> w_in, w_out, b_in, b_out;
  for (int64_t e = 0; e < num_experts(); ++e) {
    const int64_t b = base_expert(e), f = widths_[e];
    const at::Tensor wi = base_->w_in(b);
    w_in.push_back(gated_ ? at::cat({merged(wi.narrow(0, 0, f), deltas_[e].gate), merged(wi.narrow(0, f, f), deltas_[e].up)})
                          : merged(wi, deltas_[e].gate));
    w_out.push_back(merged(base_->w_out(b), deltas_[e].down));
    if (base_->has_bias_in()) b_in.push_back(base_->b_in(b).detach());
    if (base_->has_bias_out()) b_out.push_back(base_->b_out(b).detach());
  }
  return std::make_shared<DenseExpertBankImpl>(w_in, w_out, act_, gated_, b_in, b_out);
}

}  // namespace mf::moe
