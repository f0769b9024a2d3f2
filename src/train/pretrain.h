// The pretrain recipe: a JSON config (model section in HF config.json keys + training
// section, docs/training.md), data reading and packing, the training loop, and the final
// HF-style model directory. The model and the tokenizer come in as functions, so this file
// does not depend on a particular model family or tokenizer implementation.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "train/data.h"
#include "train/trainer.h"
#include "util/json.h"

namespace mf {

struct PretrainConfig {
  std::string path;  // the config file (errors name it)
  // The config.json of the model trained and written as final/config.json: the "model" section
  // (any model_type; without one a Llama, with HF LlamaConfig's defaults filled in), or with
  // `init` the checkpoint's config.json with the "model" section's keys replacing its own.
  json model;
  std::string init;              // checkpoint to continue from ("" = from scratch)
  json model_overrides = json::object();  // with init: the "model" section
  int64_t seq_len = 256;
  std::vector<std::string> train_files, validation_files;  // absolute or relative to the config
  std::string tokenizer;                                   // tokenizer directory
  TrainerOptions trainer;  // trainer.out_dir from training.output_dir (may be empty: --output)
};

// Reads and validates a pretrain config; one-line "<path>: <what>" errors. `init` (e.g. from
// --init) replaces training.init.
PretrainConfig load_pretrain_config(const std::string& path, const std::string& init = "");

// What the recipe needs of a model: the module (parameters, train/eval mode) and its forward
// pass from input ids [B, T] (int64) to logits [B, T, vocab].
struct PretrainModel {
  std::shared_ptr<torch::nn::Module> module;
  std::function<at::Tensor(const at::Tensor& input_ids)> logits;
  // Named tensors written to the final model.safetensors (HF names). Default: the module's
  // parameters, tensors shared under several names (tied embeddings) written once.
  std::function<std::vector<std::pair<std::string, at::Tensor>>()> export_tensors;
  // Extra loss terms (MoE auxiliary losses), metrics for each step's line (MoE telemetry) and a
  // call after each optimizer step: added to the trainer's options.
  std::vector<LossTerm> loss_terms;
  std::function<std::map<std::string, double>()> step_metrics;
  std::function<void()> after_step;
};

struct PretrainTokenizer {
  TokenizeBatchFn encode;   // adds BOS per document if the tokenizer is configured to
  int32_t eos_id = -1;
  std::string files_dir;    // its files are copied into the final model directory ("" = none)
  int32_t bos_id = -1;      // written to config.json (null when the tokenizer has none)
};

// Seeds torch with config.trainer.seed, builds the model with `make_model` (so its
// initialisation is seeded), tokenizes and packs the data, trains (resuming from the newest
// checkpoint in the output directory unless config.trainer.resume is false) and writes
// <output_dir>/final/ (config.json, model.safetensors, tokenizer files, train_record.json).
TrainResult run_pretrain(const PretrainConfig& config, const std::function<PretrainModel()>& make_model,
                         const PretrainTokenizer& tokenizer);

// Training FLOPs per token of a decoder-only transformer: 6 x matmul parameters (input
// embedding excluded unless tied to the output head) plus attention scores and weighted sums,
// 6 x 2 x layers x seq_len x hidden (forward 2 x 2 x L x T x d, backward twice that; causal
// masking not discounted, as in PaLM's MFU accounting).
double training_flops_per_token(int64_t matmul_params, int64_t layers, int64_t seq_len, int64_t hidden);

}  // namespace mf
