// WinoGrande (lm-eval tasks/winogrande/default.yaml + preprocess_winogrande.py;
// allenai/winogrande winogrande_xl, split validation). Partial scoring: the two contexts are the
// sentence up to "_" with each option filled in, the shared continuation is the rest of the sentence.
#include "eval/tasks/tasks.h"
#include "eval/text.h"
#include "util/error.h"

namespace mf::eval {

namespace {
size_t blank_pos(const json& doc) {
  std::string s = str_field(doc, "sentence");
  size_t p = s.find('_');
  if (p == std::string::npos) fail("field 'sentence' has no '_' blank");
  return p;
}
}  // namespace

void register_winogrande(TaskRegistry& r) {
  TaskDef t;
  t.name = "winogrande";
  t.version = 1.0;
  t.data_files = {"winogrande/validation.jsonl"};
  t.metrics = {metric_acc()};
  // The !function hooks appear as their Python source (inspect.getsource), as lm-eval dumps them.
  t.lm_config = {{"dataset_path", "allenai/winogrande"},
                 {"dataset_name", "winogrande_xl"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"doc_to_text",
                  "def doc_to_text(doc):\n"
                  "    answer_to_num = {\"1\": 0, \"2\": 1}\n"
                  "    return answer_to_num[doc[\"answer\"]]\n"},
                 {"doc_to_target",
                  "def doc_to_target(doc):\n"
                  "    idx = doc[\"sentence\"].index(\"_\") + 1\n"
                  "    return doc[\"sentence\"][idx:].strip()\n"},
                 {"doc_to_choice",
                  "def doc_to_choice(doc):\n"
                  "    idx = doc[\"sentence\"].index(\"_\")\n"
                  "    options = [doc[\"option1\"], doc[\"option2\"]]\n"
                  "    return [doc[\"sentence\"][:idx] + opt for opt in options]\n"},
                 {"should_decontaminate", true},
                 {"doc_to_decontamination_query", "sentence"},
                 {"metric_list", ojson::array({lm_metric("acc", "mean", true)})}};
  // doc_to_text returns the gold index: {"1": 0, "2": 1}[answer] -> multiple-input mode.
  t.doc_to_text = [](const json& doc) {
    std::string a = str_field(doc, "answer");
    if (a == "1") return TextOrIndex::of(int64_t{0});
    if (a == "2") return TextOrIndex::of(int64_t{1});
    fail("field 'answer' must be \"1\" or \"2\" (got \"" + a + "\")");
  };
  t.doc_to_choice = [](const json& doc) {
    size_t p = blank_pos(doc);
    std::string s = str_field(doc, "sentence");
    return std::vector<std::string>{s.substr(0, p) + str_field(doc, "option1"), s.substr(0, p) + str_field(doc, "option2")};
  };
  t.doc_to_target = [](const json& doc) {
    size_t p = blank_pos(doc);
    return TextOrIndex::of(py_strip(str_field(doc, "sentence").substr(p + 1)));
  };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
