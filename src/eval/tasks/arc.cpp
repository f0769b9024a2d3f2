// ARC-Easy / ARC-Challenge (lm-eval tasks/arc/arc_easy.yaml; allenai/ai2_arc, split test).
#include "eval/tasks/tasks.h"
#include "util/error.h"

namespace mf::eval {

namespace {

TaskDef arc_task(const std::string& name) {
  TaskDef t;
  t.name = name;
  t.version = 1.0;
  t.output_type = OutputType::MultipleChoice;
  t.data_files = {name + "/test.jsonl"};
  t.metrics = {metric_acc(), metric_acc_norm()};
  t.lm_config = {{"tag", ojson::array({"ai2_arc"})},
                 {"dataset_path", "allenai/ai2_arc"},
                 {"dataset_name", name == "arc_easy" ? "ARC-Easy" : "ARC-Challenge"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"test_split", "test"},
                 {"doc_to_text", "Question: {{question}}\nAnswer:"},
                 {"doc_to_target", "{{choices.label.index(answerKey)}}"},
                 {"doc_to_choice", "{{choices.text}}"},
                 {"should_decontaminate", true},
                 {"doc_to_decontamination_query", "Question: {{question}}\nAnswer:"},
                 {"metric_list", ojson::array({lm_metric("acc", "mean", true), lm_metric("acc_norm", "mean", true)})}};
  t.doc_to_text = [](const json& doc) { return TextOrIndex::of("Question: " + str_field(doc, "question") + "\nAnswer:"); };
  t.doc_to_choice = [](const json& doc) { return str_list_field(field(doc, "choices"), "text"); };
  // choices.label.index(answerKey)
  t.doc_to_target = [](const json& doc) {
    auto labels = str_list_field(field(doc, "choices"), "label");
    std::string key = str_field(doc, "answerKey");
    for (size_t i = 0; i < labels.size(); ++i)
      if (labels[i] == key) return TextOrIndex::of(static_cast<int64_t>(i));
    fail("answerKey '" + key + "' is not one of the choice labels");
  };
  return t;
}

}  // namespace

void register_arc(TaskRegistry& r) {
  r.add_task(arc_task("arc_easy"));
  r.add_task(arc_task("arc_challenge"));
}

}  // namespace mf::eval
