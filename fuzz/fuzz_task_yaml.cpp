// Arbitrary bytes as a task YAML: parsing succeeds (then the tasks' templates form requests for a
// few fixed documents) or throws mf::Error.
#include "eval/requests.h"
#include "eval/yaml_task.h"
#include "fuzz_target.h"
#include "util/error.h"

namespace {

// Documents with the field shapes task templates reach for: strings, numbers, lists, objects.
std::vector<mf::eval::Doc> fixed_docs() {
  std::vector<mf::eval::Doc> docs;
  for (const char* text : {
           R"({"question": "Which?", "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]},
               "answerKey": "B", "label": 1, "text": "one two three", "q": "x", "a": ["y", "z"]})",
           R"({"question": "", "choices": {"text": [], "label": []}, "answerKey": "Z", "label": -1,
               "text": "", "q": 7, "a": []})",
           R"({"sentence": "The _ sat.", "option1": "cat", "option2": "dog", "answer": "2", "page": "= T =\n x @-@ y"})"}) {
    mf::eval::Doc d;
    d.value = nlohmann::json::parse(text);
    d.raw = text;
    d.file = "fixed";
    docs.push_back(std::move(d));
  }
  return docs;
}

}  // namespace

MOEFORGE_FUZZ_TARGET(task_yaml) {
  static const std::vector<mf::eval::Doc> docs = fixed_docs();
  const std::string path = mf::fuzz::write_input(data, size, "task.yaml");
  std::vector<mf::eval::TaskDef> tasks;
  try {
    tasks = mf::eval::load_yaml_tasks(path);
  } catch (const mf::Error&) {
    return;
  }
  for (const auto& task : tasks) {
    for (size_t i = 0; i < docs.size(); ++i) {
      try {
        (void)mf::eval::build_instance(task, docs[i], static_cast<int64_t>(i));
      } catch (const mf::Error&) {
      }
    }
  }
}
