#include "moe/telemetry.h"

#include <cmath>

namespace mf::moe {

nlohmann::json MoETelemetry::to_json() const {
  return {{"tokens", tokens},
          {"tokens_per_expert", tokens_per_expert},
          {"dropped_fraction", dropped_fraction},
          {"routing_entropy", routing_entropy},
          {"load_entropy", load_entropy},
          {"active_params_per_token", active_params_per_token}};
}

MoETelemetry compute_telemetry(const RoutingPlan& plan, const at::Tensor& probs, const at::Tensor& mask,
                               const std::vector<int64_t>& expert_params, int64_t always_active) {
  MoETelemetry t;
  const int64_t T = plan.tokens, K = plan.slots, E = plan.experts;
  std::vector<char> valid(T, 1);
  if (mask.defined()) {
    at::Tensor m = mask.to(at::kBool).contiguous();
    const bool* mp = m.data_ptr<bool>();
    for (int64_t i = 0; i < T; ++i) valid[i] = mp[i];
  }
  t.tokens_per_expert.assign(E, 0);
  const int64_t* id = plan.idx.data_ptr<int64_t>();
  const int64_t* lc = plan.loc.data_ptr<int64_t>();
  int64_t routed = 0, dropped = 0;
  double params = 0;
  for (int64_t i = 0; i < T; ++i) {
    if (!valid[i]) continue;
    ++t.tokens;
    params += static_cast<double>(always_active);
    for (int64_t j = 0; j < K; ++j) {
      const int64_t e = id[i * K + j];
      if (e < 0) continue;
      ++routed;
      if (lc[i * K + j] < 0) {
        ++dropped;
        continue;
      }
      ++t.tokens_per_expert[e];
      params += static_cast<double>(expert_params[e]);
    }
  }
  t.dropped_fraction = routed ? static_cast<double>(dropped) / routed : 0.0;
  t.active_params_per_token = t.tokens ? params / t.tokens : 0.0;
  int64_t kept = 0;
  for (int64_t c : t.tokens_per_expert) kept += c;
  for (int64_t c : t.tokens_per_expert)
    if (c > 0) {
      const double q = static_cast<double>(c) / kept;
      t.load_entropy -= q * std::log(q);
    }
  at::Tensor p = probs.detach().to(at::kDouble).contiguous();
  const double* pp = p.data_ptr<double>();
  double h = 0;
  for (int64_t i = 0; i < T; ++i) {
    if (!valid[i]) continue;
    for (int64_t e = 0; e < E; ++e) {
      const double v = pp[i * E + e];
      if (v > 0) h -= v * std::log(v);
    }
  }
  t.routing_entropy = t.tokens ? h / t.tokens : 0.0;
  return t;
}

}  // namespace mf::moe
