// Per-layer routing telemetry: load per expert, dropped fraction, routing entropy and
// activated parameters per token (detects router collapse and imbalance).
#pragma once
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <vector>

#include "moe/routing_plan.h"

namespace mf::moe {

struct MoETelemetry {
  int64_t tokens = 0;                     // valid (unmasked) tokens
  std::vector<int64_t> tokens_per_expert; // kept (token, slot) pairs of valid tokens per expert
  double dropped_fraction = 0.0;          // dropped / routed pairs (valid tokens)
  double routing_entropy = 0.0;           // mean over tokens of -sum_e p log p (nats), softmax scores
  double load_entropy = 0.0;              // entropy of the normalised tokens_per_expert (nats; ln E = balanced)
  double active_params_per_token = 0.0;   // mean over tokens: kept experts' params + always-active params
  nlohmann::json to_json() const;
};

// probs [T, E] (router scores), mask [T] (true / 1 = valid; undefined = all valid).
// expert_params[e]: parameters of expert e; always_active: router + shared expert parameters.
MoETelemetry compute_telemetry(const RoutingPlan& plan, const at::Tensor& probs, const at::Tensor& mask,
                               const std::vector<int64_t>& expert_params, int64_t always_active);

}  // namespace mf::moe
