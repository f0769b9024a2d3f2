// Reading the router recipe's config file (router_config.h).
#include "train/router_config.h"

#include <unordered_set>

#include "train/recipe_config.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"

namespace mf {

RouterRecipeConfig load_router_config(const std::string& path) {
  json root = read_json_file(path);
  if (!root.is_object()) fail_file(path, "expected a JSON object");
  config_check_keys(root, "", {"model", "training", "router", "lora", "mlp_router"}, path);
  RouterRecipeConfig c;
  c.path = path;
  const std::string base = parent_dir(path).empty() ? "." : parent_dir(path);
  if (root.contains("model")) c.model_dir = resolve_config_path(base, json_get<std::string>(root, "model", path));
  if (!root.contains("training") || !root["training"].is_object()) fail_file(path, "missing object 'training'");
  const json& t = root["training"];
  config_check_keys(t, "training",
             {"seq_len", "packing", "batch_size", "grad_accum", "max_steps", "epochs", "lr", "min_lr", "warmup_ratio",
              "warmup_steps", "weight_decay", "betas", "eps", "clip", "bf16", "eval_every", "eval_batches",
              "save_every", "keep_checkpoints", "seed", "train_data", "validation_data", "tokenizer", "output_dir"},
             path);
  TrainerOptions& o = c.trainer;
  c.seq_len = json_get_or<int64_t>(t, "seq_len", 512, path);
  c.packing = json_get_or<bool>(t, "packing", true, path);
  o.batch_size = json_get_or<int64_t>(t, "batch_size", 8, path);
  o.grad_accum = json_get_or<int64_t>(t, "grad_accum", 1, path);
  const bool has_steps = t.contains("max_steps"), has_epochs = t.contains("epochs");
  if (has_steps == has_epochs) fail_file(path, "give exactly one of 'training.max_steps' and 'training.epochs'");
  o.max_steps = has_steps ? json_get<int64_t>(t, "max_steps", path) : 0;
  c.epochs = has_epochs ? json_get<double>(t, "epochs", path) : 0.0;
  if (has_steps && o.max_steps < 0) fail_file(path, "training.max_steps must not be negative");
  if (has_epochs && !(c.epochs > 0)) fail_file(path, "training.epochs must be positive");
  o.schedule.lr = json_get_or<double>(t, "lr", 3e-4, path);
  o.schedule.min_lr = json_get_or<double>(t, "min_lr", 3e-5, path);
  c.warmup_ratio = json_get_or<double>(t, "warmup_ratio", 0.05, path);
  c.warmup_steps_given = t.contains("warmup_steps");
  o.schedule.warmup_steps = json_get_or<int64_t>(t, "warmup_steps", 0, path);
  // HF TrainingArguments / torch AdamW defaults, as LLaMA-Factory runs them.
  o.adamw.weight_decay = 0.0;
  o.adamw.beta1 = 0.9;
  o.adamw.beta2 = 0.999;
  o.bf16 = true;
  o.save_every = 200;
  o.seed = 42;
  read_shared_training_keys(t, path, o);
  if (c.seq_len <= 0) fail_file(path, "training.seq_len must be positive");
  if (!(c.warmup_ratio >= 0 && c.warmup_ratio <= 1)) fail_file(path, "training.warmup_ratio must lie in [0, 1]");
  for (const auto& f : config_string_list(t, "train_data", "training", path)) c.train_files.push_back(resolve_config_path(base, f));
  if (t.contains("validation_data"))
    for (const auto& f : config_string_list(t, "validation_data", "training", path))
      c.validation_files.push_back(resolve_config_path(base, f));
  c.tokenizer = resolve_config_path(base, json_get_or<std::string>(t, "tokenizer", "", path));
  o.out_dir = resolve_config_path(base, json_get_or<std::string>(t, "output_dir", "", path));

  const json& r = config_section(root, "router", path);
  config_check_keys(r, "router", {"balance_loss", "balance_coef", "balance_scale", "train"}, path);
  c.balance_loss = json_get_or<std::string>(r, "balance_loss", "", path);
  if (!c.balance_loss.empty() && c.balance_loss != "hemoe" && c.balance_loss != "switch" &&
      c.balance_loss != "load_balancing" && c.balance_loss != "none")
    fail_file(path, "router.balance_loss must be \"hemoe\", \"switch\", \"load_balancing\" or \"none\"");
  c.balance_coef = json_get_or<double>(r, "balance_coef", -1.0, path);
  if (r.contains("balance_coef") && c.balance_coef < 0) fail_file(path, "router.balance_coef must not be negative");
  const std::string scale = json_get_or<std::string>(r, "balance_scale", "tokens", path);
  if (scale == "tokens") c.balance_scale = BalanceScale::Tokens;
  else if (scale == "experts") c.balance_scale = BalanceScale::Experts;
  else fail_file(path, "router.balance_scale must be \"tokens\" or \"experts\"");
  c.train_router = json_get_or<bool>(r, "train", true, path);

  const json& l = config_section(root, "lora", path);
  config_check_keys(l, "lora", {"enabled", "r", "alpha", "dropout", "targets"}, path);
  c.lora_enabled = json_get_or<bool>(l, "enabled", true, path);
  c.lora.r = json_get_or<int64_t>(l, "r", 8, path);
  c.lora.alpha = json_get_or<double>(l, "alpha", 2.0 * static_cast<double>(c.lora.r), path);
  c.lora.dropout = json_get_or<double>(l, "dropout", 0.05, path);
  if (l.contains("targets")) c.lora.targets = config_string_list(l, "targets", "lora", path);
  c.lora.seed = o.seed;
  if (c.lora.r <= 0) fail_file(path, "lora.r must be positive");
  if (!(c.lora.dropout >= 0 && c.lora.dropout < 1)) fail_file(path, "lora.dropout must lie in [0, 1)");

  const json& m = config_section(root, "mlp_router", path);
  config_check_keys(m, "mlp_router", {"epochs", "lr", "batch_tokens", "sample_tokens", "val_fraction"}, path);
  c.mlp.epochs = json_get_or<int64_t>(m, "epochs", 30, path);
  c.mlp.lr = json_get_or<double>(m, "lr", 0.01, path);
  c.mlp.batch_tokens = json_get_or<int64_t>(m, "batch_tokens", 512, path);
  c.mlp.sample_tokens = json_get_or<int64_t>(m, "sample_tokens", 16384, path);
  c.mlp.val_fraction = json_get_or<double>(m, "val_fraction", 0.1, path);
  if (c.mlp.epochs < 0) fail_file(path, "mlp_router.epochs must not be negative");
  if (!(c.mlp.lr > 0)) fail_file(path, "mlp_router.lr must be positive");
  if (c.mlp.batch_tokens <= 0 || c.mlp.sample_tokens <= 0)
    fail_file(path, "mlp_router.batch_tokens and sample_tokens must be positive");
  if (!(c.mlp.val_fraction > 0 && c.mlp.val_fraction < 1)) fail_file(path, "mlp_router.val_fraction must lie in (0, 1)");
  return c;
}

}  // namespace mf
