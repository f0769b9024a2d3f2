#include "train/pretrain.h"

#include <map>
#include <unordered_set>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "train/recipe_config.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

namespace {


const std::unordered_set<std::string>& known_training_keys() {
  static const std::unordered_set<std::string> keys = {
      "seq_len", "batch_size", "grad_accum", "lr", "min_lr", "warmup_steps", "max_steps", "weight_decay",
      "betas", "eps", "clip", "bf16", "eval_every", "eval_batches", "save_every", "keep_checkpoints", "seed",
      "train_data", "validation_data", "tokenizer", "output_dir", "no_decay_names", "init"};
  return keys;
}

}  // namespace

namespace {

// A Llama model from scratch: required sizes, the defaults HF's LlamaConfig has.
void fill_llama_defaults(json& m, const std::string& path) {
  const std::string& mo = path;
  auto positive = [&](const char* key) {
    int64_t v = json_get<int64_t>(m, key, mo);
    if (v <= 0) fail_file(path, cat("model.", key, " must be positive"));
    return v;
  };
  const int64_t hidden = positive("hidden_size");
  positive("intermediate_size");
  positive("num_hidden_layers");
  const int64_t heads = positive("num_attention_heads");
  positive("vocab_size");
  if (!m.contains("num_key_value_heads")) m["num_key_value_heads"] = heads;
  const int64_t kv = positive("num_key_value_heads");
  if (hidden % heads != 0) fail_file(path, "model.hidden_size must be divisible by num_attention_heads");
  if (heads % kv != 0) fail_file(path, "model.num_attention_heads must be divisible by num_key_value_heads");
  if (!m.contains("rope_theta")) m["rope_theta"] = 10000.0;
  if (!m.contains("rms_norm_eps")) m["rms_norm_eps"] = 1e-6;
  if (!m.contains("tie_word_embeddings")) m["tie_word_embeddings"] = false;
  json_get<double>(m, "rope_theta", mo);
  json_get<double>(m, "rms_norm_eps", mo);
  json_get<bool>(m, "tie_word_embeddings", mo);
  if (!m.contains("model_type")) m["model_type"] = "llama";
  if (!m.contains("architectures")) m["architectures"] = json::array({"LlamaForCausalLM"});
  if (!m.contains("hidden_act")) m["hidden_act"] = "silu";
}

}  // namespace

PretrainConfig load_pretrain_config(const std::string& path, const std::string& init_override) {
  json root = read_json_file(path);
  if (!root.is_object()) fail_file(path, "expected a JSON object with 'model' and 'training'");
  PretrainConfig c;
  c.path = path;
  const std::string base = parent_dir(path).empty() ? "." : parent_dir(path);
  if (!root.contains("training") || !root["training"].is_object()) fail_file(path, "missing object 'training'");
  const json& t = root["training"];
  for (auto it = t.begin(); it != t.end(); ++it)
    if (!known_training_keys().count(it.key())) fail_file(path, "unknown key 'training." + it.key() + "'");
  if (!init_override.empty()) c.init = init_override;
  else if (t.contains("init")) c.init = resolve_config_path(base, json_get<std::string>(t, "init", path));
  if (root.contains("model") && !root["model"].is_object()) fail_file(path, "'model' must be an object");

  // The model: from scratch (the "model" section, any model_type; Llama when none is named),
  // or an existing checkpoint whose config.json keys the "model" section overrides.
  json m;
  if (!c.init.empty()) {
    const std::string init_cfg = path_join(c.init, "config.json");
    if (!path_exists(init_cfg)) fail_file(c.init, "not a model directory: config.json is missing");
    m = read_json_file(init_cfg);
    if (root.contains("model")) {
      c.model_overrides = root["model"];
      for (auto it = c.model_overrides.begin(); it != c.model_overrides.end(); ++it) m[it.key()] = it.value();
    }
  } else {
    if (!root.contains("model")) fail_file(path, "missing object 'model' (or training.init / --init)");
    m = root["model"];
    if (!m.contains("model_type") || m["model_type"] == "llama") fill_llama_defaults(m, path);
  }

  // Training.
  c.seq_len = json_get<int64_t>(t, "seq_len", path);
  if (c.seq_len <= 0) fail_file(path, "training.seq_len must be positive");
  const char* max_pos = m.contains("n_positions") ? "n_positions" : "max_position_embeddings";
  if (!m.contains(max_pos)) m[max_pos] = c.seq_len;
  if (json_get<int64_t>(m, max_pos, path) < c.seq_len)
    fail_file(path, std::string("training.seq_len exceeds model.") + max_pos);
  c.model = m;

  TrainerOptions& o = c.trainer;
  o.batch_size = json_get<int64_t>(t, "batch_size", path);
  o.grad_accum = json_get_or<int64_t>(t, "grad_accum", 1, path);
  o.max_steps = json_get<int64_t>(t, "max_steps", path);
  o.schedule.lr = json_get<double>(t, "lr", path);
  o.schedule.min_lr = json_get_or<double>(t, "min_lr", o.schedule.lr * 0.1, path);
  o.schedule.warmup_steps = json_get_or<int64_t>(t, "warmup_steps", 0, path);
  o.bf16 = true;
  read_shared_training_keys(t, path, o);
  if (t.contains("no_decay_names")) o.no_decay_names = config_string_list(t, "no_decay_names", "training", path);
  if (o.max_steps <= 0) fail_file(path, "training.max_steps must be positive");
  if (o.schedule.warmup_steps > o.max_steps) fail_file(path, "training.warmup_steps exceeds max_steps");

  for (const auto& f : config_string_list(t, "train_data", "training", path)) c.train_files.push_back(resolve_config_path(base, f));
  if (t.contains("validation_data"))
    for (const auto& f : config_string_list(t, "validation_data", "training", path)) c.validation_files.push_back(resolve_config_path(base, f));
  if (t.contains("tokenizer")) c.tokenizer = resolve_config_path(base, json_get<std::string>(t, "tokenizer", path));
  else if (!c.init.empty()) c.tokenizer = c.init;
  else fail_file(path, "missing key 'training.tokenizer'");
  o.out_dir = resolve_config_path(base, json_get_or<std::string>(t, "output_dir", "", path));
  return c;
}

double training_flops_per_token(int64_t matmul_params, int64_t layers, int64_t seq_len, int64_t hidden) {
  return 6.0 * static_cast<double>(matmul_params) +
         12.0 * static_cast<double>(layers) * static_cast<double>(seq_len) * static_cast<double>(hidden);
}

TrainResult run_pretrain(const PretrainConfig& config, const std::function<PretrainModel()>& make_model,
                         const PretrainTokenizer& tokenizer) {
  const TrainerOptions& opt = config.trainer;
  if (opt.out_dir.empty()) fail_file(config.path, "no output directory (training.output_dir or --output)");
  const int64_t vocab = json_get<int64_t>(config.model, "vocab_size", config.path);
  if (tokenizer.eos_id < 0 || tokenizer.eos_id >= vocab)
    fail_file(config.tokenizer, cat("EOS id ", tokenizer.eos_id, " outside the model vocabulary of ", vocab));

  seed_torch(opt.seed);
  PretrainModel model = make_model();
  if (!model.module || !model.logits) fail("pretrain: the model factory returned no model");

  // Data: training documents in file order, validation documents grouped by domain.
  std::vector<std::string> train_texts;
  for (const auto& f : config.train_files)
    for (auto& d : read_documents_jsonl(f)) train_texts.push_back(std::move(d.text));
  if (train_texts.empty()) fail_file(config.train_files.front(), "no documents");
  const size_t train_documents = train_texts.size();
  PackedSequences train(build_token_stream(train_texts, tokenizer.encode, tokenizer.eos_id, "tokenize train"),
                        config.seq_len);
  train_texts = {};
  // Too little text for one batch: named here, with its file (the batch loader only knows counts).
  if (train.size() < opt.batch_size * opt.world_size)
    fail_file(config.train_files.size() == 1 ? config.train_files.front() : config.path,
              cat(train_documents, train_documents == 1 ? " document" : " documents", " of ", train.stream_tokens(),
                  train_documents == 1 ? " tokens makes " : " tokens make ", train.size(), " training sequences of ",
                  config.seq_len + 1,
                  " tokens, fewer than one batch of ", opt.batch_size * opt.world_size));
  if (train.max_token() >= vocab)
    fail_file(config.tokenizer, cat("token id ", train.max_token(), " outside the model vocabulary of ", vocab));
  std::map<std::string, std::vector<std::string>> by_domain;
  for (const auto& f : config.validation_files)
    for (auto& d : read_documents_jsonl(f)) by_domain[d.domain].push_back(std::move(d.text));
  std::vector<std::pair<std::string, PackedSequences>> validation;
  for (auto& [domain, texts] : by_domain) {
    PackedSequences packed(build_token_stream(texts, tokenizer.encode, tokenizer.eos_id), config.seq_len);
    if (packed.size() == 0) {
      log_warn("validation domain '", domain, "' has fewer than ", config.seq_len + 1, " tokens; not evaluated");
      continue;
    }
    validation.emplace_back(domain, std::move(packed));
  }
  log_info("pretrain: ", train.size(), " training sequences of ", config.seq_len + 1, " tokens, ",
           validation.size(), " validation domains");

  auto loss_fn = [&](const at::Tensor& windows) {
    at::Tensor inputs = windows.slice(1, 0, windows.size(1) - 1);
    return next_token_loss(model.logits(inputs), windows);
  };
  TrainerOptions options = opt;
  for (const auto& term : model.loss_terms) options.loss_terms.push_back(term);
  if (model.step_metrics) options.step_metrics = model.step_metrics;
  if (model.after_step) options.after_step = [&model](int64_t) { model.after_step(); };
  TrainResult result = train_loop(*model.module, loss_fn, train, validation, options);
  if (opt.stop_after_step >= 0 && result.steps < opt.max_steps) return result;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  if (model.export_tensors) {
    tensors = model.export_tensors();
  } else {
    std::unordered_set<const void*> seen;
    for (const auto& item : model.module->named_parameters(true))
      if (seen.insert(item.value().unsafeGetTensorImpl()).second) tensors.emplace_back(item.key(), item.value());
  }
  if (opt.complete_tensors) opt.complete_tensors(tensors, {""});  // expert parallelism: every rank
  if (!opt.is_writer()) return result;  // data parallel: rank 0 writes the model

  // The final model directory, HF layout.
  AtomicDir dir(path_join(opt.out_dir, "final"));
  json cfg = config.model;
  cfg["torch_dtype"] = "float32";
  if (!cfg.contains("bos_token_id")) cfg["bos_token_id"] = tokenizer.bos_id >= 0 ? json(tokenizer.bos_id) : json(nullptr);
  cfg["eos_token_id"] = tokenizer.eos_id;
  write_json_file(path_join(dir.path(), "config.json"), cfg);
  save_safetensors(path_join(dir.path(), "model.safetensors"), tensors);
  // Tokenizer files only: with --init the tokenizer directory is a model directory, whose
  // config.json, weights and model card must not replace the ones just written.
  if (!tokenizer.files_dir.empty())
    for (const auto& name : auxiliary_model_files()) {
      const std::string from = path_join(tokenizer.files_dir, name);
      if (name != "README.md" && path_exists(from) && !is_directory(from)) copy_file(from, path_join(dir.path(), name));
    }
  json record = {{"recipe", "pretrain"},
                 {"config", config.path},
                 {"init", config.init.empty() ? json(nullptr) : json(config.init)},
                 {"steps", result.steps},
                 {"final_loss", result.last_loss},
                 {"tokens_per_s", result.tokens_per_s},
                 {"val_loss", result.val_loss},
                 {"train_sequences", train.size()},
                 {"seq_len", config.seq_len},
                 {"inputs", json::array()}};
  for (const auto& f : config.train_files) record["inputs"].push_back({{"path", f}, {"sha256", sha256_file(f)}});
  for (const auto& f : config.validation_files)
    record["inputs"].push_back({{"path", f}, {"sha256", sha256_file(f)}});
  write_json_file(path_join(dir.path(), "train_record.json"), record);
  dir.commit();
  return result;
}

}  // namespace mf
