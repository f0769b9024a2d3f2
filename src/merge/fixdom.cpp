#include "merge/fixdom.h"

#include "util/error.h"
#include "util/str.h"

namespace mf::merge {

at::Tensor swiglu_activations(const at::Tensor& X, const at::Tensor& gate, const at::Tensor& up) {
  const at::Tensor x = X.to(at::kDouble);
  return at::silu(x.mm(gate.to(at::kDouble).t())) * x.mm(up.to(at::kDouble).t());
}

std::vector<int64_t> align_neurons(const at::Tensor& dominant, const at::Tensor& member) {
  if (dominant.dim() != 2 || member.dim() != 2 || dominant.size(0) != member.size(0) ||
      dominant.size(1) != member.size(1))
    fail("fix-dom: the dominant and member activations must both be [tokens, neurons]");
  const int64_t T = dominant.size(0);
  if (T < 2) fail(cat("fix-dom: a correlation needs at least 2 tokens, not ", T));
  const at::Tensor a = dominant.to(at::kDouble), b = member.to(at::kDouble);
  const at::Tensor ac = a - a.mean(0, true), bc = b - b.mean(0, true);
  const at::Tensor cov = ac.t().mm(bc) / static_cast<double>(T - 1);  // [m_dom, m_member]
  const at::Tensor sa = (ac * ac).sum(0).div(static_cast<double>(T - 1)).sqrt();
  const at::Tensor sb = (bc * bc).sum(0).div(static_cast<double>(T - 1)).sqrt();
  const at::Tensor R = (cov / (sa.unsqueeze(1) * sb.unsqueeze(0) + 1e-7)).contiguous();
  // argmax over k per column n, ties to the lowest k (written out: at::argmax leaves ties open).
  const int64_t m = R.size(0), mm = R.size(1);
  const double* r = R.data_ptr<double>();
  std::vector<int64_t> pi(static_cast<size_t>(mm), 0);
  for (int64_t n = 0; n < mm; ++n) {
    int64_t best = 0;
    for (int64_t k = 1; k < m; ++k)
      if (r[k * mm + n] > r[best * mm + n]) best = k;
    pi[n] = best;
  }
  return pi;
}

at::Tensor fix_dom_combine(const std::vector<at::Tensor>& tensors, const std::vector<std::vector<int64_t>>& maps,
                           const std::vector<double>& coef, int64_t neuron_dim) {
  if (tensors.empty() || maps.size() != tensors.size() || coef.size() != tensors.size())
    fail("fix-dom: one neuron map and one coefficient per member are needed");
  if (neuron_dim != 0 && neuron_dim != 1) fail("fix-dom: the neuron axis is 0 or 1");
  const int64_t m = tensors.front().size(neuron_dim);
  at::Tensor sum = at::zeros(tensors.front().sizes(), at::kFloat);
  at::Tensor count = at::zeros({m}, at::kDouble);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].sizes() != tensors.front().sizes()) fail("fix-dom: members of different shapes");
    if (static_cast<int64_t>(maps[i].size()) != tensors[i].size(neuron_dim))
      fail(cat("fix-dom: a neuron map of ", maps[i].size(), " entries for ", tensors[i].size(neuron_dim), " neurons"));
    for (int64_t k : maps[i])
      if (k < 0 || k >= m) fail(cat("fix-dom: neuron map entry ", k, " out of range (", m, " neurons)"));
    const at::Tensor index = at::tensor(maps[i], at::kLong);
    sum.index_add_(neuron_dim, index, tensors[i].to(at::kFloat), coef[i]);
    count.index_add_(0, index, at::full({static_cast<int64_t>(maps[i].size())}, coef[i], at::kDouble));
  }
  const at::Tensor denom = count.to(at::kFloat);
  return neuron_dim == 0 ? sum / denom.unsqueeze(1) : sum / denom.unsqueeze(0);
}

}  // namespace mf::merge
