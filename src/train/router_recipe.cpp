#include "train/router_recipe.h"

#include <algorithm>
#include <cmath>

#include "io/checkpoint.h"
#include "model/hypermoe_ffn.h"
#include "model/layers.h"
#include "model/load.h"
#include "model/moe_ffn.h"
#include "moe/routers/mlp_router.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

namespace {

struct RecipeModule : torch::nn::Module {
  RecipeModule(std::shared_ptr<Model> m, std::shared_ptr<LoraAdapters> l) : model(m), lora(l) {
    register_module("model", model);
    if (lora) register_module("lora", lora);
  }
  std::shared_ptr<Model> model;
  std::shared_ptr<LoraAdapters> lora;
};

// The MoE blocks of a model with their layer index.
std::vector<std::pair<int, std::shared_ptr<MoeFFN>>> moe_blocks(const Model& m) {
  std::vector<std::pair<int, std::shared_ptr<MoeFFN>>> v;
  for (int64_t l = 0; l < m.config().num_layers; ++l)
    if (auto b = std::dynamic_pointer_cast<MoeFFN>(m.ffn(l))) v.emplace_back(static_cast<int>(l), b);
  return v;
}

// MoEfication MLP routers: offline BCE fit on FFN inputs sampled from the training data.
void fit_mlp_routers(Model& model, const std::vector<std::pair<int, std::shared_ptr<MoeFFN>>>& blocks,
                     const RouterRecipeConfig& cfg, const RecipeData& data, RouterRecipeResult& result) {
  const TrainerOptions& opt = cfg.trainer;
  std::map<int, std::vector<at::Tensor>> xs;
  std::map<int, int64_t> have;
  int hid = model.hooks().add(HookPoint::ffn_input, [&](HookEvent& ev) {
    bool wanted = false;
    for (const auto& b : blocks) wanted |= b.first == ev.layer;
    if (!wanted || have[ev.layer] >= cfg.mlp.sample_tokens) return;
    at::Tensor x = ev.tensor.detach().to(at::kFloat);
    if (ev.valid.defined()) x = x.index({ev.valid});
    x = x.slice(0, 0, cfg.mlp.sample_tokens - have[ev.layer]).clone();
    have[ev.layer] += x.size(0);
    xs[ev.layer].push_back(x);
  });
  {
    at::NoGradGuard ng;
    model.eval();
    ShuffledBatches batches(data.train, 1, opt.seed);
    const int64_t want_windows = (cfg.mlp.sample_tokens + cfg.seq_len - 1) / cfg.seq_len;
    for (int64_t i = 0; i < std::min(want_windows, data.train.size()); ++i) {
      DecodedBatch b = decode_rows(batches.next());
      model.forward(b.input_ids, b.attention);
      if (have[blocks.front().first] >= cfg.mlp.sample_tokens) break;
    }
  }
  model.hooks().remove(hid);
  Progress bar("fit mlp routers", static_cast<int64_t>(blocks.size()), "layer");
  for (const auto& [layer, block] : blocks) {
    auto* router = dynamic_cast<moe::MlpRouterImpl*>(block->router.get());
    if (!router) continue;
    at::Tensor x = at::cat(xs[layer], 0);
    std::vector<at::Tensor> masses;
    for (const auto& ex : block->experts)
      masses.push_back(swiglu_expert_mass(x, ex->gate->weight.detach(), ex->up->weight.detach()));
    at::Tensor w1 = router->w1(), w2 = router->w2();
    const int64_t k = router->selection().k;
    MlpRouterFit fit = fit_mlp_router(w1, w2, x, at::stack(masses, 1), k, cfg.mlp, opt.seed + static_cast<uint64_t>(layer));
    log_info("mlp router layer ", layer, ": top-", k, " mass recall ", fit.recall_before, " -> ", fit.recall_after,
             " (best epoch ", fit.best_epoch, ")");
    result.mlp_fits.emplace_back(layer, fit);
    bar.advance(1);
  }
  bar.finish();
}

const char* aux_loss_name(MoeAuxLossConfig::Kind k) {
  switch (k) {
    case MoeAuxLossConfig::Kind::Hemoe: return "hemoe";
    case MoeAuxLossConfig::Kind::Switch: return "switch";
    case MoeAuxLossConfig::Kind::LoadBalancing: return "load_balancing";
    case MoeAuxLossConfig::Kind::Shazeer: return "shazeer";
    case MoeAuxLossConfig::Kind::None: return "none";
  }
  return "none";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
RouterRecipeResult run_router_recipe(const RouterRecipeConfig& config, const RecipeTokenizer* tokenizer) {
  RouterRecipeConfig cfg = config;
  TrainerOptions& opt = cfg.trainer;
  if (cfg.model_dir.empty()) fail_file(cfg.path, "no model (the MODEL argument or the key 'model')");
  if (opt.out_dir.empty()) fail_file(cfg.path, "no output directory (training.output_dir or --output)");
  if (cfg.tokenizer.empty()) cfg.tokenizer = cfg.model_dir;

  Checkpoint ck = Checkpoint::open(cfg.model_dir);
  const json& mcfg = ck.config();
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
  // --hypermoe: HyperMoE tensors start fresh (seeded) when the model has none.
  json out_config = mcfg;
  const json overrides =
      cfg.hypermoe ? hypermoe_config_overrides(parse_model_config(mcfg, ck.config_path())) : json::object();
  for (auto it = overrides.begin(); it != overrides.end(); ++it) out_config[it.key()] = it.value();
  std::shared_ptr<Model> model = load_model_with_overrides(cfg.model_dir, {at::kFloat, at::kCPU}, overrides);
  const int64_t vocab = model->config().vocab_size;
  RecipeData data = load_recipe_data(cfg, rtok, vocab);

  // max_steps from epochs (HF: optimizer steps per epoch x epochs, rounded up); warmup from ratio.
  if (cfg.epochs > 0) {
    const int64_t per_epoch =
        std::max<int64_t>(1, data.train.size() / (opt.batch_size * opt.world_size) / opt.grad_accum);
    opt.max_steps = static_cast<int64_t>(std::ceil(cfg.epochs * static_cast<double>(per_epoch)));
  }
  if (!cfg.warmup_steps_given)
    opt.schedule.warmup_steps = static_cast<int64_t>(std::ceil(cfg.warmup_ratio * static_cast<double>(opt.max_steps)));
  if (opt.schedule.warmup_steps > opt.max_steps) fail_file(cfg.path, "training.warmup_steps exceeds the number of steps");

  // Balance loss: the MoE blocks' own (config.json: the moeforge router's aux_loss and
  // aux_loss_coef, HF families' router_aux_loss_coef) unless the recipe config overrides it.
  const auto blocks = moe_blocks(*model);
  const std::string router_type = blocks.empty() ? "" : blocks.front().second->spec().router_type;
  for (auto& [layer, block] : blocks) {
    MoeAuxLossConfig& a = block->aux_config();
    if (!cfg.balance_loss.empty()) a.kind = parse_aux_loss_kind(cfg.balance_loss);
    if (cfg.balance_coef >= 0) a.coef = cfg.balance_coef;
    a.scale_by_tokens = cfg.balance_scale == BalanceScale::Tokens;
  }
  const std::string balance_name = blocks.empty() ? "none" : aux_loss_name(blocks.front().second->spec().aux.kind);
  const double lambda = blocks.empty() ? 0.0 : blocks.front().second->spec().aux.coef;

  // Trainable set: routers (+ LoRA, + HyperMoE); everything else frozen.
  int64_t router_params = 0, hyper_params = 0;
  for (auto& p : model->named_parameters()) {
    const bool router = cfg.train_router && is_router_parameter(p.key());
    const bool hyper = cfg.hypermoe && is_hypermoe_tensor(p.key());
    p.value().set_requires_grad(router || hyper);
    if (router) router_params += p.value().numel();
    if (hyper) hyper_params += p.value().numel();
  }
  std::shared_ptr<LoraAdapters> lora;
  if (cfg.lora_enabled) lora = std::make_shared<LoraAdapters>(*model, cfg.lora);
  if (router_params == 0 && hyper_params == 0 && !lora)
    fail_file(cfg.model_dir,
              router_type == "avgk"
                  ? "nothing to train: avg-k (EMoE) gates are not trained by gradient; enable LoRA (lora.enabled)"
                  : "nothing to train: the model has no trainable router parameters and LoRA is off");
  if (router_params == 0 && !blocks.empty() && router_type != "avgk")
    log_warn("router training is off; only LoRA adapters are trained");
  auto module = std::make_shared<RecipeModule>(model, lora);
  RouterRecipeResult result;
  result.trainable_router_params = router_params;
  result.lora_params = lora ? lora->param_count() : 0;
  result.hypermoe_params = hyper_params;
  log_info("router recipe: ", data.train.size(), " training sequences of ", cfg.seq_len + 1, " tokens (",
           data.sft ? "SFT, response tokens" : (cfg.packing ? "text, packed" : "text, one per sequence"), "), ",
           opt.max_steps, " steps, ", router_params, " router + ", result.lora_params, " LoRA parameters");

  if (cfg.expert_parallel) cfg.expert_parallel(*module, opt);
  const bool resuming = opt.resume && !latest_checkpoint(opt.out_dir).empty();

  // MoEfication MLP routers: offline BCE fit on FFN inputs, before gradient training.
  if (router_type == "mlp" && cfg.mlp.epochs > 0 && cfg.train_router && !resuming)
    fit_mlp_routers(*model, blocks, cfg, data, result);

  // Loss = LM loss + the auxiliary losses the MoE blocks report for the same forward.
  double lm_sum = 0;
  int64_t micro = 0;
  auto loss_fn = [&](const at::Tensor& windows) {
    DecodedBatch b = decode_rows(windows);
    // Data parallel: SFT rows hold different numbers of target tokens, so each rank divides by
    // the ranks' mean count (one all-reduce of a scalar), not its own: W ranks x b = 1 x W*b.
    double per_rank = 0.0;
    if (opt.average_over_ranks) {
      std::vector<double> count{(b.targets != -100).sum().item<double>()};
      opt.average_over_ranks(count);
      per_rank = count[0];
    }
    at::Tensor lm = masked_lm_loss(model->forward(b.input_ids, b.attention), b.targets, per_rank);
    if (module->is_training()) {
      lm_sum += lm.item<double>();
      ++micro;
    }
    return lm;
  };
  opt.targets_in = [](const at::Tensor& windows) {
    return (decode_rows(windows).targets != -100).sum().item<double>();
  };
  opt.loss_terms.push_back({"balance_loss", [&] { return model->aux_loss(); }});
  // EMoE avg-k gates follow the (possibly LoRA-adapted) experts after every update.
  opt.after_step = [&](int64_t) { model->after_optimizer_step(); };
  opt.step_metrics = [&]() {
    std::vector<double> lm{micro ? lm_sum / micro : 0.0};
    if (opt.average_over_ranks) opt.average_over_ranks(lm);  // the global batch's, as "loss"
    std::map<std::string, double> m = {{"lm_loss", lm[0]}};
    lm_sum = 0;
    micro = 0;
    return m;
  };

  if (opt.max_steps > 0) {
    result.train = train_loop(*module, loss_fn, data.train, data.validation, opt);
    if (opt.stop_after_step >= 0 && result.train.steps < opt.max_steps) return result;
  }

  result.final_dir = path_join(opt.out_dir, "final");
  // Final model: LoRA merged, every tensor in the dtype it had in the input. With expert
  // parallelism every rank merges its experts' adapters and the experts are gathered to rank 0
  // (the trained module's names are the model's under "model.").
  if (lora) lora->merge();
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (auto& [name, t] : model->hf_tensors()) named.emplace_back("model." + name, t);
  if (opt.complete_tensors) opt.complete_tensors(named, {""});
  if (!opt.is_writer()) return result;  // data parallel: rank 0 writes the model
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& [prefixed, t] : named) {
    const std::string name = prefixed.substr(6);
    at::ScalarType dt = ck.contains(name) ? st_to_torch(ck.info(name).dtype) : t.scalar_type();
    tensors.emplace_back(name, t.detach().to(dt).contiguous());
  }
  SaveOptions so;
  if (is_directory(cfg.tokenizer)) so.copy_aux_from = cfg.tokenizer;
  save_checkpoint(result.final_dir, out_config, tensors, so);
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
                 {"hypermoe_params", result.hypermoe_params},
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
