// The checkpoint tensors a config implies (names and shapes, in checkpoint order), their
// validation against a checkpoint, and parameter counts. The moeforge family's router tensors
// come from the router's entry in moe::router_registry().
#include <algorithm>

#include "model/config.h"
#include "model/size_limits.h"
#include "model/hypermoe_ffn.h"
#include "moe/routers/registry.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf {

namespace {

void add(std::vector<TensorSpec>& v, std::string name, std::vector<int64_t> shape, bool required = true) {
  v.push_back(TensorSpec{std::move(name), std::move(shape), required});
}

void add_swiglu(std::vector<TensorSpec>& v, const std::string& p, int64_t h, int64_t i, const std::string& gate,
                const std::string& up, const std::string& down, bool bias) {
  add(v, p + gate + ".weight", {i, h});
  if (bias) add(v, p + gate + ".bias", {i});
  add(v, p + up + ".weight", {i, h});
  if (bias) add(v, p + up + ".bias", {i});
  add(v, p + down + ".weight", {h, i});
  if (bias) add(v, p + down + ".bias", {h});
}

std::vector<TensorSpec> gpt2_tensors(const ModelConfig& c) {
  std::vector<TensorSpec> v;
  const int64_t h = c.hidden_size, i = c.intermediate_size;
  add(v, "transformer.wte.weight", {c.vocab_size, h});
  add(v, "transformer.wpe.weight", {c.max_position_embeddings, h});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    add(v, p + "ln_1.weight", {h});
    add(v, p + "ln_1.bias", {h});
    // Conv1D stores weights as [in, out].
    add(v, p + "attn.c_attn.weight", {h, 3 * h});
    add(v, p + "attn.c_attn.bias", {3 * h});
    add(v, p + "attn.c_proj.weight", {h, h});
    add(v, p + "attn.c_proj.bias", {h});
    add(v, p + "ln_2.weight", {h});
    add(v, p + "ln_2.bias", {h});
    add(v, p + "mlp.c_fc.weight", {h, i});
    add(v, p + "mlp.c_fc.bias", {i});
    add(v, p + "mlp.c_proj.weight", {i, h});
    add(v, p + "mlp.c_proj.bias", {h});
  }
  add(v, "transformer.ln_f.weight", {h});
  add(v, "transformer.ln_f.bias", {h});
  add(v, "lm_head.weight", {c.vocab_size, h}, !c.tie_word_embeddings);
  return v;
}

}  // namespace

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  if (c.family == Family::gpt2) return gpt2_tensors(c);
  std::vector<TensorSpec> v;
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  add(v, "model.embed_tokens.weight", {c.vocab_size, h});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string a = p + "self_attn.";
    add(v, a + "q_proj.weight", {q, h});
    if (c.attention_bias) add(v, a + "q_proj.bias", {q});
    add(v, a + "k_proj.weight", {kv, h});
    if (c.attention_bias) add(v, a + "k_proj.bias", {kv});
    add(v, a + "v_proj.weight", {kv, h});
    if (c.attention_bias) add(v, a + "v_proj.bias", {kv});
    add(v, a + "o_proj.weight", {h, q});
    if (c.attention_out_bias) add(v, a + "o_proj.bias", {h});
    if (c.qk_norm) {
      add(v, a + "q_norm.weight", {q});
      add(v, a + "k_norm.weight", {kv});
    }
    const std::string f = p + c.ffn_module_name() + ".";
    if (!c.layer_is_moe(l)) {
      add_swiglu(v, f, h, c.intermediate_size, "gate_proj", "up_proj", "down_proj", c.mlp_bias);
    } else if (c.family == Family::moeforge) {
      const int64_t E = c.num_experts;
      // The router's own tensors, as its entry in the router table names them.
      moe::RouterSpec rs;
      rs.dim = h;
      rs.num_experts = E;
      rs.config = c.router.config;
      for (const auto& [name, shape] : moe::router_registry().at(c.router.type).tensors(rs))
        add(v, f + "router." + name, shape);
      const std::vector<int64_t> widths = c.layer_expert_widths(l);
      for (int64_t e = 0; e < E; ++e) {
        const std::string ep = f + "experts." + std::to_string(e) + ".";
        add_swiglu(v, ep, h, widths[e], "gate_proj", "up_proj", "down_proj", false);
        add(v, ep + "neurons", {widths[e]}, /*required=*/false);
      }
    } else {
      // Wrapped with the merged expert map (router.type merged): the router keeps its N rows, and
      // the experts may differ in width (expert_sizes).
      const bool merged = c.router.type == "merged";
      add(v, f + "gate.weight", {merged ? c.router.num_source_experts : c.num_experts, h});
      const bool mixtral = c.family == Family::mixtral;
      const std::vector<int64_t> widths = c.layer_expert_widths(l);
      for (int64_t e = 0; e < c.num_experts; ++e) {
        const std::string ep = f + "experts." + std::to_string(e) + ".";
        if (mixtral) add_swiglu(v, ep, h, widths[e], "w1", "w3", "w2", false);
        else add_swiglu(v, ep, h, widths[e], "gate_proj", "up_proj", "down_proj", false);
      }
      if (c.shared_expert_intermediate_size > 0) {
        add_swiglu(v, f + "shared_expert.", h, c.shared_expert_intermediate_size, "gate_proj", "up_proj", "down_proj",
                   false);
        add(v, f + "shared_expert_gate.weight", {1, h});
      }
    }
    add(v, p + "input_layernorm.weight", {h});
    add(v, p + "post_attention_layernorm.weight", {h});
  }
  add(v, "model.norm.weight", {h});
  add(v, "lm_head.weight", {c.vocab_size, h}, !c.tie_word_embeddings);
  if (has_hypermoe(c)) add_hypermoe_tensors(c, v);
  return v;
}

bool is_ignorable_tensor(const ModelConfig& c, const std::string& name) {
  if (ends_with(name, "rotary_emb.inv_freq")) return true;
  if (c.family == Family::gpt2 && (ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias"))) return true;
  return false;
}

std::string canonical_tensor_name(const ModelConfig& c, const std::string& n) {
  if (c.family == Family::gpt2 && !starts_with(n, "transformer.") && !starts_with(n, "lm_head.")) return "transformer." + n;
  return n;
}

void validate_tensors(const ModelConfig& c, const std::map<std::string, std::vector<int64_t>>& present,
                      const std::string& origin, const std::map<std::string, std::string>& file_of) {
  auto where = [&](const std::string& stored) {
    auto it = file_of.find(stored);
    return it == file_of.end() ? origin : it->second;
  };
  // A config implying far more than the checkpoint holds (num_hidden_layers: 100000 over a
  // 6-layer file) is refused naming config.json before its tensor list is built.
  double stored_tensors = 0, stored_parameters = 0;
  for (const auto& [name, shape] : present) {
    if (is_ignorable_tensor(c, name)) continue;
    double n = 1;
    for (int64_t d : shape) n *= static_cast<double>(d);
    stored_tensors += 1;
    stored_parameters += n;
  }
  check_config_against_checkpoint(c, stored_tensors, stored_parameters);
  std::map<std::string, std::string> canonical;  // canonical name -> stored name
  for (const auto& [name, shape] : present) {
    if (is_ignorable_tensor(c, name)) continue;
    std::string cn = canonical_tensor_name(c, name);
    if (canonical.count(cn)) fail_file(where(name), "tensor " + name + " is stored twice (as " + canonical[cn] + ")");
    canonical[cn] = name;
  }
  std::set<std::string> known;
  const std::string cfg_name = c.origin.empty() ? "config.json" : base_name(c.origin);
  for (const auto& spec : expected_tensors(c)) {
    known.insert(spec.name);
    auto it = canonical.find(spec.name);
    if (it == canonical.end()) {
      if (spec.required) fail_file(origin, "missing tensor " + spec.name);
      continue;
    }
    const auto& shape = present.at(it->second);
    if (shape != spec.shape)
      fail_file(where(it->second), "tensor " + it->second + " has shape " + shape_string(shape) + " but " + cfg_name +
                                       " implies " + shape_string(spec.shape));
  }
  for (const auto& [cn, stored] : canonical)
    if (!known.count(cn)) fail_file(where(stored), "unexpected tensor " + stored);
}

int64_t total_parameters(const ModelConfig& c) {
  int64_t n = 0;
  for (const auto& s : expected_tensors(c)) {
    if (!s.required) continue;  // tied lm_head shares the embedding
    int64_t k = 1;
    for (int64_t d : s.shape) k *= d;
    n += k;
  }
  return n;
}

namespace {
// Routed-expert parameters of MoE layer l, per expert (SwiGLU, no biases), sorted ascending.
std::vector<int64_t> sorted_expert_params(const ModelConfig& c, int64_t l) {
  std::vector<int64_t> p;
  for (int64_t w : c.layer_expert_widths(l)) p.push_back(3 * c.hidden_size * w);
  std::sort(p.begin(), p.end());
  return p;
}
int64_t sum_range(const std::vector<int64_t>& v, size_t from, size_t to) {
  int64_t s = 0;
  for (size_t i = from; i < to; ++i) s += v[i];
  return s;
}
}  // namespace

int64_t active_parameters_per_token(const ModelConfig& c) {
  int64_t n = total_parameters(c);
  if (!c.is_moe()) return n;
  const int64_t E = c.num_experts, k = c.num_experts_per_tok;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe(l)) continue;
    const int64_t all = sum_range(sorted_expert_params(c, l), 0, static_cast<size_t>(E));
    n -= all - all * k / E;  // exact for equal widths; the uniform-routing expectation otherwise
  }
  return n;
}

ActiveParameterRange active_parameter_range(const ModelConfig& c) {
  ActiveParameterRange r{total_parameters(c), total_parameters(c)};
  if (!c.is_moe()) return r;
  const size_t E = static_cast<size_t>(c.num_experts), k = static_cast<size_t>(c.num_experts_per_tok);
  const bool variable_k = c.family == Family::moeforge && c.router.selection != "top_k";
  const size_t kmin = variable_k ? 1 : k;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe(l)) continue;
    const auto p = sorted_expert_params(c, l);
    const int64_t all = sum_range(p, 0, E);
    r.min -= all - sum_range(p, 0, kmin);
    r.max -= all - sum_range(p, E - k, E);
  }
  return r;
}

}  // namespace mf
