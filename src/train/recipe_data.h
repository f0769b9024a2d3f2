// The router recipe's training data: JSONL text or prompt/response (SFT) examples turned into
// rows for the shared train_loop, with the token encoding that carries the loss and attention
// masks through it, and the masked LM loss over those rows.
#pragma once
#include <ATen/ATen.h>

#include <climits>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "train/data.h"
#include "train/router_config.h"

namespace mf {

// One training example as rows for train_loop. Token encoding in a row: v >= 0 a token that is
// also a target; -1 - id a token that is input only (prompt); kPadToken padding (neither, and
// masked from attention).
constexpr int32_t kPadToken = INT32_MIN;
struct DecodedBatch {
  at::Tensor input_ids;  // [B, T] int64
  at::Tensor attention;  // [B, T] int64 1 = real (undefined when there is no padding)
  at::Tensor targets;    // [B, T] int64, -100 = not a target
};
DecodedBatch decode_rows(const at::Tensor& windows);

// Mean cross entropy over target tokens (ignore -100); 0 when there is none. `targets_per_rank`
// > 0 replaces the divisor: data parallelism divides every rank's sum by the mean target count
// over the ranks, so that the ranks' mean loss (and gradient) is the global batch's token mean.
at::Tensor masked_lm_loss(const at::Tensor& logits, const at::Tensor& targets, double targets_per_rank = 0.0);

// Training data of the recipe: JSONL lines {"text"} or {"prompt", "response"} (SFT), with an
// optional "domain". SFT lines (or packing off) give one example per row, cut at seq_len + 1
// tokens and right-padded; otherwise text is packed as in pretraining.
struct RecipeTokenizer {
  std::function<std::vector<int32_t>(const std::string&, bool add_special)> encode;
  int32_t eos_id = -1;
};
struct RecipeData {
  PackedSequences train;
  std::vector<std::pair<std::string, PackedSequences>> validation;
  bool sft = false;
  int64_t dropped = 0;  // examples without any target token within seq_len
};
RecipeData load_recipe_data(const RouterRecipeConfig& config, const RecipeTokenizer& tok, int64_t vocab);

}  // namespace mf
