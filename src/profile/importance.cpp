#include "profile/importance.h"

#include <algorithm>

#include "util/error.h"
#include "util/str.h"

namespace mf {

const char* ffn_kind_name(FfnKind k) { return k == FfnKind::gated ? "gated" : "two_matrix"; }

FfnKind profile_ffn_kind(const ModelConfig& cfg, const std::vector<int>& layers) {
  for (int l : layers)
    if (cfg.layer_is_moe(l))
      fail(cat(cfg.origin, ": layer ", l, " is an MoE layer; profile works on dense FFN layers (choose --layers)"));
  if (cfg.family == Family::gpt2) return FfnKind::two_matrix;
  if (cfg.mlp_bias) fail(cfg.origin + ": gated FFNs with biases (mlp_bias) are not supported by profile");
  return FfnKind::gated;
}

namespace {

// Σ over the T positions of each sample of x·y (float32), [B*T, F] -> [B, F].
at::Tensor per_sample_dot(const at::Tensor& x, const at::Tensor& y, int64_t B, int64_t T) {
  at::Tensor p = x.to(at::kFloat) * y.to(at::kFloat);
  return p.view({B, T, p.size(-1)}).sum(1);
}

}  // namespace

ImportanceCollector::ImportanceCollector(Model& model, std::vector<int> layers)
    : model_(model), layers_(std::move(layers)) {
  if (layers_.empty()) fail("profile: no layers to profile");
  kind_ = profile_ffn_kind(model.config(), layers_);
  const size_t n = layers_.size();
  a_.resize(n);
  z_.resize(n);
  sum_a_.resize(n);
  sum_z_.resize(n);
  sum_dz_.resize(n);
  bias_.resize(n);
  if (kind_ == FfnKind::two_matrix) {
    auto params = model.named_parameters();
    for (size_t k = 0; k < n; ++k) {
      const std::string name = cat("transformer.h.", layers_[k], ".mlp.c_fc.bias");
      const at::Tensor* b = params.find(name);
      if (!b) fail("profile: the model has no parameter " + name);
      bias_[k] = b->detach().to(at::kFloat);
    }
  }
  Hooks& hooks = model.hooks();
  // Gradients must flow back to the first profiled FFN; nothing below it needs any.
  hook_ids_.push_back(hooks.add(
      HookPoint::ffn_input,
      [](HookEvent& ev) {
        if (!ev.tensor.requires_grad() && at::GradMode::is_enabled())
          ev.replacement = ev.tensor.detach().requires_grad_(true);
      },
      false, layers_.front()));
  for (size_t k = 0; k < n; ++k) {
    const int layer = layers_[k];
    hook_ids_.push_back(hooks.add(
        HookPoint::ffn_intermediate,
        [this, k](HookEvent& ev) {
          if (ev.expert == -1) a_[k] = ev.tensor.detach();
        },
        false, layer));
    hook_ids_.push_back(hooks.add(
        HookPoint::ffn_intermediate,
        [this, k](HookEvent& ev) {
          if (ev.expert == -1) sum_a_[k] = per_sample_dot(ev.tensor, a_[k], batch_, seq_);
        },
        true, layer));
    hook_ids_.push_back(hooks.add(
        HookPoint::ffn_preact,
        [this, k](HookEvent& ev) {
          if (ev.expert == -1) z_[k] = ev.tensor.detach();
        },
        false, layer));
    hook_ids_.push_back(hooks.add(
        HookPoint::ffn_preact,
        [this, k](HookEvent& ev) {
          if (ev.expert != -1) return;
          sum_z_[k] = per_sample_dot(ev.tensor, z_[k], batch_, seq_);
          if (kind_ == FfnKind::two_matrix)
            sum_dz_[k] = ev.tensor.to(at::kFloat).view({batch_, seq_, ev.tensor.size(-1)}).sum(1);
        },
        true, layer));
  }
}

ImportanceCollector::~ImportanceCollector() {
  for (int id : hook_ids_) model_.hooks().remove(id);
}

void ImportanceCollector::begin_batch(int64_t batch, int64_t seq) {
  batch_ = batch;
  seq_ = seq;
  for (size_t k = 0; k < layers_.size(); ++k) {
    a_[k] = z_[k] = sum_a_[k] = sum_z_[k] = sum_dz_[k] = at::Tensor();
  }
}

at::Tensor ImportanceCollector::signed_scores(size_t k) const {
  if (!sum_a_[k].defined() || !sum_z_[k].defined())
    fail(cat("profile: no gradient reached layer ", layers_[k], " (was backward run on the batch's loss?)"));
  if (kind_ == FfnKind::gated) return 2 * sum_a_[k] + sum_z_[k];
  return sum_a_[k] + sum_z_[k] - sum_dz_[k] * bias_[k].to(sum_dz_[k].device());
}

}  // namespace mf
