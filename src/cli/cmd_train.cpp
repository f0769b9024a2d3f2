// moeforge train --recipe pretrain --config FILE [--init MODEL]: a model of any family the
// runtime has, from scratch or continued from a checkpoint, trained on JSONL documents (MoE
// families with their auxiliary losses); moeforge train MODEL --recipe router --config FILE:
// routers (+ LoRA) of an MoE model fine-tuned with experts frozen (docs/training.md); moeforge
// train MODEL --recipe lora-moe --config FILE: LoRA experts in a frozen dense model, trained on
// multiple-choice tasks over seeds (docs/lora-moe.md).
#include <iostream>

#include "cli/commands.h"
#include "dist/data_parallel.h"
#include "model/config.h"
#include "model/hypermoe_ffn.h"
#include "model/load.h"
#include "model/model.h"
#include "model/size_limits.h"
#include "tokenizer/tokenizer.h"
#include "train/lora_moe_recipe.h"
#include "train/pretrain.h"
#include "train/pretrain_model.h"
#include "train/router_recipe.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"

namespace mf::cli {

namespace {

// What the job's collectives cost this rank (rank 0's view; docs/distributed.md), in total and
// per optimizer step; null in a single process.
json communication_json(const dist::Group& group, int64_t steps) {
  if (!group.active()) return nullptr;
  json out = json::object();
  for (const auto& [op, c] : group.comm_stats()) {
    const double per = steps > 0 ? 1.0 / static_cast<double>(steps) : 0.0;
    out[op] = {{"calls", c.calls}, {"bytes", c.bytes}, {"seconds", c.seconds},
               {"bytes_per_step", static_cast<double>(c.bytes) * per}, {"seconds_per_step", c.seconds * per}};
  }
  return out;
}

}  // namespace

void add_train_command(CLI::App& app, const GlobalOptions& globals) {
  struct Opts {
    std::string model, recipe, config, output, json_out, init;
    bool hypermoe = false, expert_parallel = false;
    int64_t expert_group_size = 0, seeds = 0;
  };
  auto opts = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("train", "Train a model (recipes: pretrain, router, lora-moe)");
  cmd->add_option("model", opts->model,
                  "Model directory to fine-tune (recipes router and lora-moe; overrides the config's 'model')");
  cmd->add_option("--recipe", opts->recipe, "Training recipe")
      ->required()
      ->check(CLI::IsMember({"pretrain", "router", "lora-moe"}));
  cmd->add_option("--config", opts->config, "Recipe config file (JSON, docs/training.md)")->required();
  cmd->add_option("--output", opts->output, "Run directory (overrides training.output_dir)");
  cmd->add_option("--init", opts->init, "pretrain: continue from this model directory (overrides training.init)");
  cmd->add_option("--json", opts->json_out, "Write the result record as JSON to this file");
  cmd->add_flag("--hypermoe", opts->hypermoe,
                "add a HyperExpert to every MoE layer and train it (HyperMoE, the reference's hyper-parameters "
                "unless the model has a 'hypermoe' object; docs/hypermoe.md)");
  cmd->add_flag("--expert-parallel", opts->expert_parallel,
                "under torchrun / moeforge launch: spread each MoE layer's experts over the ranks and exchange "
                "routed tokens with all-to-all (docs/distributed.md)");
  cmd->add_option("--expert-group-size", opts->expert_group_size,
                  "with --expert-parallel: ranks per expert group (e.g. the GPUs of one node; the groups are data-"
                  "parallel replicas); default: the whole job")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seeds", opts->seeds,
                  "lora-moe: run this many seeds (training.seed, +1, ...) and report mean and std "
                  "(overrides training.seeds)")
      ->check(CLI::PositiveNumber);
  cmd->callback([opts, &globals]() {
    if (opts->seeds > 0 && opts->recipe != "lora-moe") throw UsageError("--seeds belongs to the lora-moe recipe");
    if (opts->recipe == "lora-moe") {
      if (!opts->init.empty() || opts->hypermoe || opts->expert_parallel || opts->expert_group_size > 0)
        throw UsageError("the lora-moe recipe takes MODEL, --config, --output, --seeds and --json");
      if (dist::env_from_torchrun().world_size > 1) throw UsageError("the lora-moe recipe runs in one process");
      LoraMoeRecipeConfig cfg = load_lora_moe_config(opts->config);
      if (!opts->model.empty()) cfg.model_dir = opts->model;
      if (!opts->output.empty()) cfg.trainer.out_dir = opts->output;
      if (opts->seeds > 0) cfg.seeds = opts->seeds;
      cfg.trainer.progress = !globals.quiet;
      const LoraMoeRecipeResult r = run_lora_moe_recipe(cfg);
      if (!opts->json_out.empty()) write_json_file(opts->json_out, r.summary);
      std::cout << format_lora_moe_summary(r.summary);
      return;
    }
    // Under torchrun (or moeforge launch): data parallel over c10d; otherwise one process.
    std::shared_ptr<dist::Group> group = dist::init(dist::env_from_torchrun());
    const bool writer = group->rank() == 0;
    if (opts->recipe == "router") {
      if (!opts->init.empty()) throw UsageError("--init belongs to the pretrain recipe (the router recipe takes MODEL)");
      RouterRecipeConfig cfg = load_router_config(opts->config);
      if (!opts->model.empty()) cfg.model_dir = opts->model;
      if (!opts->output.empty()) cfg.trainer.out_dir = opts->output;
      cfg.hypermoe = opts->hypermoe;
      cfg.trainer.progress = !globals.quiet;
      dist::make_data_parallel(cfg.trainer, group);
      if (opts->expert_group_size > 0 && !opts->expert_parallel)
        throw UsageError("--expert-group-size belongs to --expert-parallel");
      if (opts->expert_parallel)
        cfg.expert_parallel = [group, size = opts->expert_group_size](torch::nn::Module& m, TrainerOptions& o) {
          dist::make_expert_parallel(o, group, m, size);
        };
      RouterRecipeResult r = run_router_recipe(cfg);
      json out = {{"steps", r.train.steps},
                  {"final_loss", r.train.last_loss},
                  {"tokens_per_s", r.train.tokens_per_s},
                  {"val_loss", r.train.val_loss},
                  {"router_params", r.trainable_router_params},
                  {"lora_params", r.lora_params},
                  {"hypermoe_params", r.hypermoe_params},
                  {"output", r.final_dir},
                  {"communication", communication_json(*group, r.train.steps - r.train.start_step)}};
      for (const auto& [layer, fit] : r.mlp_fits)
        out["mlp_router"].push_back({{"layer", layer}, {"recall_before", fit.recall_before},
                                     {"recall_after", fit.recall_after}, {"best_epoch", fit.best_epoch}});
      if (writer && !opts->json_out.empty()) write_json_file(opts->json_out, out);
      if (writer) std::cout << out.dump(2) << "\n";
      dist::shutdown(group);
      return;
    }
    if (!opts->model.empty()) throw UsageError("the pretrain recipe takes no MODEL argument (continue from one with --init)");
    PretrainConfig cfg = load_pretrain_config(opts->config, opts->init);
    if (!opts->output.empty()) cfg.trainer.out_dir = opts->output;
    cfg.trainer.progress = !globals.quiet;
    dist::make_data_parallel(cfg.trainer, group);
    const std::string model_origin = cfg.init.empty() ? opts->config : path_join(cfg.init, "config.json");
    if (opts->hypermoe) {  // fresh HyperMoE tensors for a continued checkpoint (load_model_with_overrides)
      const json add = hypermoe_config_overrides(parse_model_config(cfg.model, model_origin));
      for (auto it = add.begin(); it != add.end(); ++it) {
        cfg.model[it.key()] = it.value();
        cfg.model_overrides[it.key()] = it.value();
      }
    }
    const ModelConfig mcfg = parse_model_config(cfg.model, model_origin);
    if (opts->expert_parallel && !mcfg.is_moe())
      throw UsageError("--expert-parallel needs an MoE model (this config has no MoE layers)");
    if (opts->expert_group_size > 0 && !opts->expert_parallel)
      throw UsageError("--expert-group-size belongs to --expert-parallel");
    // fp32 weights, their gradients and AdamW's two moments, before a byte of it is allocated.
    check_model_fits_memory(mcfg, 16.0, "to train with AdamW in fp32");
    auto tok = Tokenizer::load(cfg.tokenizer);
    if (tok->vocab_size() > mcfg.vocab_size)
      fail_file(opts->config, "model.vocab_size is smaller than the tokenizer's vocabulary");
    auto make_model = [&]() {
      std::shared_ptr<Model> m;
      if (cfg.init.empty()) {
        m = Model::create(mcfg);
        m->init_random(cfg.trainer.seed);
        if (has_hypermoe(mcfg)) reset_hypermoe_parameters(*m);  // HyperMoE keeps its own initialisation
      } else {
        m = load_model_with_overrides(cfg.init, {at::kFloat, at::kCPU}, cfg.model_overrides);
      }
      if (opts->expert_parallel) {
        // Sets up the trainer options run_pretrain reads after calling this factory.
        dist::make_expert_parallel(cfg.trainer, group, *m, opts->expert_group_size);
      }
      return pretrain_model_of(m);
    };
    PretrainTokenizer pt;
    pt.encode = [&tok](const std::vector<std::string>& texts) { return tok->encode_batch(texts, true); };
    pt.eos_id = tok->eos_id();
    pt.bos_id = tok->bos_id();
    pt.files_dir = cfg.tokenizer;
    TrainResult r = run_pretrain(cfg, make_model, pt);
    json out = {{"steps", r.steps}, {"final_loss", r.last_loss}, {"tokens_per_s", r.tokens_per_s},
                {"val_loss", r.val_loss}, {"output", cfg.trainer.out_dir},
                {"communication", communication_json(*group, r.steps - r.start_step)}};
    if (writer && !opts->json_out.empty()) write_json_file(opts->json_out, out);
    if (writer) std::cout << out.dump(2) << "\n";
    dist::shutdown(group);
  });
}

}  // namespace mf::cli
