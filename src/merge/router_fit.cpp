#include "merge/router_fit.h"

#include "util/error.h"
#include "util/str.h"

namespace mf::merge {

RouterFit fit_router(const at::Tensor& gate, const at::Tensor& inputs, const at::Tensor& logits,
                     const std::vector<std::vector<int64_t>>& members, const std::vector<std::vector<double>>& weights) {
  if (gate.dim() != 2 || inputs.dim() != 2 || logits.dim() != 2 || inputs.size(1) != gate.size(1) ||
      logits.size(1) != gate.size(0) || logits.size(0) != inputs.size(0))
    fail(cat("router fit: shapes disagree (router ", gate.sizes(), ", inputs ", inputs.sizes(), ", logits ",
             logits.sizes(), ")"));
  if (members.size() != weights.size()) fail("router fit: one weight list per output expert is needed");
  const at::Tensor W = gate.to(at::kFloat);
  RouterFit out;
  out.tokens = inputs.size(0);
  std::vector<at::Tensor> rows;
  std::vector<size_t> merged;
  std::vector<at::Tensor> start, targets;
  const at::Tensor Z = logits.to(at::kDouble);
  for (size_t c = 0; c < members.size(); ++c) {
    if (members[c].empty() || members[c].size() != weights[c].size())
      fail(cat("router fit: output expert ", c, " has ", members[c].size(), " members and ", weights[c].size(),
               " weights"));
    if (members[c].size() == 1) {
      rows.push_back(W[members[c][0]]);
      continue;
    }
    at::Tensor w0 = at::zeros({W.size(1)}, at::kDouble);
    for (size_t k = 0; k < members[c].size(); ++k) w0.add_(W[members[c][k]].to(at::kDouble), weights[c][k]);
    merged.push_back(c);
    start.push_back(w0);
    targets.push_back(at::logsumexp(Z.index_select(1, at::tensor(members[c], at::kLong)), 1));  // ℓ_C [S]
    rows.push_back(at::Tensor());
  }
  if (!merged.empty()) {
    if (out.tokens < 1) fail("router fit: no calibration tokens kept");
    const at::Tensor X = inputs.to(at::kDouble);
    const at::Tensor W0 = at::stack(start, 0);      // [M, d]
    const at::Tensor L = at::stack(targets, 1);     // [S, M]
    const at::Tensor rhs = L - X.mm(W0.t());        // [S, M]
    const at::Tensor delta = std::get<0>(at::linalg_lstsq(X, rhs, c10::nullopt, "gelsd"));  // [d, M]
    const at::Tensor fitted = W0 + delta.t();       // [M, d]
    const at::Tensor resid = X.mm(fitted.t()) - L;
    const double spread = (L - L.mean(0, true)).norm().item<double>();
    out.residual = spread > 0 ? resid.norm().item<double>() / spread : resid.norm().item<double>();
    for (size_t i = 0; i < merged.size(); ++i) rows[merged[i]] = fitted[static_cast<int64_t>(i)].to(at::kFloat);
  }
  out.rows = at::stack(rows, 0);
  return out;
}

}  // namespace mf::merge
