// SciQ (lm-eval tasks/sciq/sciq.yaml; allenai/sciq, split test). The correct answer is always choice 3.
#include "eval/tasks/tasks.h"
#include "eval/text.h"

namespace mf::eval {

void register_sciq(TaskRegistry& r) {
  TaskDef t;
  t.name = "sciq";
  t.version = 1.0;
  t.data_files = {"sciq/test.jsonl"};
  t.metrics = {metric_acc(), metric_acc_norm()};
  t.lm_config = {{"dataset_path", "allenai/sciq"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"test_split", "test"},
                 {"doc_to_text", "{{support.lstrip()}}\nQuestion: {{question}}\nAnswer:"},
                 {"doc_to_target", 3},
                 {"doc_to_choice", "{{[distractor1, distractor2, distractor3, correct_answer]}}"},
                 {"should_decontaminate", true},
                 {"doc_to_decontamination_query", "{{support}} {{question}}"},
                 {"metric_list", ojson::array({lm_metric("acc", "mean", true), lm_metric("acc_norm", "mean", true)})}};
  t.doc_to_text = [](const json& doc) {
    return TextOrIndex::of(py_lstrip(str_field(doc, "support")) + "\nQuestion: " + str_field(doc, "question") +
                           "\nAnswer:");
  };
  t.doc_to_choice = [](const json& doc) {
    return std::vector<std::string>{str_field(doc, "distractor1"), str_field(doc, "distractor2"),
                                    str_field(doc, "distractor3"), str_field(doc, "correct_answer")};
  };
  t.doc_to_target = [](const json&) { return TextOrIndex::of(int64_t{3}); };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
