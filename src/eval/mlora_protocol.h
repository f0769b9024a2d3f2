// mLoRA's multiple-choice evaluation (spec moe_routing_training.md §4.4, identical in GMoE and
// upstream mLoRA): one forward per item over the right-padded prompt, the logits at the prompt's
// last position (the one that predicts the token after "Answer:"), restricted to the label tokens
// (the last id of encode(" " + label) without special tokens, for each label of the item's list),
// argmax -> accuracy. No generation, no per-choice log-likelihood, no length normalisation: it is
// not lm-eval's protocol and its numbers are not comparable with lm-eval's acc (docs/lora-moe.md).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "train/mc_data.h"

namespace mf {
class Model;
class Tokenizer;
}  // namespace mf

namespace mf::eval {

// input_ids [B, T] int64, right-padded; lengths [B] int64, the real tokens of each row
// -> logits [B, T, V] (any floating dtype, any device).
using BatchLogitsFn = std::function<at::Tensor(const at::Tensor& input_ids, const at::Tensor& lengths)>;

struct MloraEvalOptions {
  int64_t batch_size = 16;  // mLoRA's default
  int64_t max_seq_len = 0;  // > 0: keep only the first max_seq_len prompt tokens, as mLoRA does (512 there)
  int32_t pad_id = 0;       // fills the padding (causal attention never lets a real position see it)
};

struct MloraEvalResult {
  int64_t correct = 0, total = 0;
  std::vector<int64_t> predictions;  // per item: the predicted index into its labels
  double accuracy() const { return total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0; }
};

// The token mLoRA scores for each label: the last id of encode(" " + label, no special tokens).
std::vector<int64_t> mlora_label_token_ids(const McEncodeFn& encode, const std::vector<std::string>& labels);

// Prompts are encoded with special tokens (BOS as the tokenizer adds it), as mLoRA does.
MloraEvalResult mlora_evaluate(const std::vector<McItem>& items, const McEncodeFn& encode,
                               const BatchLogitsFn& logits, const MloraEvalOptions& options = {});

// The same on a runtime model (no grad, eval mode for the call): the vocabulary projection runs only
// at each row's last prompt position. options.pad_id is replaced by mlora_pad_id(tok).
MloraEvalResult mlora_evaluate(Model& model, const Tokenizer& tok, const std::vector<McItem>& items,
                               MloraEvalOptions options = {});

}  // namespace mf::eval
