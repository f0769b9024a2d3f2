#include "model/moe_ffn.h"

#include "moe/routers/avgk_router.h"
#include "util/error.h"

namespace mf {

moe::Act moe_activation(const std::string& a) {
  if (a == "gelu_fast") return moe::Act::GELUTanh;
  return moe::parse_act(a);
}

MoeFFN::MoeFFN(MoeFfnSpec spec) : spec_(std::move(spec)), act_(moe_activation(spec_.act)) {
  const int64_t H = spec_.hidden, E = static_cast<int64_t>(spec_.widths.size());
  if (E < 1) fail("MoE block needs at least one expert");
  if (spec_.router) {
    router = spec_.router;
    register_module(spec_.router_name, router);
  }
  auto list = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < E; ++e) {
    auto m = std::make_shared<GatedMLP>(H, spec_.widths[e], spec_.act, false, spec_.gate_name, spec_.up_name,
                                        spec_.down_name);
    list->push_back(m);
    experts.push_back(m);
  }
  if (spec_.shared_inner > 0) {
    shared_expert = register_module("shared_expert", std::make_shared<GatedMLP>(H, spec_.shared_inner, spec_.act, false));
    shared_expert_gate = register_module("shared_expert_gate", std::make_shared<Linear>(H, 1, false));
  }
  if (spec_.avgk) {
    // The avg-k gate is a buffer computed from the experts; a bank of width-1 experts gives
    // the router its shape until the first forward computes the real gate.
    std::vector<at::Tensor> wi, wo;
    for (int64_t e = 0; e < E; ++e) {
      wi.push_back(at::zeros({2, H}));
      wo.push_back(at::zeros({H, 1}));
    }
    moe::ExpertBank shape_only(wi, wo, act_, true);
    router = std::make_shared<moe::AvgKRouterImpl>(*shape_only, spec_.avgk_selection);
    register_module(spec_.router_name, router);
  }
  if (!router) fail("MoE block without a router");
}

std::vector<at::Tensor> MoeFFN::expert_tensors() const {
  std::vector<at::Tensor> v;
  for (const auto& m : experts) {
    v.push_back(m->gate->weight);
    v.push_back(m->up->weight);
    v.push_back(m->down->weight);
  }
  if (shared_expert) {
    v.push_back(shared_expert->gate->weight);
    v.push_back(shared_expert->up->weight);
    v.push_back(shared_expert->down->weight);
    v.push_back(shared_expert_gate->weight);
  }
  return v;
}

bool MoeFFN::fingerprint_matches() const {
  const auto ts = expert_tensors();
  if (ts.size() != fingerprint_.size()) return false;
  for (size_t i = 0; i < ts.size(); ++i)
    if (ts[i].data_ptr() != fingerprint_[i].first || ts[i]._version() != fingerprint_[i].second) return false;
  return true;
}

namespace {

// A bank from GatedMLP experts. differentiable: fused tensors by autograd ops (gradients reach
// the parameters). Otherwise the fused tensors become the parameters' storage: gate / up /
// down are re-pointed at views of them, so the weights exist once.
moe::ExpertBank bank_from(const std::vector<std::shared_ptr<GatedMLP>>& ms, moe::Act act, bool differentiable) {
  std::vector<at::Tensor> w_in, w_out;
  bool same = true;
  for (const auto& m : ms) {
    w_in.push_back(at::cat({m->gate->weight, m->up->weight}, 0));
    const at::Tensor& d = m->down->weight;
    w_out.push_back(differentiable ? d.view(d.sizes()) : d.detach());
    same = same && m->gate->weight.size(0) == ms[0]->gate->weight.size(0);
  }
  if (differentiable) return moe::ExpertBank(w_in, w_out, act, true);
  if (same && ms.size() > 1) {
    at::Tensor wi = at::stack(w_in), wo = at::stack(w_out);
    moe::ExpertBank bank(wi, wo, act, true);
    for (size_t e = 0; e < ms.size(); ++e) {
      const int64_t f = ms[e]->gate->weight.size(0);
      const at::Tensor we = bank->w_in(static_cast<int64_t>(e));
      ms[e]->gate->weight.set_data(we.narrow(0, 0, f));
      ms[e]->up->weight.set_data(we.narrow(0, f, f));
      ms[e]->down->weight.set_data(bank->w_out(static_cast<int64_t>(e)));
    }
    return bank;
  }
  moe::ExpertBank bank(w_in, w_out, act, true);
  for (size_t e = 0; e < ms.size(); ++e) {
    const int64_t f = ms[e]->gate->weight.size(0);
    const at::Tensor we = bank->w_in(static_cast<int64_t>(e));
    ms[e]->gate->weight.set_data(we.narrow(0, 0, f));
    ms[e]->up->weight.set_data(we.narrow(0, f, f));
  }
  return bank;
}

}  // namespace

moe::MoELayer MoeFFN::build(bool differentiable) {
  moe::ExpertBank bank = bank_from(experts, act_, differentiable);
  moe::MoELayer layer(bank, router);
  if (shared_expert) {
    moe::ExpertBank sb = bank_from({shared_expert}, act_, differentiable);
    const at::Tensor& g = shared_expert_gate->weight;
    layer->set_shared_expert(sb, differentiable ? g.view(g.sizes()) : g.detach());
  }
  // The layer registered its tensors as parameters (requires_grad = true). Leaves among them
  // were made from frozen or detached weights: no gradient must be computed for them. The
  // router's parameters are the block's own and keep their flags.
  for (auto& p : layer->named_parameters()) {
    if (p.key().rfind("router.", 0) == 0) continue;
    if (p.value().is_leaf()) p.value().set_requires_grad(false);
  }
  if (spec_.avgk) static_cast<moe::AvgKRouterImpl&>(*router).refresh(*bank);
  return layer;
}

moe::MoELayer MoeFFN::inference_layer() {
  if (cached_ && fingerprint_matches()) return cached_;
  c10::InferenceMode normal_tensors(false);  // the parameters must never become inference tensors
  at::NoGradGuard ng;
  cached_ = build(false);
  fingerprint_.clear();
  for (const auto& t : expert_tensors()) fingerprint_.emplace_back(t.data_ptr(), t._version());
  return cached_;
}

void MoeFFN::after_optimizer_step() {
  // Expert weights may have changed in place: rebuild (and, for avg-k, recompute the gate).
  cached_ = moe::MoELayer(nullptr);
  fingerprint_.clear();
  if (spec_.avgk) inference_layer();
}

at::Tensor MoeFFN::forward(const at::Tensor& x, Hooks* hooks, int layer, const at::Tensor& valid) {
  layer_ = layer;
  bool trainable = false;
  if (at::GradMode::is_enabled())
    for (const auto& t : expert_tensors()) trainable = trainable || t.requires_grad();
  moe::MoELayer m = trainable ? build(true) : inference_layer();
  m->train(is_training());

  moe::MoECallbacks cb;
  bool observed = false;
  if (hooks && hooks->wants(HookPoint::router_logits, layer)) {
    cb.router_logits = [&](const at::Tensor& l) { return hooks->fire(HookPoint::router_logits, layer, l, valid); };
    observed = true;
  }
  if (hooks && hooks->wants(HookPoint::ffn_intermediate, layer)) {
    cb.expert_hidden = [&](int64_t e, const at::Tensor& h, const at::Tensor& tokens) {
      return hooks->fire(HookPoint::ffn_intermediate, layer, h, valid, e < 0 ? -2 : static_cast<int>(e), tokens);
    };
    observed = true;
  }
  if (hooks && hooks->wants(HookPoint::expert_output, layer)) {
    cb.expert_output = [&](int64_t e, const at::Tensor& y, const at::Tensor& tokens) {
      return hooks->fire(HookPoint::expert_output, layer, y, valid, e < 0 ? -2 : static_cast<int>(e), tokens);
    };
    observed = true;
  }
  moe::MoEOutput out = m->forward_full(x, observed ? &cb : nullptr);
  last_idx_ = out.route.idx.detach();
  last_valid_ = valid;
  return out.y;
}

MoeLayerStats MoeFFN::last_stats() const {
  MoeLayerStats s;
  s.layer = layer_;
  const int64_t E = num_experts(), H = spec_.hidden;
  s.tokens_per_expert.assign(static_cast<size_t>(E), 0);
  if (!last_idx_.defined()) return s;
  int64_t ref = spec_.reference_width;
  if (ref <= 0)
    for (int64_t w : spec_.widths) ref += w;
  const at::Tensor idx = last_idx_.to(at::kCPU).contiguous();
  const int64_t T = idx.size(0), K = idx.size(1);
  const int64_t* ip = idx.data_ptr<int64_t>();
  at::Tensor valid;
  if (last_valid_.defined()) valid = last_valid_.to(at::kCPU, at::kBool).contiguous();
  double width = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (valid.defined() && !valid.data_ptr<bool>()[t]) continue;
    ++s.tokens;
    for (int64_t j = 0; j < K; ++j) {
      const int64_t e = ip[t * K + j];
      if (e < 0) continue;
      ++s.tokens_per_expert[static_cast<size_t>(e)];
      width += static_cast<double>(spec_.widths[static_cast<size_t>(e)]);
    }
  }
  if (s.tokens > 0) {
    s.active_ffn_fraction = width / static_cast<double>(s.tokens) / static_cast<double>(ref);
    s.active_expert_params = 3.0 * static_cast<double>(H) * width / static_cast<double>(s.tokens);
  }
  return s;
}

}  // namespace mf
