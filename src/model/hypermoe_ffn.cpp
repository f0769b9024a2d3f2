#include "model/hypermoe_ffn.h"

#include "model/model.h"
#include "util/error.h"

namespace mf {
namespace {

// MoE layers before layer `end` (all of them for end = num_layers): a layer's row in the
// generator's layer embedding, and the table's size.
int64_t moe_layers_before(const ModelConfig& cfg, int64_t end) {
  int64_t n = 0;
  for (int64_t l = 0; l < end; ++l) n += cfg.layer_is_moe(l) ? 1 : 0;
  return n;
}

}  // namespace

HyperMoeFFN::HyperMoeFFN(MoeFfnSpec spec, int64_t moe_index, const moe::HyperMoeOptions& opt)
    : MoeFFN(std::move(spec)), moe_index_(moe_index) {
  hyper_expert = register_module("hyper_expert", moe::HyperExpert(num_experts(), opt));
}

at::Tensor HyperMoeFFN::forward(const at::Tensor& x, const FfnContext& ctx) {
  at::Tensor y = MoeFFN::forward(x, ctx);
  if (!generator_) fail("HyperMoE block used before its model linked the generator");
  return y + moe::hyper_expert_output(*hyper_expert, *generator_, moe_index_, x, last_selection()).to(y.scalar_type());
}

bool has_hypermoe(const ModelConfig& cfg) {
  return cfg.model_type == "moeforge" && cfg.raw.is_object() && cfg.raw.contains("hypermoe");
}

json hypermoe_config_overrides(const ModelConfig& m) {
  if (!m.is_moe())
    fail_file(m.origin, "--hypermoe needs an MoE model, this one is dense (make one with moeforge upcycle --family moeforge)");
  if (m.raw.contains("hypermoe")) return json::object();
  json add = {{"hypermoe", moe::to_json(moe::HyperMoeOptions{})}};
  if (m.model_type != "moeforge") {  // tensor names unchanged: the family's own
    add["model_type"] = "moeforge";
    add["base_model_type"] = m.model_type;
    add["architectures"] = {"MoeforgeForCausalLM"};
  }
  return add;
}

std::shared_ptr<MoeFFN> make_moe_block(const ModelConfig& cfg, int64_t l, MoeFfnSpec spec) {
  if (!has_hypermoe(cfg)) return std::make_shared<MoeFFN>(std::move(spec));
  return std::make_shared<HyperMoeFFN>(std::move(spec), moe_layers_before(cfg, l), hypermoe_options(cfg));
}

bool is_hypermoe_tensor(const std::string& name) {
  return name.rfind("hypermoe.", 0) == 0 || name.find(".hyper_expert.") != std::string::npos;
}

moe::HyperMoeOptions hypermoe_options(const ModelConfig& cfg) {
  return moe::parse_hypermoe_options(cfg.raw.at("hypermoe"), cfg.origin);
}

void link_hypermoe_generator(Model& model) {
  const ModelConfig& cfg = model.config();
  auto gen = model.register_module(
      "hypermoe", moe::HyperGenerator(cfg.hidden_size, moe_layers_before(cfg, cfg.num_layers), hypermoe_options(cfg)));
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    if (!cfg.layer_is_moe(l)) continue;
    auto block = std::dynamic_pointer_cast<HyperMoeFFN>(model.ffn(l));
    if (!block) fail_file(cfg.origin, "hypermoe: layer " + std::to_string(l) + " is not a HyperMoE block");
    block->set_generator(gen);
  }
}

void reset_hypermoe_parameters(Model& model) {
  at::NoGradGuard ng;
  const ModelConfig& cfg = model.config();
  for (int64_t l = 0; l < cfg.num_layers; ++l)
    if (auto block = std::dynamic_pointer_cast<HyperMoeFFN>(model.ffn(l))) block->hyper_expert->reset_parameters();
  for (auto& child : model.named_children())
    if (auto* gen = child.value()->as<moe::HyperGeneratorImpl>()) gen->reset_parameters();
}

void add_hypermoe_tensors(const ModelConfig& cfg, std::vector<TensorSpec>& specs) {
  const moe::HyperMoeOptions opt = hypermoe_options(cfg);
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    if (!cfg.layer_is_moe(l)) continue;
    const std::string p = "model.layers." + std::to_string(l) + "." + cfg.ffn_module_name() + ".hyper_expert.";
    for (auto& [name, shape] : moe::hyper_expert_tensors(cfg.num_experts, opt)) specs.push_back({p + name, shape, true});
  }
  for (auto& [name, shape] : moe::hyper_generator_tensors(cfg.hidden_size, moe_layers_before(cfg, cfg.num_layers), opt))
    specs.push_back({"hypermoe." + name, shape, true});
}

}  // namespace mf
