// The whole evaluation: resolve tasks and groups, load documents, build requests, tokenize them,
// score everything in one engine run (all tasks pooled, longest first), compute metrics, aggregate
// groups. The model and tokenizer come in through the abstract interfaces of engine.h / requests.h.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "eval/engine.h"
#include "eval/metrics.h"
#include "eval/registry.h"
#include "eval/requests.h"

namespace mf::eval {

struct EvalOptions {
  std::string data_dir;
  double limit = -1;  // < 0: all; < 1: fraction (ceil); else number of documents per task
  BosPolicy bos = BosPolicy::Auto;
  EngineOptions engine;
  int64_t bootstrap_iters = 100000;  // lm-eval default; 0 turns stderr off
  // Also report acc_bytes (acc_norm with UTF-8 byte lengths) wherever a task reports acc_norm.
  bool acc_bytes = false;
  // Build lm-eval's per-sample records (EvalReport::samples) for --log-samples.
  bool log_samples = false;
};

// A task that could not be scored: its data file is missing or malformed, a request does not fit, ...
struct TaskFailure {
  std::string task;
  std::string message;  // one line, "<file>: <what>" or "<file>:<line>: <what>"
};

struct EvalReport {
  // Table order: a group row, then its children (deeper aliases are indented "  - " like lm-eval).
  // Failed tasks have no row; a group with a failed task below it is not aggregated (no row).
  std::vector<TaskResult> results;
  std::vector<std::string> groups;  // names of group rows, in table order
  // lm-eval's group_subtasks: every requested task (with no subtasks) and every group below the
  // requested names with its children, in lm-eval's (reversed) order.
  std::vector<std::pair<std::string, std::vector<std::string>>> group_subtasks;
  std::map<std::string, nlohmann::ordered_json> configs;  // task -> task_config_json()
  std::map<std::string, std::string> data_files;          // task -> file evaluated
  std::vector<TaskFailure> failures;                      // in task order
  // With EvalOptions::log_samples: task -> JSONL lines (samples.h), task -> lm-eval task hash.
  std::map<std::string, std::vector<std::string>> samples;
  std::map<std::string, std::string> task_hashes;
  EngineStats stats;
  double start_unix = 0.0;  // wall-clock start (seconds since the epoch)
  double seconds = 0.0;
};

// The number of documents to evaluate for a task with n documents under `limit` (lm-eval rule).
int64_t apply_limit(int64_t n, double limit);

// Scores every task that can be scored. A task whose data cannot be loaded or turned into requests
// (or whose metrics cannot be computed) is recorded in EvalReport::failures instead of stopping the
// run; unknown task names and model errors still throw mf::Error.
EvalReport evaluate(const TaskRegistry& registry, const std::vector<std::string>& task_names,
                    const TextEncoder& encoder, LoglikelihoodModel& model, const EvalOptions& options);

}  // namespace mf::eval
