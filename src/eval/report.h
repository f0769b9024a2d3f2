// lm-eval's outputs: the markdown console table (utils.make_table, pytablewriter layout) and the
// results JSON with lm-eval's key names ("acc,none", "acc_stderr,none", versions, n-shot, ...).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "eval/evaluate.h"

namespace mf::eval {

// column "results" (every row, header "Tasks") or "groups" (group rows only, header "Groups").
std::string format_table(const EvalReport& report, bool groups_only);
// What lm-eval prints: the results table, then the groups table when groups were run.
std::string format_console(const EvalReport& report);
// Python "%.4f".
std::string format_4f(double v);

// The run's settings (tasks, data dir, limit, BOS policy, batching, bootstrap, max_length, 0 shots).
// The caller adds the model ("model", "model_sha256") before passing it to results_json.
nlohmann::json settings_json(const EvalOptions& options, const std::vector<std::string>& tasks, int64_t max_length);

// settings: what the caller ran with (model path, hash, BOS policy, ...); stored under "config".
nlohmann::json results_json(const EvalReport& report, const nlohmann::json& settings);

}  // namespace mf::eval
