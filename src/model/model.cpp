#include "model/model.h"

#include "model/family.h"
#include "model/hypermoe_ffn.h"
#include "model/layers.h"
#include "model/moe_ffn.h"
#include "moe/losses.h"

#include <set>
#include "util/error.h"
#include "util/str.h"

namespace mf {

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "f32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "f16") return at::kHalf;
  throw UsageError("unknown dtype \"" + name + "\" (use float32, bfloat16 or float16)");
}

at::Device parse_device(const std::string& name) {
  if (name == "cpu") return at::kCPU;
  if (starts_with(name, "cuda")) {
    if (!torch::cuda::is_available())
      throw UsageError("--device " + name + ": this build of moeforge has no CUDA device available");
    try {
      return at::Device(name);
    } catch (const c10::Error&) {
    }
  }
  throw UsageError("unknown device \"" + name + "\" (use cpu or cuda[:N])");
}

std::shared_ptr<Model> Model::create(const ModelConfig& cfg) {
  std::shared_ptr<Model> m = family_registry().at(cfg.model_type).build(cfg);
  if (has_hypermoe(cfg)) link_hypermoe_generator(*m);
  return m;
}

namespace {

// parameters().front() without listing every parameter (the same pre-order: a module's own
// parameters, then its children's): each forward asks for the device, and listing a MoE model's
// hundreds of tensors took ~3 % of a batch-1 decode step.
at::Tensor first_parameter(const torch::nn::Module& m) {
  const auto own = m.named_parameters(/*recurse=*/false);
  if (!own.is_empty()) return own[0].value();
  for (const auto& child : m.children())
    if (at::Tensor t = first_parameter(*child); t.defined()) return t;
  return {};
}

}  // namespace

at::ScalarType Model::dtype() const {
  const at::Tensor p = first_parameter(*this);
  return p.defined() ? p.scalar_type() : at::kFloat;
}

at::Device Model::device() const {
  const at::Tensor p = first_parameter(*this);
  return p.defined() ? p.device() : at::Device(at::kCPU);
}

at::Tensor Model::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache) {
  return lm_head(forward_hidden(input_ids, attention_mask, cache));
}

std::vector<std::pair<std::string, at::Tensor>> Model::hf_tensors() {
  auto params = named_parameters();
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::set<std::string> written;
  for (const auto& spec : expected_tensors(cfg_)) {
    if (const at::Tensor* t = params.find(spec.name)) out.emplace_back(spec.name, t->detach());
    else if (auto it = extra_tensors_.find(spec.name); it != extra_tensors_.end()) out.emplace_back(spec.name, it->second);
    else continue;
    written.insert(spec.name);
  }
  // Nothing is dropped silently: parameters the config does not describe follow.
  for (const auto& p : params)
    if (!written.count(p.key())) out.emplace_back(p.key(), p.value().detach());
  return out;
}

void Model::after_optimizer_step() {
  for (int64_t l = 0; l < cfg_.num_layers; ++l) ffn(l)->after_optimizer_step();
}

std::vector<MoeLayerStats> Model::moe_stats() const {
  std::vector<MoeLayerStats> v;
  for (int64_t l = 0; l < cfg_.num_layers; ++l)
    if (auto s = ffn(l)->moe_stats()) v.push_back(*s);
  return v;
}

std::vector<AuxLoss> Model::aux_losses() const {
  std::vector<AuxLoss> v;
  std::vector<at::Tensor> pooled;  // router logits of HF load-balancing blocks
  at::Tensor pooled_mask;
  double coef = 0.0;
  int64_t k = 0;
  for (int64_t l = 0; l < cfg_.num_layers; ++l) {
    auto block = ffn(l);
    for (auto& a : block->aux_losses()) v.push_back(std::move(a));
    auto moe = std::dynamic_pointer_cast<MoeFFN>(block);
    if (!moe || moe->spec().aux.kind != MoeAuxLossConfig::Kind::LoadBalancing || moe->spec().aux.coef <= 0 ||
        !moe->last_logits().defined())
      continue;
    pooled.push_back(moe->last_logits());
    pooled_mask = moe->last_valid();
    coef = moe->spec().aux.coef;
    k = moe->spec().router.selection.k;
  }
  if (!pooled.empty()) v.push_back({"balance_loss", moe::mixtral_balance_loss(pooled, k, pooled_mask, true) * coef});
  return v;
}

at::Tensor Model::aux_loss() const {
  at::Tensor total = at::zeros({}, at::kFloat);
  for (const auto& a : aux_losses()) total = total + a.value.to(at::kFloat);
  return total;
}

bool is_router_parameter(const std::string& name) {
  return name.find(".mlp.router.") != std::string::npos || ends_with(name, ".mlp.gate.weight") ||
         ends_with(name, ".block_sparse_moe.gate.weight");
}

void Model::set_weights(const std::function<at::Tensor(const std::string&)>& get) {
  at::NoGradGuard guard;
  const auto dt = dtype();
  const auto dev = device();
  for (auto& p : named_parameters()) {
    at::Tensor t = get(p.key());
    if (!t.defined()) fail("missing tensor " + p.key());
    if (t.sizes() != p.value().sizes())
      fail("tensor " + p.key() + " has shape " + shape_string(t.sizes().vec()) + " but the model expects " +
           shape_string(p.value().sizes().vec()));
    p.value().set_data(t.to(dev, dt).contiguous());
  }
}

void Model::init_random(uint64_t seed, double std) {
  const auto dt = dtype();
  const auto dev = device();
  to(at::kCPU, at::kFloat);
  init_parameters_random(*this, seed, std);
  to(dev, dt);
}

}  // namespace mf
