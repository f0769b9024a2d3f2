// lm-eval's outputs: the markdown console table (utils.make_table, pytablewriter layout) and the
// results JSON with lm-eval's key names ("acc,none", "acc_stderr,none", versions, n-shot, ...).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/evaluate.h"

namespace mf::eval {

// column "results" (every row, header "Tasks") or "groups" (group rows only, header "Groups").
std::string format_table(const EvalReport& report, bool groups_only);
// What lm-eval prints: the results table, then the groups table when groups were run.
std::string format_console(const EvalReport& report);
// Python "%.4f".
std::string format_4f(double v);

// The run's settings (tasks, data dir, limit, BOS policy, batching, bootstrap, max_length, 0 shots).
// The caller adds the model ("model", "model_args", "device", "model_sha256", ...) before passing it
// to results_json.
nlohmann::json settings_json(const EvalOptions& options, const std::vector<std::string>& tasks, int64_t max_length);

// lm-eval's results file (lm-eval 0.4.4 - 0.4.11 layout, evaluator.simple_evaluate() +
// EvaluationTracker.save_results_aggregated()): results, groups (only when a group was aggregated),
// group_subtasks, configs, versions, n-shot, higher_is_better, n-samples, config (model, model_args,
// batch_size, device, limit, bootstrap_iters, the four seeds, then moeforge's own settings), git_hash,
// date, environment and tokenizer keys, task_hashes, the tracker keys, total_evaluation_time_seconds
// (a string); then moeforge's additions: data_files, engine, failed_tasks (only when a task failed).
// settings: what the caller ran with (settings_json + model keys). tokenizer: lm-eval's tokenizer
// keys (tokenizer_pad_token, tokenizer_eos_token, tokenizer_bos_token, eot_token_id, max_length).
nlohmann::ordered_json results_json(const EvalReport& report, const nlohmann::json& settings,
                                    const nlohmann::json& tokenizer = nlohmann::json::object());

// lm-eval's simple_parse_args_string(): "pretrained=x,dtype=float32" -> {"pretrained": "x", ...}
// with "true"/"false" as booleans and numbers as numbers.
nlohmann::ordered_json parse_model_args(const std::string& args);
// lm-eval's sanitize_model_name(): runs of "<>:/|\?*[] and '"' become "__".
std::string sanitize_model_name(const std::string& name);

// Writes EvalReport::samples as lm-eval does: DIR/samples_<task>_<date_id>.jsonl, one per task, each
// written atomically. Returns the paths written.
std::vector<std::string> write_sample_files(const EvalReport& report, const std::string& dir);

}  // namespace mf::eval
