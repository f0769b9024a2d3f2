#include "train/router_recipe.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "io/checkpoint.h"
#include "model/layers.h"
#include "moe/routers/selection.h"
#include "tokenizer/tokenizer.h"
#include "train/recipe_config.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

namespace {

void check_keys(const json& j, const std::string& section, const std::unordered_set<std::string>& known,
                const std::string& origin) {
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.count(it.key())) fail_file(origin, "unknown key '" + section + "." + it.key() + "'");
}

const json& section(const json& root, const std::string& name, const std::string& origin) {
  static const json empty = json::object();
  auto it = root.find(name);
  if (it == root.end()) return empty;
  if (!it->is_object()) fail_file(origin, "'" + name + "' must be an object");
  return *it;
}

at::Tensor masked_mean_rows(const at::Tensor& v, const at::Tensor& valid) {
  if (!valid.defined()) return v.mean(0);
  at::Tensor m = valid.to(v.scalar_type()).unsqueeze(1);
  return (v * m).sum(0) / m.sum().clamp_min(1.0);
}

// f (straight-through fraction routed) and P (mean score) of one layer.
std::pair<at::Tensor, at::Tensor> routed_fraction_and_prob(const at::Tensor& logits, const at::Tensor& valid,
                                                           const MoeLayerRouting& r) {
  at::Tensor lg = logits.to(at::kFloat);
  at::Tensor scores = r.score == moe::ScoreFn::Sigmoid ? at::sigmoid(lg) : at::softmax(lg, -1);
  at::Tensor idx = moe::select_experts(scores.detach(), r.selection);
  at::Tensor w = moe::dense_from_slots(idx, moe::gate_values(scores, idx, moe::GateMode::UnitST), lg.size(1));
  return {masked_mean_rows(w, valid), masked_mean_rows(scores, valid)};
}

struct JsonlExample {
  std::string text, prompt, response, domain = "default";
  bool sft = false;
};

std::vector<JsonlExample> read_examples(const std::string& path) {
  std::vector<JsonlExample> out;
  for_each_jsonl_object(path, [&](const json& j, int64_t line_no) {
    auto where = [&](const std::string& what) { fail(cat(path, ":", line_no, ": ", what)); };
    JsonlExample ex;
    auto str = [&](const char* key, std::string& dst) {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) return false;
      if (!it->is_string()) where(cat("key '", key, "' must be a string"));
      dst = it->get<std::string>();
      return true;
    };
    const bool has_prompt = str("prompt", ex.prompt), has_response = str("response", ex.response);
    if (has_prompt != has_response) where("an SFT line needs both 'prompt' and 'response'");
    ex.sft = has_prompt;
    if (!ex.sft && !str("text", ex.text)) where("expected key 'text' or keys 'prompt' and 'response'");
    std::string domain;
    if (str("domain", domain)) {
      if (domain.empty()) where("key 'domain' must be a non-empty string");
      ex.domain = domain;
    }
    out.push_back(std::move(ex));
    return true;
  });
  return out;
}

// One row of seq_len + 1 tokens (encoding of router_recipe.h); false when it has no target.
bool make_row(const JsonlExample& ex, const RecipeTokenizer& tok, int64_t seq_len, std::vector<int32_t>& rows) {
  std::vector<int32_t> row;
  if (ex.sft) {
    for (int32_t id : tok.encode(ex.prompt, true)) row.push_back(-1 - id);
    for (int32_t id : tok.encode(ex.response, false)) row.push_back(id);
  } else {
    row = tok.encode(ex.text, true);
  }
  row.push_back(tok.eos_id);
  row.resize(static_cast<size_t>(seq_len + 1), kPadToken);
  bool any_target = false;
  for (size_t i = 1; i < row.size(); ++i) any_target |= row[i] >= 0;
  if (any_target) rows.insert(rows.end(), row.begin(), row.end());
  return any_target;
}

int32_t max_id(const std::vector<int32_t>& tokens) {
  int32_t m = -1;
  for (int32_t v : tokens) {
    if (v == kPadToken) continue;
    m = std::max(m, v >= 0 ? v : -1 - v);
  }
  return m;
}

struct RecipeModule : torch::nn::Module {
  RecipeModule(std::shared_ptr<Model> m, std::shared_ptr<LoraAdapters> l) : model(m), lora(l) {
    register_module("model", model);
    if (lora) register_module("lora", lora);
  }
  std::shared_ptr<Model> model;
  std::shared_ptr<LoraAdapters> lora;
};

at::Tensor named_param(Model& model, const std::string& name) {
  auto params = model.named_parameters();
  const at::Tensor* t = params.find(name);
  if (!t) fail("model has no tensor '" + name + "'");
  return *t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
RouterRecipeConfig load_router_config(const std::string& path) {
  json root = read_json_file(path);
  if (!root.is_object()) fail_file(path, "expected a JSON object");
  check_keys(root, "", {"model", "training", "router", "lora", "mlp_router"}, path);
  RouterRecipeConfig c;
  c.path = path;
  const std::string base = parent_dir(path).empty() ? "." : parent_dir(path);
  if (root.contains("model")) c.model_dir = resolve_config_path(base, json_get<std::string>(root, "model", path));
  if (!root.contains("training") || !root["training"].is_object()) fail_file(path, "missing object 'training'");
  const json& t = root["training"];
  check_keys(t, "training",
             {"seq_len", "packing", "batch_size", "grad_accum", "max_steps", "epochs", "lr", "min_lr", "warmup_ratio",
              "warmup_steps", "weight_decay", "betas", "eps", "clip", "bf16", "eval_every", "eval_batches",
              "save_every", "keep_checkpoints", "seed", "train_data", "validation_data", "tokenizer", "output_dir"},
             path);
  TrainerOptions& o = c.trainer;
  c.seq_len = json_get_or<int64_t>(t, "seq_len", 512, path);
  c.packing = json_get_or<bool>(t, "packing", true, path);
  o.batch_size = json_get_or<int64_t>(t, "batch_size", 8, path);
  o.grad_accum = json_get_or<int64_t>(t, "grad_accum", 1, path);
  const bool has_steps = t.contains("max_steps"), has_epochs = t.contains("epochs");
  if (has_steps == has_epochs) fail_file(path, "give exactly one of 'training.max_steps' and 'training.epochs'");
  o.max_steps = has_steps ? json_get<int64_t>(t, "max_steps", path) : 0;
  c.epochs = has_epochs ? json_get<double>(t, "epochs", path) : 0.0;
  if (has_steps && o.max_steps < 0) fail_file(path, "training.max_steps must not be negative");
  if (has_epochs && !(c.epochs > 0)) fail_file(path, "training.epochs must be positive");
  o.schedule.lr = json_get_or<double>(t, "lr", 3e-4, path);
  o.schedule.min_lr = json_get_or<double>(t, "min_lr", 3e-5, path);
  c.warmup_ratio = json_get_or<double>(t, "warmup_ratio", 0.05, path);
  c.warmup_steps_given = t.contains("warmup_steps");
  o.schedule.warmup_steps = json_get_or<int64_t>(t, "warmup_steps", 0, path);
  // HF TrainingArguments / torch AdamW defaults, as LLaMA-Factory runs them.
  o.adamw.weight_decay = 0.0;
  o.adamw.beta1 = 0.9;
  o.adamw.beta2 = 0.999;
  o.bf16 = true;
  o.save_every = 200;
  o.seed = 42;
  read_shared_training_keys(t, path, o);
  if (c.seq_len <= 0) fail_file(path, "training.seq_len must be positive");
  if (!(c.warmup_ratio >= 0 && c.warmup_ratio <= 1)) fail_file(path, "training.warmup_ratio must lie in [0, 1]");
  for (const auto& f : config_string_list(t, "train_data", "training", path)) c.train_files.push_back(resolve_config_path(base, f));
  if (t.contains("validation_data"))
    for (const auto& f : config_string_list(t, "validation_data", "training", path))
      c.validation_files.push_back(resolve_config_path(base, f));
  c.tokenizer = resolve_config_path(base, json_get_or<std::string>(t, "tokenizer", "", path));
  o.out_dir = resolve_config_path(base, json_get_or<std::string>(t, "output_dir", "", path));

  const json& r = section(root, "router", path);
  check_keys(r, "router", {"balance_loss", "balance_coef", "balance_scale", "train"}, path);
  c.balance_loss = json_get_or<std::string>(r, "balance_loss", "", path);
  if (!c.balance_loss.empty() && c.balance_loss != "hemoe" && c.balance_loss != "switch" && c.balance_loss != "none")
    fail_file(path, "router.balance_loss must be \"hemoe\", \"switch\" or \"none\"");
  c.balance_coef = json_get_or<double>(r, "balance_coef", -1.0, path);
  if (r.contains("balance_coef") && c.balance_coef < 0) fail_file(path, "router.balance_coef must not be negative");
  const std::string scale = json_get_or<std::string>(r, "balance_scale", "tokens", path);
  if (scale == "tokens") c.balance_scale = BalanceScale::Tokens;
  else if (scale == "experts") c.balance_scale = BalanceScale::Experts;
  else fail_file(path, "router.balance_scale must be \"tokens\" or \"experts\"");
  c.train_router = json_get_or<bool>(r, "train", true, path);

  const json& l = section(root, "lora", path);
  check_keys(l, "lora", {"enabled", "r", "alpha", "dropout", "targets"}, path);
  c.lora_enabled = json_get_or<bool>(l, "enabled", true, path);
  c.lora.r = json_get_or<int64_t>(l, "r", 8, path);
  c.lora.alpha = json_get_or<double>(l, "alpha", 2.0 * static_cast<double>(c.lora.r), path);
  c.lora.dropout = json_get_or<double>(l, "dropout", 0.05, path);
  if (l.contains("targets")) c.lora.targets = config_string_list(l, "targets", "lora", path);
  c.lora.seed = o.seed;
  if (c.lora.r <= 0) fail_file(path, "lora.r must be positive");
  if (!(c.lora.dropout >= 0 && c.lora.dropout < 1)) fail_file(path, "lora.dropout must lie in [0, 1)");

  const json& m = section(root, "mlp_router", path);
  check_keys(m, "mlp_router", {"epochs", "lr", "batch_tokens", "sample_tokens", "val_fraction"}, path);
  c.mlp.epochs = json_get_or<int64_t>(m, "epochs", 30, path);
  c.mlp.lr = json_get_or<double>(m, "lr", 0.01, path);
  c.mlp.batch_tokens = json_get_or<int64_t>(m, "batch_tokens", 512, path);
  c.mlp.sample_tokens = json_get_or<int64_t>(m, "sample_tokens", 16384, path);
  c.mlp.val_fraction = json_get_or<double>(m, "val_fraction", 0.1, path);
  if (c.mlp.epochs < 0) fail_file(path, "mlp_router.epochs must not be negative");
  if (!(c.mlp.lr > 0)) fail_file(path, "mlp_router.lr must be positive");
  if (c.mlp.batch_tokens <= 0 || c.mlp.sample_tokens <= 0)
    fail_file(path, "mlp_router.batch_tokens and sample_tokens must be positive");
  if (!(c.mlp.val_fraction > 0 && c.mlp.val_fraction < 1)) fail_file(path, "mlp_router.val_fraction must lie in (0, 1)");
  return c;
}

// ---------------------------------------------------------------------------------------------
std::vector<MoeLayerRouting> moeforge_routing(const json& cfg, const std::string& origin) {
  std::vector<MoeLayerRouting> out;
  const std::string type = json_get_or<std::string>(cfg, "model_type", "", origin);
  if (type == "mixtral") {
    // Stock Mixtral: every layer MoE, equal experts (r_j = 1/E), softmax top-k.
    const int64_t E = json_get<int64_t>(cfg, "num_local_experts", origin);
    const int64_t inter = json_get<int64_t>(cfg, "intermediate_size", origin);
    for (int64_t l = 0; l < json_get<int64_t>(cfg, "num_hidden_layers", origin); ++l) {
      MoeLayerRouting m;
      m.layer = static_cast<int>(l);
      m.router_type = "linear";
      m.selection.k = json_get_or<int64_t>(cfg, "num_experts_per_tok", 2, origin);
      m.selection.gate = moe::GateMode::UnitST;
      m.expert_sizes.assign(static_cast<size_t>(E), inter);
      m.intermediate_size = E * inter;
      out.push_back(std::move(m));
    }
    return out;
  }
  if (type != "moeforge") return out;
  auto int_list = [&](const json& j, const std::string& what) {
    std::vector<int64_t> v;
    if (!j.is_array()) fail_file(origin, what + " must be a list of integers");
    for (const auto& e : j) {
      if (!e.is_number_integer()) fail_file(origin, what + " must be a list of integers");
      v.push_back(e.get<int64_t>());
    }
    return v;
  };
  if (!cfg.contains("moe_layers")) fail_file(origin, "missing key 'moe_layers'");
  if (!cfg.contains("expert_sizes") || !cfg["expert_sizes"].is_array()) fail_file(origin, "missing list 'expert_sizes'");
  const auto layers = int_list(cfg["moe_layers"], "moe_layers");
  std::vector<std::vector<int64_t>> sizes;
  for (const auto& e : cfg["expert_sizes"]) sizes.push_back(int_list(e, "expert_sizes"));
  const int64_t E = json_get<int64_t>(cfg, "num_experts", origin);
  const int64_t k = json_get<int64_t>(cfg, "num_experts_per_tok", origin);
  const int64_t inter = json_get<int64_t>(cfg, "intermediate_size", origin);
  if (sizes.size() != layers.size()) fail_file(origin, "expert_sizes needs one list per MoE layer");
  if (!cfg.contains("router") || !cfg["router"].is_object()) fail_file(origin, "missing object 'router'");
  const json& r = cfg["router"];
  MoeLayerRouting base;
  base.router_type = json_get<std::string>(r, "type", origin);
  base.score = moe::parse_score_fn(json_get_or<std::string>(r, "score", "softmax", origin));
  const std::string sel = json_get_or<std::string>(r, "selection", "top_k", origin);
  base.selection.selection = sel == "top_k"   ? moe::Selection::TopK
                             : sel == "top_p" ? moe::Selection::TopP
                             : sel == "dynk_max" ? moe::Selection::DynKMax
                                                 : (fail_file(origin, "unknown router.selection '" + sel + "'"),
                                                    moe::Selection::TopK);
  base.selection.k = k;
  base.selection.max_k = sel == "top_k" ? 0 : k;
  base.selection.top_p = json_get_or<double>(r, "top_p", 0.8, origin);
  base.selection.dynk_tau = json_get_or<double>(r, "dynk_tau", 0.5, origin);
  base.selection.gate = moe::GateMode::UnitST;
  base.intermediate_size = inter;
  for (size_t i = 0; i < layers.size(); ++i) {
    MoeLayerRouting m = base;
    m.layer = static_cast<int>(layers[i]);
    m.expert_sizes = sizes[i];
    if (static_cast<int64_t>(m.expert_sizes.size()) != E)
      fail_file(origin, cat("expert_sizes of layer ", layers[i], " does not have num_experts entries"));
    out.push_back(std::move(m));
  }
  return out;
}

at::Tensor hemoe_layer_balance_loss(const at::Tensor& logits, const at::Tensor& valid, const MoeLayerRouting& r,
                                    double lambda, double scale) {
  auto [f, P] = routed_fraction_and_prob(logits, valid, r);
  std::vector<double> rv;
  for (int64_t s : r.expert_sizes) rv.push_back(static_cast<double>(s) / static_cast<double>(r.intermediate_size));
  at::Tensor rt = at::tensor(rv, at::kDouble).to(f.scalar_type());
  return (f * rt * P).sum() * (lambda * scale);
}

at::Tensor switch_layer_balance_loss(const at::Tensor& logits, const at::Tensor& valid, const MoeLayerRouting& r,
                                     double lambda) {
  auto [f, P] = routed_fraction_and_prob(logits, valid, r);
  return (f * P).sum() * (lambda * static_cast<double>(logits.size(1)));
}

bool is_router_param(const std::string& name) { return is_router_parameter(name); }

DecodedBatch decode_rows(const at::Tensor& windows) {
  const int64_t T = windows.size(1) - 1;
  at::Tensor w = windows.to(at::kLong);
  at::Tensor pad = w == static_cast<int64_t>(kPadToken);
  at::Tensor ids = at::where(w >= 0, w, -w - 1).masked_fill(pad, 0);
  DecodedBatch d;
  d.input_ids = ids.slice(1, 0, T).contiguous();
  if (pad.slice(1, 0, T).any().item<bool>()) d.attention = at::logical_not(pad.slice(1, 0, T)).to(at::kLong);
  at::Tensor tw = w.slice(1, 1, T + 1);
  d.targets = at::where(tw >= 0, tw, at::full_like(tw, -100)).contiguous();
  return d;
}

at::Tensor masked_lm_loss(const at::Tensor& logits, const at::Tensor& targets) {
  at::Tensor flat = logits.reshape({-1, logits.size(-1)}).to(at::kFloat);
  at::Tensor t = targets.reshape({-1});
  if (!(t != -100).any().item<bool>()) return flat.sum() * 0.0;
  return at::cross_entropy_loss(flat, t, {}, at::Reduction::Mean, -100);
}

// ---------------------------------------------------------------------------------------------
RecipeData load_recipe_data(const RouterRecipeConfig& config, const RecipeTokenizer& tok, int64_t vocab) {
  RecipeData d;
  std::vector<JsonlExample> train;
  for (const auto& f : config.train_files)
    for (auto& e : read_examples(f)) train.push_back(std::move(e));
  if (train.empty()) fail_file(config.train_files.front(), "no examples");
  for (const auto& e : train) d.sft |= e.sft;
  const bool rows = d.sft || !config.packing;
  auto check_vocab = [&](const std::vector<int32_t>& tokens, const std::string& what) {
    const int32_t m = max_id(tokens);
    if (m >= vocab) fail(cat(what, ": token id ", m, " outside the model vocabulary of ", vocab));
  };
  auto build = [&](const std::vector<JsonlExample>& exs, const std::string& what) {
    if (rows) {
      std::vector<int32_t> flat;
      Progress bar("tokenize " + what, static_cast<int64_t>(exs.size()), "ex");
      for (const auto& e : exs) {
        if (!make_row(e, tok, config.seq_len, flat)) ++d.dropped;
        bar.advance(1);
      }
      bar.finish();
      check_vocab(flat, what);
      return PackedSequences::from_rows(std::move(flat), config.seq_len);
    }
    std::vector<std::string> texts;
    for (const auto& e : exs) texts.push_back(e.text);
    auto encode = [&](const std::vector<std::string>& ts) {
      std::vector<std::vector<int32_t>> out;
      for (const auto& t : ts) out.push_back(tok.encode(t, true));
      return out;
    };
    std::vector<int32_t> stream = build_token_stream(texts, encode, tok.eos_id, "tokenize " + what);
    check_vocab(stream, what);
    return PackedSequences(std::move(stream), config.seq_len);
  };
  d.train = build(train, "train");
  if (d.train.size() == 0) fail_file(config.train_files.front(), "no training sequence (every example lacks a target within seq_len)");
  std::map<std::string, std::vector<JsonlExample>> by_domain;
  for (const auto& f : config.validation_files)
    for (auto& e : read_examples(f)) by_domain[e.domain].push_back(std::move(e));
  for (auto& [domain, exs] : by_domain) {
    PackedSequences p = build(exs, "validation " + domain);
    if (p.size() == 0) {
      log_warn("validation domain '", domain, "' has no complete sequence; not evaluated");
      continue;
    }
    d.validation.emplace_back(domain, std::move(p));
  }
  if (d.dropped > 0) log_warn(d.dropped, " examples have no target token within seq_len ", config.seq_len, "; skipped");
  return d;
}

// ---------------------------------------------------------------------------------------------
at::Tensor swiglu_expert_mass(const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w) {
  at::Tensor xf = x.to(at::kFloat);
  return (at::silu(at::linear(xf, gate_w.to(at::kFloat))) * at::linear(xf, up_w.to(at::kFloat))).abs().sum(1);
}

double topk_mass_recall(const at::Tensor& scores, const at::Tensor& mass, int64_t k) {
  at::Tensor idx = std::get<1>(scores.topk(k, 1));
  const double total = mass.sum().item<double>();
  return total > 0 ? mass.gather(1, idx).sum().item<double>() / total : 0.0;
}

namespace {

at::Tensor mlp_scores(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  at::Tensor xn = x / x.norm(2, 1, true).clamp_min(1e-12);
  return at::linear(at::tanh(at::linear(xn, w1)), w2);
}

at::Tensor batch_targets(const at::Tensor& mass) { return mass / std::get<0>(mass.max(0, true)).clamp_min(1e-12); }

}  // namespace

MlpRouterFit fit_mlp_router(at::Tensor& w1, at::Tensor& w2, const at::Tensor& x, const at::Tensor& mass, int64_t k,
                            const MlpRouterTrainOptions& options, uint64_t seed) {
  const int64_t n = x.size(0);
  if (n < 2) fail("mlp router: fewer than two tokens to fit on");
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[static_cast<size_t>(i)] = i;
  Rng rng(seed);
  for (size_t i = perm.size(); i > 1; --i) std::swap(perm[i - 1], perm[rng.below(i)]);
  const int64_t n_val = std::max<int64_t>(1, static_cast<int64_t>(std::floor(options.val_fraction * n)));
  const int64_t n_train = n - n_val;
  at::Tensor all = at::tensor(perm, at::kLong);
  at::Tensor xf = x.to(at::kFloat), mf_ = mass.to(at::kFloat);
  at::Tensor xt = xf.index_select(0, all.slice(0, 0, n_train)), mt = mf_.index_select(0, all.slice(0, 0, n_train));
  at::Tensor xv = xf.index_select(0, all.slice(0, n_train)), mv = mf_.index_select(0, all.slice(0, n_train));

  at::Tensor p1 = w1.detach().to(at::kFloat).clone().set_requires_grad(true);
  at::Tensor p2 = w2.detach().to(at::kFloat).clone().set_requires_grad(true);
  torch::optim::Adam adam({p1, p2}, torch::optim::AdamOptions(options.lr));
  auto val_recall = [&]() {
    at::NoGradGuard g;
    return topk_mass_recall(mlp_scores(xv, p1, p2), mv, k);
  };
  auto val_bce = [&]() {
    at::NoGradGuard g;
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t b = 0; b < xv.size(0); b += options.batch_tokens) {
      const int64_t e = std::min(xv.size(0), b + options.batch_tokens);
      at::Tensor s = mlp_scores(xv.slice(0, b, e), p1, p2);
      sum += at::binary_cross_entropy_with_logits(s, batch_targets(mv.slice(0, b, e))).item<double>() * (e - b);
      cnt += e - b;
    }
    return sum / static_cast<double>(cnt);
  };
  MlpRouterFit fit;
  fit.train_tokens = n_train;
  fit.val_tokens = n_val;
  fit.recall_before = fit.recall_after = val_recall();
  fit.val_bce = val_bce();
  at::Tensor best1 = p1.detach().clone(), best2 = p2.detach().clone();
  for (int64_t epoch = 1; epoch <= options.epochs; ++epoch) {
    std::vector<int64_t> order(static_cast<size_t>(n_train));
    for (int64_t i = 0; i < n_train; ++i) order[static_cast<size_t>(i)] = i;
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    at::Tensor ord = at::tensor(order, at::kLong);
    for (int64_t b = 0; b < n_train; b += options.batch_tokens) {
      at::Tensor idx = ord.slice(0, b, std::min(n_train, b + options.batch_tokens));
      at::Tensor s = mlp_scores(xt.index_select(0, idx), p1, p2);
      at::Tensor loss = at::binary_cross_entropy_with_logits(s, batch_targets(mt.index_select(0, idx)));
      adam.zero_grad();
      loss.backward();
      adam.step();
    }
    const double rec = val_recall();
    if (rec > fit.recall_after) {
      fit.recall_after = rec;
      fit.best_epoch = epoch;
      fit.val_bce = val_bce();
      best1 = p1.detach().clone();
      best2 = p2.detach().clone();
    }
  }
  at::NoGradGuard g;
  w1.copy_(best1.to(w1.scalar_type()));
  w2.copy_(best2.to(w2.scalar_type()));
  return fit;
}

// ---------------------------------------------------------------------------------------------
RouterRecipeResult run_router_recipe(const RouterRecipeConfig& config, const RecipeTokenizer* tokenizer) {
  RouterRecipeConfig cfg = config;
  TrainerOptions& opt = cfg.trainer;
  if (cfg.model_dir.empty()) fail_file(cfg.path, "no model (the MODEL argument or the key 'model')");
  if (opt.out_dir.empty()) fail_file(cfg.path, "no output directory (training.output_dir or --output)");
  if (cfg.tokenizer.empty()) cfg.tokenizer = cfg.model_dir;

  Checkpoint ck = Checkpoint::open(cfg.model_dir);
  const json& mcfg = ck.config();
  const std::vector<MoeLayerRouting> routing = moeforge_routing(mcfg, ck.config_path());
  const std::string router_type = routing.empty() ? "" : routing.front().router_type;
  const json router_json = mcfg.contains("router") ? mcfg["router"] : json::object();
  const std::string balance_name =
      !cfg.balance_loss.empty() ? cfg.balance_loss : json_get_or<std::string>(router_json, "aux_loss", "hemoe", ck.config_path());
  const BalanceLoss balance = balance_name == "hemoe"    ? BalanceLoss::Hemoe
                              : balance_name == "switch" ? BalanceLoss::Switch
                              : balance_name == "none"   ? BalanceLoss::None
                                                         : (fail_file(ck.config_path(), "unknown router.aux_loss '" + balance_name + "'"),
                                                            BalanceLoss::None);
  const double lambda =
      cfg.balance_coef >= 0 ? cfg.balance_coef : json_get_or<double>(router_json, "aux_loss_coef", 5e-4, ck.config_path());

  std::unique_ptr<Tokenizer> tok;
  RecipeTokenizer rtok;
  if (tokenizer) {
    rtok = *tokenizer;
  } else {
    tok = Tokenizer::load(cfg.tokenizer);
    const Tokenizer* tp = tok.get();
    rtok.encode = [tp](const std::string& s, bool special) { return tp->encode(s, special); };
    rtok.eos_id = tok->eos_id();
  }
  if (rtok.eos_id < 0) fail_file(cfg.tokenizer, "the tokenizer has no EOS token");

  seed_torch(opt.seed);
  std::shared_ptr<Model> model = Model::load(cfg.model_dir, {at::kFloat, at::kCPU});
  const int64_t vocab = model->config().vocab_size;
  RecipeData data = load_recipe_data(cfg, rtok, vocab);

  // max_steps from epochs (HF: optimizer steps per epoch x epochs, rounded up); warmup from ratio.
  if (cfg.epochs > 0) {
    const int64_t per_epoch = std::max<int64_t>(1, data.train.size() / opt.batch_size / opt.grad_accum);
    opt.max_steps = static_cast<int64_t>(std::ceil(cfg.epochs * static_cast<double>(per_epoch)));
  }
  if (!cfg.warmup_steps_given)
    opt.schedule.warmup_steps = static_cast<int64_t>(std::ceil(cfg.warmup_ratio * static_cast<double>(opt.max_steps)));
  if (opt.schedule.warmup_steps > opt.max_steps) fail_file(cfg.path, "training.warmup_steps exceeds the number of steps");

  // Trainable set: routers (+ LoRA); everything else frozen.
  int64_t router_params = 0;
  for (auto& p : model->named_parameters()) {
    const bool train = cfg.train_router && is_router_param(p.key());
    p.value().set_requires_grad(train);
    if (train) router_params += p.value().numel();
  }
  std::shared_ptr<LoraAdapters> lora;
  if (cfg.lora_enabled) lora = std::make_shared<LoraAdapters>(*model, cfg.lora);
  if (router_params == 0 && !lora)
    fail_file(cfg.model_dir,
              router_type == "avgk"
                  ? "nothing to train: avg-k (EMoE) gates are not trained by gradient; enable LoRA (lora.enabled)"
                  : "nothing to train: the model has no trainable router parameters and LoRA is off");
  if (router_params == 0 && !routing.empty() && router_type != "avgk")
    log_warn("router training is off; only LoRA adapters are trained");
  auto module = std::make_shared<RecipeModule>(model, lora);
  RouterRecipeResult result;
  result.trainable_router_params = router_params;
  result.lora_params = lora ? lora->param_count() : 0;
  log_info("router recipe: ", data.train.size(), " training sequences of ", cfg.seq_len + 1, " tokens (",
           data.sft ? "SFT, response tokens" : (cfg.packing ? "text, packed" : "text, one per sequence"), "), ",
           opt.max_steps, " steps, ", router_params, " router + ", result.lora_params, " LoRA parameters");

  const bool resuming = opt.resume && !latest_checkpoint(opt.out_dir).empty();

  // MoEfication MLP routers: offline BCE fit on FFN inputs, before gradient training.
  if (router_type == "mlp" && cfg.mlp.epochs > 0 && cfg.train_router && !resuming) {
    std::map<int, std::vector<at::Tensor>> xs;
    std::map<int, int64_t> have;
    int hid = model->hooks().add(HookPoint::ffn_input, [&](HookEvent& ev) {
      bool wanted = false;
      for (const auto& r : routing) wanted |= r.layer == ev.layer;
      if (!wanted || have[ev.layer] >= cfg.mlp.sample_tokens) return;
      at::Tensor x = ev.tensor.detach().to(at::kFloat);
      if (ev.valid.defined()) x = x.index({ev.valid});
      x = x.slice(0, 0, cfg.mlp.sample_tokens - have[ev.layer]).clone();
      have[ev.layer] += x.size(0);
      xs[ev.layer].push_back(x);
    });
    {
      at::NoGradGuard ng;
      model->eval();
      ShuffledBatches batches(data.train, 1, opt.seed);
      const int64_t want_windows = (cfg.mlp.sample_tokens + cfg.seq_len - 1) / cfg.seq_len;
      for (int64_t i = 0; i < std::min(want_windows, data.train.size()); ++i) {
        DecodedBatch b = decode_rows(batches.next());
        model->forward(b.input_ids, b.attention);
        if (have[routing.front().layer] >= cfg.mlp.sample_tokens) break;
      }
    }
    model->hooks().remove(hid);
    Progress bar("fit mlp routers", static_cast<int64_t>(routing.size()), "layer");
    for (const auto& r : routing) {
      at::Tensor x = at::cat(xs[r.layer], 0);
      const std::string pre = cat("model.layers.", r.layer, ".mlp.");
      std::vector<at::Tensor> masses;
      for (size_t e = 0; e < r.expert_sizes.size(); ++e) {
        const std::string ex = cat(pre, "experts.", e, ".");
        masses.push_back(swiglu_expert_mass(x, named_param(*model, ex + "gate_proj.weight").detach(),
                                            named_param(*model, ex + "up_proj.weight").detach()));
      }
      at::Tensor w1 = named_param(*model, pre + "router.0.weight"), w2 = named_param(*model, pre + "router.2.weight");
      MlpRouterFit fit = fit_mlp_router(w1, w2, x, at::stack(masses, 1), r.selection.k, cfg.mlp,
                                        opt.seed + static_cast<uint64_t>(r.layer));
      log_info("mlp router layer ", r.layer, ": top-", r.selection.k, " mass recall ", fit.recall_before, " -> ",
               fit.recall_after, " (best epoch ", fit.best_epoch, ")");
      result.mlp_fits.emplace_back(r.layer, fit);
      bar.advance(1);
    }
    bar.finish();
  }

  // Router logits of the current forward pass, from the hook (with autograd).
  struct Fired {
    int layer;
    at::Tensor logits, valid;
  };
  std::vector<Fired> fired;
  std::map<int, const MoeLayerRouting*> routing_of;
  for (const auto& r : routing) routing_of[r.layer] = &r;
  int hook_id = -1;
  if (balance != BalanceLoss::None && !routing.empty())
    hook_id = model->hooks().add(HookPoint::router_logits,
                                 [&](HookEvent& ev) { fired.push_back({ev.layer, ev.tensor, ev.valid}); });
  double lm_sum = 0, bal_sum = 0;
  int64_t micro = 0;
  auto loss_fn = [&](const at::Tensor& windows) {
    fired.clear();
    DecodedBatch b = decode_rows(windows);
    at::Tensor lm = masked_lm_loss(model->forward(b.input_ids, b.attention), b.targets);
    at::Tensor loss = lm;
    if (module->is_training()) {
      double bal_value = 0;
      for (const auto& f : fired) {
        auto it = routing_of.find(f.layer);
        if (it == routing_of.end() || !f.logits.requires_grad()) continue;
        at::Tensor bl;
        if (balance == BalanceLoss::Hemoe) {
          const double scale = cfg.balance_scale == BalanceScale::Tokens ? static_cast<double>(b.input_ids.numel())
                                                                         : static_cast<double>(f.logits.size(1));
          bl = hemoe_layer_balance_loss(f.logits, f.valid, *it->second, lambda, scale);
        } else {
          bl = switch_layer_balance_loss(f.logits, f.valid, *it->second, lambda);
        }
        loss = loss + bl;
        bal_value += bl.item<double>();
      }
      lm_sum += lm.item<double>();
      bal_sum += bal_value;
      ++micro;
    }
    fired.clear();
    return loss;
  };
  // EMoE avg-k gates follow the (possibly LoRA-adapted) experts after every update.
  opt.after_step = [&](int64_t) { model->after_optimizer_step(); };
  opt.step_metrics = [&]() {
    std::map<std::string, double> m = {{"lm_loss", micro ? lm_sum / micro : 0.0},
                                       {"balance_loss", micro ? bal_sum / micro : 0.0}};
    lm_sum = bal_sum = 0;
    micro = 0;
    return m;
  };

  if (opt.max_steps > 0) {
    result.train = train_loop(*module, loss_fn, data.train, data.validation, opt);
    if (opt.stop_after_step >= 0 && result.train.steps < opt.max_steps) {
      if (hook_id >= 0) model->hooks().remove(hook_id);
      return result;
    }
  }
  if (hook_id >= 0) model->hooks().remove(hook_id);

  // Final model: LoRA merged, every tensor in the dtype it had in the input.
  if (lora) lora->merge();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& [name, t] : model->hf_tensors()) {
    at::ScalarType dt = ck.contains(name) ? st_to_torch(ck.info(name).dtype) : t.scalar_type();
    tensors.emplace_back(name, t.detach().to(dt).contiguous());
  }
  result.final_dir = path_join(opt.out_dir, "final");
  SaveOptions so;
  if (is_directory(cfg.tokenizer)) so.copy_aux_from = cfg.tokenizer;
  save_checkpoint(result.final_dir, mcfg, tensors, so);
  json record = {{"recipe", "router"},
                 {"config", cfg.path},
                 {"model", cfg.model_dir},
                 {"steps", result.train.steps},
                 {"final_loss", result.train.last_loss},
                 {"val_loss", result.train.val_loss},
                 {"balance_loss", balance_name},
                 {"balance_coef", lambda},
                 {"router_params", router_params},
                 {"lora_params", result.lora_params},
                 {"train_sequences", data.train.size()},
                 {"sft", data.sft},
                 {"inputs", json::array()}};
  for (const auto& [layer, fit] : result.mlp_fits)
    record["mlp_router"].push_back({{"layer", layer},
                                    {"recall_before", fit.recall_before},
                                    {"recall_after", fit.recall_after},
                                    {"best_epoch", fit.best_epoch},
                                    {"val_bce", fit.val_bce}});
  for (const auto& f : cfg.train_files) record["inputs"].push_back({{"path", f}, {"sha256", sha256_file(f)}});
  write_json_file(path_join(result.final_dir, "train_record.json"), record);
  return result;
}

}  // namespace mf
