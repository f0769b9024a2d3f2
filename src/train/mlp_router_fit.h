// MoEfication's offline MLP-router fit (dense_to_moe.md §2.3) and the measures it uses: the
// SwiGLU activation mass of an expert and the top-k mass recall of router scores.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "train/router_config.h"

namespace mf {

// MoEfication MLP router, offline (dense_to_moe.md §2.3): scores = W2 tanh(W1 x̂), x̂ = x/|x|,
// fitted with BCE-with-logits against t_j = mass_j / max over the mini-batch of mass_j, Adam.
// x [n, H] FFN inputs, mass [n, E] activation mass per expert. w1 [E, H], w2 [E, E] are updated
// in place with the epoch of best validation recall. Recall = fraction of the activation mass
// captured by the predicted top-k experts (k = `k`), on the validation part.
struct MlpRouterFit {
  int64_t best_epoch = 0;  // 0 = the initial weights were best
  double recall_before = 0, recall_after = 0;
  double val_bce = 0;
  int64_t train_tokens = 0, val_tokens = 0;
};
MlpRouterFit fit_mlp_router(at::Tensor& w1, at::Tensor& w2, const at::Tensor& x, const at::Tensor& mass, int64_t k,
                            const MlpRouterTrainOptions& options, uint64_t seed);
// Recall of router scores [n, E] against activation mass [n, E] with top-k.
double topk_mass_recall(const at::Tensor& scores, const at::Tensor& mass, int64_t k);
// SwiGLU activation mass of one expert on x [n, H]: sum_i |silu(g_i x) * (u_i x)| -> [n].
at::Tensor swiglu_expert_mass(const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w);

}  // namespace mf
