// LoRA adapters (Hu et al. 2021, PEFT semantics) on the Linear modules of a model:
//   y = W x + b + (alpha / r) * B A dropout(x),   A [r, in], B [out, r]
// A starts kaiming-uniform as PEFT initialises it (U(-1/sqrt(in), 1/sqrt(in))), B at zero, so
// a freshly attached model computes exactly what the base model does. The adapters live in
// their own module (parameters "adapters.<i>.lora_A" / "lora_B"); the base model's parameter
// names do not change, and merge() folds B A into W so the saved model is a plain checkpoint.
// train/peft.h saves and loads adapters as Hugging Face PEFT directories.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mf {

struct Linear;
struct LoraLinear;

struct LoraOptions {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.05;  // on the adapter's input, training mode only
  // A Linear gets an adapter when its module name is one of these or ends with "." + one.
  // Every mf::Linear qualifies, MoE expert projections included (e.g. "w1" or "gate_proj" also
  // matches model.layers.0.block_sparse_moe.experts.3.w1 / mlp.experts.3.gate_proj).
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
  // When non-empty: exactly these module names (full names, e.g. "model.layers.0.self_attn.q_proj")
  // get an adapter and `targets` is ignored; a name that is not a module of the model, or not an
  // mf::Linear, is an error naming it. This is how a saved adapter is attached again (train/peft.h).
  std::vector<std::string> modules;
  // rsLoRA (Kalajdzievski 2023; PEFT's use_rslora): scale alpha / sqrt(r) instead of alpha / r.
  bool use_rslora = false;
  uint64_t seed = 0;  // initialisation of A
};

// The scale of the low-rank path: alpha / r, or alpha / sqrt(r) with use_rslora.
double lora_scale(const LoraOptions& options);

class LoraAdapters : public torch::nn::Module {
 public:
  // Attaches an adapter to every matching Linear of `model` (options.modules, else options.targets;
  // error when none matches, or when a Linear already has an adapter). The model must outlive
  // the adapters or detach() first.
  LoraAdapters(torch::nn::Module& model, const LoraOptions& options);
  ~LoraAdapters() override;

  // W += (alpha/r) B A for every adapted Linear (in fp32, rounded once to W's dtype), then
  // detach: the model alone now computes what model + adapters computed (without dropout).
  void merge();
  // Removes the adapters from the Linears (the model computes its base function again).
  void detach();
  bool attached() const { return attached_; }

  const LoraOptions& options() const { return opt_; }
  // Module names of the adapted Linears, in model order.
  const std::vector<std::string>& module_names() const { return names_; }
  const std::vector<std::shared_ptr<LoraLinear>>& adapters() const { return adapters_; }
  int64_t param_count() const;

 private:
  LoraOptions opt_;
  std::vector<std::string> names_;
  std::vector<std::shared_ptr<Linear>> linears_;
  std::vector<std::shared_ptr<LoraLinear>> adapters_;
  bool attached_ = false;
};

}  // namespace mf
