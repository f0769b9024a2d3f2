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
