// Task definitions in lm-eval's terms: doc_to_text / doc_to_choice / doc_to_target over one document
// (a JSON object in the HF field layout), plus the split file, metrics and version. Built-in tasks live
// one per file in src/eval/tasks/; custom tasks come from YAML (eval/yaml_task.h).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace mf::eval {

using json = nlohmann::json;

enum class OutputType { MultipleChoice, Loglikelihood, LoglikelihoodRolling };
const char* output_type_name(OutputType t);

// A string, or an integer (gold index). doc_to_text returning an integer switches a multiple-choice
// task into lm-eval's "multiple input" mode (WinoGrande): the choices are the contexts.
struct TextOrIndex {
  bool is_index = false;
  int64_t index = 0;
  std::string text;
  static TextOrIndex of(std::string s) { return {false, 0, std::move(s)}; }
  static TextOrIndex of(int64_t i) { return {true, i, {}}; }
};

// One metric a task reports and how its per-document values are aggregated.
struct MetricSpec {
  std::string name;         // acc, acc_norm, acc_bytes, perplexity, word_perplexity, ...
  std::string aggregation;  // mean, perplexity, weighted_perplexity, bits_per_byte
  bool higher_is_better = true;
};

// A loaded document with its origin, so errors can say "<file>:<line>: <what>".
struct Doc {
  json value;
  std::string file;
  int64_t line = 0;
  // The JSON text as read (JSONL loaders): it keeps the file's key order, on which lm-eval's
  // doc_hash depends (`value` sorts keys). Empty for documents a loader built itself.
  std::string raw;
  std::string origin() const { return file + ":" + std::to_string(line); }
};

// Reads a task's data file: up to `limit` documents (limit < 0: all), in the HF field layout of the
// dataset lm-eval uses, whatever layout the file itself has (see DataLayout).
using DocReader = std::function<std::vector<Doc>(const std::string& path, int64_t limit)>;

// One place and layout in which a task's data can lie under --data-dir. A reader that maps another
// layout (OpenAI's LAMBADA, MMLU's CSVs, GLUE's TSV, ...) returns documents whose `value` and `raw`
// hold the canonical HF row, in the dataset's column order: everything downstream (templates,
// requests, --log-samples docs and their hashes) cannot tell the layouts apart.
struct DataLayout {
  std::string file;  // relative to --data-dir (YAML tasks: or absolute)
  std::string what;  // the layout in a few words, named when no file is found; empty: not named
  DocReader read;    // empty: the task's `load`, else JSONL as it is
  DataLayout(std::string f, std::string w = "", DocReader r = {})
      : file(std::move(f)), what(std::move(w)), read(std::move(r)) {}
  DataLayout(const char* f) : file(f) {}  // NOLINT: lets data_files = {"x/test.jsonl"} stay short
};

struct TaskDef {
  std::string name;
  std::string alias;  // shown in the table when listed under a group (empty: name)
  double version = 1.0;
  OutputType output_type = OutputType::MultipleChoice;
  // Data file candidates relative to --data-dir, each with its layout; the first that exists is used.
  std::vector<DataLayout> data_files;
  // Loads the docs of a layout without its own reader (default: JSONL, see eval/jsonl.h).
  DocReader load;
  std::string description;             // prepended verbatim to every context (zero-shot)
  std::string target_delimiter = " ";  // between context and each choice
  std::vector<MetricSpec> metrics;
  // Optional: rewrites a doc before the templates see it (HellaSwag).
  std::function<json(const json&)> process_doc;
  std::function<TextOrIndex(const json&)> doc_to_text;
  std::function<std::vector<std::string>(const json&)> doc_to_choice;  // multiple choice only
  std::function<TextOrIndex(const json&)> doc_to_target;
  // Rolling tasks: (words, bytes) of the document for word_perplexity / byte_perplexity.
  std::function<std::pair<int64_t, int64_t>(const json&)> doc_to_counts;
  // lm-eval's YAML keys for this task as its TaskConfig holds them (dataset_path, splits, the
  // doc_to_* templates as strings, metric_list as the YAML writes it, ...). task_config_json()
  // completes them into the task's entry under "configs" in the results JSON.
  nlohmann::ordered_json lm_config = nlohmann::ordered_json::object();
  // The document as lm-eval's Instance.doc holds it (after its process_docs), in the dataset's key
  // order, for --log-samples and doc_hash. Default: doc_in_file_order().
  std::function<nlohmann::ordered_json(const Doc&)> log_doc;
};

// A group of tasks (MMLU and its categories). Children are task or group names.
struct GroupDef {
  std::string name;
  std::string alias;  // empty: name
  std::vector<std::string> children;
  bool weight_by_size = true;
  double version = 1.0;
};

// Field accessors for templates: mf::Error "missing field 'x'" / "field 'x' must be a string".
const json& field(const json& doc, const std::string& key);
std::string str_field(const json& doc, const std::string& key);
int64_t int_field(const json& doc, const std::string& key);  // accepts ints and digit strings
std::vector<std::string> str_list_field(const json& doc, const std::string& key);

// The document with the keys in the order of the file it came from (Doc::raw), else as `value` has them.
nlohmann::ordered_json doc_in_file_order(const Doc& doc);

// lm-eval's "configs" entry of a task: TaskConfig.to_dict() with its field order and defaults as
// lm-eval v0.4.4 - v0.4.9 write them (v0.4.10+ also expand fewshot_config), num_fewshot 0,
// metadata {"version": ...}. Keys of lm_config that are not TaskConfig fields come last.
nlohmann::ordered_json task_config_json(const TaskDef& task);

// A version as lm-eval's YAML gives it: tasks write floats (1.0), groups integers (mmlu: 2).
nlohmann::ordered_json version_json(double version, bool is_group);

}  // namespace mf::eval
