// The LoRA-MoE recipe's config file (configs/lora-moe-*.json, docs/lora-moe.md "The recipe"):
// the routing and its options over lora_moe_defaults, attention LoRA, the multiple-choice tasks
// and their splits, training and evaluation settings. Read and validated with one-line
// "<config>: <what>" errors, before anything is loaded or written.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/lora_moe_ffn.h"
#include "train/lora.h"
#include "train/mc_data.h"
#include "train/trainer.h"

namespace mf {

struct LoraMoeRecipeConfig {
  std::string path;       // the config file (errors name it)
  std::string model_dir;  // "model" (the command's MODEL argument overrides it)
  // "lora" (plain LoRA, a PEFT adapter: the baseline of the fidelity table) or a LoRA-MoE routing.
  std::string routing;
  LoraMoeOptions moe;  // lora_moe_defaults(routing) with the config's "lora_moe" keys applied
  bool attention_lora = false;  // LoRA on attention (default: where the method uses it, §4.5)
  LoraOptions lora;             // attention LoRA; for routing "lora" also the FFN projections
  // Data: multiple-choice tasks (built-in names, groups, or tasks of the "include" YAML files).
  std::vector<std::string> tasks, include;
  std::string data_dir = ".";
  SplitPolicy split_policy = SplitPolicy::TaskSplits;
  McSftOptions sft;
  // Per task (0 = all): train / validation items spread evenly over the split; the first test
  // items (lm-eval's --limit, so that both protocols score the same items).
  int64_t max_train_items = 0, max_validation_items = 0, max_test_items = 0;
  // Training: the shared loop's options (lr constant by default: min_lr = lr, no warmup, GMoE).
  TrainerOptions trainer;
  double epochs = 0;  // > 0: max_steps = ceil(epochs * train items / (batch_size * grad_accum))
  std::string base_dtype = "bf16";  // frozen base weights: bf16 (the reference) or fp32
  int64_t seeds = 1;                // runs with seeds seed, seed + 1, ...
  // Evaluation: mLoRA's protocol on validation every eval_every steps (best adapter kept), both
  // protocols on the test split at the end.
  int64_t eval_batch_size = 16;
  bool lm_eval_protocol = true;  // also lm-eval's per-choice log-likelihood on test
};

// Reads and validates the config; the model's layer count (MoLA's per-layer lists) is checked
// when the recipe opens the model.
LoraMoeRecipeConfig load_lora_moe_config(const std::string& path);

}  // namespace mf
