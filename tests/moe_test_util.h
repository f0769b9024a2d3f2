// Helpers shared by the MoE tests: a naive reference MoE written independently of src/moe
// (explicit per-token loops), and a finite-difference gradient check in fp64.
#pragma once
#include <torch/torch.h>

#include <algorithm>
#include <functional>
#include <numeric>
#include <vector>

#include "moe/moe_layer.h"
#include "moe/routers/linear_router.h"

namespace mf::moe::testing {

// An MoE layer with a softmax top-k linear router of weight rw [E, d] (renormalised or not, as
// Mixtral and OLMoE), and optionally a sigmoid-gated shared expert (Qwen2-MoE).
inline MoELayer softmax_topk_layer(const at::Tensor& rw, ExpertBank bank, int64_t k, bool renorm,
                                   ExpertBank shared = nullptr, const at::Tensor& shared_gate = {}) {
  SelectionConfig sel;
  sel.k = k;
  sel.gate = renorm ? GateMode::Renorm : GateMode::Prob;
  MoELayer layer(std::move(bank), LinearRouter(rw, sel).ptr());
  if (shared) layer->set_shared_expert(std::move(shared), shared_gate);
  return layer;
}

// SwiGLU expert in plain matmuls: x [d] -> [d].
inline at::Tensor ref_swiglu(const at::Tensor& x, const at::Tensor& g, const at::Tensor& u, const at::Tensor& dn) {
  at::Tensor a = at::silu(at::mv(g, x)) * at::mv(u, x);
  return at::mv(dn, a);
}

// Reference softmax-top-k MoE: per token, sort experts by probability (ties -> lower index),
// take k, weights prob (renorm optional). Everything in fp64.
inline at::Tensor ref_moe(const at::Tensor& x, const at::Tensor& router, const std::vector<at::Tensor>& gate,
                          const std::vector<at::Tensor>& up, const std::vector<at::Tensor>& down, int64_t k,
                          bool renorm) {
  const int64_t T = x.size(0), E = router.size(0);
  at::Tensor xd = x.to(at::kDouble);
  at::Tensor y = at::zeros({T, x.size(1)}, at::kDouble);
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor p = at::softmax(at::mv(router.to(at::kDouble), xd[t]), 0);
    std::vector<int64_t> ord(E);
    std::iota(ord.begin(), ord.end(), 0);
    auto pa = p.accessor<double, 1>();
    std::stable_sort(ord.begin(), ord.end(), [&](int64_t a, int64_t b) { return pa[a] > pa[b]; });
    double s = 0;
    for (int64_t j = 0; j < k; ++j) s += pa[ord[j]];
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = ord[j];
      const double w = renorm ? pa[e] / s : pa[e];
      y[t] += w * ref_swiglu(xd[t], gate[e].to(at::kDouble), up[e].to(at::kDouble), down[e].to(at::kDouble));
    }
  }
  return y;
}

// Central finite differences of scalar f w.r.t. every element of `p` (fp64), compared with
// the analytic gradient `g`. Returns the max abs difference.
inline double fd_check(const std::function<at::Tensor()>& f, at::Tensor p, const at::Tensor& g, double h = 1e-6) {
  at::NoGradGuard ng;
  double worst = 0;
  at::Tensor flat = p.view({-1});
  at::Tensor gflat = g.reshape({-1});
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const double orig = flat[i].item<double>();
    flat[i] = orig + h;
    const double fp = f().item<double>();
    flat[i] = orig - h;
    const double fm = f().item<double>();
    flat[i] = orig;
    worst = std::max(worst, std::abs((fp - fm) / (2 * h) - gflat[i].item<double>()));
  }
  return worst;
}

}  // namespace mf::moe::testing
