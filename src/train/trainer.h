// The training loop shared by the recipes: a torch::nn::Module plus a function that turns a
// batch into a scalar loss. It owns AdamW, the LR schedule, gradient accumulation and
// clipping, bf16 autocast, per-domain validation, checkpoints with exact resume, the metrics
// JSONL and the progress bar; extra loss terms, a gradient hook and a rank's data shard are
// the extension points. docs/training.md describes the files it writes.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "train/data.h"
#include "train/optim.h"

namespace mf {

// An extra term of the training loss (a model's auxiliary losses, a regulariser). fn() is called
// right after each micro-batch's loss_fn, so it can read what that forward pass recorded; it
// returns a one-element tensor with autograd that is added to the micro-batch's loss.
struct LossTerm {
  std::string name;  // its key in the metrics line (mean over the step's micro-batches)
  std::function<at::Tensor()> fn;
};

struct TrainerOptions {
  int64_t batch_size = 8;   // sequences per micro-batch
  int64_t grad_accum = 1;   // micro-batches per optimizer step
  int64_t max_steps = 100;  // optimizer steps
  LrSchedule schedule;      // its max_steps is taken from max_steps above
  AdamWOptions adamw;
  bool no_decay_1d = true;                // norms and biases: no weight decay
  std::vector<std::string> no_decay_names;  // e.g. {"embed_tokens"}
  double clip = 1.0;                      // global-norm clipping; <= 0: off (norm still logged)
  bool bf16 = false;                      // CPU autocast to bf16 for forward passes
  int64_t eval_every = 0;                 // steps; 0: only at the end
  int64_t eval_batches = 8;               // batches per domain per evaluation (<= 0: all)
  int64_t save_every = 0;                 // steps; 0: only at the end
  int64_t keep_checkpoints = 2;           // newest N step-* directories kept; 0: all
  uint64_t seed = 0;                      // data order
  std::string out_dir;                    // checkpoints/, metrics.jsonl
  bool resume = true;                     // continue from the newest checkpoint in out_dir
  bool progress = true;
  // Called after every optimizer step with the completed step count (EMoE avg-k gate refresh).
  std::function<void(int64_t step)> after_step;
  // Extra fields for the step's metrics line (e.g. a recipe's loss components), called once per
  // step after the micro-batches; keys must not clash with the loop's own or the loss terms'.
  std::function<std::map<std::string, double>()> step_metrics;
  // Added to every training micro-batch's loss (not evaluated during validation); the logged
  // "loss" is the total. Names must be unique and not one of the loop's metrics keys.
  std::vector<LossTerm> loss_terms;
  // Called once per optimizer step after every micro-batch's backward, before clipping, with
  // the optimizer's parameters (trainable, each tensor once, the same order on every rank;
  // gradients in .grad(), undefined for a parameter the step did not reach). The place for a
  // data-parallel all-reduce, which should average: W ranks x batch b then equal 1 x W*b.
  std::function<void(const std::vector<at::Tensor>& params)> on_gradients;
  // Data parallelism: global batches of batch_size * world_size windows in the order a
  // one-rank run with that batch size sees; rank r trains on windows [r*b, (r+1)*b) of each
  // (docs/training.md, "Data parallelism"). Validation is the same on every rank.
  int64_t rank = 0, world_size = 1;
  // Expert parallelism: the squared global gradient norm for clipping and logging, when some
  // gradients live on other ranks (null: the sum over this rank's parameters). Called on every
  // rank after on_gradients.
  std::function<double(const std::vector<at::Tensor>& params)> grad_norm_sq;
  // Expert parallelism: adds the tensors other ranks hold to a checkpoint's named tensors (the
  // model's with prefix "", AdamW's moments with "exp_avg." / "exp_avg_sq."). A collective,
  // called on every rank before the writer writes.
  std::function<void(std::vector<std::pair<std::string, at::Tensor>>& tensors, const std::vector<std::string>& prefixes)>
      complete_tensors;
  // The number of predicted tokens in a batch (windows [B, T+1]), when rows hold different numbers
  // (SFT rows with masked prompts and padding); validation weights each batch's mean by it. Null:
  // every window has T targets.
  std::function<double(const at::Tensor& batch)> targets_in;
  // Data parallelism: averages the step's logged values (loss, loss terms) over the ranks in
  // place, so that every rank logs the global batch's values (null: rank-local values).
  std::function<void(std::vector<double>& values)> average_over_ranks;
  // Only the writer (rank 0) writes checkpoints and metrics.jsonl and shows the progress bar;
  // every rank reads a checkpoint to resume.
  bool is_writer() const { return rank == 0; }
  // Testing aid that simulates a kill: stop right after this step without the final
  // checkpoint (-1: off).
  int64_t stop_after_step = -1;
};

// [B, T+1] int64 windows -> scalar mean loss over the B*T predicted tokens.
using BatchLossFn = std::function<at::Tensor(const at::Tensor& batch)>;

struct TrainResult {
  int64_t start_step = 0;  // > 0 when resumed
  int64_t steps = 0;       // optimizer steps done in total
  double last_loss = 0.0;
  double tokens_per_s = 0.0;  // training throughput of this invocation (eval/saving excluded)
  std::map<std::string, double> val_loss;  // last evaluation, per domain
  std::string last_checkpoint;
};

TrainResult train_loop(torch::nn::Module& model, const BatchLossFn& loss_fn, const PackedSequences& train,
                       const std::vector<std::pair<std::string, PackedSequences>>& validation,
                       const TrainerOptions& options);

// Mean loss per domain over the first `max_batches` batches (in order) of each domain's windows.
// Each batch's mean loss is weighted by targets_in(batch) (null: its number of windows), so the
// result is the token mean whatever the batch size.
std::map<std::string, double> evaluate_domains(torch::nn::Module& model, const BatchLossFn& loss_fn,
                                               const std::vector<std::pair<std::string, PackedSequences>>& domains,
                                               int64_t batch_size, int64_t max_batches, bool bf16,
                                               const std::function<double(const at::Tensor&)>& targets_in = {});

// Next-token cross entropy of logits [B, T, V] against windows [B, T+1] (targets = [:, 1:]),
// computed in fp32 whatever the logits' dtype.
at::Tensor next_token_loss(const at::Tensor& logits, const at::Tensor& windows);

// Checkpoint directory layout (out_dir/checkpoints/step-00000042). Empty when none exists.
std::string latest_checkpoint(const std::string& out_dir);

// Parameters and buffers of `module` as named tensors, and loading them back by name
// (mf::Error naming `origin` on a missing or mis-shaped tensor).
std::vector<std::pair<std::string, at::Tensor>> module_tensors(torch::nn::Module& module);
void load_module_tensors(torch::nn::Module& module, const std::string& safetensors_path);

}  // namespace mf
