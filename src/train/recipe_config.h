// Pieces of the recipe config files (configs/*.json) that every training recipe reads the same
// way: paths relative to the config, string-or-list keys, and the "training" keys of the shared
// trainer (optimizer, clipping, bf16, evaluation / checkpoint cadence, seed). Errors name the file
// and the dotted key: "<config>: training.lr must be positive".
#pragma once
#include <string>
#include <unordered_set>
#include <vector>

#include "train/trainer.h"
#include "util/json.h"

namespace mf {

// `p` relative to `base_dir` (the config file's directory) unless absolute or empty.
std::string resolve_config_path(const std::string& base_dir, const std::string& p);

// `section.key` as a non-empty list of strings (a single string counts as a list of one).
std::vector<std::string> config_string_list(const json& j, const std::string& key, const std::string& section,
                                            const std::string& origin);

// Every key of the object `j` (the config's `section`, "" = the top level) must be in `known`;
// otherwise "<origin>: unknown key '<section>.<key>'".
void config_check_keys(const json& j, const std::string& section, const std::unordered_set<std::string>& known,
                       const std::string& origin);

// The object under `name` (an empty object when absent; error when it is not an object).
const json& config_section(const json& root, const std::string& name, const std::string& origin);

// Reads weight_decay, eps, betas, clip, bf16, eval_every, eval_batches, save_every,
// keep_checkpoints and seed from the "training" object `t` into `o`, whose values on entry are
// the recipe's defaults; then checks everything in `o` the keys could have broken, plus the
// schedule the recipe already read (lr > 0, min_lr in [0, lr], counts not negative).
void read_shared_training_keys(const json& t, const std::string& origin, TrainerOptions& o);

}  // namespace mf
