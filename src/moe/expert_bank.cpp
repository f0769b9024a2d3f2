#include "moe/expert_bank.h"

#include "moe/autograd.h"
#include "moe/kernels.h"
#include "util/error.h"
#include "util/str.h"

namespace mf::moe {

at::Tensor apply_act(const at::Tensor& h, Act act) {
  switch (act) {
    case Act::SiLU: return at::silu(h);
    case Act::GELU: return at::gelu(h);
    case Act::GELUTanh: return at::gelu(h, "tanh");
    case Act::ReLU: return at::relu(h);
  }
  return h;
}

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) fail("expert bank: " + what);
}

}  // namespace

DenseExpertBankImpl::DenseExpertBankImpl(at::Tensor w_in, at::Tensor w_out, Act act, bool gated, at::Tensor b_in,
                               at::Tensor b_out)
    : stacked_(true) {
  act_ = act;
  gated_ = gated;
  check(w_in.dim() == 3 && w_out.dim() == 3, "stacked weights must be [E, out, in]");
  num_experts_ = w_in.size(0);
  dim_ = w_in.size(2);
  const int64_t nin = gated ? 2 : 1;
  check(w_in.size(1) % nin == 0, "gated input projection must have an even number of rows");
  const int64_t f = w_in.size(1) / nin;
  check(w_out.size(0) == num_experts_ && w_out.size(1) == dim_ && w_out.size(2) == f,
        cat("output projection is ", w_out.sizes(), ", expected [", num_experts_, ", ", dim_, ", ", f, "]"));
  widths_.assign(num_experts_, f);
  w_in_s_ = register_parameter("w_in", w_in.contiguous());
  w_out_s_ = register_parameter("w_out", w_out.contiguous());
  if (b_in.defined()) {
    check(b_in.sizes() == at::IntArrayRef({num_experts_, nin * f}), "b_in must be [E, n_in * f]");
    b_in_s_ = register_parameter("b_in", b_in.contiguous());
    has_b_in_ = true;
  }
  if (b_out.defined()) {
    check(b_out.sizes() == at::IntArrayRef({num_experts_, dim_}), "b_out must be [E, d]");
    b_out_s_ = register_parameter("b_out", b_out.contiguous());
    has_b_out_ = true;
  }
}

DenseExpertBankImpl::DenseExpertBankImpl(std::vector<at::Tensor> w_in, std::vector<at::Tensor> w_out, Act act, bool gated,
                               std::vector<at::Tensor> b_in, std::vector<at::Tensor> b_out)
    : stacked_(false) {
  act_ = act;
  gated_ = gated;
  check(!w_in.empty() && w_in.size() == w_out.size(), "need the same number (> 0) of input and output projections");
  num_experts_ = static_cast<int64_t>(w_in.size());
  dim_ = w_in[0].size(1);
  const int64_t nin = gated ? 2 : 1;
  has_b_in_ = !b_in.empty();
  has_b_out_ = !b_out.empty();
  check(!has_b_in_ || static_cast<int64_t>(b_in.size()) == num_experts_, "one b_in per expert");
  check(!has_b_out_ || static_cast<int64_t>(b_out.size()) == num_experts_, "one b_out per expert");
  for (int64_t e = 0; e < num_experts_; ++e) {
    check(w_in[e].dim() == 2 && w_in[e].size(1) == dim_ && w_in[e].size(0) % nin == 0,
          cat("expert ", e, ": input projection ", w_in[e].sizes(), " does not match d = ", dim_));
    const int64_t f = w_in[e].size(0) / nin;
    check(w_out[e].dim() == 2 && w_out[e].size(0) == dim_ && w_out[e].size(1) == f,
          cat("expert ", e, ": output projection ", w_out[e].sizes(), ", expected [", dim_, ", ", f, "]"));
    widths_.push_back(f);
    w_in_l_.push_back(register_parameter(cat("w_in_", e), w_in[e].contiguous()));
    w_out_l_.push_back(register_parameter(cat("w_out_", e), w_out[e].contiguous()));
    if (has_b_in_) b_in_l_.push_back(register_parameter(cat("b_in_", e), b_in[e].contiguous()));
    if (has_b_out_) b_out_l_.push_back(register_parameter(cat("b_out_", e), b_out[e].contiguous()));
  }
}

int64_t ExpertBankImpl::total_width() const {
  int64_t s = 0;
  for (int64_t w : widths_) s += w;
  return s;
}

at::ScalarType DenseExpertBankImpl::dtype() const {
  return stacked_ ? w_in_s_.scalar_type() : w_in_l_[0].scalar_type();
}

at::Tensor DenseExpertBankImpl::w_in(int64_t e) const { return stacked_ ? w_in_s_.select(0, e) : w_in_l_[e]; }
at::Tensor DenseExpertBankImpl::w_out(int64_t e) const { return stacked_ ? w_out_s_.select(0, e) : w_out_l_[e]; }
at::Tensor DenseExpertBankImpl::b_in(int64_t e) const {
  if (!has_b_in_) return {};
  return stacked_ ? b_in_s_.select(0, e) : b_in_l_[e];
}
at::Tensor DenseExpertBankImpl::b_out(int64_t e) const {
  if (!has_b_out_) return {};
  return stacked_ ? b_out_s_.select(0, e) : b_out_l_[e];
}

int64_t DenseExpertBankImpl::expert_params(int64_t e) const {
  const int64_t f = widths_[e], nin = gated_ ? 2 : 1;
  return nin * f * dim_ + dim_ * f + (has_b_in_ ? nin * f : 0) + (has_b_out_ ? dim_ : 0);
}

at::Tensor expert_hidden_from_preact(const at::Tensor& h, int64_t f, bool gated, Act act) {
  if (!gated) return apply_act(h, act);
  // split, not two narrows: the backward of a narrow is a zero-filled tensor of the whole input,
  // the backward of a split is one cat.
  const std::vector<at::Tensor> gu = h.split(f, 1);
  return apply_act(gu[0], act) * gu[1];
}

namespace {

std::vector<at::Tensor> rows_per_expert(const at::Tensor& rows, const RoutingPlan& p) {
  // One split_with_sizes for all experts: per-expert narrows would each backpropagate a
  // zero-filled [rows, d] tensor (E x the work; a quarter of an MoE training step with E = 32).
  return rows.split_with_sizes(p.counts, 0);
}

}  // namespace

at::Tensor ExpertBankImpl::forward_rows(const at::Tensor& x, const RoutingPlan& p, const ExpertCallbacks* cb) const {
  const at::Tensor xs = gather_rows(x.to(dtype()), p);
  const std::vector<at::Tensor> parts = rows_per_expert(xs, p);
  std::vector<at::Tensor> outs;
  for (int64_t e = 0; e < num_experts(); ++e) {
    if (p.counts[e] == 0) continue;
    const at::Tensor& xe = parts[static_cast<size_t>(e)];
    if (!cb) {
      outs.push_back(forward_expert(e, xe));
      continue;
    }
    const at::Tensor tokens = p.row_token.narrow(0, p.offsets[e], p.counts[e]);
    at::Tensor h = forward_hidden(e, xe);
    if (cb->expert_hidden) h = cb->expert_hidden(e, h, tokens);
    at::Tensor y = forward_output(e, h);
    if (cb->expert_output) y = cb->expert_output(e, y, tokens);
    outs.push_back(y);
  }
  return outs.empty() ? at::zeros({0, dim()}, xs.options()) : at::cat(outs, 0);
}

at::Tensor DenseExpertBankImpl::forward_hidden(int64_t e, const at::Tensor& x) const {
  return expert_hidden_from_preact(at::linear(x, w_in(e), b_in(e)), widths_[e], gated_, act_);
}

std::shared_ptr<const DenseExpertBankImpl> DenseExpertBankImpl::dense_equivalent() const {
  return std::dynamic_pointer_cast<const DenseExpertBankImpl>(shared_from_this());
}

at::Tensor DenseExpertBankImpl::forward_output(int64_t e, const at::Tensor& hidden) const {
  return at::linear(hidden, w_out(e), b_out(e));
}

void DenseExpertBankImpl::forward_expert_into(int64_t e, const at::Tensor& x, at::Tensor out) const {
  at::Tensor h = at::mm(x, w_in(e).t());
  at::Tensor a = expert_activation(h, b_in(e), widths_[e], gated_, act_);
  at::mm_out(out, a, w_out(e).t());
  if (has_b_out_) out.add_(b_out(e).to(out.scalar_type()));
}

// --- builders ------------------------------------------------------------------------------

DenseExpertBank expert_bank_from_stacked(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& down, Act act) {
  check(gate.dim() == 3 && gate.sizes() == up.sizes(),
        cat("gate ", gate.sizes(), " and up ", up.sizes(), " must both be [E, f, d]"));
  return std::make_shared<DenseExpertBankImpl>(at::cat({gate, up}, 1), down, act, true);
}

DenseExpertBank expert_bank_from_fused(const at::Tensor& gate_up, const at::Tensor& down, Act act) {
  return std::make_shared<DenseExpertBankImpl>(gate_up, down, act, true);
}

DenseExpertBank expert_bank_from_lists(const std::vector<at::Tensor>& gate, const std::vector<at::Tensor>& up,
                                  const std::vector<at::Tensor>& down, Act act) {
  check(gate.size() == up.size() && gate.size() == down.size(), "gate, up and down lists differ in length");
  std::vector<at::Tensor> w_in;
  for (size_t e = 0; e < gate.size(); ++e) {
    check(gate[e].sizes() == up[e].sizes(), cat("expert ", e, ": gate and up shapes differ"));
    w_in.push_back(at::cat({gate[e], up[e]}, 0));
  }
  return std::make_shared<DenseExpertBankImpl>(w_in, down, act, true);
}

DenseExpertBank expert_bank_from_partition(const at::Tensor& gate, const at::Tensor& up, const at::Tensor& down,
                                      const std::vector<std::vector<int64_t>>& parts, Act act, const at::Tensor& b1,
                                      const at::Tensor& b2, double b2_scale) {
  check(!parts.empty(), "empty partition");
  const bool gated = up.defined();
  const int64_t F = gate.size(0);
  std::vector<at::Tensor> w_in, w_out, bi, bo;
  bool same = true;
  for (size_t e = 0; e < parts.size(); ++e) {
    check(!parts[e].empty(), cat("expert ", e, " of the partition has no neurons"));
    for (int64_t n : parts[e]) check(n >= 0 && n < F, cat("neuron ", n, " out of range (F = ", F, ")"));
    same = same && parts[e].size() == parts[0].size();
    at::Tensor ids = at::tensor(parts[e], at::kLong);
    at::Tensor wi = gate.index_select(0, ids);
    if (gated) wi = at::cat({wi, up.index_select(0, ids)}, 0);
    w_in.push_back(wi);
    w_out.push_back(down.index_select(1, ids));
    if (b1.defined()) bi.push_back(b1.index_select(0, ids));
    if (b2.defined()) bo.push_back(b2 * b2_scale);
  }
  if (same)
    return std::make_shared<DenseExpertBankImpl>(at::stack(w_in), at::stack(w_out), act, gated, bi.empty() ? at::Tensor() : at::stack(bi),
                      bo.empty() ? at::Tensor() : at::stack(bo));
  return std::make_shared<DenseExpertBankImpl>(w_in, w_out, act, gated, bi, bo);
}

}  // namespace mf::moe
