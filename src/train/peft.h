// LoRA adapters as Hugging Face PEFT artifacts (what `PeftModel.save_pretrained` writes and
// `PeftModel.from_pretrained` reads), so adapters trained here load in PEFT and the reverse:
//
//   DIR/adapter_config.json        LoraConfig: peft_type "LORA", r, lora_alpha, target_modules, ...
//   DIR/adapter_model.safetensors  base_model.model.<module>.lora_A.weight [r, in]
//                                  base_model.model.<module>.lora_B.weight [out, r]
//
// <module> is the module's name in the transformers model (== mf::Model's module names, e.g.
// "model.layers.0.self_attn.q_proj"); PEFT's wrappers add "base_model.model." and drop the
// adapter name ("default") when saving. The conventions followed are written down in
// docs/format.md, "LoRA adapters (PEFT)".
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "train/lora.h"
#include "util/json.h"

namespace mf {

class Model;

inline constexpr const char* kPeftConfigFile = "adapter_config.json";
inline constexpr const char* kPeftWeightsFile = "adapter_model.safetensors";

// "base_model.model.<module>.lora_A.weight" (a = true) or "...lora_B.weight".
std::string peft_tensor_name(const std::string& module, bool a);

// The adapter_config.json object save_peft_adapter writes (keys sorted, as PEFT writes them).
json peft_adapter_config(const LoraAdapters& adapters, const std::string& base_model_name_or_path);

// Writes DIR/adapter_config.json and DIR/adapter_model.safetensors (fp32 A and B of every adapted
// module, nothing else) atomically: built under a temporary name, renamed into place (an existing
// DIR is replaced only then).
void save_peft_adapter(const LoraAdapters& adapters, const std::string& dir, const std::string& base_model_name_or_path);

// What load_peft_adapter reads from adapter_config.json.
struct PeftLoraConfig {
  int64_t r = 0;
  double alpha = 0;
  double dropout = 0;  // as recorded; loading uses 0 (inference)
  bool use_rslora = false;
  std::string base_model_name_or_path;  // "" when null
  double scale() const;                 // alpha / r, or alpha / sqrt(r) with use_rslora
};
// Parses and checks DIR/adapter_config.json (one-line mf::Error naming the file): peft_type must be
// "LORA"; settings that change what the adapter computes and that moeforge does not implement
// (use_dora, fan_in_fan_out, bias other than "none", modules_to_save, rank_pattern / alpha_pattern,
// layer_replication, lora_bias) are refused as "not supported".
PeftLoraConfig read_peft_config(const std::string& dir);

// Attaches the adapter in DIR to `model`: exactly the modules that adapter_model.safetensors has
// tensors for (names "base_model.model.X.lora_A.weight", also "X.lora_A.default.weight"), with A and
// B converted to fp32 on the model's device, dropout 0, eval mode. Every bad input (missing files, a
// tensor for a module the model lacks or that is not a Linear, a wrong shape, a lone A or B, a tensor
// that is not lora_A / lora_B) is a one-line mf::Error naming the file. The model must outlive the
// returned adapters (or call detach()); merge() folds them into the weights.
std::shared_ptr<LoraAdapters> load_peft_adapter(Model& model, const std::string& dir);

}  // namespace mf
