// The Llama graph: Llama-2/3/3.2 (rope_scaling llama3, tied embeddings), SmolLM (a Llama
// checkpoint), Mistral (sliding window), Qwen2/2.5 (q/k/v biases, optional sliding window),
// and — with their FFN swapped for a routed MoE block (moe_ffn.h) — Mixtral, Qwen2-MoE, OLMoE
// and moeforge splits (see mixtral.cpp, qwen2_moe.cpp, olmoe.cpp, moeforge_moe.cpp).
// Differences are config switches (ModelConfig).
//
// Per layer: h += attn(input_layernorm(h)); h += ffn(post_attention_layernorm(h)).
// Also the "llama" entry of the family table (Mistral and Qwen2 have their own files).
#include "model/config_parse.h"
#include "model/family.h"
#include "model/layers.h"
#include "model/model.h"
#include "util/error.h"

namespace mf {
namespace {

struct DecoderLayer : torch::nn::Module {
  DecoderLayer(const ModelConfig& cfg, int64_t l) : layer(static_cast<int>(l)), ffn_name(cfg.ffn_module_name()) {
    self_attn = register_module("self_attn", std::make_shared<Attention>(cfg, l));
    ffn = register_module(ffn_name, ffn_block_registry().at(cfg.layer_is_moe(l) ? "moe" : "gated_mlp").make(cfg, l));
    input_layernorm = register_module("input_layernorm", std::make_shared<RMSNorm>(cfg.hidden_size, cfg.norm_eps));
    post_attention_layernorm =
        register_module("post_attention_layernorm", std::make_shared<RMSNorm>(cfg.hidden_size, cfg.norm_eps));
  }

  at::Tensor forward(at::Tensor h, const ForwardState& st) {
    const int64_t B = h.size(0), T = h.size(1), H = h.size(2);
    Hooks* hooks = st.hooks;
    h = h + self_attn->forward(input_layernorm->forward(h), st);
    at::Tensor x = post_attention_layernorm->forward(h).reshape({B * T, H});
    if (hooks && hooks->wants(HookPoint::ffn_input, layer)) x = hooks->fire(HookPoint::ffn_input, layer, x, st.valid);
    h = h + ffn->forward(x, FfnContext{hooks, layer, st.valid}).view({B, T, H});
    if (hooks && hooks->wants(HookPoint::block_output, layer))
      h = hooks->fire(HookPoint::block_output, layer, h.reshape({B * T, H}), st.valid).view({B, T, H});
    return h;
  }

  void set_ffn(std::shared_ptr<FfnBlock> block) { ffn = replace_module(ffn_name, std::move(block)); }

  int layer;
  std::string ffn_name;
  std::shared_ptr<Attention> self_attn;
  std::shared_ptr<FfnBlock> ffn;
  std::shared_ptr<RMSNorm> input_layernorm, post_attention_layernorm;
};

// "model": embed_tokens, layers, norm.
struct LlamaBody : torch::nn::Module {
  explicit LlamaBody(const ModelConfig& cfg) {
    embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(cfg.vocab_size, cfg.hidden_size));
    auto list = register_module("layers", torch::nn::ModuleList());
    for (int64_t l = 0; l < cfg.num_layers; ++l) {
      layers.push_back(std::make_shared<DecoderLayer>(cfg, l));
      list->push_back(layers.back());
    }
    norm = register_module("norm", std::make_shared<RMSNorm>(cfg.hidden_size, cfg.norm_eps));
  }
  std::shared_ptr<Embedding> embed_tokens;
  std::vector<std::shared_ptr<DecoderLayer>> layers;
  std::shared_ptr<RMSNorm> norm;
};

class LlamaModel : public Model {
 public:
  explicit LlamaModel(const ModelConfig& cfg) : Model(cfg) {
    model = register_module("model", std::make_shared<LlamaBody>(cfg));
    if (!cfg.tie_word_embeddings)
      lm_head_ = register_module("lm_head", std::make_shared<Linear>(cfg.hidden_size, cfg.vocab_size, false));
    inv_freq_ = rope_inv_freq(cfg);
    for (int64_t l = 0; l < cfg.num_layers; ++l) max_window_ = std::max(max_window_, cfg.layer_sliding_window(l));
  }

  at::Tensor forward_hidden(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache) override {
    if (input_ids.dim() != 2) fail("input_ids must be [batch, seq]");
    if (cache && cache->num_layers() != cfg_.num_layers) fail("KV cache was made for another model");
    at::Tensor ids = input_ids.to(device(), at::kLong);
    at::Tensor h = model->embed_tokens->forward(ids);
    ForwardState st = make_forward_state(ids, attention_mask, cache, inv_freq_, 1.0, max_window_, h.scalar_type());
    h = run_layers(h, st);
    if (cache) cache->commit(st.seq);
    return h;
  }

  at::Tensor forward_hidden_packed(const at::Tensor& input_ids, const at::Tensor& positions,
                                   const at::Tensor& allowed) override {
    const auto dev = device();
    at::Tensor h = model->embed_tokens->forward(input_ids.to(dev, at::kLong));
    ForwardState st = make_packed_forward_state(positions.to(dev, at::kLong), allowed.to(dev), inv_freq_, 1.0,
                                                max_window_, h.scalar_type());
    return run_layers(h, st);
  }

  std::shared_ptr<FfnBlock> ffn(int64_t layer) const override { return model->layers.at(layer)->ffn; }
  void set_ffn(int64_t layer, std::shared_ptr<FfnBlock> block) override {
    model->layers.at(layer)->set_ffn(std::move(block));
  }

  at::Tensor lm_head(const at::Tensor& hidden) override {
    const at::Tensor& w = lm_head_ ? lm_head_->weight : model->embed_tokens->weight;
    return apply_linear(hidden, w).to(at::kFloat);
  }

 private:
  at::Tensor run_layers(at::Tensor h, ForwardState& st) {
    st.hooks = active_hooks();
    for (auto& layer : model->layers) h = layer->forward(h, st);
    return model->norm->forward(h);
  }

  std::shared_ptr<LlamaBody> model;
  std::shared_ptr<Linear> lm_head_;
  at::Tensor inv_freq_;
  int64_t max_window_ = 0;
};

}  // namespace

std::shared_ptr<Model> build_llama_family(const ModelConfig& cfg) { return std::make_shared<LlamaModel>(cfg); }

namespace {

// LlamaForCausalLM: attention_bias sets the q/k/v and o_proj biases alike.
void parse_llama(const json& j, const std::string& o, ModelConfig& c) {
  using namespace config_parse;
  parse_llama_common(j, o, c, LlamaDefaults{});
  c.attention_bias = c.attention_out_bias = get_bool(j, "attention_bias", false, o);
  c.mlp_bias = get_bool(j, "mlp_bias", false, o);
}

}  // namespace

FamilyEntry llama_family() {
  return {"Llama-2/3/3.2, SmolLM (LlamaForCausalLM)", Family::llama, parse_llama, build_llama_family, nullptr};
}

}  // namespace mf
