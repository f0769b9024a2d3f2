#include "eval/yaml_task.h"

#include <yaml-cpp/yaml.h>

#include <cstdlib>

#include "eval/jsonl.h"
#include "eval/template.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/yaml.h"

namespace mf::eval {

MetricSpec default_metric_spec(const std::string& name) {
  if (name == "acc" || name == "acc_norm" || name == "acc_bytes" || name == "exact_match") return {name, "mean", true};
  if (name == "perplexity") return {name, "perplexity", false};
  if (name == "word_perplexity" || name == "byte_perplexity") return {name, "weighted_perplexity", false};
  if (name == "bits_per_byte") return {name, "bits_per_byte", false};
  fail("unknown metric '" + name +
       "' (supported: acc, acc_norm, acc_bytes, exact_match, perplexity, word_perplexity, byte_perplexity, "
       "bits_per_byte)");
}

namespace {

// lm-eval: a template string naming a document field returns that field.
json eval_template_or_field(const std::string& t, const json& doc) {
  if (doc.is_object() && doc.contains(t)) return doc.at(t);
  return render_template(t, doc);
}

TextOrIndex to_text_or_index(const json& v, bool digits_to_index, const char* what) {
  if (v.is_number_integer()) return TextOrIndex::of(v.get<int64_t>());
  if (v.is_boolean()) return TextOrIndex::of(int64_t{v.get<bool>() ? 1 : 0});
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    if (digits_to_index && is_digits(s) && s.size() < 18) return TextOrIndex::of(static_cast<int64_t>(std::stoll(s)));
    return TextOrIndex::of(s);
  }
  fail(std::string(what) + " must give a string or an integer, got " + v.type_name());
}

std::vector<std::string> to_string_list(const json& v) {
  if (!v.is_array()) fail("doc_to_choice must give a list, got " + std::string(v.type_name()));
  std::vector<std::string> out;
  for (const auto& e : v) out.push_back(template_to_string(e));
  return out;
}

TaskDef parse_one(const YAML::Node& node, const std::string& origin) {
  if (!node.IsMap()) fail_file(origin, "each YAML document must be a mapping with a 'task' key");
  auto str = [&](const char* key, const std::string& fallback, bool required) -> std::string {
    const YAML::Node n = node[key];
    if (!n) {
      if (required) fail_file(origin, std::string("missing key '") + key + "'");
      return fallback;
    }
    if (!n.IsScalar()) fail_file(origin, std::string("key '") + key + "' must be a string");
    return n.as<std::string>();
  };
  TaskDef t;
  t.name = str("task", "", true);
  const std::string where = origin + ": task '" + t.name + "'";
  const std::string type = str("output_type", "multiple_choice", false);
  if (type == "multiple_choice") t.output_type = OutputType::MultipleChoice;
  else if (type == "loglikelihood") t.output_type = OutputType::Loglikelihood;
  else if (type == "loglikelihood_rolling") t.output_type = OutputType::LoglikelihoodRolling;
  else fail(where + ": output_type must be multiple_choice, loglikelihood or loglikelihood_rolling");

  const YAML::Node files = node["data_file"];
  if (!files) fail(where + ": missing key 'data_file'");
  if (files.IsScalar()) t.data_files = {files.as<std::string>()};
  else if (files.IsSequence())
    for (const auto& f : files) t.data_files.push_back(f.as<std::string>());
  else fail(where + ": 'data_file' must be a path or a list of paths");

  // moeforge extension (lm-eval uses Python `process_docs` for this): keep only the documents
  // whose fields equal the given values, e.g. `doc_filter: {domain: scripture}`.
  if (const YAML::Node filter = node["doc_filter"]) {
    if (!filter.IsMap() || filter.size() == 0)
      fail(where + ": 'doc_filter' must be a mapping of field names to values");
    std::vector<std::pair<std::string, std::string>> wanted;
    for (const auto& kv : filter) {
      if (!kv.second.IsScalar()) fail(where + ": 'doc_filter' values must be strings or numbers");
      wanted.emplace_back(kv.first.as<std::string>(), kv.second.as<std::string>());
    }
    t.load = [wanted](const std::string& path, int64_t limit) {
      std::vector<Doc> kept;
      for (auto& d : load_jsonl(path, -1)) {
        bool match = true;
        for (const auto& [key, value] : wanted) {
          const json* v = d.value.is_object() && d.value.contains(key) ? &d.value.at(key) : nullptr;
          if (!v) fail_file(d.origin(), "missing field '" + key + "' (named by doc_filter)");
          match = match && (v->is_string() ? v->get<std::string>() == value : v->dump() == value);
        }
        if (match) kept.push_back(std::move(d));
        if (limit >= 0 && static_cast<int64_t>(kept.size()) >= limit) break;
      }
      return kept;
    };
  }

  t.description = str("description", "", false);
  t.target_delimiter = str("target_delimiter", " ", false);
  if (node["metadata"] && node["metadata"]["version"]) t.version = node["metadata"]["version"].as<double>();

  // Metrics: lm-eval defaults per output type when metric_list is absent.
  if (const YAML::Node ml = node["metric_list"]) {
    if (!ml.IsSequence()) fail(where + ": 'metric_list' must be a list");
    for (const auto& m : ml) {
      if (!m.IsMap() || !m["metric"]) fail(where + ": every metric_list entry needs 'metric'");
      MetricSpec spec;
      try {
        spec = default_metric_spec(m["metric"].as<std::string>());
      } catch (const Error& e) {
        fail(where + ": " + e.what());
      }
      if (m["higher_is_better"]) spec.higher_is_better = m["higher_is_better"].as<bool>();
      t.metrics.push_back(spec);
    }
  } else if (t.output_type == OutputType::MultipleChoice) {
    t.metrics = {default_metric_spec("acc"), default_metric_spec("acc_norm")};
  } else if (t.output_type == OutputType::Loglikelihood) {
    t.metrics = {default_metric_spec("perplexity"), default_metric_spec("acc")};
  } else {
    t.metrics = {default_metric_spec("word_perplexity"), default_metric_spec("byte_perplexity"),
                 default_metric_spec("bits_per_byte")};
  }
  for (const auto& m : t.metrics) {
    bool ok = t.output_type == OutputType::MultipleChoice
                  ? (m.name == "acc" || m.name == "acc_norm" || m.name == "acc_bytes" || m.name == "exact_match")
              : t.output_type == OutputType::Loglikelihood ? (m.name == "perplexity" || m.name == "acc")
                                                           : (m.aggregation != "mean" && m.aggregation != "perplexity");
    if (!ok) fail(where + ": metric '" + m.name + "' does not apply to output_type " + type);
  }

  const bool has_choice = static_cast<bool>(node["doc_to_choice"]);
  if (t.output_type == OutputType::MultipleChoice && !has_choice) fail(where + ": missing key 'doc_to_choice'");
  if (t.output_type != OutputType::LoglikelihoodRolling && !node["doc_to_text"])
    fail(where + ": missing key 'doc_to_text'");
  if (!node["doc_to_target"]) fail(where + ": missing key 'doc_to_target'");

  if (node["doc_to_text"]) {
    const std::string tmpl = node["doc_to_text"].as<std::string>();
    t.doc_to_text = [tmpl, has_choice](const json& doc) {
      return to_text_or_index(eval_template_or_field(tmpl, doc), has_choice, "doc_to_text");
    };
  }
  const YAML::Node target = node["doc_to_target"];
  if (!target.IsScalar()) fail(where + ": 'doc_to_target' must be a template, a field name or an integer");
  const std::string target_src = target.as<std::string>();
  if (is_digits(target_src) && target.Tag() != "!") {
    // A fixed choice index; 19 digits and more may not fit in int64 (std::stoll would throw).
    if (target_src.size() > 18)
      fail(where + ": 'doc_to_target' " + target_src + " is too large for a choice index");
    const int64_t fixed = std::stoll(target_src);
    t.doc_to_target = [fixed](const json&) { return TextOrIndex::of(fixed); };
  } else {
    t.doc_to_target = [target_src, has_choice](const json& doc) {
      return to_text_or_index(eval_template_or_field(target_src, doc), has_choice, "doc_to_target");
    };
  }
  if (has_choice) {
    const YAML::Node ch = node["doc_to_choice"];
    if (ch.IsSequence()) {
      std::vector<std::string> items;
      for (const auto& c : ch) items.push_back(c.as<std::string>());
      t.doc_to_choice = [items](const json& doc) {
        std::vector<std::string> out;
        for (const auto& c : items) out.push_back(template_to_string(render_template(c, doc)));
        return out;
      };
    } else if (ch.IsScalar()) {
      const std::string tmpl = ch.as<std::string>();
      t.doc_to_choice = [tmpl](const json& doc) { return to_string_list(eval_template_or_field(tmpl, doc)); };
    } else {
      fail(where + ": 'doc_to_choice' must be a template, a field name or a list");
    }
  }
  // The lm-eval keys the YAML sets, for the task's entry under "configs" in the results JSON.
  static const char* kLmKeys[] = {"task_alias", "tag", "dataset_path", "dataset_name", "dataset_kwargs",
                                  "training_split", "validation_split", "test_split", "fewshot_split",
                                  "doc_to_text", "doc_to_target", "doc_to_choice", "fewshot_delimiter",
                                  "should_decontaminate", "doc_to_decontamination_query", "metric_list"};
  for (const char* key : kLmKeys)
    if (node[key]) t.lm_config[key] = yaml_to_json(node[key]);
  return t;
}

}  // namespace

std::vector<TaskDef> parse_yaml_tasks(const std::string& text, const std::string& origin) {
  std::vector<YAML::Node> docs;
  try {
    docs = load_all_yaml(text);
  } catch (const YAML::Exception& e) {
    fail_file(origin, "invalid YAML: " + one_line(e.what()));
  }
  std::vector<TaskDef> out;
  try {
    for (const auto& d : docs)
      if (d && !d.IsNull()) out.push_back(parse_one(d, origin));
  } catch (const YAML::Exception& e) {
    fail_file(origin, "invalid task: " + one_line(e.what()));
  }
  if (out.empty()) fail_file(origin, "no tasks defined");
  return out;
}

std::vector<TaskDef> load_yaml_tasks(const std::string& path) { return parse_yaml_tasks(read_file(path), path); }

}  // namespace mf::eval
