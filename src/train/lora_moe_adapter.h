// The adapter files of a LoRA-MoE fine-tune, saved apart from the frozen base model
// (issue 17; layout in docs/format.md, "LoRA-MoE adapters"):
//
//   DIR/lora_moe_config.json        format name + version, routing, experts per layer, top-k / top-p,
//                                   gate, r, alpha, dropout, targets, router kind and options, loss
//                                   coefficients, the base model's shape (checked on load)
//   DIR/lora_moe_model.safetensors  every block's LoRA and router tensors (the graph router's X and
//                                   edge list included) as "model.layers.{l}.mlp.<block name>"
//   DIR/adapter_config.json         attention LoRA, when there is one, exactly as train/peft.h
//   DIR/adapter_model.safetensors   writes it (so PEFT reads that part on its own)
//
// Loading converts a dense base with the recorded options and copies every tensor in; the GMoE
// edge list comes from the file, never from the threshold search (the reference re-derives it
// on reload and may then evaluate another graph than it trained).
#pragma once
#include <memory>
#include <string>

#include "model/lora_moe_ffn.h"
#include "train/lora.h"
#include "util/json.h"

namespace mf {

class Model;

inline constexpr const char* kLoraMoeConfigFile = "lora_moe_config.json";
inline constexpr const char* kLoraMoeWeightsFile = "lora_moe_model.safetensors";
inline constexpr const char* kLoraMoeFormat = "moeforge-lora-moe";
inline constexpr int kLoraMoeFormatVersion = 1;

// Writes the adapter of `model` (every FFN a LoraMoeFFN built with `opt`) into DIR atomically:
// built under a temporary name, renamed into place. `attention` (may be null) is written in the
// PEFT layout; `extra_metadata` is stored as is under "metadata" (its string
// "base_model_name_or_path", if any, also goes into adapter_config.json). DIR may be absent, an
// empty directory or an earlier adapter of this format (replaced); anything else is refused
// with a one-line mf::Error, as is a model whose blocks do not match `opt`. Nothing is written
// on error.
void save_lora_moe_adapter(const std::string& dir, Model& model, const LoraMoeOptions& opt,
                           const LoraAdapters* attention, const json& extra_metadata = json::object());

struct LoadedLoraMoe {
  // The recorded options, with layer_experts set to the recorded per-layer counts.
  LoraMoeOptions options;
  // The PEFT attention adapter, or null. Keep it alive as long as the model is used (the model
  // must outlive it, as for load_peft_adapter).
  std::shared_ptr<LoraAdapters> attention;
  json metadata;  // what save_lora_moe_adapter got as extra_metadata
};

// Converts the dense `model` with the options recorded in DIR and loads the adapter's tensors
// (and the PEFT attention adapter when DIR has one). Every bad input is a one-line mf::Error
// naming the file: another base model (model_type, hidden_size, intermediate_size,
// num_hidden_layers), an unknown routing or bad option, a missing tensor, a tensor with the
// wrong shape or dtype, a tensor no block has, an edge outside the layer's experts. On error
// the model is left as it was (its dense FFNs and trainable flags are put back).
LoadedLoraMoe load_lora_moe_adapter(const std::string& dir, Model& model);

}  // namespace mf
