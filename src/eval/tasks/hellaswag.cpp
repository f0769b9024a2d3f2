// HellaSwag (lm-eval tasks/hellaswag/hellaswag.yaml + utils.py; Rowan/hellaswag, split validation).
#include "eval/tasks/tasks.h"
#include "eval/text.h"
#include "util/error.h"

namespace mf::eval {

// lm-eval hellaswag preprocess(): strip, " [title]" -> ". ", drop "[...]" spans, "  " -> " ".
std::string hellaswag_preprocess(const std::string& text) {
  std::string s = py_strip(text);
  s = replace_all(s, " [title]", ". ");
  s = regex_replace_all(s, "\\[.*?\\]", "");
  s = replace_all(s, "  ", " ");
  return s;
}

void register_hellaswag(TaskRegistry& r) {
  TaskDef t;
  t.name = "hellaswag";
  t.version = 1.0;
  t.data_files = {"hellaswag/validation.jsonl"};
  t.metrics = {metric_acc(), metric_acc_norm()};
  t.process_doc = [](const json& doc) {
    std::string ctx = str_field(doc, "ctx_a") + " " + py_capitalize(str_field(doc, "ctx_b"));
    json out;
    out["query"] = hellaswag_preprocess(str_field(doc, "activity_label") + ": " + ctx);
    json choices = json::array();
    for (const auto& e : str_list_field(doc, "endings")) choices.push_back(hellaswag_preprocess(e));
    out["choices"] = choices;
    out["gold"] = int_field(doc, "label");
    return out;
  };
  t.doc_to_text = [](const json& doc) { return TextOrIndex::of(str_field(doc, "query")); };
  t.doc_to_choice = [](const json& doc) { return str_list_field(doc, "choices"); };
  t.doc_to_target = [](const json& doc) { return TextOrIndex::of(int_field(doc, "gold")); };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
