// LAMBADA (OpenAI) (lm-eval tasks/lambada/lambada_openai.yaml; EleutherAI/lambada_openai, split test):
// context = text without its last space-separated word, target = " " + last word.
#include "eval/jsonl.h"
#include "eval/tasks/tasks.h"
#include "eval/text.h"
#include "util/str.h"

namespace mf::eval {

void register_lambada(TaskRegistry& r) {
  TaskDef t;
  t.name = "lambada_openai";
  t.version = 1.0;
  t.output_type = OutputType::Loglikelihood;
  // OpenAI's lambada_test.jsonl (the file GPT-2 was evaluated on) has the rows of the HF dataset,
  // {"text": ...}, in the same order; only the name differs. Its rows are reduced to "text".
  const DocReader openai = [](const std::string& path, int64_t limit) {
    return load_jsonl_mapped(path, limit, [](const json& row) {
      return std::optional<ojson>(ojson{{"text", str_field(row, "text")}});
    });
  };
  t.data_files = {{"lambada_openai/test.jsonl", "HF EleutherAI/lambada_openai JSONL"},
                  {"lambada_openai/lambada_test.jsonl", "OpenAI's lambada_test.jsonl", openai},
                  {"lambada_test.jsonl", "OpenAI's lambada_test.jsonl", openai}};
  t.metrics = {{"perplexity", "perplexity", false}, {"acc", "mean", true}};
  t.lm_config = {{"tag", ojson::array({"lambada"})},
                 {"dataset_path", "EleutherAI/lambada_openai"},
                 {"dataset_name", "default"},
                 {"test_split", "test"},
                 {"doc_to_text", "{{text.split(' ')[:-1]|join(' ')}}"},
                 {"doc_to_target", "{{' '+text.split(' ')[-1]}}"},
                 {"should_decontaminate", true},
                 {"doc_to_decontamination_query", "{{text}}"},
                 {"metric_list", ojson::array({lm_metric("perplexity", "perplexity", false), lm_metric("acc", "mean", true)})}};
  t.doc_to_text = [](const json& doc) {
    auto words = py_split(str_field(doc, "text"), " ");
    words.pop_back();
    return TextOrIndex::of(join(words, " "));
  };
  t.doc_to_target = [](const json& doc) { return TextOrIndex::of(" " + py_split(str_field(doc, "text"), " ").back()); };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
