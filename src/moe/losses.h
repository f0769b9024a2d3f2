// Auxiliary router losses (moe_routing_training.md §1, §2.3, §6.3; dense_to_moe.md §1.3).
// Every loss takes an optional padding mask [T] (true / 1 = real token; undefined = all real)
// and averages over real tokens only. Values at perfect balance: Switch 1, GShard 1,
// Mixtral k; z-loss of all-zero logits (ln E)^2.
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace mf::moe {

// ST-MoE z-loss: mean_t (logsumexp_e logits[t])^2.
at::Tensor z_loss(const at::Tensor& logits, const at::Tensor& mask = {});

// Switch Transformers (HF SwitchTransformers): per group g of `group_size` tokens (0 = one
// group), E * sum_e f_{g,e} P_{g,e}, averaged over groups. expert [T] int64 is the
// post-capacity top-1 expert (-1 = dropped). Dropped tokens count nowhere, unless
// `dropped_as_expert0` (HF quirk: argmax of an all-zero row is expert 0).
at::Tensor switch_balance_loss(const at::Tensor& probs, const at::Tensor& expert, const at::Tensor& mask = {},
                               int64_t group_size = 0, bool dropped_as_expert0 = false);

// Mixtral / Qwen2-MoE / OLMoE (HF load_balancing_loss_func): E * sum_{j<k, e} f_{j,e} P_e with
// f_{j,e} the fraction of tokens whose j-th choice is e (top-k of softmax(logits)) and P_e the
// mean probability. pooled = HF (all layers concatenated before the means); otherwise the
// loss of each layer, averaged over layers (the Switch paper's definition).
at::Tensor mixtral_balance_loss(const std::vector<at::Tensor>& logits_per_layer, int64_t k,
                                const at::Tensor& mask = {}, bool pooled = true);

// GShard / Tutel: E * sum_e mean_t(p[t, e]) * frac_t(top1(t) = e) (top-1 counts only).
at::Tensor gshard_balance_loss(const at::Tensor& probs, const at::Tensor& mask = {});

// cv^2 = var / mean^2: population variance (Tutel), or unbiased (torch .var(): Shazeer's and
// the MEO / HyperMoE reference code).
at::Tensor cv_squared(const at::Tensor& v, bool unbiased = false);
// Shazeer's smooth load estimate: load_e = sum_t Phi((clean_t,e - threshold_t,e) / noise_std),
// threshold = the k-th largest noisy logit of the token if e is not in its noisy top-k, else
// the (k+1)-th. Requires noise_std > 0.
at::Tensor shazeer_load(const at::Tensor& clean_logits, const at::Tensor& noisy_logits, double noise_std,
                        int64_t k, const at::Tensor& mask = {});
// The same estimate with a learned per-entry noise std [T, E] (noisy_topk router). With
// `reference_compat` the MEO / HyperMoE code's variant: thresholds are the (k+1)-th and k-th
// largest softmax *probabilities* of the noisy logits, compared with noisy and clean *logits*.
at::Tensor shazeer_load(const at::Tensor& clean_logits, const at::Tensor& noisy_logits, const at::Tensor& noise_stddev,
                        int64_t k, const at::Tensor& mask, bool reference_compat);
// Shazeer / Tutel importance + load loss: scale * (cv^2(importance) + cv^2(load)), importance =
// sum over tokens of probs. Tutel uses scale 0.5, MEO (HyperMoE GPT-2) 1.
at::Tensor shazeer_cv2_loss(const at::Tensor& probs, const at::Tensor& load, const at::Tensor& mask = {},
                            double scale = 0.5);

// HEMoE size-weighted balance (dense_to_moe.md §1.3): lambda * T * sum_j f_j r_j P_j, f_j =
// mean_t weights[t, j] (the dense routing weights, which carry the straight-through gradient),
// P_j = mean_t probs[t, j] (means over real tokens), r_j = sizes_j / reference (reference <= 0:
// sum(sizes); HEMoE: the dense FFN width F), T = number of tokens including padding (the
// reference's). scale_by_tokens = false replaces T by E (a batch-size-independent variant).
at::Tensor hemoe_balance_loss(const at::Tensor& weights, const at::Tensor& probs,
                              const std::vector<int64_t>& sizes, const at::Tensor& mask = {},
                              double lambda = 5e-4, bool scale_by_tokens = true, double reference = 0);

}  // namespace mf::moe
