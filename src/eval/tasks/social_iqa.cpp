// Social IQa (lm-eval tasks/siqa/siqa.yaml; lighteval/siqa, split validation).
#include "eval/tasks/tasks.h"

namespace mf::eval {

void register_social_iqa(TaskRegistry& r) {
  TaskDef t;
  t.name = "social_iqa";
  t.version = 0.0;
  t.data_files = {"social_iqa/validation.jsonl"};
  t.metrics = {metric_acc()};
  t.lm_config = {{"dataset_path", "lighteval/siqa"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"doc_to_text", "Q: {{context}} {{question}}\nA:"},
                 {"doc_to_target", "{{ (label|int) - 1 }}"},
                 {"doc_to_choice", "{{[answerA, answerB, answerC]}}"},
                 {"metric_list", ojson::array({lm_metric("acc", "mean", true)})}};
  t.doc_to_text = [](const json& doc) {
    return TextOrIndex::of("Q: " + str_field(doc, "context") + " " + str_field(doc, "question") + "\nA:");
  };
  t.doc_to_choice = [](const json& doc) {
    return std::vector<std::string>{str_field(doc, "answerA"), str_field(doc, "answerB"), str_field(doc, "answerC")};
  };
  // (label|int) - 1, label is "1".."3"
  t.doc_to_target = [](const json& doc) { return TextOrIndex::of(int_field(doc, "label") - 1); };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
