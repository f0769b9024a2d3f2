// The router recipe (HEMoE's fine-tuning of converted dense→MoE models, dense_to_moe.md §1.4):
// routers (+ optional LoRA on attention) are trained, experts / embeddings / norms stay frozen;
// loss = LM loss (all tokens of text data, response tokens of SFT data) + the balance loss the
// model's MoE blocks report (HEMoE size-weighted by default; Model::aux_losses); AdamW with warmup and
// cosine decay to a minimum lr through the shared train_loop; EMoE avg-k gates refreshed after
// every optimizer step; MoEfication MLP routers first fitted offline with BCE (§2.3). The final
// model is written in the input's format with LoRA merged. docs/training.md, "Router recipe".
// The config, the data and the MLP-router fit live in router_config.h, recipe_data.h and
// mlp_router_fit.h, included here so that users of the recipe need only this header.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "moe/config.h"
#include "train/data.h"
#include "train/lora.h"
#include "train/mlp_router_fit.h"
#include "train/recipe_data.h"
#include "train/router_config.h"
#include "train/trainer.h"
#include "util/json.h"

namespace mf {

struct RouterRecipeResult {
  TrainResult train;
  std::vector<std::pair<int, MlpRouterFit>> mlp_fits;  // per MoE layer
  int64_t trainable_router_params = 0, lora_params = 0, hypermoe_params = 0;
  std::string final_dir;
};

// Loads the model (fp32), attaches LoRA, freezes everything but routers and LoRA, fits MLP
// routers offline, trains with train_loop (resuming from the output directory), merges LoRA
// and writes <output_dir>/final/ in the input's format with the tokenizer files.
// `tokenizer` overrides loading config.tokenizer (tests); its files are still copied when the
// directory exists.
RouterRecipeResult run_router_recipe(const RouterRecipeConfig& config, const RecipeTokenizer* tokenizer = nullptr);

}  // namespace mf
