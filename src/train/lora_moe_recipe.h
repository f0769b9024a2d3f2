// The LoRA-MoE recipe (moe_routing_training.md §4.4, docs/lora-moe.md "The recipe"): a frozen dense
// model fine-tuned on multiple-choice tasks with LoRA experts in every FFN (GMoE, MixLoRA and
// variants, LoRAMoE, MoLA, MING-MoE) or with plain LoRA, through the shared train_loop:
//   - data: the tasks' train items in the mLoRA prompt format (mc_data.h), loss on the answer
//     tokens (or mLoRA's loss on every token, a compat switch), the model's auxiliary losses;
//   - selection: every eval_every optimizer steps (and after the last) mLoRA's accuracy on the
//     validation items, mean over tasks; the best adapter is kept in RUN/best (ties: the earlier);
//   - test: the best adapter loaded onto a fresh base model (so what is scored is what was saved),
//     scored with mLoRA's protocol and lm-eval's per-choice log-likelihood;
//   - seeds: runs RUN = OUT/seed-<s> for s = seed, seed + 1, ... and OUT/summary.json with the
//     mean and the sample std over seeds per task and protocol (GMoE's "stability").
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "train/lora_moe_config.h"
#include "train/trainer.h"
#include "util/json.h"

namespace mf {

struct McScore {
  int64_t n = 0;
  double acc = 0.0, stderr = 0.0;  // stderr = sqrt(acc (1 - acc) / (n - 1)), lm-eval's for a mean
};

struct LoraMoeRun {
  uint64_t seed = 0;
  std::string dir, adapter_dir;  // RUN and RUN/best
  TrainResult train;
  int64_t trainable_params = 0;
  int64_t best_step = 0;
  double best_val_accuracy = -1.0;
  std::vector<std::pair<int64_t, double>> val_history;  // (step, mean validation accuracy)
  std::map<std::string, McScore> test_mlora, test_lm_eval;  // per task
  bool finished = false;  // trained and tested (false after a stop_after_step)
};

struct LoraMoeRecipeResult {
  std::vector<LoraMoeRun> runs;
  json summary;  // what OUT/summary.json holds
};

// Runs every seed (a finished seed's results.json is read back, an interrupted one resumes from
// its checkpoints). Every bad input (config, model, task data: a task without a train split, a
// per-layer expert list of the wrong length) is a one-line mf::Error raised before anything is
// written. Single process only.
LoraMoeRecipeResult run_lora_moe_recipe(const LoraMoeRecipeConfig& config);

// The summary as a Markdown table: per task the test accuracy (%) mean ± std over seeds under
// both protocols, and the average with GMoE's "avg std" (the mean of the tasks' seed stds).
std::string format_lora_moe_summary(const json& summary);

}  // namespace mf
