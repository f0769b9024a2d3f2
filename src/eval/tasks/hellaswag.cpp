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

namespace {

// lm-eval utils.process_docs' _process_doc (the fields it adds: query, choices, gold).
ojson process_hellaswag(const json& doc) {
  std::string ctx = str_field(doc, "ctx_a") + " " + py_capitalize(str_field(doc, "ctx_b"));
  ojson out = ojson::object();
  out["query"] = hellaswag_preprocess(str_field(doc, "activity_label") + ": " + ctx);
  ojson choices = ojson::array();
  for (const auto& e : str_list_field(doc, "endings")) choices.push_back(hellaswag_preprocess(e));
  out["choices"] = choices;
  out["gold"] = int_field(doc, "label");
  return out;
}

}  // namespace

void register_hellaswag(TaskRegistry& r) {
  TaskDef t;
  t.name = "hellaswag";
  t.version = 1.0;
  t.data_files = {"hellaswag/validation.jsonl"};
  t.metrics = {metric_acc(), metric_acc_norm()};
  t.lm_config = {{"tag", ojson::array({"multiple_choice"})},
                 {"dataset_path", "Rowan/hellaswag"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"process_docs",
                  "def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:\n"
                  "    def _process_doc(doc):\n"
                  "        ctx = doc[\"ctx_a\"] + \" \" + doc[\"ctx_b\"].capitalize()\n"
                  "        out_doc = {\n"
                  "            \"query\": preprocess(doc[\"activity_label\"] + \": \" + ctx),\n"
                  "            \"choices\": [preprocess(ending) for ending in doc[\"endings\"]],\n"
                  "            \"gold\": int(doc[\"label\"]),\n"
                  "        }\n"
                  "        return out_doc\n"
                  "\n"
                  "    return dataset.map(_process_doc)\n"},
                 {"doc_to_text", "{{query}}"},
                 {"doc_to_target", "{{label}}"},
                 {"doc_to_choice", "choices"},
                 {"metric_list", ojson::array({lm_metric("acc", "mean", true), lm_metric("acc_norm", "mean", true)})}};
  t.process_doc = [](const json& doc) { return json(process_hellaswag(doc)); };
  // dataset.map() keeps the original columns and appends query, choices, gold.
  t.log_doc = [](const Doc& d) {
    ojson out = doc_in_file_order(d);
    const ojson added = process_hellaswag(d.value);
    for (auto it = added.begin(); it != added.end(); ++it) out[it.key()] = it.value();
    return out;
  };
  t.doc_to_text = [](const json& doc) { return TextOrIndex::of(str_field(doc, "query")); };
  t.doc_to_choice = [](const json& doc) { return str_list_field(doc, "choices"); };
  t.doc_to_target = [](const json& doc) { return TextOrIndex::of(int_field(doc, "gold")); };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
