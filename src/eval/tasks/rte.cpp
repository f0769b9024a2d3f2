// RTE (lm-eval tasks/glue/rte/default.yaml; glue rte, split validation). label 0 = entailment = "True".
// Data: the HF glue/rte JSONL, or GLUE's own RTE/dev.tsv (read as the HF glue script reads it).
#include "eval/csv.h"
#include "eval/jsonl.h"
#include "eval/tasks/tasks.h"
#include "util/error.h"
#include "util/str.h"

namespace mf::eval {

namespace {

// GLUE's TSV: header index, sentence1, sentence2, label; no quoting (the HF script reads it with
// csv.QUOTE_NONE). Row -> {sentence1, sentence2, label, idx} in the HF column order, label names as
// the HF ClassLabel numbers them (entailment 0, not_entailment 1), idx the row's position from 0
// (the script's enumerate(); in GLUE's dev.tsv it equals the index column).
std::vector<Doc> read_glue_tsv(const std::string& path, int64_t limit) {
  const auto recs = read_tsv(path);
  std::vector<Doc> docs;
  if (recs.empty()) return docs;
  const auto& header = recs[0].fields;
  auto column = [&](const char* name) {
    for (size_t k = 0; k < header.size(); ++k)
      if (header[k] == name) return k;
    fail_file(path + ":" + std::to_string(recs[0].line),
              std::string("the header has no column '") + name + "' (columns: " + join(header, ", ") + ")");
  };
  const size_t s1 = column("sentence1"), s2 = column("sentence2"), lab = column("label");
  for (size_t r = 1; r < recs.size() && (limit < 0 || static_cast<int64_t>(docs.size()) < limit); ++r) {
    const auto& f = recs[r].fields;
    const std::string origin = path + ":" + std::to_string(recs[r].line);
    if (f.size() != header.size())
      fail_file(origin, std::to_string(f.size()) + " fields, the header has " + std::to_string(header.size()));
    int label = f[lab] == "entailment" ? 0 : f[lab] == "not_entailment" ? 1 : -1;
    if (label < 0) fail_file(origin, "label must be entailment or not_entailment (got '" + f[lab] + "')");
    const ojson row = {{"sentence1", f[s1]}, {"sentence2", f[s2]}, {"label", label}, {"idx", r - 1}};
    docs.push_back(canonical_doc(row, path, recs[r].line));
  }
  return docs;
}

}  // namespace

void register_rte(TaskRegistry& r) {
  TaskDef t;
  t.name = "rte";
  t.version = 1.0;
  t.data_files = {{"rte/validation.jsonl", "HF nyu-mll/glue rte JSONL"},
                  {"RTE/dev.tsv", "GLUE's TSV", read_glue_tsv},
                  {"glue_data/RTE/dev.tsv", "GLUE's TSV", read_glue_tsv}};
  t.metrics = {metric_acc()};
  t.lm_config = {{"tag", "glue"},
                 {"dataset_path", "nyu-mll/glue"},
                 {"dataset_name", "rte"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"doc_to_text", "{{sentence1}}\nQuestion: {{sentence2}} True or False?\nAnswer:"},
                 {"doc_to_target", "label"},
                 {"doc_to_choice", ojson::array({"True", "False"})},
                 {"metric_list", ojson::array({lm_metric("acc")})}};
  t.doc_to_text = [](const json& doc) {
    return TextOrIndex::of(str_field(doc, "sentence1") + "\nQuestion: " + str_field(doc, "sentence2") +
                           " True or False?\nAnswer:");
  };
  t.doc_to_choice = [](const json&) { return std::vector<std::string>{"True", "False"}; };
  t.doc_to_target = [](const json& doc) { return TextOrIndex::of(int_field(doc, "label")); };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
