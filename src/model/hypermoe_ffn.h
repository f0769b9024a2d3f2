// HyperMoE on a routed MoE block (moe_routing_training.md §3, docs/hypermoe.md): the block's
// output plus the HyperExpert of src/moe/hyper_expert.h, conditioned on the experts the router
// did not select in this forward (in training: the noisy selection, as the reference). The
// per-layer parts live under the FFN slot (`<slot>.hyper_expert.*`), the generator shared by all
// MoE layers at the model's top level (`hypermoe.*`). A config with a "hypermoe" object gets
// these blocks from its family (moeforge) and the generator from Model::create.
#pragma once
#include "model/moe_ffn.h"
#include "moe/hyper_expert.h"

namespace mf {

class Model;

class HyperMoeFFN : public MoeFFN {
 public:
  // `moe_index`: the layer's position among the model's MoE layers (its layer embedding row).
  HyperMoeFFN(MoeFfnSpec spec, int64_t moe_index, const moe::HyperMoeOptions& opt);

  at::Tensor forward(const at::Tensor& x, const FfnContext& ctx) override;
  void set_generator(moe::HyperGenerator g) { generator_ = std::move(g); }

  moe::HyperExpert hyper_expert{nullptr};

 private:
  int64_t moe_index_;
  moe::HyperGenerator generator_{nullptr};
};

bool has_hypermoe(const ModelConfig& cfg);
// The config keys `--hypermoe` adds to MoE model `m` (the reference's hyper-parameters; a stock
// Mixtral / Qwen2-MoE / OLMoE also becomes model_type moeforge over its family, so that no stock
// loader silently drops the HyperMoE tensors); empty when it has HyperMoE already. One-line
// error naming config.json for a dense model.
json hypermoe_config_overrides(const ModelConfig& m);

// Whether a checkpoint tensor belongs to HyperMoE (`hypermoe.*`, `*.hyper_expert.*`).
bool is_hypermoe_tensor(const std::string& name);
moe::HyperMoeOptions hypermoe_options(const ModelConfig& cfg);

// Model::create's step for a config with "hypermoe": builds the shared generator, registers it
// as the model's "hypermoe" module and hands it to every HyperMoE block.
void link_hypermoe_generator(Model& model);

// Re-draws every HyperMoE parameter with the reference's initialisation (after a whole-model
// random init, e.g. pretraining from scratch).
void reset_hypermoe_parameters(Model& model);

// The tensors a "hypermoe" object adds (expected_tensors): per MoE layer l
// `<prefix l>hyper_expert.*`, then `hypermoe.*`.
void add_hypermoe_tensors(const ModelConfig& cfg, std::vector<TensorSpec>& specs);

}  // namespace mf
