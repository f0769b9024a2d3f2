// The router recipe (HEMoE's fine-tuning of converted dense→MoE models, dense_to_moe.md §1.4):
// routers (+ optional LoRA on attention) are trained, experts / embeddings / norms stay frozen;
// loss = LM loss (all tokens of text data, response tokens of SFT data) + the HEMoE
// size-weighted balance loss computed from the router_logits hook; AdamW with warmup and
// cosine decay to a minimum lr through the shared train_loop; EMoE avg-k gates refreshed after
// every optimizer step; MoEfication MLP routers first fitted offline with BCE (§2.3). The final
// model is written in the input's format with LoRA merged. docs/training.md, "Router recipe".
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
#include "train/trainer.h"
#include "util/json.h"

namespace mf {

// Balance loss of the recipe. Hemoe: lambda * S * sum_j f_j r_j P_j per MoE layer, summed over
// layers; Switch: lambda * E * sum_j f_j P_j with the same f (fraction routed, straight-through).
enum class BalanceLoss { Hemoe, Switch, None };
// S: the number of tokens of the micro-batch, padding included (the reference), or E (a
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
  std::string balance_loss;   // "hemoe" | "switch" | "none" ("" = the model's aux_loss, else hemoe)
  double balance_coef = -1;   // < 0: the model's aux_loss_coef, else 5e-4
  BalanceScale balance_scale = BalanceScale::Tokens;
  bool train_router = true;
  bool lora_enabled = true;
  LoraOptions lora;
  MlpRouterTrainOptions mlp;
};

// Reads and validates a router-recipe config; one-line "<path>: <what>" errors.
RouterRecipeConfig load_router_config(const std::string& path);

// What the balance loss needs to know of one MoE layer.
struct MoeLayerRouting {
  int layer = 0;
  moe::ScoreFn score = moe::ScoreFn::Softmax;
  moe::SelectionConfig selection;
  std::vector<int64_t> expert_sizes;
  int64_t intermediate_size = 0;  // r_j = expert_sizes[j] / intermediate_size
  std::string router_type;        // "linear" | "mlp" | "avgk"
};

// The MoE layers of a moeforge config.json (model_type "moeforge"), or of a stock Mixtral
// (equal experts, r_j = 1/E); empty for other models.
std::vector<MoeLayerRouting> moeforge_routing(const json& config, const std::string& origin);

// HEMoE size-weighted balance loss of one layer from its router logits [N, E] (fp32, with
// autograd) and the valid-token mask [N] (undefined = all real): f_j = masked mean of the
// straight-through unit weights (1 + p - sg(p) at the selected experts), P_j = masked mean of
// the scores, r_j = size_j / intermediate_size; lambda * scale * sum_j f_j r_j P_j.
at::Tensor hemoe_layer_balance_loss(const at::Tensor& logits, const at::Tensor& valid, const MoeLayerRouting& r,
                                    double lambda, double scale);
// Switch form lambda * E * sum_j f_j P_j with the same f and P.
at::Tensor switch_layer_balance_loss(const at::Tensor& logits, const at::Tensor& valid, const MoeLayerRouting& r,
                                     double lambda);

// Router parameters by name: moeforge ".mlp.router." (linear and mlp routers), Mixtral
// ".block_sparse_moe.gate.weight".
bool is_router_param(const std::string& name);

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

// Mean cross entropy over target tokens (ignore -100); 0 when there is none.
at::Tensor masked_lm_loss(const at::Tensor& logits, const at::Tensor& targets);

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

// MoEfication MLP router, offline (dense_to_moe.md §2.3): scores = W2 tanh(W1 x̂), x̂ = x/|x|,
// fitted with BCE-with-logits against t_j = mass_j / max over the mini-batch of mass_j, Adam.
// x [n, H] FFN inputs, mass [n, E] activation mass per expert. w1 [E, H], w2 [E, E] are updated
// in place with the epoch of best validation recall. Recall = fraction of the activation mass
// captured by the predicted top-k experts (k = `k`), on the validation part.
struct MlpRouterFit {
  int64_t best_epoch = 0;  // 0 = the initial weights were best
  double recall_before = 0, recall_after = 0;
  double val_bce = 0;
  int64_t train_tokens = 0, val_tokens = 0;
};
MlpRouterFit fit_mlp_router(at::Tensor& w1, at::Tensor& w2, const at::Tensor& x, const at::Tensor& mass, int64_t k,
                            const MlpRouterTrainOptions& options, uint64_t seed);
// Recall of router scores [n, E] against activation mass [n, E] with top-k.
double topk_mass_recall(const at::Tensor& scores, const at::Tensor& mass, int64_t k);
// SwiGLU activation mass of one expert on x [n, H]: sum_i |silu(g_i x) * (u_i x)| -> [n].
at::Tensor swiglu_expert_mass(const at::Tensor& x, const at::Tensor& gate_w, const at::Tensor& up_w);

struct RouterRecipeResult {
  TrainResult train;
  std::vector<std::pair<int, MlpRouterFit>> mlp_fits;  // per MoE layer
  int64_t trainable_router_params = 0, lora_params = 0;
  std::string final_dir;
};

// Loads the model (fp32), attaches LoRA, freezes everything but routers and LoRA, fits MLP
// routers offline, trains with train_loop (resuming from the output directory), merges LoRA
// and writes <output_dir>/final/ in the input's format with the tokenizer files.
// `tokenizer` overrides loading config.tokenizer (tests); its files are still copied when the
// directory exists.
RouterRecipeResult run_router_recipe(const RouterRecipeConfig& config, const RecipeTokenizer* tokenizer = nullptr);

}  // namespace mf
