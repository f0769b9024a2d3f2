#include "moe/routers/selection.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <vector>

namespace mf::moe {

int64_t selection_slots(const SelectionConfig& cfg, int64_t E) {
  if (cfg.selection == Selection::TopK) return std::min(cfg.k, E);
  return cfg.max_k > 0 ? std::min(cfg.max_k, E) : E;
}

namespace {

// Indices of one row ordered by (score descending, index ascending), first `n` only.
template <typename S>
void ordered_prefix(const S* s, int64_t E, int64_t n, std::vector<int64_t>& out) {
  out.resize(E);
  std::iota(out.begin(), out.end(), 0);
  auto better = [&](int64_t a, int64_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); };
  if (n < E) {
    std::partial_sort(out.begin(), out.begin() + n, out.end(), better);
    out.resize(n);
  } else {
    std::sort(out.begin(), out.end(), better);
  }
}

}  // namespace

at::Tensor select_experts(const at::Tensor& scores_in, const SelectionConfig& cfg) {
  TORCH_CHECK(scores_in.dim() == 2, "select_experts: scores must be [T, E]");
  const at::Tensor scores = scores_in.scalar_type() == at::kDouble ? scores_in.contiguous()
                                                                   : scores_in.to(at::kFloat).contiguous();
  const int64_t T = scores.size(0), E = scores.size(1);
  const int64_t K = selection_slots(cfg, E);
  TORCH_CHECK(K >= 1, "select_experts: need at least one expert per token");
  at::Tensor idx = at::full({T, K}, -1, at::kLong);
  int64_t* out = idx.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(scores.scalar_type(), "select_experts", [&] {
    const scalar_t* sp = scores.data_ptr<scalar_t>();
    at::parallel_for(0, T, 64, [&](int64_t t0, int64_t t1) {
      std::vector<int64_t> ord;
      for (int64_t t = t0; t < t1; ++t) {
        const scalar_t* s = sp + t * E;
        int64_t* o = out + t * K;
        if (cfg.selection == Selection::TopK) {
          // Insertion into a sorted list of length K; strict '>' keeps the lowest index on ties.
          int64_t n = 0;
          for (int64_t e = 0; e < E; ++e) {
            if (n == K && !(s[e] > s[o[K - 1]])) continue;
            int64_t pos = n < K ? n++ : K - 1;
            while (pos > 0 && s[e] > s[o[pos - 1]]) {
              o[pos] = o[pos - 1];
              --pos;
            }
            o[pos] = e;
          }
        } else if (cfg.selection == Selection::TopP) {
          ordered_prefix(s, E, E, ord);
          double mass = 0;
          for (int64_t j = 0; j < K; ++j) {
            o[j] = ord[j];
            mass += static_cast<double>(s[ord[j]]);
            if (mass >= cfg.top_p) break;
          }
        } else {
          ordered_prefix(s, E, E, ord);
          const double thr = cfg.dynk_tau * static_cast<double>(s[ord[0]]);
          for (int64_t j = 0; j < K; ++j) {
            if (j > 0 && static_cast<double>(s[ord[j]]) < thr) break;
            o[j] = ord[j];
          }
        }
      }
    });
  });
  return idx;
}

namespace {

// gate_values without autograd, in one loop: at batch 1 the op chain below (eight ops) cost more
// than the router's product itself. Same arithmetic: fp32/fp64 products and a sum in slot order.
template <typename S>
at::Tensor gate_values_loop(const at::Tensor& scores, const at::Tensor& idx, GateMode mode) {
  const int64_t T = idx.size(0), K = idx.size(1), E = scores.size(1);
  at::Tensor out = at::empty({T, K}, scores.options());
  const S* s = scores.data_ptr<S>();
  const int64_t* ix = idx.data_ptr<int64_t>();
  S* g = out.data_ptr<S>();
  for (int64_t t = 0; t < T; ++t) {
    S sum = 0;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t e = ix[t * K + j];
      const bool ones = mode == GateMode::Ones || mode == GateMode::UnitST;
      g[t * K + j] = e < 0 ? S(0) : ones ? S(1) : s[t * E + e];
      sum += g[t * K + j];
    }
    if (mode == GateMode::Renorm)
      for (int64_t j = 0; j < K; ++j) g[t * K + j] /= std::max(sum, S(1e-30));
  }
  return out;
}

}  // namespace

at::Tensor gate_values(const at::Tensor& scores, const at::Tensor& idx, GateMode mode) {
  const bool differentiable = at::GradMode::is_enabled() && scores.requires_grad();
  if (!differentiable && scores.device().is_cpu() && scores.dim() == 2 && scores.is_contiguous() &&
      idx.is_contiguous() && idx.scalar_type() == at::kLong) {
    if (scores.scalar_type() == at::kFloat) return gate_values_loop<float>(scores, idx, mode);
    if (scores.scalar_type() == at::kDouble) return gate_values_loop<double>(scores, idx, mode);
  }
  const at::Tensor valid_b = idx >= 0;
  const at::Tensor valid = valid_b.to(scores.scalar_type());
  switch (mode) {
    case GateMode::Ones: return valid;
    case GateMode::Prob: return scores.gather(1, idx.clamp_min(0)) * valid;
    case GateMode::Renorm: {
      at::Tensor g = scores.gather(1, idx.clamp_min(0)) * valid;
      return g / g.sum(1, true).clamp_min(1e-30);
    }
    case GateMode::UnitST: {
      at::Tensor g = scores.gather(1, idx.clamp_min(0)) * valid;
      return valid + (g - g.detach());
    }
  }
  return valid;
}

at::Tensor dense_from_slots(const at::Tensor& idx, const at::Tensor& values, int64_t E) {
  const at::Tensor valid = (idx >= 0).to(values.scalar_type());
  at::Tensor z = at::zeros({idx.size(0), E}, values.options());
  return z.scatter_add(1, idx.clamp_min(0), values * valid);
}

}  // namespace mf::moe
