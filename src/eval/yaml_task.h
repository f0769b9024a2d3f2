// Custom tasks from YAML, in lm-eval's task-YAML vocabulary so a task can be added without
// recompiling:
//
//   task: my_qa                       # name used with --tasks
//   data_file: my_qa/test.jsonl       # JSONL in the task's field layout; relative to --data-dir
//   output_type: multiple_choice      # or loglikelihood, loglikelihood_rolling
//   description: ""                   # optional, prepended verbatim
//   doc_to_text: "Question: {{question}}\nAnswer:"
//   doc_to_choice: "{{choices.text}}" # or a YAML list of templates, or a field name
//   doc_to_target: "{{choices.label.index(answerKey)}}"   # or an integer, or a field name
//   target_delimiter: " "
//   metric_list: [{metric: acc}, {metric: acc_norm}]
//   metadata: {version: 1.0}
//
// Several tasks may be given as several YAML documents (---) in one file. Templates: eval/template.h.
#pragma once
#include <string>
#include <vector>

#include "eval/registry.h"

namespace mf::eval {

// Parses all tasks in a YAML file; mf::Error "<file>: <what>" on any problem.
std::vector<TaskDef> load_yaml_tasks(const std::string& path);
// Parses tasks from YAML text (origin names it in errors).
std::vector<TaskDef> parse_yaml_tasks(const std::string& text, const std::string& origin);

// The aggregation and direction lm-eval uses for a metric name; mf::Error for unknown metrics.
MetricSpec default_metric_spec(const std::string& name);

}  // namespace mf::eval
