// The profiling pass: one forward + one backward per batch of calibration samples, collecting
// per-domain neuron importance (importance.h), activation statistics and, optionally,
// co-activation counts for every profiled FFN layer.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "model/model.h"
#include "profile/activation_stats.h"
#include "profile/batch_sharding.h"
#include "profile/calibration_data.h"
#include "profile/coactivation.h"
#include "profile/importance.h"

namespace mf {

// Σ_s ℓ_s over the batch, ℓ_s = mean next-token cross-entropy over sample s's scored targets
// (float32 scalar). Only scored positions go through lm_head.
at::Tensor calibration_loss(Model& model, const PaddedBatch& batch);

struct LayerProfile {
  int layer = 0;
  at::Tensor importance_raw;  // float32 [F, D]: Σ_{s in domain d} I_s
  at::Tensor importance;      // float32 [F, D]: preprocessed (preprocess_importance)
  at::Tensor act_mean, act_abs_mean, act_pos_frac;  // float32 [F]
  at::Tensor coactivation;    // float32 [F, F] or undefined
  int64_t tokens = 0;         // real tokens seen by the statistics
};

class Profiler {
 public:
  // Parameters are set to not require grad while the profiler lives (restored afterwards).
  Profiler(Model& model, std::vector<int> layers, int num_domains, bool coactivation);
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;

  // Forward + backward over samples[which] (every one must have loss tokens); adds each
  // sample's |score| to its domain's column.
  void run(const std::vector<Sample>& samples, const std::vector<int64_t>& which);
  // Data parallel: adds every other rank's accumulators (importance, activation and
  // co-activation sums, token and sample counts) to this rank's, so that results() are the whole
  // job's. Every rank calls it once, after its last run().
  void sum_over_ranks(const BatchSharding& sharding);
  // Results so far, layers in order, importance preprocessed over all profiled layers.
  std::vector<LayerProfile> results() const;
  FfnKind kind() const { return collector_->kind(); }
  int64_t tokens() const { return tokens_; }
  int64_t samples() const { return samples_; }

 private:
  Model& model_;
  std::vector<int> layers_;
  int num_domains_;
  std::unique_ptr<ImportanceCollector> collector_;
  std::vector<ActivationStats> stats_;
  std::vector<Coactivation> coact_;
  // [D, F] float64 per layer: sums of float32 per-sample scores, so that summing them in another
  // order (data-parallel ranks) changes them far below float32 precision.
  std::vector<at::Tensor> raw_;
  std::vector<std::pair<at::Tensor, bool>> saved_requires_grad_;
  int stats_hook_ = 0;
  int64_t tokens_ = 0, samples_ = 0;
};

// S = log1p(S_raw), then each domain column divided by its L2 norm taken over all layers and
// neurons jointly (spec §1.2 (d)). A column that is all zero (a domain without samples) stays zero.
std::vector<at::Tensor> preprocess_importance(const std::vector<at::Tensor>& raw);

}  // namespace mf
