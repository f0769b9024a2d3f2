#include "train/lora_moe_recipe.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "eval/evaluate.h"
#include "eval/mlora_protocol.h"
#include "eval/model_scorer.h"
#include "eval/registry.h"
#include "eval/yaml_task.h"
#include "model/config.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "train/lora_moe_adapter.h"
#include "train/peft.h"
#include "train/recipe_data.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

namespace {

struct TaskItems {
  std::string task;
  std::vector<McItem> train, validation, test;
};

// GMoE's running expert counts as buffers, so that checkpoints carry them (the blocks keep them
// outside their tensors, as the reference does): copied in after every optimizer step, back into
// the blocks before the first forward of a (resumed) run.
struct BalanceCounts : torch::nn::Module {
  explicit BalanceCounts(const std::vector<std::shared_ptr<LoraMoeFFN>>& blocks) : blocks(blocks) {
    for (size_t i = 0; i < blocks.size(); ++i)
      counts.push_back(register_buffer(cat("layer_", i), at::zeros({blocks[i]->num_experts()})));
  }
  void save() {
    at::NoGradGuard ng;
    for (size_t i = 0; i < blocks.size(); ++i)
      if (blocks[i]->balance_counts().defined()) counts[i].copy_(blocks[i]->balance_counts());
  }
  void restore() {
    for (size_t i = 0; i < blocks.size(); ++i) blocks[i]->set_balance_counts(counts[i]);
  }
  std::vector<std::shared_ptr<LoraMoeFFN>> blocks;
  std::vector<at::Tensor> counts;
};

struct RecipeModule : torch::nn::Module {
  RecipeModule(std::shared_ptr<Model> m, std::shared_ptr<LoraAdapters> l, std::shared_ptr<BalanceCounts> c)
      : model(m), lora(l), counts(c) {
    register_module("model", model);
    if (lora) register_module("lora", lora);
    if (counts) register_module("gmoe_counts", counts);
  }
  std::shared_ptr<Model> model;
  std::shared_ptr<LoraAdapters> lora;
  std::shared_ptr<BalanceCounts> counts;
};

// n items spread evenly over the split (item floor(i N / n)), so that a subset of a file sorted
// by id (the reference corpus's) still covers all of it; all of them when n is 0 or >= N.
std::vector<McItem> spread_subset(std::vector<McItem> v, int64_t n) {
  const auto N = static_cast<int64_t>(v.size());
  if (n <= 0 || n >= N) return v;
  std::vector<McItem> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(std::move(v[static_cast<size_t>(i * N / n)]));
  return out;
}

McScore score_of(int64_t correct, int64_t n) {
  McScore s;
  s.n = n;
  s.acc = n > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
  s.stderr = n > 1 ? std::sqrt(s.acc * (1.0 - s.acc) / static_cast<double>(n - 1)) : 0.0;
  return s;
}

// Examples travel through train_loop as rows of the recipe_data encoding (a target token v >= 0,
// an input-only token -1 - v, padding kPadToken) and become mc_batch batches in the loss.
PackedSequences example_rows(const std::vector<McExample>& examples, int64_t width) {
  std::vector<int32_t> rows;
  rows.reserve(examples.size() * static_cast<size_t>(width));
  for (const auto& e : examples) {
    for (size_t i = 0; i < e.ids.size(); ++i) {
      const auto id = static_cast<int32_t>(e.ids[i]);
      rows.push_back(e.loss_mask[i] ? id : -1 - id);
    }
    rows.insert(rows.end(), static_cast<size_t>(width) - e.ids.size(), kPadToken);
  }
  return PackedSequences::from_rows(std::move(rows), width - 1);
}

std::vector<McExample> examples_of_rows(const at::Tensor& windows) {
  at::Tensor w = windows.to(at::kLong).contiguous();
  const int64_t B = w.size(0), W = w.size(1);
  const int64_t* p = w.data_ptr<int64_t>();
  std::vector<McExample> out(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < W; ++i) {
      const int64_t v = p[b * W + i];
      if (v == static_cast<int64_t>(kPadToken)) break;
      out[b].ids.push_back(v >= 0 ? v : -1 - v);
      out[b].loss_mask.push_back(v >= 0 ? 1 : 0);
    }
  return out;
}

json score_json(const McScore& s) { return {{"acc", s.acc}, {"acc_stderr", s.stderr}, {"n", s.n}}; }

json run_json(const LoraMoeRun& r, const LoraMoeRecipeConfig& cfg) {
  json j = {{"seed", r.seed},
            {"routing", cfg.routing},
            {"steps", r.train.steps},
            {"final_loss", r.train.last_loss},
            {"tokens_per_s", r.train.tokens_per_s},
            {"trainable_params", r.trainable_params},
            {"best_step", r.best_step},
            {"best_val_accuracy", r.best_val_accuracy},
            {"adapter", r.adapter_dir},
            {"val_history", json::array()},
            {"test", json::object()}};
  for (const auto& [step, acc] : r.val_history) j["val_history"].push_back({{"step", step}, {"accuracy", acc}});
  for (const auto& [task, s] : r.test_mlora) j["test"][task]["mlora"] = score_json(s);
  for (const auto& [task, s] : r.test_lm_eval) j["test"][task]["lm_eval"] = score_json(s);
  return j;
}

LoraMoeRun run_from_json(const json& j, const std::string& origin) {
  LoraMoeRun r;
  try {
    r.seed = j.at("seed").get<uint64_t>();
    r.train.steps = j.at("steps").get<int64_t>();
    r.train.last_loss = j.at("final_loss").get<double>();
    r.train.tokens_per_s = j.at("tokens_per_s").get<double>();
    r.trainable_params = j.at("trainable_params").get<int64_t>();
    r.best_step = j.at("best_step").get<int64_t>();
    r.best_val_accuracy = j.at("best_val_accuracy").get<double>();
    r.adapter_dir = j.at("adapter").get<std::string>();
    for (const auto& v : j.at("val_history")) r.val_history.emplace_back(v.at("step").get<int64_t>(), v.at("accuracy").get<double>());
    for (auto it = j.at("test").begin(); it != j.at("test").end(); ++it)
      for (const char* proto : {"mlora", "lm_eval"})
        if (it->contains(proto)) {
          const json& s = it->at(proto);
          McScore m{s.at("n").get<int64_t>(), s.at("acc").get<double>(), s.at("acc_stderr").get<double>()};
          (std::string(proto) == "mlora" ? r.test_mlora : r.test_lm_eval)[it.key()] = m;
        }
  } catch (const json::exception& e) {
    fail_file(origin, std::string("not a results file of this recipe: ") + e.what());
  }
  return r;
}

class Recipe {
 public:
  explicit Recipe(const LoraMoeRecipeConfig& cfg) : cfg_(cfg) {
    if (cfg_.model_dir.empty()) fail_file(cfg_.path, "no model (the MODEL argument or the key 'model')");
    if (cfg_.trainer.out_dir.empty()) fail_file(cfg_.path, "no output directory (training.output_dir or --output)");
    model_cfg_ = read_model_config(path_join(cfg_.model_dir, "config.json"));
    if (!plain()) {
      try {
        lora_moe_layer_experts(cfg_.moe, model_cfg_.num_layers);  // MoLA's list: one entry per layer
      } catch (const Error& e) {
        fail_file(cfg_.path, e.what());
      }
    }
    tok_ = Tokenizer::load(cfg_.model_dir);
    encode_ = mc_encoder(*tok_);
    pad_id_ = mlora_pad_id(*tok_);
    registry_ = eval::TaskRegistry::builtin();
    for (const auto& y : cfg_.include)
      for (auto& t : eval::load_yaml_tasks(y)) registry_.add_task(std::move(t));
    for (const auto& name : cfg_.tasks)
      for (const auto& leaf : registry_.expand(name)) {
        const eval::TaskDef* def = registry_.find_task(leaf);
        TaskItems t;
        t.task = leaf;
        t.train = spread_subset(mc_items(*def, McSplit::Train, cfg_.data_dir, cfg_.split_policy), cfg_.max_train_items);
        t.validation =
            spread_subset(mc_items(*def, McSplit::Validation, cfg_.data_dir, cfg_.split_policy), cfg_.max_validation_items);
        t.test = mc_items(*def, McSplit::Test, cfg_.data_dir, cfg_.split_policy);
        // The first ones, as lm-eval's --limit takes them, so both protocols score the same items.
        if (cfg_.max_test_items > 0 && static_cast<int64_t>(t.test.size()) > cfg_.max_test_items)
          t.test.resize(static_cast<size_t>(cfg_.max_test_items));
        for (const auto* part : {&t.train, &t.validation, &t.test})
          if (part->empty()) fail_file(cfg_.data_dir, "task '" + leaf + "' has an empty split");
        tasks_.push_back(std::move(t));
      }
    // Every example as a row of the widest one (train and validation alike).
    for (const auto& t : tasks_) {
      for (const auto& it : t.train) train_examples_.push_back(mc_example(it, encode_, cfg_.sft));
      std::vector<McExample> val;
      for (const auto& it : t.validation) val.push_back(mc_example(it, encode_, cfg_.sft));
      val_examples_.emplace_back(t.task, std::move(val));
    }
    int64_t width = 2;
    for (const auto& e : train_examples_) width = std::max<int64_t>(width, static_cast<int64_t>(e.ids.size()));
    for (const auto& [task, v] : val_examples_)
      for (const auto& e : v) width = std::max<int64_t>(width, static_cast<int64_t>(e.ids.size()));
    if (width > model_cfg_.max_position_embeddings)
      log_warn("the longest example has ", width, " tokens, more than the model's context of ",
               model_cfg_.max_position_embeddings, " (lower data.cutoff_len)");
    train_rows_ = example_rows(train_examples_, width);
    for (const auto& [task, v] : val_examples_) val_rows_.emplace_back(task, example_rows(v, width));
    if (train_rows_.size() < cfg_.trainer.batch_size)
      fail_file(cfg_.path, cat("training.batch_size ", cfg_.trainer.batch_size, " exceeds the ", train_rows_.size(),
                               " training items"));
  }

  LoraMoeRun run(uint64_t seed);
  const std::vector<TaskItems>& tasks() const { return tasks_; }

 private:
  bool plain() const { return cfg_.routing == "lora"; }
  std::shared_ptr<Model> load_base() const {
    LoadOptions lo;
    lo.dtype = cfg_.base_dtype == "bf16" ? at::kBFloat16 : at::kFloat;
    return Model::load(cfg_.model_dir, lo);
  }
  double validate(Model& model) const;
  void save_adapter(const std::string& dir, Model& model, const LoraAdapters* lora, const json& meta) const;
  void test(LoraMoeRun& run) const;

  LoraMoeRecipeConfig cfg_;
  ModelConfig model_cfg_;
  std::unique_ptr<Tokenizer> tok_;
  McEncodeFn encode_;
  int32_t pad_id_ = 0;
  eval::TaskRegistry registry_;
  std::vector<TaskItems> tasks_;
  std::vector<McExample> train_examples_;
  std::vector<std::pair<std::string, std::vector<McExample>>> val_examples_;
  PackedSequences train_rows_;
  std::vector<std::pair<std::string, PackedSequences>> val_rows_;
};

// mLoRA's accuracy on every task's validation items; their mean selects the checkpoint.
double Recipe::validate(Model& model) const {
  eval::MloraEvalOptions eo;
  eo.batch_size = cfg_.eval_batch_size;
  eo.max_seq_len = cfg_.sft.cutoff_len;
  double sum = 0;
  for (const auto& t : tasks_) sum += eval::mlora_evaluate(model, *tok_, t.validation, eo).accuracy();
  return sum / static_cast<double>(tasks_.size());
}

void Recipe::save_adapter(const std::string& dir, Model& model, const LoraAdapters* lora, const json& meta) const {
  if (plain()) {
    save_peft_adapter(*lora, dir, cfg_.model_dir);
    write_json_file(path_join(dir, "selection.json"), meta);  // after the adapter: it names what is there
  } else {
    save_lora_moe_adapter(dir, model, cfg_.moe, lora, meta);
  }
}

// The saved best adapter on a fresh base model, scored on every task's test items.
void Recipe::test(LoraMoeRun& run) const {
  std::shared_ptr<Model> model = load_base();
  std::shared_ptr<LoraAdapters> peft;
  LoadedLoraMoe loaded;
  if (plain()) peft = load_peft_adapter(*model, run.adapter_dir);
  else loaded = load_lora_moe_adapter(run.adapter_dir, *model);
  eval::MloraEvalOptions eo;
  eo.batch_size = cfg_.eval_batch_size;
  eo.max_seq_len = cfg_.sft.cutoff_len;
  for (const auto& t : tasks_) {
    const eval::MloraEvalResult r = eval::mlora_evaluate(*model, *tok_, t.test, eo);
    run.test_mlora[t.task] = score_of(r.correct, r.total);
  }
  if (!cfg_.lm_eval_protocol) return;
  // lm-eval scores the task's own evaluation file (its test split, else validation), the first
  // max_test_items documents of it.
  eval::TokenizerEncoder encoder(*tok_);
  eval::TransformerScorer scorer(model);
  eval::EvalOptions opt;
  opt.data_dir = cfg_.data_dir;
  opt.limit = cfg_.max_test_items > 0 ? static_cast<double>(cfg_.max_test_items) : -1.0;
  opt.engine.progress = false;
  std::vector<std::string> names;
  for (const auto& t : tasks_) names.push_back(t.task);
  const eval::EvalReport report = eval::evaluate(registry_, names, encoder, scorer, opt);
  if (!report.failures.empty()) fail(report.failures.front().message);
  for (const auto& res : report.results) {
    const eval::MetricResult* acc = res.find("acc");
    if (res.is_group || !acc) continue;
    run.test_lm_eval[res.name] = McScore{res.samples, acc->value, acc->stderr};
  }
}

LoraMoeRun Recipe::run(uint64_t seed) {
  LoraMoeRun run;
  run.seed = seed;
  run.dir = path_join(cfg_.trainer.out_dir, cat("seed-", seed));
  run.adapter_dir = path_join(run.dir, "best");
  const std::string results_path = path_join(run.dir, "results.json");
  if (path_exists(results_path)) {
    log_info("seed ", seed, ": done earlier, reading ", results_path);
    LoraMoeRun done = run_from_json(read_json_file(results_path), results_path);
    done.dir = run.dir;
    done.finished = true;
    return done;
  }

  TrainerOptions opt = cfg_.trainer;
  opt.seed = seed;
  opt.out_dir = run.dir;
  if (cfg_.epochs > 0) {
    const int64_t per_epoch = std::max<int64_t>(1, train_rows_.size() / opt.batch_size / opt.grad_accum);
    opt.max_steps = static_cast<int64_t>(std::ceil(cfg_.epochs * static_cast<double>(per_epoch)));
  }
  opt.schedule.max_steps = opt.max_steps;
  const int64_t validate_every = opt.eval_every;
  opt.eval_every = 0;  // the loop's validation loss once, at the end; selection is by accuracy below

  seed_torch(seed);
  std::shared_ptr<Model> model = load_base();
  if (plain()) {
    for (auto& p : model->parameters()) p.set_requires_grad(false);
  } else {
    convert_to_lora_moe(*model, cfg_.moe, seed);
  }
  std::shared_ptr<LoraAdapters> lora;
  if (cfg_.attention_lora) {
    LoraOptions lo = cfg_.lora;
    lo.seed = seed;
    lora = std::make_shared<LoraAdapters>(*model, lo);
  }
  std::vector<std::shared_ptr<LoraMoeFFN>> blocks;
  for (int64_t l = 0; l < model->config().num_layers; ++l)
    if (auto b = std::dynamic_pointer_cast<LoraMoeFFN>(model->ffn(l))) blocks.push_back(b);
  auto counts = cfg_.moe.routing == "gmoe" && !plain() ? std::make_shared<BalanceCounts>(blocks) : nullptr;
  auto module = std::make_shared<RecipeModule>(model, lora, counts);
  for (const auto& p : module->parameters())
    if (p.requires_grad()) run.trainable_params += p.numel();
  log_info("lora-moe recipe, seed ", seed, ": ", cfg_.routing, ", ", train_rows_.size(), " training items, ",
           opt.max_steps, " steps, ", run.trainable_params, " trainable parameters");

  bool first_forward = true;
  auto loss_fn = [&](const at::Tensor& windows) {
    if (first_forward && counts) counts->restore();  // zeros, or a checkpoint's counts
    first_forward = false;
    DecodedBatch b = mc_batch(examples_of_rows(windows), pad_id_, cfg_.sft);
    if (cfg_.moe.routing == "mixlora-switch" && !plain())  // mLoRA's capacity counts per sequence
      for (auto& blk : blocks) blk->set_capacity_group(b.input_ids.size(1));
    return masked_lm_loss(model->forward(b.input_ids, b.attention), b.targets);
  };
  opt.targets_in = [&](const at::Tensor& windows) {
    return (mc_batch(examples_of_rows(windows), pad_id_, cfg_.sft).targets != -100).sum().item<double>();
  };
  if (!plain()) opt.loss_terms.push_back({"aux_loss", [&] { return model->aux_loss(); }});
  if (!plain() && cfg_.moe.reference_compat && cfg_.moe.routing == "gmoe")
    opt.loss_terms.push_back({"normal_loss_reference", [&] { return lora_moe_reference_normal_loss(*model); }});

  // Resumed run: the best so far is what RUN/best records.
  const std::string record_path = path_join(run.dir, "selection.json");
  if (path_exists(record_path) && path_exists(run.adapter_dir)) {
    const json rec = read_json_file(record_path);
    run.best_step = json_get<int64_t>(rec, "best_step", record_path);
    run.best_val_accuracy = json_get<double>(rec, "best_val_accuracy", record_path);
    for (const auto& v : rec.at("val_history"))
      run.val_history.emplace_back(v.at("step").get<int64_t>(), v.at("accuracy").get<double>());
  }
  opt.after_step = [&](int64_t step) {
    if (counts) counts->save();  // before the loop writes this step's checkpoint
    if (!(validate_every > 0 && step % validate_every == 0) && step != opt.max_steps) return;
    const double acc = validate(*model);
    run.val_history.emplace_back(step, acc);
    log_info("step ", step, ": validation accuracy ", acc);
    json rec = {{"best_step", run.best_step}, {"best_val_accuracy", run.best_val_accuracy}, {"val_history", json::array()}};
    if (acc > run.best_val_accuracy) {
      run.best_val_accuracy = acc;
      run.best_step = step;
      rec["best_step"] = step;
      rec["best_val_accuracy"] = acc;
      save_adapter(run.adapter_dir, *model, lora.get(), {{"seed", seed}, {"step", step}, {"val_accuracy", acc}});
    }
    for (const auto& [s, a] : run.val_history) rec["val_history"].push_back({{"step", s}, {"accuracy", a}});
    write_json_file(record_path, rec);
  };

  run.train = train_loop(*module, loss_fn, train_rows_, val_rows_, opt);
  if (opt.stop_after_step >= 0 && run.train.steps < opt.max_steps) return run;
  if (!path_exists(run.adapter_dir)) fail_file(run.dir, "no validated adapter (best/) after training");
  module.reset();
  lora.reset();
  model.reset();
  test(run);
  write_json_file(results_path, run_json(run, cfg_));
  run.finished = true;
  return run;
}

// Mean and sample standard deviation (n - 1) of the seeds' values; std 0 for one seed.
json mean_std(const std::vector<double>& v) {
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  const double sd = v.size() > 1 ? std::sqrt(ss / static_cast<double>(v.size() - 1)) : 0.0;
  return {{"mean", mean}, {"std", sd}, {"values", v}};
}

json summarize(const LoraMoeRecipeConfig& cfg, const std::vector<LoraMoeRun>& runs, const std::vector<TaskItems>& tasks) {
  json s = {{"recipe", "lora-moe"}, {"routing", cfg.routing}, {"config", cfg.path}, {"model", cfg.model_dir},
            {"seeds", json::array()}, {"trainable_params", runs.front().trainable_params}, {"tasks", json::object()}};
  for (const auto& r : runs) s["seeds"].push_back(r.seed);
  for (const char* proto : {"mlora", "lm_eval"}) {
    double avg_std = 0;
    std::vector<double> avg(runs.size(), 0.0);
    bool any = false;
    for (const auto& t : tasks) {
      std::vector<double> v;
      for (const auto& r : runs) {
        const auto& m = std::string(proto) == "mlora" ? r.test_mlora : r.test_lm_eval;
        auto it = m.find(t.task);
        if (it != m.end()) v.push_back(it->second.acc);
      }
      if (v.size() != runs.size()) continue;
      any = true;
      json ms = mean_std(v);
      s["tasks"][t.task][proto] = ms;
      s["tasks"][t.task]["n_test"] = t.test.size();
      avg_std += ms["std"].get<double>() / static_cast<double>(tasks.size());
      for (size_t i = 0; i < v.size(); ++i) avg[i] += v[i] / static_cast<double>(tasks.size());
    }
    if (any) s["average"][proto] = {{"mean", mean_std(avg)["mean"]}, {"avg_std", avg_std}};
  }
  return s;
}

}  // namespace

LoraMoeRecipeResult run_lora_moe_recipe(const LoraMoeRecipeConfig& config) {
  Recipe recipe(config);  // every input checked here, before anything is written
  LoraMoeRecipeResult result;
  for (int64_t i = 0; i < config.seeds; ++i) {
    result.runs.push_back(recipe.run(config.trainer.seed + static_cast<uint64_t>(i)));
    if (!result.runs.back().finished) return result;  // stop_after_step (a simulated kill)
  }
  result.summary = summarize(config, result.runs, recipe.tasks());
  write_json_file(path_join(config.trainer.out_dir, "summary.json"), result.summary);
  return result;
}

std::string format_lora_moe_summary(const json& summary) {
  auto cell = [](const json& j, const char* proto, const char* spread) {
    if (!j.contains(proto)) return std::string("-");
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f ± %.2f", 100.0 * j[proto]["mean"].get<double>(),
                  100.0 * j[proto][spread].get<double>());
    return std::string(buf);
  };
  std::string out = cat("lora-moe: ", summary["routing"].get<std::string>(), ", ", summary["seeds"].size(), " seed(s), ",
                        summary["trainable_params"].get<int64_t>(), " trainable parameters\n\n");
  out += "| task | test items | mLoRA acc % (mean ± std) | lm-eval acc % (mean ± std) |\n|---|---|---|---|\n";
  for (auto it = summary["tasks"].begin(); it != summary["tasks"].end(); ++it)
    out += cat("| ", it.key(), " | ", (*it)["n_test"].get<int64_t>(), " | ", cell(*it, "mlora", "std"), " | ",
               cell(*it, "lm_eval", "std"), " |\n");
  if (summary.contains("average"))
    out += cat("| average (± avg std) | | ", cell(summary["average"], "mlora", "avg_std"), " | ",
               cell(summary["average"], "lm_eval", "avg_std"), " |\n");
  return out;
}

}  // namespace mf
