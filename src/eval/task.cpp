#include "eval/task.h"

#include <cmath>

#include "util/error.h"

namespace mf::eval {

const char* output_type_name(OutputType t) {
  switch (t) {
    case OutputType::MultipleChoice: return "multiple_choice";
    case OutputType::Loglikelihood: return "loglikelihood";
    case OutputType::LoglikelihoodRolling: return "loglikelihood_rolling";
  }
  return "?";
}

const json& field(const json& doc, const std::string& key) {
  if (!doc.is_object()) fail("document is not a JSON object");
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) fail("missing field '" + key + "'");
  return *it;
}

std::string str_field(const json& doc, const std::string& key) {
  const json& v = field(doc, key);
  if (!v.is_string()) fail("field '" + key + "' must be a string");
  return v.get<std::string>();
}

int64_t int_field(const json& doc, const std::string& key) {
  const json& v = field(doc, key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    bool digits = !s.empty();
    for (char c : s) digits = digits && c >= '0' && c <= '9';
    if (digits && s.size() < 18) return std::stoll(s);
  }
  fail("field '" + key + "' must be an integer");
}

std::vector<std::string> str_list_field(const json& doc, const std::string& key) {
  const json& v = field(doc, key);
  if (!v.is_array()) fail("field '" + key + "' must be a list of strings");
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) fail("field '" + key + "' must be a list of strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

nlohmann::ordered_json doc_in_file_order(const Doc& doc) {
  if (!doc.raw.empty()) {
    try {
      return nlohmann::ordered_json::parse(doc.raw);
    } catch (const nlohmann::ordered_json::exception&) {
      // value was parsed from the same text; fall back to it
    }
  }
  return nlohmann::ordered_json(doc.value);
}

nlohmann::ordered_json version_json(double version, bool is_group) {
  if (is_group && std::floor(version) == version && std::fabs(version) < 1e15)
    return nlohmann::ordered_json(static_cast<int64_t>(version));
  return nlohmann::ordered_json(version);
}

nlohmann::ordered_json task_config_json(const TaskDef& task) {
  using oj = nlohmann::ordered_json;
  // lm_eval.api.task.TaskConfig fields in declaration order (v0.4.9).
  static const char* kFields[] = {
      "task", "task_alias", "tag", "custom_dataset", "dataset_path", "dataset_name", "dataset_kwargs",
      "training_split", "validation_split", "test_split", "fewshot_split", "process_docs", "doc_to_text",
      "doc_to_target", "doc_to_image", "doc_to_audio", "unsafe_code", "doc_to_choice", "process_results",
      "use_prompt", "description", "target_delimiter", "fewshot_delimiter", "fewshot_config", "num_fewshot",
      "metric_list", "output_type", "generation_kwargs", "repeats", "filter_list", "should_decontaminate",
      "doc_to_decontamination_query", "gen_prefix", "metadata"};
  oj metric_list = oj::array();
  for (const auto& m : task.metrics)
    metric_list.push_back({{"metric", m.name}, {"aggregation", m.aggregation}, {"higher_is_better", m.higher_is_better}});
  // What TaskConfig.to_dict() writes for fields the YAML leaves unset (None values are dropped).
  const oj defaults = {{"task", task.name},
                       {"unsafe_code", false},
                       {"description", task.description},
                       {"target_delimiter", task.target_delimiter},
                       {"fewshot_delimiter", "\n\n"},
                       {"num_fewshot", 0},
                       {"metric_list", metric_list},
                       {"output_type", output_type_name(task.output_type)},
                       {"repeats", 1},
                       {"should_decontaminate", false},
                       {"metadata", {{"version", version_json(task.version, false)}}}};
  const oj& given = task.lm_config.is_object() ? task.lm_config : oj::object();
  oj out = oj::object();
  for (const char* f : kFields) {
    auto it = given.find(f);
    if (it != given.end()) {
      if (!it->is_null()) out[f] = *it;
    } else if (defaults.contains(f)) {
      out[f] = defaults.at(f);
    }
  }
  for (auto it = given.begin(); it != given.end(); ++it)
    if (!out.contains(it.key()) && !it->is_null()) out[it.key()] = it.value();
  return out;
}

}  // namespace mf::eval
