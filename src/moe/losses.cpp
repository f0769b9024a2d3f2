#include "moe/losses.h"

#include <cmath>

#include "moe/config.h"
#include "moe/routers/selection.h"

namespace mf::moe {

namespace {

// Column weights [T, 1] (1 for real tokens) in the dtype of `like`, and their sum.
at::Tensor mask_col(const at::Tensor& mask, const at::Tensor& like) {
  if (!mask.defined()) return at::ones({like.size(0), 1}, like.options());
  return mask.reshape({-1, 1}).to(like.scalar_type());
}

at::Tensor masked_mean_rows(const at::Tensor& x, const at::Tensor& m) {
  return (x * m).sum(0) / m.sum().clamp_min(1.0);
}

}  // namespace

at::Tensor z_loss(const at::Tensor& logits, const at::Tensor& mask) {
  at::Tensor lse = at::logsumexp(logits, -1, true);
  at::Tensor m = mask_col(mask, logits);
  return ((lse * lse) * m).sum() / m.sum().clamp_min(1.0);
}

at::Tensor switch_balance_loss(const at::Tensor& probs, const at::Tensor& expert, const at::Tensor& mask,
                               int64_t group_size, bool dropped_as_expert0) {
  const int64_t T = probs.size(0), E = probs.size(1);
  const int64_t G = group_size > 0 ? group_size : T;
  at::Tensor ex = expert.to(at::kLong).reshape({-1});
  if (dropped_as_expert0) ex = ex.clamp_min(0);
  at::Tensor onehot = dense_from_slots(ex.reshape({-1, 1}), at::ones({T, 1}, probs.options()), E);
  at::Tensor m = mask_col(mask, probs);
  std::vector<at::Tensor> per_group;
  for (int64_t g0 = 0; g0 < T; g0 += G) {
    const int64_t n = std::min(G, T - g0);
    at::Tensor mg = m.narrow(0, g0, n);
    at::Tensor f = masked_mean_rows(onehot.narrow(0, g0, n), mg);
    at::Tensor P = masked_mean_rows(probs.narrow(0, g0, n), mg);
    per_group.push_back((f * P).sum() * static_cast<double>(E));
  }
  return at::stack(per_group).mean();
}

namespace {

// E * sum_{j,e} f_{j,e} P_e for one block of logits.
at::Tensor mixtral_terms(const at::Tensor& logits, int64_t k, const at::Tensor& m) {
  const int64_t E = logits.size(1);
  at::Tensor probs = at::softmax(logits, -1);
  SelectionConfig sel;
  sel.k = k;
  at::Tensor idx = select_experts(probs.detach(), sel);  // [N, k]
  at::Tensor P = masked_mean_rows(probs, m);
  at::Tensor total = at::zeros({}, probs.options());
  for (int64_t j = 0; j < idx.size(1); ++j) {
    at::Tensor onehot = dense_from_slots(idx.narrow(1, j, 1), at::ones({idx.size(0), 1}, probs.options()), E);
    total = total + (masked_mean_rows(onehot, m) * P).sum();
  }
  return total * static_cast<double>(E);
}

}  // namespace

at::Tensor mixtral_balance_loss(const std::vector<at::Tensor>& logits, int64_t k, const at::Tensor& mask,
                                bool pooled) {
  TORCH_CHECK(!logits.empty(), "mixtral_balance_loss: no layers");
  if (pooled) {
    at::Tensor all = at::cat(logits, 0);
    at::Tensor m = mask_col(mask, all);
    if (mask.defined()) m = m.repeat({static_cast<int64_t>(logits.size()), 1});
    return mixtral_terms(all, k, m);
  }
  at::Tensor sum = at::zeros({}, logits[0].options());
  for (const auto& l : logits) sum = sum + mixtral_terms(l, k, mask_col(mask, l));
  return sum / static_cast<double>(logits.size());
}

at::Tensor gshard_balance_loss(const at::Tensor& probs, const at::Tensor& mask) {
  const int64_t E = probs.size(1);
  SelectionConfig sel;
  sel.k = 1;
  at::Tensor top1 = select_experts(probs.detach(), sel);
  at::Tensor onehot = dense_from_slots(top1, at::ones({probs.size(0), 1}, probs.options()), E);
  at::Tensor m = mask_col(mask, probs);
  return (masked_mean_rows(probs, m) * masked_mean_rows(onehot, m)).sum() * static_cast<double>(E);
}

at::Tensor cv_squared(const at::Tensor& x, bool unbiased) {
  if (x.numel() <= 1) return at::zeros({}, x.options());
  at::Tensor mean = x.mean();
  at::Tensor var = (x - mean).pow(2).sum() / static_cast<double>(unbiased ? x.numel() - 1 : x.numel());
  return var / (mean * mean + 1e-10);
}

at::Tensor shazeer_load(const at::Tensor& clean, const at::Tensor& noisy, double noise_std, int64_t k,
                        const at::Tensor& mask) {
  TORCH_CHECK(noise_std > 0, "shazeer_load: needs router noise (noise_std > 0)");
  return shazeer_load(clean, noisy, at::full_like(clean, noise_std), k, mask, false);
}

at::Tensor shazeer_load(const at::Tensor& clean, const at::Tensor& noisy, const at::Tensor& noise_stddev, int64_t k,
                        const at::Tensor& mask, bool reference_compat) {
  const int64_t kk = std::min(k + 1, clean.size(1));
  const at::Tensor ranked = reference_compat ? at::softmax(noisy, 1) : noisy;
  at::Tensor top = std::get<0>(ranked.topk(kk, 1));  // values only: ties do not matter here
  at::Tensor thr_in = top.narrow(1, kk - 1, 1);  // (k+1)-th: threshold for experts inside the top-k
  at::Tensor thr_out = top.narrow(1, k - 1, 1);  // k-th: threshold for experts outside
  at::Tensor thr = at::where(noisy > thr_in, thr_in, thr_out);
  at::Tensor prob = 0.5 * (1.0 + at::erf((clean - thr) / noise_stddev / std::sqrt(2.0)));
  return (prob * mask_col(mask, prob)).sum(0);
}

at::Tensor shazeer_cv2_loss(const at::Tensor& probs, const at::Tensor& load, const at::Tensor& mask, double scale) {
  at::Tensor importance = (probs * mask_col(mask, probs)).sum(0);
  return (cv_squared(importance) + cv_squared(load)) * scale;
}

at::Tensor hemoe_balance_loss(const at::Tensor& weights, const at::Tensor& probs, const std::vector<int64_t>& sizes,
                              const at::Tensor& mask, double lambda, bool scale_by_tokens, double reference) {
  const int64_t E = probs.size(1);
  TORCH_CHECK(static_cast<int64_t>(sizes.size()) == E, "hemoe_balance_loss: one size per expert");
  double total = reference;
  if (total <= 0)
    for (int64_t s : sizes) total += static_cast<double>(s);
  std::vector<double> r;
  for (int64_t s : sizes) r.push_back(static_cast<double>(s) / total);
  at::Tensor rt = at::tensor(r, probs.options().dtype(at::kDouble)).to(probs.scalar_type());
  // Without a mask, plain means (the same arithmetic as the router recipe had before the MoE
  // blocks reported this loss, so its training runs did not move).
  at::Tensor m = mask.defined() ? mask_col(mask, probs) : at::Tensor();
  auto mean_rows = [&](const at::Tensor& x) { return m.defined() ? masked_mean_rows(x, m) : x.mean(0); };
  at::Tensor f = mean_rows(weights.to(probs.scalar_type()));
  at::Tensor P = mean_rows(probs);
  const double scale = static_cast<double>(scale_by_tokens ? probs.size(0) : E);
  return (f * rt * P).sum() * (scale * lambda);
}

}  // namespace mf::moe
