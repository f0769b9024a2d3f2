// lm-eval's --log_samples output: one JSONL file per task, one line per document, shaped as
// lm_eval.evaluator.evaluate() builds it and EvaluationTracker.save_results_samples() writes it
// (doc_id, doc, target, arguments, resps, filtered_resps, filter, metrics, doc_hash, prompt_hash,
// target_hash, then the per-document metric values), plus the Python-compatible JSON writer the
// hashes need (json.dumps(..., ensure_ascii=False), floats as Python repr).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "eval/engine.h"
#include "eval/metrics.h"
#include "eval/requests.h"
#include "eval/task.h"

namespace mf::eval {

// Python repr() of a float: shortest round-trip digits, exponent form below 1e-4 and from 1e16 on
// ("1e-05", "1e+16"), ".0" on integral values, "nan" / "inf" / "-inf".
std::string py_float_repr(double v);

// Python json.dumps(value, ensure_ascii=False) (indent < 0) or json.dumps(value, indent=indent,
// ensure_ascii=False): the same bytes for the same (ordered) value. Floats are written as repr(),
// NaN / Infinity as Python does.
std::string py_json_dumps(const nlohmann::ordered_json& value, int indent = -1);

// One task's sample records as JSON lines (no trailing newline). scores[i][r] is request r of
// instance i (rolling: summed over windows); items are compute_metric_items' per-document values.
// task_hash (optional) receives lm-eval's task hash: sha256 of all doc_hash + prompt_hash + target_hash.
std::vector<std::string> sample_lines(const TaskDef& task, const std::vector<Doc>& docs,
                                      const std::vector<Instance>& instances,
                                      const std::vector<std::vector<TokenScore>>& scores,
                                      const std::vector<MetricItems>& items, std::string* task_hash = nullptr);

// lm-eval's date_id of a Unix time: datetime.isoformat() in local time with ':' replaced by '-'.
std::string lm_eval_date_id(double unix_seconds);

}  // namespace mf::eval
