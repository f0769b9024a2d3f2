#include "model/moe_ffn.h"

#include "model/config_parse.h"

#include "moe/losses.h"
#include "moe/lora_expert_bank.h"
#include "moe/routers/selection.h"
#include "util/error.h"
#include "util/huge_pages.h"
#include "util/str.h"

namespace mf {

moe::Act moe_activation(const std::string& a) {
  if (a == "gelu_fast") return moe::Act::GELUTanh;
  return moe::parse_act(a);
}

MoeAuxLossConfig::Kind parse_aux_loss_kind(const std::string& name) {
  using K = MoeAuxLossConfig::Kind;
  if (name == "hemoe") return K::Hemoe;
  if (name == "switch") return K::Switch;
  if (name == "load_balancing") return K::LoadBalancing;
  if (name == "shazeer") return K::Shazeer;
  if (name == "none") return K::None;
  fail("unknown auxiliary loss \"" + name + "\" (known: hemoe, switch, load_balancing, shazeer, none)");
}

MoeFfnSpec moe_ffn_spec(const ModelConfig& cfg, int64_t l) {
  MoeFfnSpec s;
  s.hidden = cfg.hidden_size;
  s.widths = cfg.layer_expert_widths(l);
  s.act = cfg.hidden_act;
  s.router.dim = cfg.hidden_size;
  s.router.num_experts = static_cast<int64_t>(s.widths.size());
  s.router.selection.k = cfg.num_experts_per_tok;
  s.router.selection.gate = cfg.norm_topk_prob ? moe::GateMode::Renorm : moe::GateMode::Prob;
  // The exact merged map of a wrapped stock family: its N-row router keeps its tensor name (`gate`)
  // and the family's softmax / top-k / gate; each selected expert stands for its merged expert.
  if (cfg.family != Family::moeforge && cfg.router.type == "merged") {
    s.router_type = "merged";
    s.router.config = merged_router_config(cfg, l);
  }
  // Training-time router jitter (Mixtral's router_jitter_noise; 0, the default, is off).
  if (cfg.router_jitter_noise > 0) s.router.noise = {moe::NoiseKind::Jitter, cfg.router_jitter_noise};
  // ST-MoE router z-loss under the HF (Switch) key; off unless a config sets it.
  if (cfg.raw.is_object()) {
    s.aux.z_coef = config_parse::get_num(cfg.raw, "router_z_loss_coef", 0.0, cfg.origin);
    if (s.aux.z_coef < 0) fail_file(cfg.origin, "key 'router_z_loss_coef' must be >= 0");
  }
  return s;
}

MoeFFN::MoeFFN(MoeFfnSpec spec) : spec_(std::move(spec)), act_(moe_activation(spec_.act)) {
  const int64_t H = spec_.hidden, E = static_cast<int64_t>(spec_.widths.size());
  if (E < 1) fail("MoE block needs at least one expert");
  const moe::RouterEntry& entry = moe::router_registry().at(spec_.router_type);
  spec_.router.dim = H;
  spec_.router.num_experts = E;
  router = entry.make(spec_.router);
  if (!router) fail("router \"" + spec_.router_type + "\" made no router");
  router_from_experts_ = entry.from_experts;
  register_module(spec_.router_name, router);
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

bool MoeFFN::has_lora() const {
  auto any = [](const GatedMLP& m) { return m.gate->lora || m.up->lora || m.down->lora; };
  for (const auto& m : experts)
    if (any(*m)) return true;
  return shared_expert && any(*shared_expert);
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
moe::DenseExpertBank bank_from(const std::vector<std::shared_ptr<GatedMLP>>& ms, moe::Act act, bool differentiable) {
  std::vector<at::Tensor> w_in, w_out;
  bool same = true;
  for (const auto& m : ms) {
    w_in.push_back(at::cat({m->gate->weight, m->up->weight}, 0));
    const at::Tensor& d = m->down->weight;
    w_out.push_back(differentiable ? d.view(d.sizes()) : d.detach());
    same = same && m->gate->weight.size(0) == ms[0]->gate->weight.size(0);
  }
  if (differentiable) return std::make_shared<moe::DenseExpertBankImpl>(w_in, w_out, act, true);
  const bool stacked = same && ms.size() > 1;
  auto bank = stacked ? std::make_shared<moe::DenseExpertBankImpl>(at::stack(w_in), at::stack(w_out), act, true)
                      : std::make_shared<moe::DenseExpertBankImpl>(w_in, w_out, act, true);
  for (size_t e = 0; e < ms.size(); ++e) {
    const int64_t f = ms[e]->gate->weight.size(0);
    const at::Tensor we = bank->w_in(static_cast<int64_t>(e));
    ms[e]->gate->weight.set_data(we.narrow(0, 0, f));
    ms[e]->up->weight.set_data(we.narrow(0, f, f));
    if (stacked) ms[e]->down->weight.set_data(bank->w_out(static_cast<int64_t>(e)));
  }
  return bank;
}

moe::LoraDelta lora_delta(const Linear& l) {
  if (!l.lora) return {};
  return {l.lora->lora_A, l.lora->lora_B, l.lora->scale};
}

// The bank with the experts' LoRA adapters over it, or the dense bank when they have none.
moe::ExpertBank with_lora(moe::DenseExpertBank dense, const std::vector<std::shared_ptr<GatedMLP>>& ms) {
  std::vector<moe::LoraExpertDeltas> deltas;
  bool any = false;
  double dropout = 0.0;
  for (const auto& m : ms) {
    deltas.push_back({lora_delta(*m->gate), lora_delta(*m->up), lora_delta(*m->down)});
    for (const Linear* l : {m->gate.get(), m->up.get(), m->down.get()})
      if (l->lora) {
        any = true;
        dropout = l->lora->is_training() ? l->lora->dropout : 0.0;
      }
  }
  if (!any) return dense;
  return std::make_shared<moe::LoraExpertBankImpl>(std::move(dense), std::move(deltas), dropout);
}

}  // namespace

std::pair<moe::DenseExpertBank, moe::DenseExpertBank> MoeFFN::dense_banks(bool differentiable) {
  if (differentiable)
    return {bank_from(experts, act_, true), shared_expert ? bank_from({shared_expert}, act_, true) : nullptr};
  if (!base_ || !fingerprint_matches()) {
    c10::InferenceMode normal_tensors(false);  // the parameters must never become inference tensors
    at::NoGradGuard ng;
    HugePageWeights on_huge_pages;
    base_ = bank_from(experts, act_, false);
    base_shared_ = shared_expert ? bank_from({shared_expert}, act_, false) : nullptr;
    cached_ = moe::MoELayer(nullptr);
    fingerprint_.clear();
    for (const auto& t : expert_tensors()) fingerprint_.emplace_back(t.data_ptr(), t._version());
  }
  return {base_, base_shared_};
}

moe::MoELayer MoeFFN::build(bool differentiable) {
  auto [dense, shared_dense] = dense_banks(differentiable);
  c10::InferenceMode normal_tensors(false);
  moe::ExpertBank bank = with_lora(dense, experts);
  std::vector<int64_t> all_params;
  for (int64_t e = 0; e < num_experts(); ++e) all_params.push_back(3 * spec_.hidden * spec_.widths[e]);
  moe::MoELayer layer = make_remote_ ? moe::MoELayer(bank, router, make_remote_(bank), all_params)
                                     : moe::MoELayer(bank, router);
  if (shared_expert) {
    const at::Tensor& g = shared_expert_gate->weight;
    layer->set_shared_expert(with_lora(shared_dense, {shared_expert}), differentiable ? g.view(g.sizes()) : g.detach());
  }
  // The layer registered its tensors as parameters (requires_grad = true). Leaves among them
  // were made from frozen or detached weights: no gradient must be computed for them. The
  // router's parameters are the block's own and keep their flags; LoRA tensors are not
  // registered by the bank and keep theirs.
  for (auto& p : layer->named_parameters()) {
    if (p.key().rfind("router.", 0) == 0) continue;
    if (p.value().is_leaf()) p.value().set_requires_grad(false);
  }
  if (router_from_experts_) {
    at::NoGradGuard ng;
    router->after_optimizer_step(*bank);
  }
  expert_params_.clear();
  if (make_remote_)
    expert_params_ = all_params;
  else
    for (int64_t e = 0; e < bank->num_experts(); ++e) expert_params_.push_back(bank->expert_params(e));
  always_active_params_ = router->param_count();
  if (shared_expert) always_active_params_ += 3 * spec_.hidden * spec_.shared_inner + spec_.hidden;  // + its gate
  return layer;
}

void MoeFFN::distribute_experts(int64_t first, int64_t count,
                                std::function<moe::RemoteExperts(const moe::ExpertBank&)> make_remote) {
  if (make_remote_) fail("expert parallelism: the block's experts are already distributed");
  if (router_from_experts_)
    fail(cat("expert parallelism: router '", spec_.router_type, "' is computed from all experts of the layer"));
  if (first < 0 || count < 1 || first + count > num_experts())
    fail(cat("expert parallelism: experts [", first, ", ", first + count, ") of ", num_experts()));
  auto list = named_children()["experts"];
  for (int64_t e = 0; e < num_experts(); ++e) {
    if (e >= first && e < first + count) continue;
    list->unregister_module(std::to_string(e));
    for (at::Tensor p : experts[e]->parameters()) p.set_data(at::empty({0}, p.options()));
  }
  experts = std::vector<std::shared_ptr<GatedMLP>>(experts.begin() + first, experts.begin() + first + count);
  first_local_ = first;
  make_remote_ = std::move(make_remote);
  cached_ = moe::MoELayer(nullptr);
  base_ = base_shared_ = nullptr;
  fingerprint_.clear();
}

moe::MoELayer MoeFFN::inference_layer() {
  if (cached_ && base_ && fingerprint_matches()) return cached_;
  dense_banks(false);
  at::NoGradGuard ng;
  cached_ = build(false);
  return cached_;
}

void MoeFFN::after_optimizer_step() {
  // Expert weights may have changed in place: rebuild (and, for avg-k, recompute the gate).
  cached_ = moe::MoELayer(nullptr);
  base_ = base_shared_ = nullptr;
  fingerprint_.clear();
  if (router_from_experts_) {
    at::NoGradGuard ng;
    if (has_lora()) build(false);
    else inference_layer();
  }
}

moe::MoECallbacks hook_callbacks(Hooks* hooks, int layer, const at::Tensor& valid, bool* observed) {
  moe::MoECallbacks cb;
  *observed = false;
  if (!hooks) return cb;
  // The shared expert (-1 in src/moe) fires as expert -2, the hooks' number for it.
  auto expert_id = [](int64_t e) { return e < 0 ? -2 : static_cast<int>(e); };
  if (hooks->wants(HookPoint::router_logits, layer)) {
    cb.router_logits = [=](const at::Tensor& l) { return hooks->fire(HookPoint::router_logits, layer, l, valid); };
    *observed = true;
  }
  if (hooks->wants(HookPoint::ffn_intermediate, layer)) {
    cb.expert_hidden = [=](int64_t e, const at::Tensor& h, const at::Tensor& tokens) {
      return hooks->fire(HookPoint::ffn_intermediate, layer, h, valid, expert_id(e), tokens);
    };
    *observed = true;
  }
  if (hooks->wants(HookPoint::expert_output, layer)) {
    cb.expert_output = [=](int64_t e, const at::Tensor& y, const at::Tensor& tokens) {
      return hooks->fire(HookPoint::expert_output, layer, y, valid, expert_id(e), tokens);
    };
    *observed = true;
  }
  return cb;
}

at::Tensor MoeFFN::forward(const at::Tensor& x, const FfnContext& ctx) {
  layer_ = ctx.layer;
  Hooks* hooks = ctx.hooks;
  const int layer = ctx.layer;
  const at::Tensor& valid = ctx.valid;
  bool trainable = false;
  if (at::GradMode::is_enabled())
    for (const auto& t : expert_tensors()) trainable = trainable || t.requires_grad();
  // With adapters on expert projections: the base weights as cached views (or differentiable
  // when the experts train too) and a LoRA bank over them, built for this forward.
  moe::MoELayer m = has_lora() || trainable ? build(trainable) : inference_layer();
  m->train(is_training());

  bool observed = false;
  const moe::MoECallbacks cb = hook_callbacks(hooks, layer, valid, &observed);
  moe::MoEOutput out = m->forward_full(x, observed ? &cb : nullptr);
  last_plan_ = out.plan;
  last_probs_ = out.route.probs.detach();
  last_valid_ = valid;
  // Routing with autograd for the auxiliary losses (training only; released otherwise).
  const bool keep = is_training() && at::GradMode::is_enabled() && out.route.logits.requires_grad();
  last_logits_ = keep ? out.route.logits : at::Tensor();
  last_idx_ = keep ? out.route.idx : at::Tensor();
  last_route_ = keep && spec_.aux.kind == MoeAuxLossConfig::Kind::Shazeer ? out.route : moe::RouterOutput();
  last_selection_ = out.route.idx.detach();
  return out.y;
}

std::vector<AuxLoss> MoeFFN::aux_losses() const {
  using K = MoeAuxLossConfig::Kind;
  std::vector<AuxLoss> v;
  if (!last_logits_.defined()) return v;
  const MoeAuxLossConfig& a = spec_.aux;
  if ((a.kind == K::Hemoe || a.kind == K::Switch) && a.coef > 0) {
    const int64_t E = num_experts();
    // f_j from straight-through unit weights of the selected experts, P_j from the scores (a
    // softmax / sigmoid of its own: the backward then sums exactly as the router recipe's did).
    const at::Tensor lg = last_logits_.to(at::kFloat);
    const at::Tensor scores = router->score_fn() == moe::ScoreFn::Sigmoid ? at::sigmoid(lg) : at::softmax(lg, -1);
    at::Tensor w = moe::dense_from_slots(last_idx_, moe::gate_values(scores, last_idx_, moe::GateMode::UnitST), E);
    at::Tensor loss;
    if (a.kind == K::Hemoe) {
      loss = moe::hemoe_balance_loss(w, scores, spec_.widths, last_valid_, a.coef, a.scale_by_tokens,
                                     static_cast<double>(spec_.reference_width));
    } else {
      loss = moe::hemoe_balance_loss(w, scores, std::vector<int64_t>(static_cast<size_t>(E), 1), last_valid_,
                                     a.coef, false, 1.0);
    }
    v.push_back({"balance_loss", loss});
  }
  if (a.kind == K::Shazeer && a.coef > 0 && last_route_.gates.defined()) {
    const moe::RouterOutput& r = last_route_;
    const int64_t E = num_experts(), k = r.idx.size(1);
    at::Tensor gates = moe::dense_from_slots(r.idx, r.gates.to(at::kFloat), E);
    at::Tensor load;
    if (r.noise_stddev.defined() && k < E) {
      load = moe::shazeer_load(r.clean_logits, r.logits, r.noise_stddev, k, last_valid_, a.shazeer_reference_load);
    } else {  // no noise: the number of tokens routed to each expert (no gradient), as the reference
      at::Tensor m = last_valid_.defined() ? last_valid_.to(at::kFloat).unsqueeze(1) : at::ones({gates.size(0), 1});
      load = (gates.detach() > 0).to(at::kFloat).mul(m).sum(0);
    }
    at::Tensor m = last_valid_.defined() ? last_valid_.to(gates.scalar_type()).unsqueeze(1) : at::Tensor();
    at::Tensor importance = (m.defined() ? gates * m : gates).sum(0);
    v.push_back({"balance_loss", (moe::cv_squared(importance, true) + moe::cv_squared(load.to(at::kFloat), true)) * a.coef});
  }
  if (a.z_coef > 0) v.push_back({"z_loss", moe::z_loss(last_logits_, last_valid_) * a.z_coef});
  return v;
}

std::optional<MoeLayerStats> MoeFFN::moe_stats() const {
  MoeLayerStats s;
  s.layer = layer_;
  s.tokens_per_expert.assign(static_cast<size_t>(num_experts()), 0);
  if (!last_probs_.defined() || expert_params_.empty()) return s;
  static_cast<moe::MoETelemetry&>(s) =
      moe::compute_telemetry(last_plan_, last_probs_, last_valid_, expert_params_, always_active_params_);
  int64_t ref = spec_.reference_width;
  if (ref <= 0)
    for (int64_t w : spec_.widths) ref += w;
  double width = 0;
  for (size_t e = 0; e < s.tokens_per_expert.size(); ++e)
    width += static_cast<double>(s.tokens_per_expert[e]) * static_cast<double>(spec_.widths[e]);
  if (s.tokens > 0) s.active_ffn_fraction = width / static_cast<double>(s.tokens) / static_cast<double>(ref);
  return s;
}

}  // namespace mf
