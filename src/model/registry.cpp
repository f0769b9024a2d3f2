// The tables of src/model: model families (model/family.h) and FFN blocks (model/ffn_block.h),
// one line per built-in entry.
#include "model/family.h"
#include "model/layers.h"
#include "model/moe_ffn.h"
#include "util/error.h"

namespace mf {

namespace {

std::shared_ptr<FfnBlock> make_gated_mlp(const ModelConfig& cfg, int64_t) {
  return std::make_shared<GatedMLP>(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act, cfg.mlp_bias);
}

// The routed MoE block of the config's family (FamilyEntry::moe_block).
std::shared_ptr<FfnBlock> make_family_moe(const ModelConfig& cfg, int64_t l) {
  const FamilyEntry& family = family_registry().at(cfg.model_type);
  if (!family.moe_block) fail(cfg.origin + ": model_type " + cfg.model_type + " has no MoE block");
  return family.moe_block(cfg, l);
}

}  // namespace

Registry<FamilyEntry>& family_registry() {
  static Registry<FamilyEntry> registry = [] {
    Registry<FamilyEntry> r("model_type");
    r.add("llama", llama_family());
    r.add("mistral", mistral_family());
    r.add("qwen2", qwen2_family());
    r.add("gpt2", gpt2_family());
    r.add("mixtral", mixtral_family());
    r.add("qwen2_moe", qwen2_moe_family());
    r.add("olmoe", olmoe_family());
    r.add("moeforge", moeforge_family());
    return r;
  }();
  return registry;
}

std::string supported_model_types() { return family_registry().known(); }

Registry<FfnBlockEntry>& ffn_block_registry() {
  static Registry<FfnBlockEntry> registry = [] {
    Registry<FfnBlockEntry> r("FFN block");
    r.add("gated_mlp", {"dense gated FFN down(act(gate x) * up x)", make_gated_mlp});
    r.add("moe", {"the family's routed-expert MoE block (moe_ffn.h)", make_family_moe});
    return r;
  }();
  return registry;
}

}  // namespace mf
