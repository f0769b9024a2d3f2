#include "merge/zipit.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>

#include "util/error.h"
#include "util/str.h"

namespace mf::merge {

namespace {

// The greedy zip on the row-major F×F matrix R (see zipit.h). best[k] is row k's most correlated
// remaining feature (ties: the lowest index) and best_value[k] that correlation; the pair to merge
// is then the remaining row of largest best_value (ties: the lowest row) with its best partner —
// the first maximum in row-major order of the remaining matrix.
template <typename T>
std::vector<int64_t> greedy_zip(T* R, int64_t F, int64_t width, double alpha) {
  // Mirror the upper triangle into the lower one, in tiles (cache-friendly on a large matrix).
  const int64_t B = 64;
  for (int64_t i0 = 0; i0 < F; i0 += B)
    for (int64_t k0 = i0; k0 < F; k0 += B)
      for (int64_t i = i0; i < std::min(i0 + B, F); ++i)
        for (int64_t k = std::max(k0, i + 1); k < std::min(k0 + B, F); ++k) {
          const T v = R[i * F + k];
          if (!std::isfinite(v))
            fail(cat("zipit: a non-finite activation correlation (features ", i, " and ", k, ")"));
          R[k * F + i] = v;
        }
  const T a = static_cast<T>(alpha);
  std::vector<char> alive(static_cast<size_t>(F), 1);
  std::vector<int64_t> best(static_cast<size_t>(F), -1), parent(static_cast<size_t>(F), -1);
  std::vector<T> best_value(static_cast<size_t>(F), T(0));
  auto rescan = [&](int64_t i) {
    const T* row = R + i * F;
    int64_t b = -1;
    T v = T(0);
    for (int64_t k = 0; k < F; ++k)
      if (k != i && alive[k] && (b < 0 || row[k] > v)) {
        b = k;
        v = row[k];
      }
    best[i] = b;
    best_value[i] = v;
  };
  for (int64_t i = 0; i < F; ++i) rescan(i);
  for (int64_t left = F; left > width; --left) {
    int64_t i = -1;
    for (int64_t k = 0; k < F; ++k)
      if (alive[k] && (i < 0 || best_value[k] > best_value[i])) i = k;
    int64_t j = best[i];
    if (j < i) std::swap(i, j);  // not for a symmetric matrix (row j would hold the maximum first)
    alive[j] = 0;
    parent[j] = i;
    T* ri = R + i * F;
    const T* rj = R + j * F;
    for (int64_t k = 0; k < F; ++k) {
      if (k == i || !alive[k]) continue;
      const T v = a * std::min(ri[k], rj[k]);
      ri[k] = v;
      R[k * F + i] = v;
    }
    ri[i] = T(-1);
    rescan(i);
    for (int64_t k = 0; k < F; ++k) {
      if (k == i || !alive[k]) continue;
      if (best[k] == i || best[k] == j) {
        rescan(k);
      } else {
        const T v = R[k * F + i];
        if (v > best_value[k] || (v == best_value[k] && i < best[k])) {
          best[k] = i;
          best_value[k] = v;
        }
      }
    }
  }
  // Every merge keeps the lower index, so a group's survivor is its lowest feature and parent[f] < f.
  std::vector<int64_t> label(static_cast<size_t>(F), -1);
  int64_t next = 0;
  for (int64_t f = 0; f < F; ++f) label[f] = alive[f] ? next++ : label[parent[f]];
  return label;
}

at::ScalarType compute_dtype(const at::Tensor& X, const std::vector<at::Tensor>& gates,
                             const std::vector<at::Tensor>& ups) {
  bool f64 = X.scalar_type() == at::kDouble;
  for (const at::Tensor& t : gates) f64 = f64 || t.scalar_type() == at::kDouble;
  for (const at::Tensor& t : ups) f64 = f64 || t.scalar_type() == at::kDouble;
  return f64 ? at::kDouble : at::kFloat;
}

// Per output neuron the mean of the members' slices mapped to it, along the neuron axis `dim`.
at::Tensor mean_by_map(const std::vector<at::Tensor>& tensors, const std::vector<std::vector<int64_t>>& maps,
                       int64_t dim, at::ScalarType dtype) {
  const int64_t m = tensors.front().size(dim);
  at::Tensor sum = at::zeros(tensors.front().sizes(), dtype);
  at::Tensor count = at::zeros({m}, dtype);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].sizes() != tensors.front().sizes()) fail("zipit: members of different shapes");
    const at::Tensor index = at::tensor(maps[i], at::kLong);
    sum.index_add_(dim, index, tensors[i].detach().to(dtype));
    count.index_add_(0, index, at::ones({static_cast<int64_t>(maps[i].size())}, dtype));
  }
  return dim == 0 ? sum / count.unsqueeze(1) : sum / count.unsqueeze(0);
}

}  // namespace

at::Tensor activation_correlation(const at::Tensor& activations) {
  if (activations.dim() != 2) fail("zipit: the activations must be [tokens, features]");
  const int64_t T = activations.size(0), F = activations.size(1);
  if (T < 2) fail(cat("zipit: a correlation needs at least 2 tokens, not ", T));
  at::NoGradGuard no_grad;
  const double n1 = static_cast<double>(T - 1);
  const at::Tensor A = activations.detach();
  const at::Tensor Ac = A - A.mean(0, true);
  const at::Tensor sd = (Ac * Ac).sum(0).div(n1).sqrt();
  at::Tensor R = Ac.t().mm(Ac);  // the one F×F buffer; everything below is in place
  R.div_(n1);
  const int64_t rows = std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(F, 1));  // temporaries ≤ 4M values
  for (int64_t r0 = 0; r0 < F; r0 += rows) {
    const int64_t len = std::min(rows, F - r0);
    R.narrow(0, r0, len).div_(sd.narrow(0, r0, len).unsqueeze(1) * sd.unsqueeze(0) + 1e-7);
  }
  R.fill_diagonal_(-1);
  return R;
}

std::vector<int64_t> zipit_groups(at::Tensor corr, int64_t width, double alpha) {
  if (corr.dim() != 2 || corr.size(0) != corr.size(1)) fail("zipit: the correlation matrix must be square");
  const int64_t F = corr.size(0);
  if (width < 1 || width > F) fail(cat("zipit: cannot zip ", F, " features into ", width));
  if (corr.scalar_type() != at::kFloat && corr.scalar_type() != at::kDouble)
    fail("zipit: the correlation matrix must be fp32 or fp64");
  at::Tensor R = corr.detach().contiguous();  // the same storage when already contiguous
  if (R.scalar_type() == at::kDouble) return greedy_zip(R.data_ptr<double>(), F, width, alpha);
  return greedy_zip(R.data_ptr<float>(), F, width, alpha);
}

std::vector<std::vector<int64_t>> zipit_maps(const at::Tensor& X, const std::vector<at::Tensor>& gates,
                                             const std::vector<at::Tensor>& ups, double alpha) {
  if (gates.empty() || gates.size() != ups.size()) fail("zipit: one gate and one up weight per member are needed");
  if (X.dim() != 2) fail("zipit: the routed inputs must be [tokens, hidden]");
  const int64_t m = gates.front().size(0), d = X.size(1);
  for (size_t c = 0; c < gates.size(); ++c)
    if (gates[c].dim() != 2 || gates[c].size(0) != m || gates[c].size(1) != d || ups[c].sizes() != gates[c].sizes())
      fail(cat("zipit: member ", c, " has a gate or up weight that is not [", m, ", ", d, "]"));
  std::vector<int64_t> identity(static_cast<size_t>(m));
  for (int64_t n = 0; n < m; ++n) identity[n] = n;
  std::vector<std::vector<int64_t>> maps(gates.size(), identity);
  if (gates.size() < 2 || X.size(0) < 2) return maps;
  at::NoGradGuard no_grad;
  const at::ScalarType dt = compute_dtype(X, gates, ups);
  std::vector<at::Tensor> g, u;
  for (size_t c = 0; c < gates.size(); ++c) {
    g.push_back(gates[c].detach().to(dt));
    u.push_back(ups[c].detach().to(dt));
  }
  const at::Tensor x = X.detach().to(dt);
  at::Tensor A = at::silu(x.mm(at::cat(g, 0).t())) * x.mm(at::cat(u, 0).t());  // [T', |C|·m]
  at::Tensor R = activation_correlation(A);
  A = at::Tensor();  // free the activations before the greedy loop
  const std::vector<int64_t> label = zipit_groups(R, m, alpha);
  for (size_t c = 0; c < maps.size(); ++c)
    for (int64_t n = 0; n < m; ++n) maps[c][n] = label[static_cast<int64_t>(c) * m + n];
  return maps;
}

ExpertWeights zipit_merge(const std::vector<ExpertWeights>& members, const at::Tensor& routed_inputs, double alpha) {
  if (members.empty()) fail("zipit: a cluster without members");
  if (members.size() == 1) return members.front();
  std::vector<at::Tensor> gates, ups, downs;
  for (const ExpertWeights& e : members) {
    gates.push_back(e.gate);
    ups.push_back(e.up);
    downs.push_back(e.down);
  }
  const std::vector<std::vector<int64_t>> maps = zipit_maps(routed_inputs, gates, ups, alpha);
  for (const at::Tensor& t : downs)
    if (t.dim() != 2 || t.size(1) != gates.front().size(0) || t.size(0) != gates.front().size(1))
      fail("zipit: a down weight that is not [hidden, width]");
  at::NoGradGuard no_grad;
  at::ScalarType dt = compute_dtype(routed_inputs, gates, ups);
  for (const at::Tensor& t : downs)
    if (t.scalar_type() == at::kDouble) dt = at::kDouble;
  return {mean_by_map(gates, maps, 0, dt), mean_by_map(ups, maps, 0, dt), mean_by_map(downs, maps, 1, dt)};
}

}  // namespace mf::merge
