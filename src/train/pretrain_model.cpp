#include "train/pretrain_model.h"

#include <algorithm>
#include <cmath>

namespace mf {

PretrainModel pretrain_model_of(const std::shared_ptr<Model>& m) {
  PretrainModel pm;
  pm.module = m;
  pm.logits = [m](const at::Tensor& ids) { return m->forward(ids); };
  pm.export_tensors = [m]() { return m->hf_tensors(); };
  pm.after_step = [m]() { m->after_optimizer_step(); };
  if (!m->config().is_moe()) return pm;
  for (const char* name : {"balance_loss", "z_loss"})
    pm.loss_terms.push_back({name, [m, name]() {
                               at::Tensor sum = at::zeros({}, at::kFloat);
                               for (const auto& a : m->aux_losses())
                                 if (a.name == name) sum = sum + a.value.to(at::kFloat);
                               return sum;
                             }});
  // Per step (last micro-batch): load balance = mean over MoE layers of the token-count entropy
  // over ln E (1 = uniform), max_load = the busiest expert's tokens over the mean, worst layer.
  pm.step_metrics = [m]() {
    double balance = 0, max_load = 0, entropy = 0;
    int64_t layers = 0;
    for (const auto& s : m->moe_stats()) {
      const auto E = static_cast<double>(s.tokens_per_expert.size());
      int64_t total = 0, most = 0;
      for (int64_t t : s.tokens_per_expert) {
        total += t;
        most = std::max(most, t);
      }
      if (E < 2 || total == 0) continue;
      balance += s.load_entropy / std::log(E);
      entropy += s.routing_entropy;
      max_load = std::max(max_load, static_cast<double>(most) * E / static_cast<double>(total));
      ++layers;
    }
    if (layers == 0) return std::map<std::string, double>{};
    return std::map<std::string, double>{{"moe_load_balance", balance / static_cast<double>(layers)},
                                         {"moe_max_load", max_load},
                                         {"moe_routing_entropy", entropy / static_cast<double>(layers)}};
  };
  return pm;
}


}  // namespace mf
