#include "model/layers.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <optional>

#include "model/decode_attention.h"
#include "moe/kernels.h"
#include "util/compat.h"
#include "util/error.h"

namespace mf {

Linear::Linear(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::empty({out, in}));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

LoraLinear::LoraLinear(int64_t in, int64_t out, int64_t r, double scale_, double dropout_)
    : scale(scale_), dropout(dropout_) {
  lora_A = register_parameter("lora_A", torch::zeros({r, in}));
  lora_B = register_parameter("lora_B", torch::zeros({out, r}));
}

at::Tensor LoraLinear::delta(const at::Tensor& x) {
  at::Tensor h = (dropout > 0 && is_training()) ? at::dropout(x, dropout, true) : x;
  // The low-rank path runs in the adapter's dtype (fp32 adapters over a bf16 base model).
  if (h.scalar_type() == lora_A.scalar_type()) return at::linear(at::linear(h, lora_A), lora_B) * scale;
  return (at::linear(at::linear(h.to(lora_A.scalar_type()), lora_A), lora_B) * scale).to(x.scalar_type());
}

Conv1D::Conv1D(int64_t in, int64_t out) {
  weight = register_parameter("weight", torch::empty({in, out}));
  bias = register_parameter("bias", torch::zeros({out}));
}

at::Tensor Conv1D::forward(const at::Tensor& x) const {
  auto shape = x.sizes().vec();
  shape.back() = weight.size(1);
  return at::addmm(bias, x.reshape({-1, x.size(-1)}), weight).view(shape);
}

RMSNorm::RMSNorm(int64_t dim, double eps_) : eps(eps_) { weight = register_parameter("weight", torch::ones({dim})); }

at::Tensor RMSNorm::forward(const at::Tensor& x) const {
  const bool needs_grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
  const bool fused = !needs_grad && x.device().is_cpu() && x.scalar_type() == weight.scalar_type() &&
                     (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) && x.is_contiguous() &&
                     weight.is_contiguous();
  if (!fused) {
    at::Tensor h = x.to(at::kFloat);
    h = h * at::rsqrt(h.pow(2).mean(-1, true) + eps);
    return weight * h.to(x.scalar_type());
  }
  // Inference: one pass per row instead of seven tensor ops (their fixed cost dominates decode),
  // same arithmetic: fp32 statistics, round to the input dtype, then scale in that dtype.
  const int64_t H = x.size(-1), rows = x.numel() / H;
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "rms_norm", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* wp = weight.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / H), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* xr = xp + r * H;
        float ss = 0.f;
        for (int64_t i = 0; i < H; ++i) ss += static_cast<float>(xr[i]) * static_cast<float>(xr[i]);
        const float inv = 1.f / std::sqrt(ss / static_cast<float>(H) + static_cast<float>(eps));
        for (int64_t i = 0; i < H; ++i)
          op[r * H + i] = static_cast<scalar_t>(static_cast<float>(wp[i]) *
                                                static_cast<float>(static_cast<scalar_t>(static_cast<float>(xr[i]) * inv)));
      }
    });
  });
  return out;
}

LayerNorm::LayerNorm(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({dim}));
  bias = register_parameter("bias", torch::zeros({dim}));
}

at::Tensor LayerNorm::forward(const at::Tensor& x) const {
  return at::layer_norm(x, {x.size(-1)}, weight, bias, eps);
}

Embedding::Embedding(int64_t num, int64_t dim) { weight = register_parameter("weight", torch::empty({num, dim})); }

at::Tensor activation(const std::string& name, const at::Tensor& x) {
  if (name == "silu" || name == "swish") return at::silu(x);
  if (name == "gelu") return at::gelu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return at::gelu(x, "tanh");
  if (name == "relu") return at::relu(x);
  fail("unsupported activation \"" + name + "\"");
}

at::Tensor rope_inv_freq(const ModelConfig& cfg) {
  const int64_t dim = cfg.head_dim;
  // Same float32 arithmetic as transformers: base ** (arange(0, dim, 2) / dim).
  at::Tensor exponent = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv = 1.0 / at::pow(cfg.rope_theta, exponent);
  const RopeScaling& rs = cfg.rope_scaling;
  if (rs.type == "linear") {
    inv = inv / rs.factor;
  } else if (rs.type == "llama3") {
    const double old_len = static_cast<double>(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    at::Tensor wavelen = 2 * M_PI / inv;
    // Long wavelengths (low frequencies) are divided by factor, short ones kept, the band in
    // between interpolated smoothly.
    at::Tensor scaled = at::where(wavelen > low_wavelen, inv / rs.factor, inv);
    at::Tensor smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
    at::Tensor smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled;
    at::Tensor medium = at::logical_not(wavelen < high_wavelen).logical_and(at::logical_not(wavelen > low_wavelen));
    inv = at::where(medium, smoothed, scaled);
  }
  return inv;
}

namespace {

void set_rotary_tables(ForwardState& st, const at::Tensor& pos, const at::Tensor& inv_freq, double factor,
                       at::ScalarType dtype) {
  at::Tensor freqs = pos.to(at::kFloat).unsqueeze(-1) * inv_freq.to(pos.device()).view({1, 1, -1});  // [B, T, D/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1);
  st.cos = (emb.cos() * factor).to(dtype).unsqueeze(1);
  st.sin = (emb.sin() * factor).to(dtype).unsqueeze(1);
}

}  // namespace

ForwardState make_packed_forward_state(const at::Tensor& positions, const at::Tensor& allowed, const at::Tensor& inv_freq,
                                       double rope_attention_factor, int64_t window, at::ScalarType dtype) {
  ForwardState st;
  st.batch = positions.size(0);
  st.seq = positions.size(1);
  const int64_t B = st.batch, T = st.seq;
  if (allowed.dim() != 3 || allowed.size(0) != B || allowed.size(1) != T || allowed.size(2) != T)
    fail("packed attention mask must be [batch, seq, seq]");
  if (inv_freq.defined()) set_rotary_tables(st, positions, inv_freq, rope_attention_factor, dtype);
  st.mask = allowed.to(at::kBool).view({B, 1, T, T});
  if (window > 0 && positions.max().item<int64_t>() >= window) {
    at::Tensor distance = positions.unsqueeze(2) - positions.unsqueeze(1);  // query - key position
    st.window_mask = st.mask.logical_and(distance.lt(window).view({B, 1, T, T}));
  }
  st.causal = false;
  return st;
}

ForwardState make_forward_state(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache,
                                const at::Tensor& inv_freq, double rope_attention_factor, int64_t window,
                                at::ScalarType dtype, at::Tensor* positions_out) {
  ForwardState st;
  st.batch = input_ids.size(0);
  st.seq = input_ids.size(1);
  st.cache = cache;
  st.past = cache ? cache->length() : 0;
  const int64_t B = st.batch, T = st.seq, S = st.past + T;
  auto dev = input_ids.device();

  at::Tensor new_mask = attention_mask.defined() ? attention_mask.to(dev, at::kLong)
                                                 : at::ones({B, T}, at::TensorOptions().dtype(at::kLong).device(dev));
  if (attention_mask.defined() && (attention_mask.size(0) != B || attention_mask.size(1) != T))
    fail("attention_mask must have the shape of input_ids");
  at::Tensor full = cache ? cache->extend_mask(new_mask) : new_mask;  // [B, S]
  const bool padded = !full.all().item<bool>();

  // Positions count real tokens; padding positions get 1 (as transformers' generate()).
  at::Tensor pos = (full.cumsum(1) - 1).narrow(1, st.past, T);
  pos = pos.masked_fill(new_mask.eq(0), 1);
  if (positions_out) *positions_out = pos;

  if (inv_freq.defined()) set_rotary_tables(st, pos, inv_freq, rope_attention_factor, dtype);

  if (padded) st.valid = new_mask.reshape({-1}).to(at::kBool);

  const bool need_window = window > 0 && S > window;
  if (padded || need_window || (st.past > 0 && T > 1)) {
    auto lopt = at::TensorOptions().dtype(at::kLong).device(dev);
    at::Tensor qi = at::arange(st.past, S, lopt).view({T, 1});
    at::Tensor kj = at::arange(0, S, lopt).view({1, S});
    at::Tensor causal = kj.le(qi);                                  // [T, S]
    at::Tensor key_ok = full.to(at::kBool).view({B, 1, 1, S});
    at::Tensor q_pad = new_mask.eq(0).view({B, 1, T, 1});
    at::Tensor self = kj.eq(qi).view({1, 1, T, S});
    // A padding query attends to itself only, so its (unused) output stays finite.
    auto build = [&](const at::Tensor& allowed) {
      return allowed.view({1, 1, T, S}).logical_and(key_ok).logical_or(self.logical_and(q_pad));
    };
    st.mask = build(causal);
    if (need_window) st.window_mask = build(causal.logical_and((qi - kj).lt(window)));
    st.causal = false;
  } else {
    st.causal = T > 1;
  }
  return st;
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const bool needs_grad = at::GradMode::is_enabled() && x.requires_grad();
  const bool fused = !needs_grad && x.device().is_cpu() && x.dim() == 4 && cos.scalar_type() == x.scalar_type() &&
                     sin.scalar_type() == x.scalar_type() && cos.is_contiguous() && sin.is_contiguous() &&
                     (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) &&
                     cos.size(0) == x.size(0) && cos.size(2) == x.size(2);
  if (!fused) {
    at::Tensor rot = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
    return x * cos + rot * sin;
  }
  // Inference: one loop instead of seven tensor ops, rounding like them: each product to the
  // dtype, then the sum.
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), D = x.size(3);
  at::Tensor out = at::empty({B, H, T, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "apply_rope", [&] {
    using S = scalar_t;
    const S* xp = x.data_ptr<S>();
    const S* cp = cos.data_ptr<S>();
    const S* sp = sin.data_ptr<S>();
    S* op = out.data_ptr<S>();
    const auto st = x.strides();
    at::parallel_for(0, B * H, std::max<int64_t>(1, 16384 / (T * D)), [&](int64_t bh0, int64_t bh1) {
      for (int64_t bh = bh0; bh < bh1; ++bh)
        for (int64_t t = 0; t < T; ++t) {
          const int64_t b = bh / H, h = bh % H;
          const S* xr = xp + b * st[0] + h * st[1] + t * st[2];
          const S* c = cp + (b * T + t) * D;
          const S* s = sp + (b * T + t) * D;
          S* o = op + ((b * H + h) * T + t) * D;
          for (int64_t d = 0; d < D; ++d) {
            const float xd = static_cast<float>(xr[d * st[3]]);
            const float rd = d < half ? -static_cast<float>(xr[(d + half) * st[3]]) : static_cast<float>(xr[(d - half) * st[3]]);
            const S a = static_cast<S>(xd * static_cast<float>(c[d]));
            const S r = static_cast<S>(rd * static_cast<float>(s[d]));
            o[d] = static_cast<S>(static_cast<float>(a) + static_cast<float>(r));
          }
        }
    });
  });
  return out;
}

at::Tensor attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const ForwardState& st,
                  bool use_window) {
  const at::Tensor& mask = use_window && st.window_mask.defined() ? st.window_mask : st.mask;
  const bool needs_grad = at::GradMode::is_enabled() && (q.requires_grad() || k.requires_grad() || v.requires_grad());
  if (q.size(2) == 1 && !mask.defined() && !needs_grad && q.device().is_cpu() &&
      (q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16) && k.scalar_type() == q.scalar_type() &&
      v.scalar_type() == q.scalar_type())
    return single_query_attention(q, k, v);
  at::Tensor kk = k, vv = v;
  const int64_t h = q.size(1), hkv = k.size(1);
  if (h != hkv) {
    const int64_t rep = h / hkv;
    auto expand = [&](const at::Tensor& t) {
      return t.unsqueeze(2).expand({t.size(0), hkv, rep, t.size(2), t.size(3)}).reshape({t.size(0), h, t.size(2), t.size(3)});
    };
    kk = expand(k);
    vv = expand(v);
  }
  return sdpa(q, kk, vv, mask, mask.defined() ? false : st.causal);
}

Attention::Attention(const ModelConfig& cfg, int64_t layer_)
    : layer(layer_),
      heads(cfg.num_heads),
      kv_heads(cfg.num_kv_heads),
      head_dim(cfg.head_dim),
      window(cfg.layer_sliding_window(layer_)),
      clip_qkv(cfg.clip_qkv) {
  const int64_t h = cfg.hidden_size, q = heads * head_dim, kv = kv_heads * head_dim;
  q_proj = register_module("q_proj", std::make_shared<Linear>(h, q, cfg.attention_bias));
  k_proj = register_module("k_proj", std::make_shared<Linear>(h, kv, cfg.attention_bias));
  v_proj = register_module("v_proj", std::make_shared<Linear>(h, kv, cfg.attention_bias));
  o_proj = register_module("o_proj", std::make_shared<Linear>(q, h, cfg.attention_out_bias));
  if (cfg.qk_norm) {
    q_norm = register_module("q_norm", std::make_shared<RMSNorm>(q, cfg.norm_eps));
    k_norm = register_module("k_norm", std::make_shared<RMSNorm>(kv, cfg.norm_eps));
  }
}

at::Tensor Attention::forward(const at::Tensor& x, const ForwardState& st) {
  const int64_t B = st.batch, T = st.seq;
  at::Tensor q = q_proj->forward(x), k = k_proj->forward(x), v = v_proj->forward(x);
  if (q_norm) {  // OLMoE: RMSNorm over the whole projection, before splitting into heads
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  if (clip_qkv > 0) {
    q = q.clamp(-clip_qkv, clip_qkv);
    k = k.clamp(-clip_qkv, clip_qkv);
    v = v.clamp(-clip_qkv, clip_qkv);
  }
  q = q.view({B, T, heads, head_dim}).transpose(1, 2);
  k = k.view({B, T, kv_heads, head_dim}).transpose(1, 2);
  v = v.view({B, T, kv_heads, head_dim}).transpose(1, 2);
  q = apply_rope(q, st.cos, st.sin);
  k = apply_rope(k, st.cos, st.sin);
  if (st.cache) std::tie(k, v) = st.cache->append(layer, k, v);
  at::Tensor o = attend(q, k, v, st, window > 0);
  return o_proj->forward(o.transpose(1, 2).reshape({B, T, heads * head_dim}));
}

GatedMLP::GatedMLP(int64_t hidden, int64_t inner, const std::string& act_, bool bias, const std::string& gate_name,
                   const std::string& up_name, const std::string& down_name)
    : act(act_) {
  gate = register_module(gate_name, std::make_shared<Linear>(hidden, inner, bias));
  up = register_module(up_name, std::make_shared<Linear>(hidden, inner, bias));
  down = register_module(down_name, std::make_shared<Linear>(inner, hidden, bias));
}

namespace {

// `activation(name, x)` as the fused kernel's activation, if it has it.
std::optional<moe::Act> kernel_act(const std::string& name) {
  if (name == "silu" || name == "swish") return moe::Act::SiLU;
  if (name == "gelu") return moe::Act::GELU;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") return moe::Act::GELUTanh;
  if (name == "relu") return moe::Act::ReLU;
  return std::nullopt;
}

bool wants_grad(const at::Tensor& t) { return t.defined() && t.requires_grad() && at::GradMode::is_enabled(); }

// A tensor the fused kernel can read in place: CPU, contiguous, `dt`, no gradient wanted.
bool kernel_readable(const at::Tensor& t, at::ScalarType dt) {
  return t.device().is_cpu() && t.is_contiguous() && t.scalar_type() == dt && !wants_grad(t);
}

}  // namespace

// Inference on a few rows (decode): gate, up, activation and down in one kernel call
// (moe::fused_small_batch, the MoE layer's expert path) instead of five ops with their
// allocations and three parallel regions. Undefined where the op chain must run.
at::Tensor GatedMLP::forward_small_batch(const at::Tensor& x, Hooks* hooks, int layer) {
  const at::Tensor &wg = gate->weight, &wu = up->weight, &wd = down->weight;
  const at::ScalarType dt = wg.scalar_type();
  const int64_t d = wg.size(1), T = x.numel() / std::max<int64_t>(d, 1);
  const std::optional<moe::Act> kact = kernel_act(act);
  if (!kact || (dt != at::kFloat && dt != at::kBFloat16) || !kernel_readable(x, dt) || x.numel() == 0 ||
      x.size(-1) != d || T > moe::kSmallBatchRows || wd.size(0) != d)
    return {};
  for (const auto& l : {gate, up, down})
    if (l->lora || !kernel_readable(l->weight, dt) || wants_grad(l->bias)) return {};
  if (hooks && (hooks->wants(HookPoint::ffn_preact, layer) || hooks->wants(HookPoint::ffn_intermediate, layer)))
    return {};
  moe::DecodeJob job;
  job.w_in = wg.data_ptr();
  job.w_up = wu.data_ptr();
  job.w_out = wd.data_ptr();
  job.f = wg.size(0);
  job.act = *kact;
  at::Tensor b_in, b_out;  // fp32 copies alive for the call
  if (gate->bias.defined() || up->bias.defined()) {
    auto fp32 = [&](const std::shared_ptr<Linear>& l) {
      return l->bias.defined() ? l->bias.to(at::kFloat) : at::zeros({job.f}, at::kFloat);
    };
    b_in = at::cat({fp32(gate), fp32(up)});
    job.b_in = b_in.data_ptr<float>();
  }
  if (down->bias.defined()) {
    b_out = down->bias.to(at::kFloat).contiguous();
    job.b_out = b_out.data_ptr<float>();
  }
  for (int64_t t = 0; t < T; ++t) {
    job.tokens.push_back(t);
    job.gates.push_back(1.f);
  }
  at::Tensor y = at::zeros({T, d}, at::kFloat);
  moe::fused_small_batch(x.data_ptr(), dt == at::kBFloat16, T, d, dt == at::kBFloat16, {job}, y.data_ptr<float>());
  return y.to(dt).view(x.sizes());
}

at::Tensor GatedMLP::forward(const at::Tensor& x, Hooks* hooks, int layer, const at::Tensor& valid, int expert,
                             const at::Tensor& tokens) {
  if (at::Tensor y = forward_small_batch(x, hooks, layer); y.defined()) return y;
  at::Tensor g = gate->forward(x);
  if (hooks && hooks->wants(HookPoint::ffn_preact, layer)) g = hooks->fire(HookPoint::ffn_preact, layer, g, valid, expert, tokens);
  at::Tensor h = activation(act, g) * up->forward(x);
  if (hooks && hooks->wants(HookPoint::ffn_intermediate, layer))
    h = hooks->fire(HookPoint::ffn_intermediate, layer, h, valid, expert, tokens);
  return down->forward(h);
}

void init_parameters_random(torch::nn::Module& m, uint64_t seed, double std) {
  at::NoGradGuard guard;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& p : m.named_parameters()) {
    const std::string& name = p.key();
    at::Tensor& t = p.value();
    at::Tensor r = at::randn(t.sizes(), gen, at::TensorOptions().dtype(at::kFloat));
    const bool is_norm_weight = (name.find("norm") != std::string::npos || name.find("ln_") != std::string::npos) &&
                                name.size() >= 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
    if (is_norm_weight) r = 1.0 + 0.1 * r;
    else r = r * std;
    t.copy_(r);
  }
}

}  // namespace mf
