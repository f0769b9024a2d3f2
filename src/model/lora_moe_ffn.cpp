#include "model/lora_moe_ffn.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <utility>

#include "model/model.h"
#include "model/moe_ffn.h"
#include "moe/lora_expert_bank.h"
#include "moe/losses.h"
#include "moe/routers/linear_router.h"
#include "moe/routers/selection.h"
#include "util/error.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

namespace {

constexpr const char* kTargetNames[3] = {"gate_proj", "up_proj", "down_proj"};

// gate_proj / up_proj / down_proj (or Mixtral's w1 / w3 / w2) -> 0 / 1 / 2; -1 otherwise.
int target_index(const std::string& t) {
  if (t == "gate_proj" || t == "w1") return 0;
  if (t == "up_proj" || t == "w3") return 1;
  if (t == "down_proj" || t == "w2") return 2;
  return -1;
}

// Experts per token of a layer with E experts (top-k, or the top-p cap); a top-k beyond E is an error.
int64_t experts_per_token(const LoraMoeOptions& o, int64_t E, int64_t layer) {
  if (o.top_p > 0) return o.top_k > 0 ? std::min(o.top_k, E) : E;
  const int64_t k = o.top_k > 0 ? o.top_k : E;
  if (k > E) fail(cat("lora-moe: top_k ", k, " exceeds the ", E, " experts of layer ", layer));
  return k;
}

// An independent generator per (seed, what, layer, expert, projection), so that adding a layer or
// a target does not shift the values of the others.
Rng stream(uint64_t seed, uint64_t what, uint64_t layer, uint64_t expert, uint64_t proj) {
  uint64_t state = seed;
  uint64_t h = splitmix64(state);
  for (uint64_t v : {what, layer, expert, proj}) {
    uint64_t s = h ^ (v + 0x632be59bd9b4e019ULL);
    h = splitmix64(s);
  }
  return Rng(h);
}

// Fills t (any floating dtype / device) with draws from our own generator (values independent of
// libtorch's RNG, as train/lora.cpp does).
void fill(at::Tensor t, const std::function<double()>& draw) {
  at::NoGradGuard ng;
  at::Tensor buf = at::empty(t.sizes(), at::kDouble);
  double* p = buf.data_ptr<double>();
  for (int64_t i = 0; i < buf.numel(); ++i) p[i] = draw();
  t.copy_(buf);
}

void fill_uniform(at::Tensor t, Rng& rng, double bound) {
  fill(std::move(t), [&] { return (2 * rng.uniform() - 1) * bound; });
}

// Xavier-uniform bound of a [out, in] weight (torch's fan_in = size(1), fan_out = size(0)).
double xavier_bound(const at::Tensor& w, double gain) {
  return gain * std::sqrt(6.0 / static_cast<double>(w.size(0) + w.size(1)));
}

// Module::to converts every buffer, the graph router's int64 edge list too: move the router, then
// give the edge buffer its integer type back.
void move_graph_router(moe::GraphRouterImpl& r, at::ScalarType dt, at::Device dev) {
  if (dt == at::kDouble) r.to(at::kDouble);
  if (!dev.is_cpu()) r.to(dev);
  for (auto& b : r.named_buffers())
    if (b.key() == "edges" && b.value().scalar_type() != at::kLong) b.value().set_data(b.value().to(at::kLong));
}

}  // namespace

const std::vector<std::string>& lora_moe_routings() {
  static const std::vector<std::string> v = {"mixlora", "mixlora-switch", "mixlora-dynamic", "loramoe",
                                             "mola",    "ming-moe",       "gmoe"};
  return v;
}

LoraMoeOptions lora_moe_defaults(const std::string& routing) {
  // The struct's defaults are MixLoRA's: 8 experts, softmax top-2 renormalised, r 8 / alpha 16,
  // dropout 0.05, linear router N(0, 0.02) in fp32.
  LoraMoeOptions o;
  o.routing = routing;
  if (routing == "mixlora") {
    o.aux_coef = 1e-3;  // router_loss default true -> Mixtral load balancing
  } else if (routing == "mixlora-switch") {
    o.top_k = 1;
    o.gate = moe::GateMode::Prob;  // the expert output scaled by its probability (Switch)
    o.capacity = 32;
    o.z_coef = 1e-3;
    o.aux_coef = 1e-2;  // the GMoE fork's value (upstream mLoRA: 1e-3)
    o.jitter = 0.01;
    o.router_init_std = 1.0;
  } else if (routing == "mixlora-dynamic") {
    o.top_k = 0;  // no cap: up to E experts
    o.top_p = 0.8;
    o.gate = moe::GateMode::Prob;  // mLoRA does not renormalise the kept probabilities
    o.aux_coef = 1e-3;
  } else if (routing == "loramoe") {
    o.top_k = 0;  // k = E: dense soft routing (the GMoE fork's LoRAMoE)
  } else if (routing == "mola") {
    // Expert counts per layer: layer_experts, else mola_layer_experts(L). No aux loss.
  } else if (routing == "ming-moe") {
    o.r = 16;
    o.alpha = 32;
  } else if (routing == "gmoe") {
    o.r = 2;
    o.alpha = 4;
    o.dropout = 0.0005;  // mLoRA requires dropout > 0
    o.poisson_coef = moe::kGmoePoissonLossCoef;
    o.normal_coef = moe::kGmoeNormalLossCoef;
  } else {
    fail("lora-moe: unknown routing '" + routing + "' (known: " + join(lora_moe_routings(), ", ") + ")");
  }
  return o;
}

LoraMoeOptions checked_lora_moe_options(const LoraMoeOptions& in) {
  LoraMoeOptions o = in;
  const auto& known = lora_moe_routings();
  if (std::find(known.begin(), known.end(), o.routing) == known.end())
    fail("lora-moe: unknown routing '" + o.routing + "' (known: " + join(known, ", ") + ")");
  if (o.layer_experts.empty() && o.experts < 1) fail(cat("lora-moe: experts must be >= 1 (got ", o.experts, ")"));
  for (size_t l = 0; l < o.layer_experts.size(); ++l)
    if (o.layer_experts[l] < 1) fail(cat("lora-moe: layer_experts[", l, "] must be >= 1 (got ", o.layer_experts[l], ")"));
  if (o.top_k < 0) fail(cat("lora-moe: top_k must be >= 0 (0 = every expert), got ", o.top_k));
  if (!(o.top_p >= 0 && o.top_p <= 1)) fail(cat("lora-moe: top_p must lie in [0, 1], got ", o.top_p));
  if (o.r < 1) fail(cat("lora-moe: r must be >= 1, got ", o.r));
  if (!(o.alpha > 0)) fail(cat("lora-moe: alpha must be > 0, got ", o.alpha));
  if (!(o.dropout >= 0 && o.dropout < 1)) fail(cat("lora-moe: dropout must lie in [0, 1), got ", o.dropout));
  if (!(o.router_init_std >= 0)) fail(cat("lora-moe: router_init_std must be >= 0, got ", o.router_init_std));
  if (!(o.jitter >= 0 && o.jitter < 1)) fail(cat("lora-moe: jitter must lie in [0, 1), got ", o.jitter));
  const std::pair<const char*, double> coefs[] = {
      {"aux_coef", o.aux_coef}, {"z_coef", o.z_coef}, {"poisson_coef", o.poisson_coef}, {"normal_coef", o.normal_coef}};
  for (const auto& [name, v] : coefs)
    if (!(v >= 0 && std::isfinite(v))) fail(cat("lora-moe: ", name, " must be a finite number >= 0, got ", v));
  if (o.capacity < 0 || o.capacity_group < 0) fail("lora-moe: capacity and capacity_group must be >= 0");
  if (o.routing == "gmoe") {
    if (o.graph.dim_gcn < 1 || o.graph.gcn_layers < 1) fail("lora-moe: dim_gcn and gcn_layers must be >= 1");
    if (!(o.graph.edges_threshold > 0 && o.graph.edges_threshold <= 1))
      fail(cat("lora-moe: edges_threshold must lie in (0, 1], got ", o.graph.edges_threshold));
  }
  if (o.targets.empty()) fail("lora-moe: no target modules (choose from gate_proj, up_proj, down_proj)");
  bool seen[3] = {false, false, false};
  for (const auto& t : o.targets) {
    const int j = target_index(t);
    if (j < 0) fail("lora-moe: unknown target module '" + t + "' (LoRA experts adapt gate_proj, up_proj, down_proj)");
    seen[j] = true;
  }
  o.targets.clear();
  for (int j = 0; j < 3; ++j)
    if (seen[j]) o.targets.push_back(kTargetNames[j]);
  return o;
}

std::vector<int64_t> mola_layer_experts(int64_t num_layers) {
  std::vector<int64_t> v;
  for (int64_t l = 0; l < num_layers; ++l) v.push_back(5 + 2 * (4 * l / num_layers));
  return v;
}

std::vector<int64_t> lora_moe_layer_experts(const LoraMoeOptions& opt, int64_t num_layers) {
  if (!opt.layer_experts.empty()) {
    if (static_cast<int64_t>(opt.layer_experts.size()) != num_layers)
      fail(cat("lora-moe: layer_experts has ", opt.layer_experts.size(), " entries, expected ", num_layers,
               " (one expert count per layer of the model)"));
    return opt.layer_experts;
  }
  if (opt.routing == "mola") return mola_layer_experts(num_layers);
  return std::vector<int64_t>(static_cast<size_t>(std::max<int64_t>(num_layers, 0)), opt.experts);
}

LoraMoeFFN::LoraMoeFFN(std::shared_ptr<GatedMLP> base, const LoraMoeOptions& opt, int64_t layer, int64_t num_layers,
                       uint64_t seed)
    : opt_(checked_lora_moe_options(opt)), base_(std::move(base)), layer_(layer), num_layers_(num_layers) {
  if (!base_) fail("lora-moe: no base FFN");
  if (num_layers_ < 1 || layer_ < 0 || layer_ >= num_layers_) fail(cat("lora-moe: layer ", layer_, " of ", num_layers_));
  act_ = moe_activation(base_->act);
  num_experts_ = lora_moe_layer_experts(opt_, num_layers_)[static_cast<size_t>(layer_)];
  k_ = experts_per_token(opt_, num_experts_, layer_);
  // The base's Linear modules under their own names, so its tensors keep the dense checkpoint's names.
  for (const auto& c : base_->named_children()) register_module(c.key(), c.value());
  for (auto& p : base_->parameters()) p.set_requires_grad(false);

  const at::Tensor& gw = base_->gate->weight;
  const int64_t d = gw.size(1), f = gw.size(0), E = num_experts_;
  // LoRA math in fp32 over any base dtype; fp64 stays fp64 (gradient checks).
  const at::ScalarType adt = gw.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto opts = at::TensorOptions().dtype(adt).device(gw.device());
  for (const auto& t : opt_.targets) targeted_[target_index(t)] = true;
  auto list = register_module("experts", torch::nn::ModuleList());
  A_.resize(static_cast<size_t>(E));
  B_.resize(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    auto expert = std::make_shared<torch::nn::Module>();
    for (int j = 0; j < 3; ++j) {
      if (!targeted_[j]) continue;
      const int64_t in = j == 2 ? f : d, out = j == 2 ? d : f;
      auto proj = expert->register_module(kTargetNames[j], std::make_shared<torch::nn::Module>());
      auto a = proj->register_module("lora_A", std::make_shared<torch::nn::Module>());
      auto b = proj->register_module("lora_B", std::make_shared<torch::nn::Module>());
      A_[e][j] = a->register_parameter("weight", at::zeros({opt_.r, in}, opts));
      B_[e][j] = b->register_parameter("weight", at::zeros({out, opt_.r}, opts));
    }
    list->push_back(expert);
  }

  moe::SelectionConfig sel;
  sel.selection = opt_.top_p > 0 ? moe::Selection::TopP : moe::Selection::TopK;
  sel.k = k_;
  if (opt_.top_p > 0) {
    sel.top_p = opt_.top_p;
    sel.max_k = k_;
  }
  sel.gate = opt_.gate;
  moe::RouterNoise noise;
  if (opt_.jitter > 0) noise = {moe::NoiseKind::Jitter, opt_.jitter};
  if (opt_.routing == "gmoe") {
    moe::GraphRouterOptions g = opt_.graph;
    g.activation = act_;  // GMoE's "nl" is the LLM's FFN activation
    graph_ = std::make_shared<moe::GraphRouterImpl>(d, E, sel, g, moe::ScoreFn::Softmax, noise);
    router = graph_;
  } else {
    router = std::make_shared<moe::LinearRouterImpl>(at::zeros({E, d}, opts), sel, moe::ScoreFn::Softmax, noise);
  }
  register_module("router", router);
  init_parameters(seed);
  if (graph_) move_graph_router(*graph_, adt, gw.device());
}

void LoraMoeFFN::init_parameters(uint64_t seed) {
  for (int64_t e = 0; e < num_experts_; ++e)
    for (int j = 0; j < 3; ++j) {
      if (!targeted_[j]) continue;
      // PEFT's kaiming_uniform_(A, a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)); B stays zero.
      Rng rng = stream(seed, 1, static_cast<uint64_t>(layer_), static_cast<uint64_t>(e), static_cast<uint64_t>(j));
      const at::Tensor& A = A_[static_cast<size_t>(e)][j];
      fill_uniform(A, rng, 1.0 / std::sqrt(static_cast<double>(A.size(1))));
    }
  Rng rng = stream(seed, 2, static_cast<uint64_t>(layer_), 0, 0);
  if (!graph_) {
    fill(router->named_parameters()["weight"], [&] { return opt_.router_init_std * rng.normal(); });
    return;
  }
  // The reference's GoEgate init with our generator: Xavier-uniform, gain 100 on the token
  // projection `mlp`, Glorot-uniform X; lambda and sigma keep their constant starts. Then the
  // threshold search on the new expert features.
  for (auto& p : graph_->named_parameters())
    if (p.value().dim() == 2) fill_uniform(p.value(), rng, xavier_bound(p.value(), p.key() == "mlp.weight" ? 100.0 : 1.0));
  at::Tensor X = graph_->named_buffers()["X"];
  fill_uniform(X, rng, xavier_bound(X, 1.0));
  graph_->set_edges(graph_->threshold_edges());
}

const at::Tensor& LoraMoeFFN::lora_A(int64_t e, const std::string& target) const {
  const int j = target_index(target);
  if (j < 0 || e < 0 || e >= num_experts_) fail(cat("lora-moe: no expert ", e, " / projection '", target, "'"));
  return A_[static_cast<size_t>(e)][j];
}

const at::Tensor& LoraMoeFFN::lora_B(int64_t e, const std::string& target) const {
  const int j = target_index(target);
  if (j < 0 || e < 0 || e >= num_experts_) fail(cat("lora-moe: no expert ", e, " / projection '", target, "'"));
  return B_[static_cast<size_t>(e)][j];
}

void LoraMoeFFN::set_capacity_group(int64_t tokens) {
  if (tokens < 0) fail("lora-moe: capacity_group must be >= 0");
  opt_.capacity_group = tokens;
}

void LoraMoeFFN::check_no_plain_lora() const {
  for (const Linear* l : {base_->gate.get(), base_->up.get(), base_->down.get()})
    if (l->lora)
      fail(cat("lora-moe: layer ", layer_, ": a base FFN projection has a plain LoRA adapter; the LoRA experts "
               "replace it (leave gate/up/down out of the plain LoRA targets)"));
}

bool LoraMoeFFN::fingerprint_matches() const {
  size_t i = 0;
  for (const Linear* l : {base_->gate.get(), base_->up.get(), base_->down.get()})
    for (const at::Tensor* t : {&l->weight, &l->bias}) {
      if (!t->defined()) continue;
      if (i >= fingerprint_.size() || fingerprint_[i].first != t->data_ptr() || fingerprint_[i].second != t->_version())
        return false;
      ++i;
    }
  return i == fingerprint_.size();
}

moe::DenseExpertBank LoraMoeFFN::base_bank() {
  if (base_bank_ && fingerprint_matches()) return base_bank_;
  c10::InferenceMode normal_tensors(false);  // the parameters must never become inference tensors
  at::NoGradGuard ng;
  Linear& g = *base_->gate;
  Linear& u = *base_->up;
  Linear& dn = *base_->down;
  const int64_t f = g.weight.size(0);
  const at::Tensor fused = at::cat({g.weight.detach(), u.weight.detach()}, 0);
  g.weight.set_data(fused.narrow(0, 0, f));
  u.weight.set_data(fused.narrow(0, f, f));
  std::vector<at::Tensor> b_in, b_out;
  if (g.bias.defined() && u.bias.defined()) {
    const at::Tensor fb = at::cat({g.bias.detach(), u.bias.detach()}, 0);
    g.bias.set_data(fb.narrow(0, 0, f));
    u.bias.set_data(fb.narrow(0, f, f));
    b_in.push_back(fb);
  }
  if (dn.bias.defined()) b_out.push_back(dn.bias.detach());
  base_bank_ = std::make_shared<moe::DenseExpertBankImpl>(std::vector<at::Tensor>{fused},
                                                         std::vector<at::Tensor>{dn.weight.detach()}, act_, true,
                                                         b_in, b_out);
  for (auto& p : base_bank_->parameters()) p.set_requires_grad(false);  // the base is frozen
  fingerprint_.clear();
  for (const Linear* l : {&g, &u, &dn})
    for (const at::Tensor* t : {&l->weight, &l->bias})
      if (t->defined()) fingerprint_.emplace_back(t->data_ptr(), t->_version());
  return base_bank_;
}

moe::MoELayer LoraMoeFFN::build_layer() {
  moe::DenseExpertBank base = base_bank();
  c10::InferenceMode normal_tensors(false);
  const double s = lora_scale();
  std::vector<moe::LoraExpertDeltas> deltas;
  for (int64_t e = 0; e < num_experts_; ++e) {
    const auto& A = A_[static_cast<size_t>(e)];
    const auto& B = B_[static_cast<size_t>(e)];
    auto delta = [&](int j) { return targeted_[j] ? moe::LoraDelta{A[j], B[j], s} : moe::LoraDelta{}; };
    deltas.push_back({delta(0), delta(1), delta(2)});
  }
  // One shared base expert: G x and U x once per token, each expert adding its deltas.
  auto bank = std::make_shared<moe::LoraExpertBankImpl>(base, std::move(deltas), opt_.dropout);
  moe::MoELayerOptions lo;
  if (opt_.capacity > 0) {
    lo.capacity.mode = moe::CapacityMode::Absolute;
    lo.capacity.absolute = opt_.capacity;
    lo.capacity.group_size = opt_.capacity_group;
  }
  moe::MoELayer layer(bank, router, lo);
  // Leaves the layer registered from the frozen base must not ask for gradients; the router is
  // the block's own, the LoRA tensors are not registered by the bank.
  for (auto& p : layer->named_parameters())
    if (p.key().rfind("router.", 0) != 0 && p.value().is_leaf()) p.value().set_requires_grad(false);
  expert_params_.clear();
  for (int64_t e = 0; e < num_experts_; ++e) expert_params_.push_back(bank->expert_params(e));
  return layer;
}

at::Tensor LoraMoeFFN::forward(const at::Tensor& x, const FfnContext& ctx) {
  check_no_plain_lora();
  Hooks* hooks = ctx.hooks;
  const int layer = ctx.layer;
  const at::Tensor& valid = ctx.valid;
  moe::MoELayer m = build_layer();
  m->train(is_training());

  bool observed = false;
  const moe::MoECallbacks cb = hook_callbacks(hooks, layer, valid, &observed);
  moe::MoEOutput out = m->forward_full(x, observed ? &cb : nullptr);
  last_plan_ = out.plan;
  last_valid_ = valid;
  last_selection_ = out.route.idx.detach();
  // Routing with autograd for the auxiliary losses (training only; detached otherwise).
  kept_for_loss_ = is_training() && at::GradMode::is_enabled() && out.route.logits.requires_grad();
  last_logits_ = kept_for_loss_ ? out.route.logits : out.route.logits.detach();
  last_probs_ = kept_for_loss_ ? out.route.probs : out.route.probs.detach();
  last_counts_ = at::Tensor();
  if (kept_for_loss_ && graph_)
    last_counts_ = balance_.update(0, out.route.probs, out.route.idx, opt_.reference_compat ? at::Tensor() : valid);
  return out.y;
}

std::vector<AuxLoss> LoraMoeFFN::aux_losses() const {
  std::vector<AuxLoss> v;
  if (!kept_for_loss_) return v;
  // This layer's share of the mean over layers (see the header).
  const double share = 1.0 / static_cast<double>(num_layers_);
  const at::Tensor valid = opt_.reference_compat ? at::Tensor() : last_valid_;  // the references count padding
  if (opt_.aux_coef > 0) {
    at::Tensor lb;
    if (opt_.routing == "mixlora-switch") {
      // mLoRA's Switch loss: E sum_e f_e P_e with f from the top-1 choice before capacity.
      lb = moe::switch_balance_loss(last_probs_, last_selection_.select(1, 0), valid);
    } else if (opt_.top_p > 0) {
      // mLoRA's dynamic loss: f_e = fraction of tokens whose top-p set holds e.
      const at::Tensor chosen = moe::dense_from_slots(
          last_selection_, at::ones(last_selection_.sizes(), last_probs_.options()), num_experts_);
      lb = moe::hemoe_balance_loss(chosen, last_probs_, std::vector<int64_t>(static_cast<size_t>(num_experts_), 1),
                                   valid, 1.0, false, 1.0);
    } else {
      // The GMoE fork hands probabilities to the loss, which applies softmax again.
      lb = moe::mixtral_balance_loss({opt_.reference_compat ? last_probs_ : last_logits_}, k_, valid, true);
    }
    v.push_back({"balance_loss", lb * (opt_.aux_coef * share)});
  }
  if (opt_.z_coef > 0) v.push_back({"z_loss", moe::z_loss(last_logits_, valid) * (opt_.z_coef * share)});
  if (graph_ && opt_.poisson_coef > 0)
    v.push_back({"poisson_loss", moe::poisson_distinction_loss({last_probs_}, {graph_->poisson_lambda()}, valid) *
                                     (opt_.poisson_coef * share)});
  if (graph_ && opt_.normal_coef > 0 && last_counts_.defined() && !opt_.reference_compat)
    v.push_back({"normal_loss",
                 moe::normal_balance_loss({last_counts_}, {graph_->normal_sigma()}) * (opt_.normal_coef * share)});
  return v;
}

std::optional<MoeLayerStats> LoraMoeFFN::moe_stats() const {
  MoeLayerStats s;
  s.layer = static_cast<int>(layer_);
  s.tokens_per_expert.assign(static_cast<size_t>(num_experts_), 0);
  if (!last_probs_.defined() || expert_params_.empty()) return s;
  static_cast<moe::MoETelemetry&>(s) =
      moe::compute_telemetry(last_plan_, last_probs_.detach(), last_valid_, expert_params_, router->param_count());
  // Each expert is a full-width FFN over the shared base: the fraction is experts per token.
  int64_t routed = 0;
  for (int64_t t : s.tokens_per_expert) routed += t;
  if (s.tokens > 0) s.active_ffn_fraction = static_cast<double>(routed) / static_cast<double>(s.tokens);
  return s;
}

at::Tensor lora_moe_reference_normal_loss(const Model& model) {
  std::vector<at::Tensor> counts, sigmas;
  double coef = 0.0;
  for (int64_t l = 0; l < model.config().num_layers; ++l) {
    auto b = std::dynamic_pointer_cast<LoraMoeFFN>(model.ffn(l));
    if (!b || !b->graph_router() || !b->last_counts().defined()) continue;
    counts.push_back(b->last_counts());
    sigmas.push_back(b->graph_router()->normal_sigma());
    coef = b->options().normal_coef;
  }
  if (counts.empty()) return at::zeros({}, at::kFloat);
  return moe::normal_balance_loss(counts, sigmas, true) * coef;
}

void convert_to_lora_moe(Model& model, const LoraMoeOptions& opt_in, uint64_t seed) {
  const LoraMoeOptions opt = checked_lora_moe_options(opt_in);
  const int64_t L = model.config().num_layers;
  const std::vector<int64_t> counts = lora_moe_layer_experts(opt, L);
  // Everything is checked before the model changes.
  std::vector<std::shared_ptr<GatedMLP>> bases;
  for (int64_t l = 0; l < L; ++l) {
    const std::shared_ptr<FfnBlock> block = model.ffn(l);
    auto g = std::dynamic_pointer_cast<GatedMLP>(block);
    if (!g)
      fail(cat("lora-moe: layer ", l, "'s FFN is a ", block->name(),
               ", not a dense gated (SwiGLU) MLP; LoRA-MoE converts dense gated FFNs only"));
    moe_activation(g->act);
    experts_per_token(opt, counts[static_cast<size_t>(l)], l);
    bases.push_back(std::move(g));
  }
  for (auto& p : model.parameters()) p.set_requires_grad(false);
  for (int64_t l = 0; l < L; ++l) {
    const auto& base = bases[static_cast<size_t>(l)];
    auto block = std::make_shared<LoraMoeFFN>(base, opt, l, L, seed);
    block->train(base->is_training());  // a new module starts in training mode; keep the model's
    model.set_ffn(l, block);
  }
}

int64_t lora_moe_trainable_params(const ModelConfig& cfg, const LoraMoeOptions& opt_in) {
  const LoraMoeOptions opt = checked_lora_moe_options(opt_in);
  const int64_t d = cfg.hidden_size, f = cfg.intermediate_size;
  const auto targets = static_cast<int64_t>(opt.targets.size());
  int64_t n = 0;
  for (int64_t E : lora_moe_layer_experts(opt, cfg.num_layers)) {
    n += E * opt.r * (d + f) * targets;
    if (opt.routing == "gmoe") {
      const int64_t g = opt.graph.dim_gcn;
      n += 2 * d * g + opt.graph.gcn_layers * g * g + g + 2;  // mlp, mlp_struct, GCNs, proj, lambda, sigma
    } else {
      n += E * d;
    }
  }
  return n;
}

}  // namespace mf
