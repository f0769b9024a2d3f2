#include "train/recipe_config.h"

#include <utility>

#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf {

std::string resolve_config_path(const std::string& base_dir, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  return path_join(base_dir, p);
}

std::vector<std::string> config_string_list(const json& j, const std::string& key, const std::string& section,
                                            const std::string& origin) {
  const std::string full = section + "." + key;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail_file(origin, "missing key '" + full + "'");
  std::vector<std::string> out;
  if (it->is_string()) {
    out.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    for (const auto& e : *it) {
      if (!e.is_string()) fail_file(origin, "key '" + full + "' must be a string or a list of strings");
      out.push_back(e.get<std::string>());
    }
  } else {
    fail_file(origin, "key '" + full + "' must be a string or a list of strings");
  }
  if (out.empty()) fail_file(origin, "key '" + full + "' is empty");
  return out;
}

void config_check_keys(const json& j, const std::string& section, const std::unordered_set<std::string>& known,
                       const std::string& origin) {
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.count(it.key())) fail_file(origin, "unknown key '" + section + "." + it.key() + "'");
}

const json& config_section(const json& root, const std::string& name, const std::string& origin) {
  static const json empty = json::object();
  auto it = root.find(name);
  if (it == root.end()) return empty;
  if (!it->is_object()) fail_file(origin, "'" + name + "' must be an object");
  return *it;
}

void read_shared_training_keys(const json& t, const std::string& origin, TrainerOptions& o) {
  o.adamw.weight_decay = json_get_or<double>(t, "weight_decay", o.adamw.weight_decay, origin);
  o.adamw.eps = json_get_or<double>(t, "eps", o.adamw.eps, origin);
  if (t.contains("betas")) {
    const json& b = t["betas"];
    if (!b.is_array() || b.size() != 2 || !b[0].is_number() || !b[1].is_number())
      fail_file(origin, "training.betas must be a list of two numbers");
    o.adamw.beta1 = b[0].get<double>();
    o.adamw.beta2 = b[1].get<double>();
  }
  o.clip = json_get_or<double>(t, "clip", o.clip, origin);
  o.bf16 = json_get_or<bool>(t, "bf16", o.bf16, origin);
  o.eval_every = json_get_or<int64_t>(t, "eval_every", o.eval_every, origin);
  o.eval_batches = json_get_or<int64_t>(t, "eval_batches", o.eval_batches, origin);
  o.save_every = json_get_or<int64_t>(t, "save_every", o.save_every, origin);
  o.keep_checkpoints = json_get_or<int64_t>(t, "keep_checkpoints", o.keep_checkpoints, origin);
  o.seed = static_cast<uint64_t>(json_get_or<int64_t>(t, "seed", static_cast<int64_t>(o.seed), origin));

  for (auto [key, v] : {std::pair<const char*, int64_t>{"batch_size", o.batch_size}, {"grad_accum", o.grad_accum}})
    if (v <= 0) fail_file(origin, cat("training.", key, " must be positive"));
  for (auto [key, v] : {std::pair<const char*, int64_t>{"warmup_steps", o.schedule.warmup_steps},
                        {"eval_every", o.eval_every},
                        {"save_every", o.save_every},
                        {"keep_checkpoints", o.keep_checkpoints}})
    if (v < 0) fail_file(origin, cat("training.", key, " must not be negative"));
  if (!(o.schedule.lr > 0)) fail_file(origin, "training.lr must be positive");
  if (o.schedule.min_lr < 0 || o.schedule.min_lr > o.schedule.lr)
    fail_file(origin, "training.min_lr must lie in [0, lr]");
  if (!(o.adamw.beta1 >= 0 && o.adamw.beta1 < 1 && o.adamw.beta2 >= 0 && o.adamw.beta2 < 1))
    fail_file(origin, "training.betas must lie in [0, 1)");
  if (o.adamw.weight_decay < 0) fail_file(origin, "training.weight_decay must not be negative");
}

}  // namespace mf
