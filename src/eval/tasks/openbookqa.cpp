// OpenBookQA (lm-eval tasks/openbookqa/openbookqa.yaml; allenai/openbookqa main, split test).
#include "eval/task.h"
#include "eval/tasks/tasks.h"
#include "eval/text.h"
#include "util/error.h"

namespace mf::eval {

void register_openbookqa(TaskRegistry& r) {
  TaskDef t;
  t.name = "openbookqa";
  t.version = 1.0;
  t.data_files = {"openbookqa/test.jsonl"};
  t.metrics = {metric_acc(), metric_acc_norm()};
  t.lm_config = {{"dataset_path", "allenai/openbookqa"},
                 {"dataset_name", "main"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"test_split", "test"},
                 {"doc_to_text", "question_stem"},
                 {"doc_to_target", "{{choices.label.index(answerKey.lstrip())}}"},
                 {"doc_to_choice", "{{choices.text}}"},
                 {"should_decontaminate", true},
                 {"doc_to_decontamination_query", "question_stem"},
                 {"metric_list", ojson::array({lm_metric("acc", "mean", true), lm_metric("acc_norm", "mean", true)})}};
  t.doc_to_text = [](const json& doc) { return TextOrIndex::of(str_field(doc, "question_stem")); };
  t.doc_to_choice = [](const json& doc) { return str_list_field(field(doc, "choices"), "text"); };
  // choices.label.index(answerKey.lstrip())
  t.doc_to_target = [](const json& doc) {
    auto labels = str_list_field(field(doc, "choices"), "label");
    std::string key = py_lstrip(str_field(doc, "answerKey"));
    for (size_t i = 0; i < labels.size(); ++i)
      if (labels[i] == key) return TextOrIndex::of(static_cast<int64_t>(i));
    fail("answerKey '" + key + "' is not one of the choice labels");
  };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
