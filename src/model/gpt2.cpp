// GPT-2 (GPT2LMHeadModel): learned absolute positions, pre-LayerNorm blocks, fused q/k/v
// projection, Conv1D weights stored [in, out], gelu_new MLP, lm_head tied to wte.
// Tensor names: transformer.{wte,wpe,h.N.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj},ln_f}.
// Also the "gpt2" entry of the family table.
#include "model/config_parse.h"
#include "model/family.h"
#include "model/layers.h"
#include "model/model.h"
#include "util/error.h"

namespace mf {
namespace {

struct Gpt2Attention : torch::nn::Module {
  Gpt2Attention(int64_t h, int64_t heads_) : heads(heads_) {
    c_attn = register_module("c_attn", std::make_shared<Conv1D>(h, 3 * h));
    c_proj = register_module("c_proj", std::make_shared<Conv1D>(h, h));
  }
  at::Tensor forward(const at::Tensor& x, const ForwardState& st, int64_t layer) {
    const int64_t B = st.batch, T = st.seq, H = x.size(-1), D = H / heads;
    auto qkv = c_attn->forward(x).split(H, -1);
    auto split_heads = [&](const at::Tensor& t) { return t.view({B, T, heads, D}).transpose(1, 2); };
    at::Tensor q = split_heads(qkv[0]), k = split_heads(qkv[1]), v = split_heads(qkv[2]);
    if (st.cache) std::tie(k, v) = st.cache->append(layer, k, v);
    at::Tensor o = attend(q, k, v, st, false);
    return c_proj->forward(o.transpose(1, 2).reshape({B, T, H}));
  }
  std::shared_ptr<Conv1D> c_attn, c_proj;
  int64_t heads;
};

// GPT-2's FFN slot: c_proj(act(c_fc(x))).
struct Gpt2Mlp : FfnBlock {
  Gpt2Mlp(int64_t h, int64_t inner, std::string act_) : act(std::move(act_)) {
    c_fc = register_module("c_fc", std::make_shared<Conv1D>(h, inner));
    c_proj = register_module("c_proj", std::make_shared<Conv1D>(inner, h));
  }
  at::Tensor forward(const at::Tensor& x, const FfnContext& ctx) override {
    Hooks* hooks = ctx.hooks;
    at::Tensor z = c_fc->forward(x);
    if (hooks && hooks->wants(HookPoint::ffn_preact, ctx.layer)) z = hooks->fire(HookPoint::ffn_preact, ctx.layer, z, ctx.valid);
    at::Tensor a = activation(act, z);
    if (hooks && hooks->wants(HookPoint::ffn_intermediate, ctx.layer))
      a = hooks->fire(HookPoint::ffn_intermediate, ctx.layer, a, ctx.valid);
    return c_proj->forward(a);
  }
  std::shared_ptr<Conv1D> c_fc, c_proj;
  std::string act;
};

struct Gpt2Block : torch::nn::Module {
  Gpt2Block(const ModelConfig& cfg, int64_t l) : layer(static_cast<int>(l)) {
    ln_1 = register_module("ln_1", std::make_shared<LayerNorm>(cfg.hidden_size, cfg.norm_eps));
    attn = register_module("attn", std::make_shared<Gpt2Attention>(cfg.hidden_size, cfg.num_heads));
    ln_2 = register_module("ln_2", std::make_shared<LayerNorm>(cfg.hidden_size, cfg.norm_eps));
    mlp = register_module("mlp", std::make_shared<Gpt2Mlp>(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act));
  }
  at::Tensor forward(at::Tensor h, const ForwardState& st) {
    const int64_t B = h.size(0), T = h.size(1), H = h.size(2);
    Hooks* hooks = st.hooks;
    h = h + attn->forward(ln_1->forward(h), st, layer);
    at::Tensor x = ln_2->forward(h).reshape({B * T, H});
    if (hooks && hooks->wants(HookPoint::ffn_input, layer)) x = hooks->fire(HookPoint::ffn_input, layer, x, st.valid);
    h = h + mlp->forward(x, FfnContext{hooks, layer, st.valid}).view({B, T, H});
    if (hooks && hooks->wants(HookPoint::block_output, layer))
      h = hooks->fire(HookPoint::block_output, layer, h.reshape({B * T, H}), st.valid).view({B, T, H});
    return h;
  }
  int layer;
  std::shared_ptr<LayerNorm> ln_1, ln_2;
  std::shared_ptr<Gpt2Attention> attn;
  std::shared_ptr<FfnBlock> mlp;
};

struct Gpt2Body : torch::nn::Module {
  explicit Gpt2Body(const ModelConfig& cfg) {
    wte = register_module("wte", std::make_shared<Embedding>(cfg.vocab_size, cfg.hidden_size));
    wpe = register_module("wpe", std::make_shared<Embedding>(cfg.max_position_embeddings, cfg.hidden_size));
    auto list = register_module("h", torch::nn::ModuleList());
    for (int64_t l = 0; l < cfg.num_layers; ++l) {
      blocks.push_back(std::make_shared<Gpt2Block>(cfg, l));
      list->push_back(blocks.back());
    }
    ln_f = register_module("ln_f", std::make_shared<LayerNorm>(cfg.hidden_size, cfg.norm_eps));
  }
  std::shared_ptr<Embedding> wte, wpe;
  std::vector<std::shared_ptr<Gpt2Block>> blocks;
  std::shared_ptr<LayerNorm> ln_f;
};

class Gpt2Model : public Model {
 public:
  explicit Gpt2Model(const ModelConfig& cfg) : Model(cfg) {
    transformer = register_module("transformer", std::make_shared<Gpt2Body>(cfg));
    if (!cfg.tie_word_embeddings)
      lm_head_ = register_module("lm_head", std::make_shared<Linear>(cfg.hidden_size, cfg.vocab_size, false));
  }

  at::Tensor forward_hidden(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache) override {
    if (input_ids.dim() != 2) fail("input_ids must be [batch, seq]");
    if (cache && cache->num_layers() != cfg_.num_layers) fail("KV cache was made for another model");
    at::Tensor ids = input_ids.to(device(), at::kLong);
    at::Tensor pos;
    ForwardState st = make_forward_state(ids, attention_mask, cache, {}, 1.0, 0, dtype(), &pos);
    at::Tensor h = run_blocks(ids, pos, st);
    if (cache) cache->commit(st.seq);
    return h;
  }

  at::Tensor forward_hidden_packed(const at::Tensor& input_ids, const at::Tensor& positions,
                                   const at::Tensor& allowed) override {
    const auto dev = device();
    at::Tensor pos = positions.to(dev, at::kLong);
    ForwardState st = make_packed_forward_state(pos, allowed.to(dev), {}, 1.0, 0, dtype());
    return run_blocks(input_ids.to(dev, at::kLong), pos, st);
  }

  std::shared_ptr<FfnBlock> ffn(int64_t layer) const override { return transformer->blocks.at(layer)->mlp; }
  void set_ffn(int64_t layer, std::shared_ptr<FfnBlock> block) override {
    auto& b = *transformer->blocks.at(layer);
    b.mlp = b.replace_module("mlp", std::move(block));
  }

  at::Tensor lm_head(const at::Tensor& hidden) override {
    const at::Tensor& w = lm_head_ ? lm_head_->weight : transformer->wte->weight;
    return apply_linear(hidden, w).to(at::kFloat);
  }

 private:
  // Learned positions: `pos` must stay below n_positions.
  at::Tensor run_blocks(const at::Tensor& ids, const at::Tensor& pos, ForwardState& st) {
    st.hooks = active_hooks();
    if (pos.numel() > 0 && pos.max().item<int64_t>() >= cfg_.max_position_embeddings)
      fail("sequence longer than GPT-2's n_positions (" + std::to_string(cfg_.max_position_embeddings) + ")");
    at::Tensor h = transformer->wte->forward(ids) + transformer->wpe->forward(pos);
    for (auto& b : transformer->blocks) h = b->forward(h, st);
    return transformer->ln_f->forward(h);
  }

  std::shared_ptr<Gpt2Body> transformer;
  std::shared_ptr<Linear> lm_head_;
};

std::shared_ptr<Model> build_gpt2(const ModelConfig& cfg) { return std::make_shared<Gpt2Model>(cfg); }

// GPT2Config keys (n_embd, n_layer, n_head, n_inner, n_positions, ...); features the graph does
// not implement are rejected rather than ignored.
void parse_gpt2(const json& j, const std::string& o, ModelConfig& c) {
  using namespace config_parse;
  c.vocab_size = require_int(j, "vocab_size", o);
  c.hidden_size = require_int(j, "n_embd", o);
  c.num_layers = require_int(j, "n_layer", o);
  c.num_heads = require_int(j, "n_head", o);
  check_positive(c.vocab_size, "vocab_size", o);
  check_positive(c.hidden_size, "n_embd", o);
  check_positive(c.num_layers, "n_layer", o);
  check_positive(c.num_heads, "n_head", o);
  if (c.hidden_size % c.num_heads != 0)
    fail_file(o, "key 'n_embd' (" + std::to_string(c.hidden_size) + ") is not divisible by n_head (" +
                     std::to_string(c.num_heads) + ")");
  c.num_kv_heads = c.num_heads;
  c.head_dim = c.hidden_size / c.num_heads;
  c.intermediate_size = get_int(j, "n_inner", 4 * c.hidden_size, o);
  check_positive(c.intermediate_size, "n_inner", o);
  c.max_position_embeddings = get_int(j, "n_positions", 1024, o);
  check_positive(c.max_position_embeddings, "n_positions", o);
  c.norm_eps = get_num(j, "layer_norm_epsilon", 1e-5, o);
  c.hidden_act = json_get_or<std::string>(j, "activation_function", "gelu_new", o);
  check_activation(c.hidden_act, "activation_function", o);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", true, o);
  c.attention_bias = c.attention_out_bias = c.mlp_bias = true;
  c.bos_token_ids = get_ids(j, "bos_token_id", {50256}, o);
  c.eos_token_ids = get_ids(j, "eos_token_id", {50256}, o);
  auto pad = get_ids(j, "pad_token_id", {}, o);
  c.pad_token_id = pad.empty() ? -1 : pad[0];
  if (!get_bool(j, "scale_attn_weights", true, o)) fail_file(o, "key 'scale_attn_weights': false is not supported");
  if (get_bool(j, "scale_attn_by_inverse_layer_idx", false, o))
    fail_file(o, "key 'scale_attn_by_inverse_layer_idx': true is not supported");
}

}  // namespace

FamilyEntry gpt2_family() { return {"GPT-2 (GPT2LMHeadModel)", Family::gpt2, parse_gpt2, build_gpt2, nullptr}; }

}  // namespace mf
