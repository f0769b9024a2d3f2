// The whole evaluation: resolve tasks and groups, load documents, build requests, tokenize them,
// score everything in one engine run (all tasks pooled, longest first), compute metrics, aggregate
// groups. The model and tokenizer come in through the abstract interfaces of engine.h / requests.h.
#pragma once
#include <cstdint>
#include <map>
#include <string>
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
};

struct EvalReport {
  // Table order: a group row, then its children (deeper aliases are indented "  - " like lm-eval).
  std::vector<TaskResult> results;
  std::vector<std::string> groups;  // names of group rows, in table order
  std::map<std::string, std::vector<std::string>> group_subtasks;
  std::map<std::string, std::string> data_files;  // task -> file evaluated
  EngineStats stats;
  double seconds = 0.0;
};

// The number of documents to evaluate for a task with n documents under `limit` (lm-eval rule).
int64_t apply_limit(int64_t n, double limit);

EvalReport evaluate(const TaskRegistry& registry, const std::vector<std::string>& task_names,
                    const TextEncoder& encoder, LoglikelihoodModel& model, const EvalOptions& options);

}  // namespace mf::eval
