// The FFN slot of a decoder layer. Every family's layer holds one FfnBlock under its checkpoint
// name ("mlp", "block_sparse_moe") and calls it on the post-attention-norm hidden states: the
// dense gated MLP (layers.h), the routed MoE block (moe_ffn.h), and whatever a later feature
// puts there (LoRA-MoE, HyperMoE-augmented MoE) through Model::set_ffn or the FFN-block table.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/hooks.h"
#include "moe/telemetry.h"
#include "util/registry.h"

namespace mf {

// What one FFN call knows of the forward pass around it.
struct FfnContext {
  Hooks* hooks = nullptr;  // null = no hooks registered
  int layer = 0;
  at::Tensor valid;        // bool [N] real tokens (undefined = no padding)
};

// What the last forward of one MoE block did (Model::moe_stats()): the routing telemetry of
// src/moe (tokens, tokens per expert, entropies, active parameters) plus the layer and the
// activated fraction of the FFN.
struct MoeLayerStats : moe::MoETelemetry {
  int layer = 0;
  // Mean over real tokens of sum over its selected experts of f_e, divided by the block's
  // reference width (moeforge: the dense intermediate_size; other families: sum of f_e).
  double active_ffn_fraction = 0.0;
};

// One auxiliary loss term of the last training forward, coefficient applied.
struct AuxLoss {
  std::string name;  // e.g. "balance_loss", "z_loss"
  at::Tensor value;  // scalar with autograd
};

class FfnBlock : public torch::nn::Module {
 public:
  ~FfnBlock() override = default;
  // x [N, H] -> [N, H].
  virtual at::Tensor forward(const at::Tensor& x, const FfnContext& ctx) = 0;
  // Called after every optimizer step: weights may have changed in place.
  virtual void after_optimizer_step() {}
  // The block's own auxiliary losses of its last forward in training mode with autograd on.
  virtual std::vector<AuxLoss> aux_losses() const { return {}; }
  // Routing telemetry of the last forward (MoE blocks only).
  virtual std::optional<MoeLayerStats> moe_stats() const { return std::nullopt; }
};

// The FFN-block table: name -> the block a layer of a config gets. Built-ins: "gated_mlp" (the
// dense FFN of the Llama graph) and "moe" (the family's routed MoE block). To add a block,
// write src/model/<name>_ffn.cpp and add one line to ffn_block_registry() (model/registry.cpp).
struct FfnBlockEntry {
  std::string description;
  std::function<std::shared_ptr<FfnBlock>(const ModelConfig& cfg, int64_t layer)> make;
};
Registry<FfnBlockEntry>& ffn_block_registry();

}  // namespace mf
