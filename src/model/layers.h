// Building blocks shared by every family: linear / Conv1D projections, RMSNorm, LayerNorm,
// rotary embeddings (incl. Llama-3 and linear scaling), attention with GQA + KV cache +
// sliding window, and the gated (SwiGLU-style) FFN. Modules are torch::nn::Module with
// parameter names equal to the Hugging Face names, so named_parameters() of a model yields
// exactly the checkpoint's tensor names.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/ffn_block.h"
#include "model/hooks.h"
#include "model/kv_cache.h"
#include "moe/kernels.h"

namespace mf {

using moe::apply_linear;  // at::linear with the decode GEMV kernel (moe/kernels.h)

// A LoRA adapter of one Linear (Hu et al. 2021, PEFT semantics):
//   delta(x) = (alpha / r) * B A dropout(x),   A [r, in], B [out, r]
// Attached through Linear::lora (train/lora.h attaches them by module name); the MoE block reads
// A and B of its experts' projections directly to build a LoRA expert bank.
struct LoraLinear : torch::nn::Module {
  LoraLinear(int64_t in, int64_t out, int64_t r, double scale, double dropout);
  at::Tensor delta(const at::Tensor& x);  // in x's dtype
  at::Tensor lora_A, lora_B;
  double scale, dropout;
};

// y = x W^T + b, W [out, in] (nn.Linear layout).
struct Linear : torch::nn::Module {
  Linear(int64_t in, int64_t out, bool bias);
  at::Tensor forward(const at::Tensor& x) const {
    at::Tensor y = apply_linear(x, weight, bias);
    return lora ? y + lora->delta(x) : y;
  }
  at::Tensor weight, bias;
  // Optional LoRA path y += lora->delta(x). Not a registered submodule, so the module's parameter
  // names stay the checkpoint's (the adapters' own module owns its parameters).
  std::shared_ptr<LoraLinear> lora;
};

// GPT-2's Conv1D: y = x W + b with W stored [in, out].
struct Conv1D : torch::nn::Module {
  Conv1D(int64_t in, int64_t out);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;
};

// Llama RMSNorm: normalise in fp32, cast back, then scale (transformers' order).
struct RMSNorm : torch::nn::Module {
  RMSNorm(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight;
  double eps;
};

struct LayerNorm : torch::nn::Module {
  LayerNorm(int64_t dim, double eps);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;
  double eps;
};

struct Embedding : torch::nn::Module {
  Embedding(int64_t num, int64_t dim);
  at::Tensor forward(const at::Tensor& ids) const { return at::embedding(weight, ids); }
  at::Tensor weight;
};

// Applies the config's activation ("silu", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu").
at::Tensor activation(const std::string& name, const at::Tensor& x);

// Rotary inverse frequencies [head_dim/2] in float32, computed as transformers does
// (float32 arithmetic), with rope_scaling applied (linear: / factor; llama3: the piecewise
// wavelength rule of _compute_llama3_parameters).
at::Tensor rope_inv_freq(const ModelConfig& cfg);

// Everything one forward pass shares between layers.
struct ForwardState {
  int64_t batch = 0, seq = 0;  // B, T of the new tokens
  int64_t past = 0;            // positions already in the cache
  at::Tensor cos, sin;         // [B, 1, T, D] in the model dtype
  // Boolean attention masks [B, 1, T, past+T] (true = attend); undefined = plain causal
  // (or, with one new token, attend to everything).
  at::Tensor mask;
  at::Tensor window_mask;      // the same with the sliding window applied (if any layer uses one)
  bool causal = true;          // pass is_causal to SDPA (only when mask is undefined and T > 1)
  at::Tensor valid;            // bool [B*T] (undefined = no padding)
  KvCache* cache = nullptr;
  Hooks* hooks = nullptr;      // null = no hooks registered
};

// Builds positions, rotary tables and masks for new tokens `input_ids` [B, T] given the
// attention mask [B, T] (undefined = all real) and the cache. Positions count real tokens
// only (cumsum of the mask - 1), as transformers' generate() does, so left padding does not
// shift them. `window` > 0 also builds window_mask. inv_freq undefined: no rotary tables.
ForwardState make_forward_state(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache,
                                const at::Tensor& inv_freq, double rope_attention_factor, int64_t window,
                                at::ScalarType dtype, at::Tensor* positions_out = nullptr);

// The same for one packed pass without a cache: several sequences share a row (e.g. a question's
// context followed by each answer, every answer attending to the context and to itself only).
// `positions` [B, T] int64 are the rotary / learned positions, `allowed` [B, T, T] bool says which
// key each query may attend to (a padding query must at least attend to itself).
ForwardState make_packed_forward_state(const at::Tensor& positions, const at::Tensor& allowed, const at::Tensor& inv_freq,
                                       double rope_attention_factor, int64_t window, at::ScalarType dtype);

// Rotate-half rotary embedding on [B, H, T, D].
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// Scaled dot-product attention over q [B, H, T, D], k/v [B, Hkv, S, D] (GQA repeats k/v).
at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const ForwardState& st,
                  bool use_window);

// Llama-family self-attention (also Mistral, Qwen2, Mixtral, Qwen2-MoE, OLMoE).
struct Attention : torch::nn::Module {
  Attention(const ModelConfig& cfg, int64_t layer);
  at::Tensor forward(const at::Tensor& x, const ForwardState& st);
  std::shared_ptr<Linear> q_proj, k_proj, v_proj, o_proj;
  std::shared_ptr<RMSNorm> q_norm, k_norm;  // OLMoE only
  int64_t layer, heads, kv_heads, head_dim, window;
  double clip_qkv;
};

// Gated FFN: down( act(gate(x)) * up(x) ). Sub-module names are configurable because Mixtral
// calls them w1 (gate), w3 (up), w2 (down). The dense FFN block of the Llama graph, and the
// weights of each expert of an MoE block.
struct GatedMLP : FfnBlock {
  GatedMLP(int64_t hidden, int64_t inner, const std::string& act, bool bias, const std::string& gate_name = "gate_proj",
           const std::string& up_name = "up_proj", const std::string& down_name = "down_proj");
  at::Tensor forward(const at::Tensor& x, const FfnContext& ctx) override {
    return forward(x, ctx.hooks, ctx.layer, ctx.valid);
  }
  // `hooks` may be null; `expert` and `tokens` are passed to ffn_intermediate events.
  at::Tensor forward(const at::Tensor& x, Hooks* hooks, int layer = 0, const at::Tensor& valid = {},
                     int expert = -1, const at::Tensor& tokens = {});
  std::shared_ptr<Linear> gate, up, down;
  std::string act;

 private:
  at::Tensor forward_small_batch(const at::Tensor& x, Hooks* hooks, int layer);
};

// Fills every parameter: norms ~ 1 + 0.1 N(0,1) (so tests notice a missing norm weight),
// everything else N(0, std). Deterministic for a given seed.
void init_parameters_random(torch::nn::Module& m, uint64_t seed, double std);

}  // namespace mf
