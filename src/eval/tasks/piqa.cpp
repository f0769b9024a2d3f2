// PIQA (lm-eval tasks/piqa/piqa.yaml; baber/piqa, split validation).
#include "eval/tasks/tasks.h"

namespace mf::eval {

void register_piqa(TaskRegistry& r) {
  TaskDef t;
  t.name = "piqa";
  t.version = 1.0;
  t.data_files = {"piqa/validation.jsonl"};
  t.metrics = {metric_acc(), metric_acc_norm()};
  t.lm_config = {{"dataset_path", "baber/piqa"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"doc_to_text", "Question: {{goal}}\nAnswer:"},
                 {"doc_to_target", "label"},
                 {"doc_to_choice", "{{[sol1, sol2]}}"},
                 {"should_decontaminate", true},
                 {"doc_to_decontamination_query", "goal"},
                 {"metric_list", ojson::array({lm_metric("acc", "mean", true), lm_metric("acc_norm", "mean", true)})}};
  t.doc_to_text = [](const json& doc) { return TextOrIndex::of("Question: " + str_field(doc, "goal") + "\nAnswer:"); };
  t.doc_to_choice = [](const json& doc) {
    return std::vector<std::string>{str_field(doc, "sol1"), str_field(doc, "sol2")};
  };
  t.doc_to_target = [](const json& doc) { return TextOrIndex::of(int_field(doc, "label")); };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
