// Social IQa (lm-eval tasks/siqa/siqa.yaml; lighteval/siqa, split validation).
// Data: the HF JSONL; the leaderboard's socialiqa-train-dev release (dev.jsonl without labels plus
// dev-labels.lst, one label 1-3 per line: what the HF dataset was built from); or the v1.4 release
// (socialIQa_v1.4_dev.jsonl with correct: "A".."C").
#include "eval/jsonl.h"
#include "eval/tasks/tasks.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf::eval {

namespace {

// The HF row {context, question, answerA, answerB, answerC, label "1".."3"}.
ojson siqa_row(const json& row, const std::string& label) {
  if (label != "1" && label != "2" && label != "3") fail("label must be 1, 2 or 3 (got '" + label + "')");
  ojson out;
  for (const char* k : {"context", "question", "answerA", "answerB", "answerC"}) out[k] = str_field(row, k);
  out["label"] = label;
  return out;
}

std::vector<Doc> read_v14(const std::string& path, int64_t limit) {
  return load_jsonl_mapped(path, limit, [](const json& row) -> std::optional<ojson> {
    if (row.contains("label")) return std::nullopt;  // already the HF layout
    const std::string c = trim(str_field(row, "correct"));
    if (c != "A" && c != "B" && c != "C") fail("field 'correct' must be A, B or C (got '" + c + "')");
    return siqa_row(row, std::string(1, static_cast<char>('1' + (c[0] - 'A'))));
  });
}

// <dir>/dev.jsonl with its labels in <dir>/dev-labels.lst, line i for row i.
std::vector<Doc> read_with_labels(const std::string& path, int64_t limit) {
  const std::string lst = path_join(parent_dir(path), "dev-labels.lst");
  if (!path_exists(lst)) {
    std::vector<Doc> docs = load_jsonl(path, limit);
    bool labelled = true;  // a dev.jsonl that already has the HF layout
    for (const auto& d : docs) labelled = labelled && d.value.contains("label");
    if (!labelled) fail_file(lst, "no such file (the labels of " + path + ")");
    return docs;
  }
  std::vector<std::string> labels;
  for (const auto& l : split(read_file(lst), '\n'))
    if (!trim(l).empty()) labels.push_back(trim(l));
  std::vector<Doc> docs = load_jsonl(path, -1);
  if (labels.size() != docs.size())
    fail_file(lst, std::to_string(labels.size()) + " labels for " + std::to_string(docs.size()) + " rows of " + path);
  if (limit >= 0 && static_cast<int64_t>(docs.size()) > limit) docs.resize(static_cast<size_t>(limit));
  for (size_t i = 0; i < docs.size(); ++i)
    with_origin(docs[i].origin(),
                [&] { docs[i] = canonical_doc(siqa_row(docs[i].value, labels[i]), path, docs[i].line); });
  return docs;
}

}  // namespace

void register_social_iqa(TaskRegistry& r) {
  TaskDef t;
  t.name = "social_iqa";
  t.version = 0.0;
  t.data_files = {{"social_iqa/validation.jsonl", "HF lighteval/siqa JSONL"},
                  {"social_iqa/dev.jsonl", "dev.jsonl + dev-labels.lst", read_with_labels},
                  {"socialiqa-train-dev/dev.jsonl", "dev.jsonl + dev-labels.lst", read_with_labels},
                  {"social_iqa/socialIQa_v1.4_dev.jsonl", "the v1.4 release, correct: A-C", read_v14},
                  {"socialIQa_v1.4_dev.jsonl", "the v1.4 release, correct: A-C", read_v14}};
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
