// Architecture keys and tensor mapping of the GGUF export (what llama.cpp's
// convert_hf_to_gguf.py does for LlamaModel, Qwen2Model, Qwen2MoeModel, OlmoeModel, GPT2Model),
// and the refusals for what llama.cpp's graphs cannot compute.
#include <algorithm>
#include <cmath>

#include "gguf/export_internal.h"
#include "util/error.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::gguf {

namespace {

[[noreturn]] void refuse(const ModelConfig& c, const std::string& what) {
  fail_file(c.origin.empty() ? "config.json" : c.origin, what + " (GGUF export)");
}

std::string L(int64_t l) { return std::to_string(l); }

// llama.cpp's llama graph rotates pairs (x[2i], x[2i+1]); HF rotates halves. convert_hf_to_gguf
// permutes the rows of q_proj / k_proj (weights and biases) inside each head so that the
// interleaved rotation computes HF's: rows [h, 2, d/2] -> [h, d/2, 2].
at::Tensor permute_rows(const at::Tensor& w, int64_t heads) {
  const std::vector<int64_t> shape(w.sizes().begin(), w.sizes().end());
  std::vector<int64_t> s{heads, 2, w.size(0) / heads / 2};
  for (size_t i = 1; i < shape.size(); ++i) s.push_back(shape[i]);
  return w.reshape(s).transpose(1, 2).reshape(shape).contiguous();
}

// Refusals shared by the llama-type families.
void check_llama_type(const ModelConfig& c, const std::string& arch) {
  if (c.hidden_act != "silu")
    refuse(c, "hidden_act \"" + c.hidden_act + "\": llama.cpp's " + arch +
                  " architecture computes SiLU-gated FFNs only; there is no GGUF equivalent");
  const std::string& rs = c.rope_scaling.type;
  if (rs == "llama3" && arch != "llama")
    refuse(c, "rope_scaling llama3 is expressed in GGUF only for the llama architecture (rope_freqs)");
  if (!rs.empty() && rs != "linear" && rs != "llama3")
    refuse(c, "rope_scaling \"" + rs + "\" has no GGUF export here (supported: linear, llama3)");
  if (arch != "llama" && c.num_heads * c.head_dim != c.hidden_size)
    refuse(c, cat("head_dim ", c.head_dim, " x ", c.num_heads, " heads != hidden_size ", c.hidden_size,
                  ": llama.cpp's ", arch, " architecture needs square attention projections"));
  const int64_t window = c.sliding_window;
  if (window > 0 && window < c.max_position_embeddings)
    log_warn("GGUF export: ", arch, " in llama.cpp has no sliding-window attention; the GGUF computes full causal "
             "attention, identical to this model only for contexts up to ", window, " tokens");
}

void check_moeforge(const ModelConfig& c) {
  const MoeforgeRouter& r = c.router;
  if (r.type == "merged")
    refuse(c, "router.type merged (the exact N->r expert map of `merge --output exact`) has no llama.cpp "
              "equivalent; export the stock approximation instead: `moeforge merge ... --output stock`");
  const std::string stock = "; export the stock approximation instead: split with `--router linear --gate renorm "
                            "--export mixtral` and convert that";
  if (r.type != "linear")
    refuse(c, "router.type " + r.type + " (" + (r.type == "mlp" ? "MoEfication's MLP router" : r.type == "avgk" ?
              "EMoE's avg-k gate" : "not a linear gate") + ") cannot be expressed: llama.cpp routes with one linear "
              "gate" + stock);
  if (r.score != "softmax") refuse(c, "router.score " + r.score + ": llama.cpp's llama MoE scores with softmax" + stock);
  if (r.selection != "top_k")
    refuse(c, "router.selection " + r.selection + ": llama.cpp selects a fixed top-k" + stock);
  const bool renorm_equivalent = r.gate == "renorm" || (c.num_experts_per_tok == 1 && (r.gate == "unit" || r.gate == "ones"));
  if (!renorm_equivalent)
    refuse(c, "router.gate " + r.gate + (r.gate == "unit" ? " (HEMoE's unit weights)" : "") +
                  ": llama.cpp weighs the selected experts by their renormalised softmax probabilities" + stock);
  if (c.base_family != Family::llama && c.base_family != Family::mistral && c.base_family != Family::qwen2)
    refuse(c, "base_model_type " + std::string(family_name(c.base_family)) + " is not exportable");
  std::vector<int64_t> dense;
  for (int64_t l = 0; l < c.num_layers; ++l)
    if (!c.layer_is_moe(l)) dense.push_back(l);
  if (!dense.empty())
    refuse(c, cat("layer ", dense[0], " is dense while others are MoE: llama.cpp's llama architecture needs an MoE "
                  "block in every layer; split every layer (`--layers 0:", c.num_layers, "`) with `--export mixtral`"));
  int64_t width = -1;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::vector<int64_t> w = c.layer_expert_widths(l);
    std::string list;
    bool hetero = false;
    for (int64_t x : w) {
      list += (list.empty() ? "" : "/") + std::to_string(x);
      hetero |= x != w[0];
    }
    if (hetero)
      refuse(c, "layer " + L(l) + " has experts of different widths (" + list + "): GGUF stores a layer's experts "
                "as one tensor of a single width; export a stock approximation instead (a split with equal widths, "
                "e.g. `--method moefication --export mixtral`)");
    if (width >= 0 && w[0] != width)
      refuse(c, cat("experts are ", width, " wide in layer 0 but ", w[0], " in layer ", l,
                    ": llama.cpp's llama architecture has one expert width for all layers"));
    width = w[0];
  }
}

}  // namespace

std::string gguf_architecture(const ModelConfig& c) {
  if (c.raw.is_object() && c.raw.contains("hypermoe"))
    refuse(c, "HyperMoE (the 'hypermoe' object) has no llama.cpp equivalent");
  if (c.family != Family::moeforge && c.router.type == "merged")  // Qwen2-MoE / OLMoE exact merge output
    refuse(c, "router.type merged (the exact N->r expert map of `merge --output exact`) has no llama.cpp "
              "equivalent; export the stock approximation instead: `moeforge merge ... --output stock`");
  switch (c.family) {
    case Family::llama:
    case Family::mistral:
    case Family::mixtral:
      check_llama_type(c, "llama");
      return "llama";
    case Family::qwen2:
      check_llama_type(c, "qwen2");
      return "qwen2";
    case Family::qwen2_moe: {
      check_llama_type(c, "qwen2moe");
      for (int64_t l = 0; l < c.num_layers; ++l)
        if (!c.layer_is_moe(l))
          refuse(c, "layer " + L(l) + " is dense (mlp_only_layers / decoder_sparse_step): llama.cpp's qwen2moe "
                    "architecture has an MoE block in every layer");
      if (c.shared_expert_intermediate_size <= 0)
        refuse(c, "shared_expert_intermediate_size is 0: llama.cpp's qwen2moe architecture needs the shared expert");
      if (c.norm_topk_prob)
        refuse(c, "norm_topk_prob: true: llama.cpp's qwen2moe architecture does not renormalise the top-k weights");
      return "qwen2moe";
    }
    case Family::olmoe:
      check_llama_type(c, "olmoe");
      if (c.clip_qkv > 0) refuse(c, "clip_qkv is set: llama.cpp's olmoe architecture does not clamp q/k/v");
      if (c.norm_topk_prob)
        refuse(c, "norm_topk_prob: true: llama.cpp's olmoe architecture does not renormalise the top-k weights");
      if (c.num_kv_heads != c.num_heads)
        refuse(c, "num_key_value_heads != num_attention_heads: llama.cpp's olmoe architecture has k_norm over the "
                  "full hidden width (no grouped-query attention)");
      if (c.attention_out_bias) refuse(c, "attention_bias: llama.cpp's olmoe architecture has no o_proj bias");
      return "olmoe";
    case Family::gpt2: {
      const std::string& a = c.hidden_act;
      if (a != "gelu_new" && a != "gelu_pytorch_tanh" && a != "gelu_fast")
        refuse(c, "activation_function \"" + a + "\": llama.cpp's gpt2 architecture computes tanh-approximated GELU "
                  "only (gelu_new)");
      return "gpt2";
    }
    case Family::moeforge:
      check_moeforge(c);
      check_llama_type(c, "llama");
      return "llama";
  }
  refuse(c, "model_type " + c.model_type + " has no GGUF export");
}

namespace {

struct Planner {
  const ModelConfig& c;
  const TensorGetter& get;
  std::vector<TensorJob> jobs;

  void add(const std::string& name, std::vector<int64_t> shape, std::function<at::Tensor()> make, bool f32 = false) {
    TensorJob j;
    j.name = name;
    j.shape = std::move(shape);
    j.keep_f32 = f32 || j.shape.size() <= 1 || ends_with(name, "_norm.weight") || !ends_with(name, ".weight");
    j.make = std::move(make);
    jobs.push_back(std::move(j));
  }
  void copy(const std::string& name, const std::string& hf, std::vector<int64_t> shape, bool f32 = false) {
    const TensorGetter& g = get;
    add(name, std::move(shape), [g, hf]() { return g(hf); }, f32);
  }
  // Experts e = 0..E-1 of `hf_of(e)` stacked into one [E, out, in] tensor.
  void stack(const std::string& name, int64_t E, int64_t out, int64_t in, std::function<std::string(int64_t)> hf_of) {
    TensorJob j;
    j.name = name;
    j.shape = {E, out, in};
    j.parts = E;
    const TensorGetter& g = get;
    j.make_part = [g, hf_of](int64_t e) { return g(hf_of(e)); };
    jobs.push_back(std::move(j));
  }
};

void plan_gpt2(Planner& p) {
  const ModelConfig& c = p.c;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const TensorGetter& g = p.get;
  p.copy("token_embd.weight", "transformer.wte.weight", {V, H});
  p.copy("position_embd.weight", "transformer.wpe.weight", {c.max_position_embeddings, H}, /*f32=*/true);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string h = "transformer.h." + L(l) + ".", b = "blk." + L(l) + ".";
    // Conv1D stores [in, out]; GGUF wants [out, in] like a Linear.
    auto t = [g](const std::string& n) { return [g, n]() { return g(n).t().contiguous(); }; };
    p.copy(b + "attn_norm.weight", h + "ln_1.weight", {H});
    p.copy(b + "attn_norm.bias", h + "ln_1.bias", {H});
    p.add(b + "attn_qkv.weight", {3 * H, H}, t(h + "attn.c_attn.weight"));
    p.copy(b + "attn_qkv.bias", h + "attn.c_attn.bias", {3 * H});
    p.add(b + "attn_output.weight", {H, H}, t(h + "attn.c_proj.weight"));
    p.copy(b + "attn_output.bias", h + "attn.c_proj.bias", {H});
    p.copy(b + "ffn_norm.weight", h + "ln_2.weight", {H});
    p.copy(b + "ffn_norm.bias", h + "ln_2.bias", {H});
    p.add(b + "ffn_up.weight", {I, H}, t(h + "mlp.c_fc.weight"));
    p.copy(b + "ffn_up.bias", h + "mlp.c_fc.bias", {I});
    p.add(b + "ffn_down.weight", {H, I}, t(h + "mlp.c_proj.weight"));
    p.copy(b + "ffn_down.bias", h + "mlp.c_proj.bias", {H});
  }
  p.copy("output_norm.weight", "transformer.ln_f.weight", {H});
  p.copy("output_norm.bias", "transformer.ln_f.bias", {H});
  if (!c.tie_word_embeddings) p.copy("output.weight", "lm_head.weight", {V, H});
}

// llama.cpp's rope_freqs for rope_scaling llama3 (LlamaModel.generate_extra_tensors): the factor
// each rotary frequency is divided by.
at::Tensor llama3_rope_factors(const ModelConfig& c) {
  const RopeScaling& r = c.rope_scaling;
  const int64_t dim = c.head_dim;
  std::vector<float> f;
  const double low_wavelen = r.original_max_position_embeddings / r.low_freq_factor;
  const double high_wavelen = r.original_max_position_embeddings / r.high_freq_factor;
  for (int64_t i = 0; i < dim; i += 2) {
    const double freq = 1.0 / std::pow(c.rope_theta, static_cast<double>(i) / static_cast<double>(dim));
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_wavelen) {
      f.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      f.push_back(static_cast<float>(r.factor));
    } else {
      const double smooth = (r.original_max_position_embeddings / wavelen - r.low_freq_factor) /
                            (r.high_freq_factor - r.low_freq_factor);
      f.push_back(static_cast<float>(1.0 / ((1 - smooth) / r.factor + smooth)));
    }
  }
  return at::tensor(f, at::kFloat);
}

void plan_llama_type(Planner& p, const std::string& arch) {
  const ModelConfig& c = p.c;
  const TensorGetter& g = p.get;
  const int64_t H = c.hidden_size, V = c.vocab_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const bool llama = arch == "llama";
  p.copy("token_embd.weight", "model.embed_tokens.weight", {V, H});
  if (llama && c.rope_scaling.type == "llama3") {
    const ModelConfig* cp = &c;
    p.add("rope_freqs.weight", {c.head_dim / 2}, [cp]() { return llama3_rope_factors(*cp); }, true);
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string h = "model.layers." + L(l) + ".", a = h + "self_attn.", b = "blk." + L(l) + ".";
    p.copy(b + "attn_norm.weight", h + "input_layernorm.weight", {H});
    for (const char* which : {"q", "k"}) {
      const int64_t heads = which[0] == 'q' ? c.num_heads : c.num_kv_heads;
      const int64_t rows = which[0] == 'q' ? q : kv;
      const std::string src = a + which + "_proj.";
      const std::string dst = b + "attn_" + which + ".";
      if (llama) {
        p.add(dst + "weight", {rows, H}, [g, src, heads]() { return permute_rows(g(src + "weight"), heads); });
        if (c.attention_bias)
          p.add(dst + "bias", {rows}, [g, src, heads]() { return permute_rows(g(src + "bias"), heads); });
      } else {
        p.copy(dst + "weight", src + "weight", {rows, H});
        if (c.attention_bias) p.copy(dst + "bias", src + "bias", {rows});
      }
    }
    p.copy(b + "attn_v.weight", a + "v_proj.weight", {kv, H});
    if (c.attention_bias) p.copy(b + "attn_v.bias", a + "v_proj.bias", {kv});
    p.copy(b + "attn_output.weight", a + "o_proj.weight", {H, q});
    if (c.attention_out_bias) p.copy(b + "attn_output.bias", a + "o_proj.bias", {H});
    if (c.qk_norm) {  // OLMoE: RMSNorm over the whole q / k projection
      p.copy(b + "attn_q_norm.weight", a + "q_norm.weight", {q});
      p.copy(b + "attn_k_norm.weight", a + "k_norm.weight", {kv});
    }
    p.copy(b + "ffn_norm.weight", h + "post_attention_layernorm.weight", {H});
    const std::string f = h + c.ffn_module_name() + ".";
    if (!c.layer_is_moe(l)) {
      const int64_t I = c.intermediate_size;
      p.copy(b + "ffn_gate.weight", f + "gate_proj.weight", {I, H});
      p.copy(b + "ffn_up.weight", f + "up_proj.weight", {I, H});
      p.copy(b + "ffn_down.weight", f + "down_proj.weight", {H, I});
      if (c.mlp_bias) {
        p.copy(b + "ffn_gate.bias", f + "gate_proj.bias", {I});
        p.copy(b + "ffn_up.bias", f + "up_proj.bias", {I});
        p.copy(b + "ffn_down.bias", f + "down_proj.bias", {H});
      }
      continue;
    }
    const int64_t E = c.num_experts, F = c.layer_expert_widths(l).at(0);
    const bool mixtral = c.family == Family::mixtral, moeforge = c.family == Family::moeforge;
    p.copy(b + "ffn_gate_inp.weight", f + (moeforge ? "router.weight" : "gate.weight"), {E, H}, /*f32=*/true);
    const std::string gate = mixtral ? "w1" : "gate_proj", up = mixtral ? "w3" : "up_proj",
                      down = mixtral ? "w2" : "down_proj";
    auto expert = [f](const std::string& w) {
      return [f, w](int64_t e) { return f + "experts." + std::to_string(e) + "." + w + ".weight"; };
    };
    p.stack(b + "ffn_gate_exps.weight", E, F, H, expert(gate));
    p.stack(b + "ffn_up_exps.weight", E, F, H, expert(up));
    p.stack(b + "ffn_down_exps.weight", E, H, F, expert(down));
    if (c.family == Family::qwen2_moe) {
      const int64_t S = c.shared_expert_intermediate_size;
      p.copy(b + "ffn_gate_shexp.weight", f + "shared_expert.gate_proj.weight", {S, H});
      p.copy(b + "ffn_up_shexp.weight", f + "shared_expert.up_proj.weight", {S, H});
      p.copy(b + "ffn_down_shexp.weight", f + "shared_expert.down_proj.weight", {H, S});
      const std::string sg = f + "shared_expert_gate.weight";
      p.add(b + "ffn_gate_inp_shexp.weight", {H}, [g, sg]() { return g(sg).reshape({-1}); }, true);
    }
  }
  p.copy("output_norm.weight", "model.norm.weight", {H});
  // llama and qwen2 fall back to token_embd when output is absent; qwen2moe and olmoe need it.
  if (!c.tie_word_embeddings) p.copy("output.weight", "lm_head.weight", {V, H});
  else if (!llama && arch != "qwen2") p.copy("output.weight", "model.embed_tokens.weight", {V, H});
}

}  // namespace

std::vector<TensorJob> plan_architecture(const ModelConfig& c, const TensorGetter& get, const std::string& arch,
                                         Writer& w) {
  const std::string k = arch + ".";
  const auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  w.add_u32(k + "context_length", u32(c.max_position_embeddings));
  w.add_u32(k + "embedding_length", u32(c.hidden_size));
  w.add_u32(k + "block_count", u32(c.num_layers));
  w.add_u32(k + "attention.head_count", u32(c.num_heads));
  w.add_u32(k + "vocab_size", u32(c.vocab_size));
  Planner p{c, get, {}};
  if (c.family == Family::gpt2) {
    w.add_u32(k + "feed_forward_length", u32(c.intermediate_size));
    w.add_f32(k + "attention.layer_norm_epsilon", static_cast<float>(c.norm_eps));
    plan_gpt2(p);
    return std::move(p.jobs);
  }
  w.add_u32(k + "attention.head_count_kv", u32(c.num_kv_heads));
  w.add_f32(k + "attention.layer_norm_rms_epsilon", static_cast<float>(c.norm_eps));
  w.add_f32(k + "rope.freq_base", static_cast<float>(c.rope_theta));
  w.add_u32(k + "rope.dimension_count", u32(c.head_dim));
  if (c.num_heads * c.head_dim != c.hidden_size) {
    w.add_u32(k + "attention.key_length", u32(c.head_dim));
    w.add_u32(k + "attention.value_length", u32(c.head_dim));
  }
  if (c.rope_scaling.type == "linear") {
    w.add_string(k + "rope.scaling.type", "linear");
    w.add_f32(k + "rope.scaling.factor", static_cast<float>(c.rope_scaling.factor));
  }
  if (c.is_moe()) {
    const int64_t F = c.layer_expert_widths(0).at(0);
    w.add_u32(k + "expert_count", u32(c.num_experts));
    w.add_u32(k + "expert_used_count", u32(c.num_experts_per_tok));
    if (c.family == Family::qwen2_moe) {
      w.add_u32(k + "feed_forward_length", u32(c.intermediate_size));
      w.add_u32(k + "expert_feed_forward_length", u32(F));
      w.add_u32(k + "expert_shared_feed_forward_length", u32(c.shared_expert_intermediate_size));
    } else {
      // llama (Mixtral) and olmoe size their experts by feed_forward_length.
      w.add_u32(k + "feed_forward_length", u32(F));
    }
  } else {
    w.add_u32(k + "feed_forward_length", u32(c.intermediate_size));
  }
  plan_llama_type(p, arch);
  return std::move(p.jobs);
}

}  // namespace mf::gguf
