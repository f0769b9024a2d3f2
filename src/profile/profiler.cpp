#include "profile/profiler.h"

#include <algorithm>

#include "util/error.h"
#include "util/str.h"

namespace mf {

at::Tensor calibration_loss(Model& model, const PaddedBatch& batch) {
  const auto dev = model.device();
  at::Tensor ids = batch.ids.to(dev);
  at::Tensor mask = batch.mask.defined() ? batch.mask.to(dev) : at::Tensor();
  at::Tensor hidden = model.forward_hidden(ids, mask);  // [B, T, H]
  const int64_t T = hidden.size(1), H = hidden.size(2);
  // Position p-1 predicts ids[p]; weights live on the target positions 1..T-1.
  at::Tensor w = batch.weights.slice(1, 1).reshape(-1);
  at::Tensor rows = w.nonzero().view(-1);
  at::Tensor h = hidden.slice(1, 0, T - 1).reshape({-1, H}).index_select(0, rows.to(dev));
  at::Tensor logits = model.lm_head(h);
  at::Tensor targets = batch.ids.slice(1, 1).reshape(-1).index_select(0, rows).to(dev);
  at::Tensor ce = at::cross_entropy_loss(logits, targets, {}, at::Reduction::None);
  return (ce * w.index_select(0, rows).to(dev)).sum();
}

Profiler::Profiler(Model& model, std::vector<int> layers, int num_domains, bool coactivation)
    : model_(model), layers_(std::move(layers)), num_domains_(num_domains) {
  if (num_domains_ < 1) fail("profile: need at least one domain");
  for (auto& p : model.parameters()) {
    saved_requires_grad_.emplace_back(p, p.requires_grad());
    p.set_requires_grad(false);
  }
  collector_ = std::make_unique<ImportanceCollector>(model, layers_);
  const ModelConfig& cfg = model.config();
  const int64_t F = cfg.intermediate_size;
  const bool relu = cfg.hidden_act == "relu";
  for (size_t k = 0; k < layers_.size(); ++k) {
    stats_.emplace_back(F);
    if (coactivation) coact_.emplace_back(F, /*values=*/relu);
    raw_.push_back(at::zeros({num_domains_, F}, at::TensorOptions().dtype(at::kDouble).device(model.device())));
  }
  stats_hook_ = model.hooks().add(HookPoint::ffn_intermediate, [this](HookEvent& ev) {
    if (ev.expert != -1) return;
    auto it = std::find(layers_.begin(), layers_.end(), ev.layer);
    if (it == layers_.end()) return;
    const size_t k = static_cast<size_t>(it - layers_.begin());
    at::Tensor a = ev.tensor.detach();
    stats_[k].add(a, ev.valid);
    if (!coact_.empty()) {
      at::Tensor real = ev.valid.defined() ? a.index_select(0, ev.valid.nonzero().view(-1)) : a;
      coact_[k].add(real);
    }
  });
}

Profiler::~Profiler() {
  model_.hooks().remove(stats_hook_);
  collector_.reset();
  for (auto& [p, rg] : saved_requires_grad_) p.set_requires_grad(rg);
}

void Profiler::run(const std::vector<Sample>& samples, const std::vector<int64_t>& which) {
  if (which.empty()) return;
  PaddedBatch pb = pad_batch(samples, which);
  const int64_t B = pb.ids.size(0), T = pb.ids.size(1);
  std::vector<int64_t> dom(B);
  for (int64_t b = 0; b < B; ++b) {
    const Sample& s = samples[which[b]];
    if (s.loss_tokens() <= 0) fail(cat("profile: document ", s.index, " has no scored tokens"));
    if (s.domain < 0 || s.domain >= num_domains_) fail(cat("profile: document ", s.index, " has domain ", s.domain));
    dom[b] = s.domain;
  }
  at::Tensor dom_t = at::tensor(dom, at::kLong).to(model_.device());
  {
    at::AutoGradMode grad(true);
    collector_->begin_batch(B, T);
    at::Tensor loss = calibration_loss(model_, pb);
    loss.backward();
  }
  at::NoGradGuard no_grad;
  for (size_t k = 0; k < layers_.size(); ++k)
    raw_[k].index_add_(0, dom_t, collector_->signed_scores(k).abs().to(at::kDouble));
  collector_->begin_batch(0, 0);  // release the batch's activations
  tokens_ += pb.tokens;
  samples_ += B;
}

void Profiler::sum_over_ranks(const BatchSharding& sharding) {
  sharding.sum(raw_);
  for (auto& s : stats_) s.sum_over_ranks(sharding);
  for (auto& c : coact_) c.sum_over_ranks(sharding);
  tokens_ = sharding.sum(tokens_);
  samples_ = sharding.sum(samples_);
}

std::vector<at::Tensor> preprocess_importance(const std::vector<at::Tensor>& raw) {
  std::vector<at::Tensor> out;
  if (raw.empty()) return out;
  at::Tensor sq = at::zeros({raw[0].size(1)}, at::kDouble);
  for (const auto& r : raw) {
    at::Tensor l = at::log1p(r.to(at::kCPU, at::kDouble));
    sq += (l * l).sum(0);
    out.push_back(l);
  }
  at::Tensor norm = sq.sqrt();
  norm = at::where(norm > 0, norm, at::ones_like(norm));
  for (auto& l : out) l = (l / norm).to(at::kFloat);
  return out;
}

std::vector<LayerProfile> Profiler::results() const {
  std::vector<at::Tensor> raw;
  for (const auto& r : raw_) raw.push_back(r.t().contiguous().to(at::kCPU, at::kFloat));
  std::vector<at::Tensor> pre = preprocess_importance(raw);
  std::vector<LayerProfile> out;
  for (size_t k = 0; k < layers_.size(); ++k) {
    LayerProfile lp;
    lp.layer = layers_[k];
    lp.importance_raw = raw[k];
    lp.importance = pre[k];
    lp.act_mean = stats_[k].mean();
    lp.act_abs_mean = stats_[k].abs_mean();
    lp.act_pos_frac = stats_[k].positive_fraction();
    if (!coact_.empty()) lp.coactivation = coact_[k].counts().to(at::kCPU);
    lp.tokens = stats_[k].tokens();
    out.push_back(std::move(lp));
  }
  return out;
}

}  // namespace mf
