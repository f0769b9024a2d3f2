// BoolQ (lm-eval tasks/super_glue/boolq/default.yaml; super_glue boolq, split validation).
// Gold is `label` (super_glue); files in the google/boolq layout (`answer`: bool) work too.
#include "eval/tasks/tasks.h"

namespace mf::eval {

void register_boolq(TaskRegistry& r) {
  TaskDef t;
  t.name = "boolq";
  t.version = 2.0;
  t.data_files = {"boolq/validation.jsonl"};
  t.metrics = {metric_acc()};
  t.lm_config = {{"tag", ojson::array({"super-glue-lm-eval-v1"})},
                 {"dataset_path", "aps/super_glue"},
                 {"dataset_name", "boolq"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"doc_to_text", "{{passage}}\nQuestion: {{question}}?\nAnswer:"},
                 {"doc_to_target", "label"},
                 {"doc_to_choice", ojson::array({"no", "yes"})},
                 {"should_decontaminate", true},
                 {"doc_to_decontamination_query", "passage"},
                 {"metric_list", ojson::array({lm_metric("acc")})}};
  t.doc_to_text = [](const json& doc) {
    return TextOrIndex::of(str_field(doc, "passage") + "\nQuestion: " + str_field(doc, "question") + "?\nAnswer:");
  };
  t.doc_to_choice = [](const json&) { return std::vector<std::string>{"no", "yes"}; };
  t.doc_to_target = [](const json& doc) {
    if (doc.is_object() && doc.contains("label")) return TextOrIndex::of(int_field(doc, "label"));
    return TextOrIndex::of(int_field(doc, "answer"));
  };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
