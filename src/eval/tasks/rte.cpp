// RTE (lm-eval tasks/glue/rte/default.yaml; glue rte, split validation). label 0 = entailment = "True".
#include "eval/tasks/tasks.h"

namespace mf::eval {

void register_rte(TaskRegistry& r) {
  TaskDef t;
  t.name = "rte";
  t.version = 1.0;
  t.data_files = {"rte/validation.jsonl"};
  t.metrics = {metric_acc()};
  t.lm_config = {{"tag", "glue"},
                 {"dataset_path", "nyu-mll/glue"},
                 {"dataset_name", "rte"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"doc_to_text", "{{sentence1}}\nQuestion: {{sentence2}} True or False?\nAnswer:"},
                 {"doc_to_target", "label"},
                 {"doc_to_choice", ojson::array({"True", "False"})},
                 {"metric_list", ojson::array({lm_metric("acc")})}};
  t.doc_to_text = [](const json& doc) {
    return TextOrIndex::of(str_field(doc, "sentence1") + "\nQuestion: " + str_field(doc, "sentence2") +
                           " True or False?\nAnswer:");
  };
  t.doc_to_choice = [](const json&) { return std::vector<std::string>{"True", "False"}; };
  t.doc_to_target = [](const json& doc) { return TextOrIndex::of(int_field(doc, "label")); };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
