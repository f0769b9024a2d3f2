// The pretrain recipe's view of a runtime model (model/model.h): logits, the HF tensors of the
// final directory, and for MoE families their auxiliary losses (coefficients from config.json:
// router_aux_loss_coef, router_z_loss_coef; moeforge: router.aux_loss_coef) as the loss terms
// "balance_loss" and "z_loss", plus per-step routing telemetry for metrics.jsonl:
//   moe_load_balance     mean over MoE layers of the token-count entropy / ln E (1 = uniform)
//   moe_max_load         busiest expert's tokens / mean tokens per expert, worst layer
//   moe_routing_entropy  mean over layers of the per-token routing entropy (nats)
// (from the last micro-batch of the step).
#pragma once
#include <memory>

#include "model/model.h"
#include "train/pretrain.h"

namespace mf {

PretrainModel pretrain_model_of(const std::shared_ptr<Model>& m);

}  // namespace mf
