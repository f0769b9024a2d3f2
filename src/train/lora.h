// LoRA adapters (Hu et al. 2021, PEFT semantics) on the Linear modules of a model:
//   y = W x + b + (alpha / r) * B A dropout(x),   A [r, in], B [out, r]
// A starts kaiming-uniform as PEFT initialises it (U(-1/sqrt(in), 1/sqrt(in))), B at zero, so
// a freshly attached model computes exactly what the base model does. The adapters live in
// their own module (parameters "adapters.<i>.lora_A" / "lora_B"); the base model's parameter
// names do not change, and merge() folds B A into W so the saved model is a plain checkpoint.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mf {

struct Linear;

struct LoraOptions {
  int64_t r = 8;
  double alpha = 16.0;
  double dropout = 0.05;  // on the adapter's input, training mode only
  // A Linear gets an adapter when its module name is one of these or ends with "." + one.
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
  uint64_t seed = 0;  // initialisation of A
};

// One adapter: the low-rank path of one Linear.
struct LoraLinear : torch::nn::Module {
  LoraLinear(int64_t in, int64_t out, int64_t r, double scale, double dropout);
  at::Tensor delta(const at::Tensor& x);  // (alpha/r) B A dropout(x), in x's dtype
  at::Tensor lora_A, lora_B;
  double scale, dropout;
};

class LoraAdapters : public torch::nn::Module {
 public:
  // Attaches an adapter to every matching Linear of `model` (error when none matches, or when
  // a Linear already has an adapter). The model must outlive the adapters or detach() first.
  LoraAdapters(torch::nn::Module& model, const LoraOptions& options);
  ~LoraAdapters() override;

  // W += (alpha/r) B A for every adapted Linear (in fp32, rounded once to W's dtype), then
  // detach: the model alone now computes what model + adapters computed (without dropout).
  void merge();
  // Removes the adapters from the Linears (the model computes its base function again).
  void detach();

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
