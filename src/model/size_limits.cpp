// Size checks of model configs (size_limits.h). The counts mirror expected_tensors()
// (tensor_specs.cpp) term by term; tests compare them with total_parameters() for every family.
#include "model/size_limits.h"

#include "model/hypermoe_ffn.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>

#include "moe/routers/registry.h"
#include "util/error.h"
#include "util/str.h"

namespace mf {

namespace {

// "%.0f": counts held in doubles, printed as integers.
std::string whole(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

std::string origin_of(const ModelConfig& c) { return c.origin.empty() ? std::string("config.json") : c.origin; }

// The config.json key holding each size, as the family spells it.
const char* layers_key(const ModelConfig& c) { return c.family == Family::gpt2 ? "n_layer" : "num_hidden_layers"; }
const char* hidden_key(const ModelConfig& c) { return c.family == Family::gpt2 ? "n_embd" : "hidden_size"; }
const char* inter_key(const ModelConfig& c) { return c.family == Family::gpt2 ? "n_inner" : "intermediate_size"; }
const char* heads_key(const ModelConfig& c) { return c.family == Family::gpt2 ? "n_head" : "num_attention_heads"; }
const char* positions_key(const ModelConfig& c) {
  return c.family == Family::gpt2 ? "n_positions" : "max_position_embeddings";
}
const char* experts_key(const ModelConfig& c) { return c.family == Family::mixtral ? "num_local_experts" : "num_experts"; }

void check_at_most(const ModelConfig& c, const std::string& key, double value, double limit) {
  if (value > limit)
    fail_file(origin_of(c), cat("key '", key, "' is ", whole(value), ", above the limit of ", whole(limit)));
}

}  // namespace

ImpliedModelSize implied_model_size(const ModelConfig& c) {
  ImpliedModelSize s;
  auto add = [&s](double count, double params, bool required = true) {
    s.tensors += count;
    if (!required) return;  // total_parameters() skips optional tensors (tied lm_head, neuron indices)
    s.required_tensors += count;
    s.parameters += params;
  };
  const double V = static_cast<double>(c.vocab_size), h = static_cast<double>(c.hidden_size);
  const double L = static_cast<double>(c.num_layers), i = static_cast<double>(c.intermediate_size);

  if (c.family == Family::gpt2) {
    const double P = static_cast<double>(c.max_position_embeddings);
    add(1, V * h);  // wte
    add(1, P * h);  // wpe
    // ln_1 (2), c_attn (2), c_proj (2), ln_2 (2), c_fc (2), mlp c_proj (2) per layer.
    add(12 * L, L * (2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * h + (h * i + i) + (i * h + h)));
    add(2, 2 * h);  // ln_f
    add(1, V * h, !c.tie_word_embeddings);
    return s;
  }

  const double q = static_cast<double>(c.num_heads) * static_cast<double>(c.head_dim);
  const double kv = static_cast<double>(c.num_kv_heads) * static_cast<double>(c.head_dim);
  add(1, V * h);  // embed_tokens
  // Attention and the two norms, every layer.
  add(4 * L, L * (2 * q * h + 2 * kv * h));
  if (c.attention_bias) add(3 * L, L * (q + 2 * kv));
  if (c.attention_out_bias) add(L, L * h);
  if (c.qk_norm) add(2 * L, L * (q + kv));
  add(2 * L, L * 2 * h);

  // Which layers have a routed MoE block (ModelConfig::layer_is_moe, without a per-layer loop).
  double moe_layers = 0;
  if (c.num_experts > 0) {
    if (c.family == Family::moeforge) {
      std::set<int64_t> seen;
      for (int64_t l : c.moe_layers)
        if (l >= 0 && l < c.num_layers) seen.insert(l);
      moe_layers = static_cast<double>(seen.size());
    } else if (c.family == Family::qwen2_moe) {
      if (c.decoder_sparse_step > 0) {
        moe_layers = static_cast<double>(c.num_layers / c.decoder_sparse_step);
        std::set<int64_t> dense(c.mlp_only_layers.begin(), c.mlp_only_layers.end());
        for (int64_t l : dense)
          if (l >= 0 && l < c.num_layers && (l + 1) % c.decoder_sparse_step == 0) moe_layers -= 1;
      }
    } else {
      moe_layers = L;
    }
  }
  const double dense_layers = L - moe_layers;
  add(3 * dense_layers, dense_layers * 3 * h * i);
  if (c.mlp_bias) add(3 * dense_layers, dense_layers * (2 * i + h));

  if (moe_layers > 0) {
    const double E = static_cast<double>(c.num_experts);
    if (c.family == Family::moeforge) {
      // The router's tensors (the same in every MoE layer) ...
      if (const moe::RouterEntry* r = moe::router_registry().find(c.router.type)) {
        moe::RouterSpec rs;
        rs.dim = c.hidden_size;
        rs.num_experts = c.num_experts;
        rs.config = c.router.config;
        for (const auto& [name, shape] : r->tensors(rs)) {
          double n = 1;
          for (int64_t d : shape) n *= static_cast<double>(d);
          add(moe_layers, moe_layers * n);
        }
      }
      // ... and per expert gate / up / down (required) plus its neuron indices (optional).
      add(3 * E * moe_layers, 0);
      add(E * moe_layers, 0, /*required=*/false);
      for (size_t k = 0; k < c.moe_layers.size() && k < c.expert_sizes.size(); ++k) {
        if (c.moe_layers[k] < 0 || c.moe_layers[k] >= c.num_layers) continue;
        double width = 0;
        for (int64_t w : c.expert_sizes[k]) width += static_cast<double>(w);
        s.parameters += 3 * h * width;
      }
    } else if (c.router.type == "merged") {
      // A stock family wrapped with the merged expert map: an N-row gate, experts of expert_sizes.
      add(moe_layers, moe_layers * static_cast<double>(c.router.num_source_experts) * h);  // gate
      add(3 * E * moe_layers, 0);                                                           // experts
      for (const std::vector<int64_t>& sizes : c.expert_sizes)
        for (int64_t w : sizes) s.parameters += 3 * h * static_cast<double>(w);
    } else {
      const double m = static_cast<double>(c.moe_intermediate_size);
      add(moe_layers, moe_layers * E * h);                 // gate
      add(3 * E * moe_layers, moe_layers * E * 3 * h * m);  // experts
    }
    if (c.family != Family::moeforge && c.shared_expert_intermediate_size > 0) {
      const double sh = static_cast<double>(c.shared_expert_intermediate_size);
      add(4 * moe_layers, moe_layers * (3 * h * sh + h));  // shared expert + its gate
    }
  }

  add(1, h);  // model.norm
  add(1, V * h, !c.tie_word_embeddings);

  if (moe_layers > 0 && has_hypermoe(c)) {  // HyperMoE: per MoE layer, and the shared generator
    const moe::HyperMoeOptions opt = hypermoe_options(c);
    auto add_all = [&](const moe::TensorShapes& shapes, double times) {
      for (const auto& [name, shape] : shapes) {
        double n = 1;
        for (int64_t d : shape) n *= static_cast<double>(d);
        add(times, times * n);
      }
    };
    add_all(moe::hyper_expert_tensors(c.num_experts, opt), moe_layers);
    add_all(moe::hyper_generator_tensors(c.hidden_size, static_cast<int64_t>(moe_layers), opt), 1);
  }
  return s;
}

void check_model_size_limits(const ModelConfig& c) {
  auto d = [](int64_t v) { return static_cast<double>(v); };
  const double dim = d(kMaxModelDim);
  check_at_most(c, layers_key(c), d(c.num_layers), d(kMaxModelLayers));
  check_at_most(c, "vocab_size", d(c.vocab_size), dim);
  check_at_most(c, hidden_key(c), d(c.hidden_size), dim);
  check_at_most(c, inter_key(c), d(c.intermediate_size), dim);
  check_at_most(c, heads_key(c), d(c.num_heads), dim);
  check_at_most(c, "num_key_value_heads", d(c.num_kv_heads), dim);
  check_at_most(c, "head_dim", d(c.head_dim), dim);
  check_at_most(c, positions_key(c), d(c.max_position_embeddings), dim);
  const double q = d(c.num_heads) * d(c.head_dim);
  if (q > dim)
    fail_file(origin_of(c), cat(heads_key(c), " x head_dim is ", whole(q), ", above the limit of ", whole(dim)));
  if (c.num_experts > 0) {
    check_at_most(c, experts_key(c), d(c.num_experts), d(kMaxModelExperts));
    check_at_most(c, "moe_intermediate_size", d(c.moe_intermediate_size), dim);
    check_at_most(c, "shared_expert_intermediate_size", d(c.shared_expert_intermediate_size), dim);
    for (size_t k = 0; k < c.expert_sizes.size(); ++k)
      for (size_t e = 0; e < c.expert_sizes[k].size(); ++e)
        check_at_most(c, cat("expert_sizes[", k, "][", e, "]"), d(c.expert_sizes[k][e]), dim);
  }
  const ImpliedModelSize s = implied_model_size(c);
  if (s.tensors > d(kMaxModelTensors))
    fail_file(origin_of(c), cat("implies ", whole(s.tensors), " tensors (", layers_key(c), " ", c.num_layers,
                                c.num_experts > 0 ? cat(", ", experts_key(c), " ", c.num_experts) : std::string(),
                                "), above the limit of ", kMaxModelTensors));
  if (s.parameters > kMaxModelParameters)
    fail_file(origin_of(c), cat("implies ", format_count(s.parameters), " parameters, above the limit of ",
                                format_count(kMaxModelParameters)));
}

void check_config_against_checkpoint(const ModelConfig& c, double stored_tensors, double stored_parameters) {
  const ImpliedModelSize s = implied_model_size(c);
  // Loose on purpose: a tensor or a width off is reported tensor by tensor by validate_tensors.
  if (s.required_tensors > 2 * stored_tensors + 16 || s.parameters > 4 * stored_parameters + 1048576.0)
    fail_file(origin_of(c), cat("implies ", format_count(s.parameters), " parameters in ", whole(s.required_tensors),
                                " tensors, far more than the checkpoint holds (", format_count(stored_parameters),
                                " parameters in ", whole(stored_tensors), " tensors)"));
}

uint64_t model_memory_budget(std::string* source) {
  if (const char* env = std::getenv("MOEFORGE_MAX_MEMORY"); env && *env) {
    uint64_t bytes = 0;
    try {
      bytes = parse_size(env);
    } catch (const Error& e) {
      fail(cat("MOEFORGE_MAX_MEMORY: ", e.what()));
    }
    if (source) *source = "MOEFORGE_MAX_MEMORY allows";
    return bytes;
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  uint64_t bytes = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : UINT64_MAX;
  if (source) *source = "this machine has";
  // A container's memory limit (cgroup v2), when lower.
  std::ifstream in("/sys/fs/cgroup/memory.max");
  std::string limit;
  if (in && (in >> limit) && !limit.empty() && limit.find_first_not_of("0123456789") == std::string::npos &&
      limit.size() < 20) {
    const uint64_t cg = std::strtoull(limit.c_str(), nullptr, 10);
    if (cg > 0 && cg < bytes) {
      bytes = cg;
      if (source) *source = "this container may use";
    }
  }
  return bytes;
}

void check_model_fits_memory(const ModelConfig& c, double bytes_per_parameter, const std::string& purpose) {
  const double params = implied_model_size(c).parameters;
  const double need = params * bytes_per_parameter;
  std::string source;
  const double budget = static_cast<double>(model_memory_budget(&source));
  if (need > budget) {
    const bool from_env = source.rfind("MOEFORGE_MAX_MEMORY", 0) == 0;
    fail_file(origin_of(c), cat("the model would need ", format_bytes(need), " (", format_count(params),
                                " parameters x ", bytes_per_parameter, " bytes ", purpose, "), more than the ",
                                format_bytes(budget), " ", source,
                                from_env ? "" : " (set MOEFORGE_MAX_MEMORY to change the limit)"));
  }
}

}  // namespace mf
