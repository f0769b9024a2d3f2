// Qwen1.5-MoE / Qwen2-MoE (Qwen2MoeForCausalLM): the Qwen2 graph (q/k/v biases) whose FFN is,
// on layers with (l+1) % decoder_sparse_step == 0 and l not in mlp_only_layers, a routed MoE:
// softmax -> top-k, renormalised only if norm_topk_prob, plus a shared expert scaled per token
// by sigmoid(shared_expert_gate(x)). Other layers keep a dense MLP of intermediate_size.
// Auxiliary loss: HF's load balancing, router_aux_loss_coef, pooled over layers.
#include <algorithm>

#include "model/config_parse.h"
#include "model/family.h"
#include "model/model.h"
#include "model/moe_ffn.h"
#include "util/error.h"

namespace mf {

std::shared_ptr<MoeFFN> make_qwen2_moe_ffn(const ModelConfig& cfg, int64_t l) {
  MoeFfnSpec s = moe_ffn_spec(cfg, l);
  s.shared_inner = cfg.shared_expert_intermediate_size;
  s.aux.kind = MoeAuxLossConfig::Kind::LoadBalancing;
  s.aux.coef = cfg.router_aux_loss_coef;
  return make_moe_block(cfg, l, std::move(s));
}

namespace {

void parse_qwen2_moe(const json& j, const std::string& o, ModelConfig& c) {
  using namespace config_parse;
  parse_qwen2_common(j, o, c, /*intermediate_required=*/false);  // checked below, only if a layer is dense
  parse_moe_common(j, o, c, "num_experts", 4, 0.001);
  c.moe_intermediate_size = require_int(j, "moe_intermediate_size", o);
  check_positive(c.moe_intermediate_size, "moe_intermediate_size", o);
  c.shared_expert_intermediate_size = get_int(j, "shared_expert_intermediate_size", 5632, o);
  if (c.shared_expert_intermediate_size < 0) fail_file(o, "key 'shared_expert_intermediate_size' must be >= 0");
  c.norm_topk_prob = get_bool(j, "norm_topk_prob", false, o);
  c.decoder_sparse_step = get_int(j, "decoder_sparse_step", 1, o);
  check_positive(c.decoder_sparse_step, "decoder_sparse_step", o);
  auto it = j.find("mlp_only_layers");
  if (it != j.end() && !it->is_null()) {
    if (!it->is_array()) fail_file(o, "key 'mlp_only_layers' must be a list of integers");
    for (const auto& v : *it) {
      if (!v.is_number_integer()) fail_file(o, "key 'mlp_only_layers' must be a list of integers");
      c.mlp_only_layers.push_back(v.get<int64_t>());
    }
    // Sorted without repeats: ModelConfig::layer_is_moe looks layers up by binary search.
    std::sort(c.mlp_only_layers.begin(), c.mlp_only_layers.end());
    c.mlp_only_layers.erase(std::unique(c.mlp_only_layers.begin(), c.mlp_only_layers.end()), c.mlp_only_layers.end());
  }
  // intermediate_size is optional only when every layer is an MoE layer. Decided without a loop
  // over the layers (num_hidden_layers is bounded only after the family's parser): with a step
  // above 1 layer 0 is dense, with a step <= 0 every layer is, with step 1 exactly the listed ones.
  bool any_dense = c.num_layers > 0 && c.decoder_sparse_step != 1;
  for (int64_t l : c.mlp_only_layers) any_dense |= l >= 0 && l < c.num_layers;
  if (any_dense && !j.contains("intermediate_size"))
    fail_file(o, "missing key 'intermediate_size' (needed by the dense layers)");
  check_positive(c.intermediate_size, "intermediate_size", o);
}

}  // namespace

FamilyEntry qwen2_moe_family() {
  return {"Qwen1.5-MoE / Qwen2-MoE (Qwen2 graph, routed MoE + shared expert)", Family::qwen2_moe, parse_qwen2_moe,
          build_llama_family, make_qwen2_moe_ffn};
}

}  // namespace mf
