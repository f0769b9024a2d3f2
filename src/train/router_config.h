// The router recipe's config file (configs/*.json, docs/training.md "Router recipe"): the
// recipe's settings, the balance-loss choices and the MLP-router fit options, read and
// validated with one-line "<path>: <what>" errors.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "train/lora.h"
#include "train/trainer.h"

namespace mf {

// The balance loss itself is the MoE blocks' (MoeAuxLossConfig, model/moe_ffn.h); the recipe
// may override its kind, coefficient and scale. S: the number of tokens of the micro-batch, padding included (the reference), or E (a
// batch-size independent variant).
enum class BalanceScale { Tokens, Experts };

struct MlpRouterTrainOptions {
  int64_t epochs = 30;
  double lr = 0.01;             // Adam
  int64_t batch_tokens = 512;   // mini-batch; targets are normalised by their max over it
  int64_t sample_tokens = 16384;  // FFN inputs collected per MoE layer
  double val_fraction = 0.1;
};

struct RouterRecipeConfig {
  std::string path;       // the config file (errors name it)
  std::string model_dir;  // "model" key (the command's MODEL argument overrides it)
  int64_t seq_len = 512;
  bool packing = true;  // text data: packed stream; false: one document per sequence (padded)
  std::vector<std::string> train_files, validation_files;
  std::string tokenizer;  // default: the model directory
  double epochs = 0;      // > 0: max_steps = ceil(epochs * sequences / (batch_size * grad_accum))
  double warmup_ratio = 0.05;
  bool warmup_steps_given = false;
  TrainerOptions trainer;
  // Balance loss; unset fields come from the model's config.json router section.
  std::string balance_loss;   // "hemoe" | "switch" | "load_balancing" | "none" ("" = the model's own)
  double balance_coef = -1;   // < 0: the model's aux_loss_coef, else 5e-4
  BalanceScale balance_scale = BalanceScale::Tokens;
  bool train_router = true;
  bool hypermoe = false;  // train --hypermoe: add HyperMoE (if absent) and train its parameters too
  bool lora_enabled = true;
  LoraOptions lora;
  MlpRouterTrainOptions mlp;
  // Set by `train --expert-parallel` (dist::make_expert_parallel): spreads the experts of the
  // trained module (the model under the name "model", then the adapters) over the ranks and sets
  // up the trainer options; called before the optimizer is built.
  std::function<void(torch::nn::Module& trained, TrainerOptions& options)> expert_parallel;
};

// Reads and validates a router-recipe config; one-line "<path>: <what>" errors.
RouterRecipeConfig load_router_config(const std::string& path);

}  // namespace mf
