// Reading the LoRA-MoE recipe's config file (lora_moe_config.h).
#include "train/lora_moe_config.h"

#include "train/recipe_config.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"

namespace mf {

namespace {

const std::vector<std::string> kAttention = {"q_proj", "k_proj", "v_proj", "o_proj"};

// The "lora_moe" keys over the routing's defaults; the options' own check names the bad field.
void read_moe_options(const json& m, const std::string& path, LoraMoeOptions& o) {
  config_check_keys(m, "lora_moe",
                    {"experts", "layer_experts", "top_k", "top_p", "r", "alpha", "dropout", "targets",
                     "router_init_std", "jitter", "aux_coef", "z_coef", "poisson_coef", "normal_coef", "capacity",
                     "dim_gcn", "gcn_layers", "edges_threshold", "reference_compat"},
                    path);
  o.experts = json_get_or<int64_t>(m, "experts", o.experts, path);
  if (m.contains("layer_experts")) {
    const json& v = m["layer_experts"];
    if (!v.is_array() || v.empty()) fail_file(path, "lora_moe.layer_experts must be a non-empty list of integers");
    o.layer_experts.clear();
    for (const auto& x : v) {
      if (!x.is_number_integer()) fail_file(path, "lora_moe.layer_experts must be a non-empty list of integers");
      o.layer_experts.push_back(x.get<int64_t>());
    }
  }
  o.top_k = json_get_or<int64_t>(m, "top_k", o.top_k, path);
  o.top_p = json_get_or<double>(m, "top_p", o.top_p, path);
  o.r = json_get_or<int64_t>(m, "r", o.r, path);
  o.alpha = json_get_or<double>(m, "alpha", o.alpha, path);
  o.dropout = json_get_or<double>(m, "dropout", o.dropout, path);
  if (m.contains("targets")) o.targets = config_string_list(m, "targets", "lora_moe", path);
  o.router_init_std = json_get_or<double>(m, "router_init_std", o.router_init_std, path);
  o.jitter = json_get_or<double>(m, "jitter", o.jitter, path);
  o.aux_coef = json_get_or<double>(m, "aux_coef", o.aux_coef, path);
  o.z_coef = json_get_or<double>(m, "z_coef", o.z_coef, path);
  o.poisson_coef = json_get_or<double>(m, "poisson_coef", o.poisson_coef, path);
  o.normal_coef = json_get_or<double>(m, "normal_coef", o.normal_coef, path);
  o.capacity = json_get_or<int64_t>(m, "capacity", o.capacity, path);
  o.graph.dim_gcn = json_get_or<int64_t>(m, "dim_gcn", o.graph.dim_gcn, path);
  o.graph.gcn_layers = json_get_or<int64_t>(m, "gcn_layers", o.graph.gcn_layers, path);
  o.graph.edges_threshold = json_get_or<double>(m, "edges_threshold", o.graph.edges_threshold, path);
  o.reference_compat = json_get_or<bool>(m, "reference_compat", false, path);
  try {
    o = checked_lora_moe_options(o);
  } catch (const Error& e) {
    fail_file(path, e.what());
  }
}

}  // namespace

LoraMoeRecipeConfig load_lora_moe_config(const std::string& path) {
  json root = read_json_file(path);
  if (!root.is_object()) fail_file(path, "expected a JSON object");
  config_check_keys(root, "", {"model", "routing", "lora_moe", "lora", "data", "training", "eval"}, path);
  LoraMoeRecipeConfig c;
  c.path = path;
  const std::string base = parent_dir(path).empty() ? "." : parent_dir(path);
  if (root.contains("model")) c.model_dir = resolve_config_path(base, json_get<std::string>(root, "model", path));

  // Routing: "lora" or one of the LoRA-MoE routings (unknown: the list of known ones).
  c.routing = json_get<std::string>(root, "routing", path);
  const bool plain = c.routing == "lora";
  if (plain) {
    if (root.contains("lora_moe")) fail_file(path, "'lora_moe' does not apply to routing \"lora\" (plain LoRA)");
  } else {
    try {
      c.moe = lora_moe_defaults(c.routing);
    } catch (const Error& e) {
      fail_file(path, std::string(e.what()) + " or \"lora\"");
    }
    read_moe_options(config_section(root, "lora_moe", path), path, c.moe);
  }

  // LoRA outside the experts: attention where the method uses it (MixLoRA, MoLA, GMoE: q, k, v, o
  // with the experts' r / alpha; LoRAMoE and MING-MoE: none), every projection for plain LoRA.
  const json& l = config_section(root, "lora", path);
  config_check_keys(l, "lora", {"enabled", "r", "alpha", "dropout", "targets"}, path);
  const bool method_uses_attention = plain || (c.routing != "loramoe" && c.routing != "ming-moe");
  c.attention_lora = json_get_or<bool>(l, "enabled", method_uses_attention, path);
  if (plain && !c.attention_lora) fail_file(path, "routing \"lora\" needs lora.enabled");
  c.lora.r = json_get_or<int64_t>(l, "r", plain ? 8 : c.moe.r, path);
  c.lora.alpha = json_get_or<double>(l, "alpha", plain ? 16.0 : c.moe.alpha, path);
  c.lora.dropout = json_get_or<double>(l, "dropout", plain ? 0.05 : c.moe.dropout, path);
  c.lora.targets = kAttention;
  if (plain) c.lora.targets.insert(c.lora.targets.end(), {"gate_proj", "up_proj", "down_proj"});
  if (l.contains("targets")) c.lora.targets = config_string_list(l, "targets", "lora", path);
  if (c.lora.r <= 0) fail_file(path, "lora.r must be positive");
  if (!(c.lora.alpha > 0)) fail_file(path, "lora.alpha must be positive");
  if (!(c.lora.dropout >= 0 && c.lora.dropout < 1)) fail_file(path, "lora.dropout must lie in [0, 1)");
  if (!plain && c.attention_lora)
    for (const auto& t : c.lora.targets)
      for (const char* ffn : {"gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"})
        if (t == ffn)
          fail_file(path, "lora.targets: '" + t + "' is an FFN projection, which the LoRA experts adapt (lora_moe.targets)");

  const json& d = config_section(root, "data", path);
  config_check_keys(d, "data",
                    {"tasks", "include", "data_dir", "split_policy", "loss_on_all_tokens", "cutoff_len",
                     "max_train_items", "max_validation_items", "max_test_items"},
                    path);
  if (!d.contains("tasks")) fail_file(path, "missing 'data.tasks' (multiple-choice tasks to train on)");
  c.tasks = config_string_list(d, "tasks", "data", path);
  if (d.contains("include"))
    for (const auto& f : config_string_list(d, "include", "data", path)) c.include.push_back(resolve_config_path(base, f));
  c.data_dir = resolve_config_path(base, json_get_or<std::string>(d, "data_dir", ".", path));
  const std::string policy = json_get_or<std::string>(d, "split_policy", "task", path);
  if (policy == "task") c.split_policy = SplitPolicy::TaskSplits;
  else if (policy == "gmoe") c.split_policy = SplitPolicy::GmoeFork;
  else fail_file(path, "data.split_policy must be \"task\" or \"gmoe\"");
  c.sft.loss_on_all_tokens = json_get_or<bool>(d, "loss_on_all_tokens", false, path);
  c.sft.cutoff_len = json_get_or<int64_t>(d, "cutoff_len", 512, path);
  c.max_train_items = json_get_or<int64_t>(d, "max_train_items", 0, path);
  c.max_validation_items = json_get_or<int64_t>(d, "max_validation_items", 0, path);
  c.max_test_items = json_get_or<int64_t>(d, "max_test_items", 0, path);
  if (c.sft.cutoff_len < 2) fail_file(path, "data.cutoff_len must be at least 2");
  if (c.max_train_items < 0 || c.max_validation_items < 0 || c.max_test_items < 0)
    fail_file(path, "data.max_*_items must not be negative (0 = all)");

  // Training: GMoE's settings by default (AdamW lr 2e-4, weight decay 0.01 on every trainable
  // tensor, torch's betas and eps, constant LR, batch 16 = micro 8 x 2, 5 epochs).
  if (!root.contains("training") || !root["training"].is_object()) fail_file(path, "missing object 'training'");
  const json& t = root["training"];
  config_check_keys(t, "training",
                    {"batch_size", "grad_accum", "max_steps", "epochs", "lr", "min_lr", "warmup_steps",
                     "weight_decay", "betas", "eps", "clip", "bf16", "base_dtype", "eval_every", "save_every",
                     "keep_checkpoints", "seed", "seeds", "output_dir"},
                    path);
  TrainerOptions& o = c.trainer;
  o.batch_size = json_get_or<int64_t>(t, "batch_size", 8, path);
  o.grad_accum = json_get_or<int64_t>(t, "grad_accum", 2, path);
  if (t.contains("max_steps") && t.contains("epochs"))
    fail_file(path, "give at most one of 'training.max_steps' and 'training.epochs'");
  o.max_steps = json_get_or<int64_t>(t, "max_steps", 0, path);
  c.epochs = t.contains("max_steps") ? 0.0 : json_get_or<double>(t, "epochs", 5.0, path);
  if (t.contains("max_steps") && o.max_steps <= 0) fail_file(path, "training.max_steps must be positive");
  if (!t.contains("max_steps") && !(c.epochs > 0)) fail_file(path, "training.epochs must be positive");
  o.schedule.lr = json_get_or<double>(t, "lr", 2e-4, path);
  o.schedule.min_lr = json_get_or<double>(t, "min_lr", o.schedule.lr, path);
  o.schedule.warmup_steps = json_get_or<int64_t>(t, "warmup_steps", 0, path);
  o.adamw.weight_decay = 0.01;
  o.adamw.beta1 = 0.9;
  o.adamw.beta2 = 0.999;
  o.no_decay_1d = false;  // torch AdamW over the trainable tensors, as mLoRA builds it
  o.clip = 0.0;           // mLoRA does not clip
  o.eval_every = 25;      // GMoE: every 50 micro-batches at grad-acc 2
  o.save_every = 0;
  o.seed = 42;
  read_shared_training_keys(t, path, o);
  c.base_dtype = json_get_or<std::string>(t, "base_dtype", "bf16", path);
  if (c.base_dtype != "bf16" && c.base_dtype != "fp32") fail_file(path, "training.base_dtype must be \"bf16\" or \"fp32\"");
  c.seeds = json_get_or<int64_t>(t, "seeds", 1, path);
  if (c.seeds < 1) fail_file(path, "training.seeds must be at least 1");
  o.out_dir = resolve_config_path(base, json_get_or<std::string>(t, "output_dir", "", path));

  const json& e = config_section(root, "eval", path);
  config_check_keys(e, "eval", {"batch_size", "lm_eval"}, path);
  c.eval_batch_size = json_get_or<int64_t>(e, "batch_size", 16, path);
  c.lm_eval_protocol = json_get_or<bool>(e, "lm_eval", true, path);
  if (c.eval_batch_size <= 0) fail_file(path, "eval.batch_size must be positive");
  return c;
}

}  // namespace mf
