// OpenBookQA (lm-eval tasks/openbookqa/openbookqa.yaml; allenai/openbookqa main, split test).
// Data: the HF JSONL, or the original release's Data/Main/test.jsonl (question.stem,
// question.choices [{text, label}]); a file may mix both.
#include "eval/jsonl.h"
#include "eval/task.h"
#include "eval/tasks/tasks.h"
#include "eval/text.h"
#include "util/error.h"

namespace mf::eval {

namespace {

// Original release -> HF main row {id, question_stem, choices {text, label}, answerKey}; the
// release's other fields (fact1, humanScore, ... in Data/Additional) are not in the HF main config.
std::optional<ojson> obqa_row(const json& row) {
  if (row.contains("question_stem")) return std::nullopt;  // already the HF layout
  const json& q = field(row, "question");
  if (!q.is_object()) fail("field 'question' must be an object with 'stem' and 'choices' (or use 'question_stem')");
  ojson text = ojson::array(), label = ojson::array();
  const json& choices = field(q, "choices");
  if (!choices.is_array()) fail("field 'question.choices' must be a list of {text, label}");
  for (const auto& c : choices) {
    text.push_back(str_field(c, "text"));
    label.push_back(str_field(c, "label"));
  }
  ojson out;
  out["id"] = str_field(row, "id");
  out["question_stem"] = str_field(q, "stem");
  out["choices"] = {{"text", text}, {"label", label}};
  out["answerKey"] = str_field(row, "answerKey");
  return out;
}

std::vector<Doc> read_obqa(const std::string& path, int64_t limit) { return load_jsonl_mapped(path, limit, obqa_row); }

}  // namespace

void register_openbookqa(TaskRegistry& r) {
  TaskDef t;
  t.name = "openbookqa";
  t.version = 1.0;
  t.data_files = {{"openbookqa/test.jsonl", "HF allenai/openbookqa main JSONL", read_obqa},
                  {"OpenBookQA-V1-Sep2018/Data/Main/test.jsonl", "the original release", read_obqa},
                  {"Data/Main/test.jsonl", "the original release", read_obqa}};
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
