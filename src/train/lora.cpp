#include "train/lora.h"

#include <cmath>
#include <map>
#include <set>

#include "model/layers.h"
#include "util/error.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

namespace {

bool name_matches(const std::string& name, const std::vector<std::string>& targets) {
  for (const auto& t : targets) {
    if (name == t) return true;
    if (name.size() > t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0 &&
        name[name.size() - t.size() - 1] == '.')
      return true;
  }
  return false;
}

}  // namespace

double lora_scale(const LoraOptions& options) {
  const double r = static_cast<double>(options.r);
  return options.use_rslora ? options.alpha / std::sqrt(r) : options.alpha / r;
}

LoraAdapters::LoraAdapters(torch::nn::Module& model, const LoraOptions& options) : opt_(options) {
  if (opt_.r <= 0) fail("lora: r must be positive");
  if (!(opt_.dropout >= 0 && opt_.dropout < 1)) fail("lora: dropout must lie in [0, 1)");
  const bool exact = !opt_.modules.empty();
  if (!exact && opt_.targets.empty()) fail("lora: no target modules");
  std::set<std::string> wanted;
  if (exact) {
    // Validate the exact list first, so the error names the first bad module.
    std::map<std::string, std::shared_ptr<torch::nn::Module>> all;
    for (const auto& item : model.named_modules("", /*include_self=*/false)) all.emplace(item.key(), item.value());
    for (const auto& name : opt_.modules) {
      auto it = all.find(name);
      if (it == all.end()) fail("lora: the model has no module '" + name + "'");
      if (!std::dynamic_pointer_cast<Linear>(it->second))
        fail("lora: module '" + name + "' is a " + it->second->name() + ", not a Linear (LoRA attaches to Linear modules only)");
      wanted.insert(name);
    }
  }
  const double scale = lora_scale(opt_);
  auto list = register_module("adapters", torch::nn::ModuleList());
  Rng rng(opt_.seed);
  for (const auto& item : model.named_modules("", /*include_self=*/false)) {
    auto lin = std::dynamic_pointer_cast<Linear>(item.value());
    if (!lin) continue;
    if (exact ? wanted.count(item.key()) == 0 : !name_matches(item.key(), opt_.targets)) continue;
    if (lin->lora) fail("lora: module '" + item.key() + "' already has an adapter");
    const int64_t out = lin->weight.size(0), in = lin->weight.size(1);
    auto a = std::make_shared<LoraLinear>(in, out, opt_.r, scale, opt_.dropout);
    // PEFT: kaiming_uniform_(A, a=sqrt(5)) -> U(-1/sqrt(in), 1/sqrt(in)); our own generator so
    // the values do not depend on libtorch's.
    {
      at::NoGradGuard no_grad;
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      float* p = a->lora_A.data_ptr<float>();
      for (int64_t i = 0; i < a->lora_A.numel(); ++i) p[i] = static_cast<float>((2 * rng.uniform() - 1) * bound);
      a->lora_A.set_data(a->lora_A.to(lin->weight.device()));
      a->lora_B.set_data(a->lora_B.to(lin->weight.device()));
    }
    list->push_back(a);
    names_.push_back(item.key());
    linears_.push_back(lin);
    adapters_.push_back(a);
  }
  if (adapters_.empty()) fail("lora: no Linear module matches the targets " + join(opt_.targets, ","));
  for (size_t i = 0; i < adapters_.size(); ++i) linears_[i]->lora = adapters_[i];
  attached_ = true;
}

LoraAdapters::~LoraAdapters() { detach(); }

void LoraAdapters::detach() {
  if (!attached_) return;
  for (auto& lin : linears_) lin->lora = nullptr;
  attached_ = false;
}

void LoraAdapters::merge() {
  if (!attached_) fail("lora: adapters are not attached (already merged?)");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < adapters_.size(); ++i) {
    const auto& a = adapters_[i];
    at::Tensor& w = linears_[i]->weight;
    at::Tensor d = at::mm(a->lora_B.to(at::kFloat), a->lora_A.to(at::kFloat)) * a->scale;
    w.copy_((w.to(at::kFloat) + d.to(w.device())).to(w.scalar_type()));
  }
  detach();
}

int64_t LoraAdapters::param_count() const {
  int64_t n = 0;
  for (const auto& a : adapters_) n += a->lora_A.numel() + a->lora_B.numel();
  return n;
}

}  // namespace mf
