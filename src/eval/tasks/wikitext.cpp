// WikiText-2 (lm-eval tasks/wikitext/wikitext.yaml + preprocess_wikitext.py;
// EleutherAI/wikitext_document_level wikitext-2-raw-v1, split test): rolling loglikelihood of each
// detokenised page; words and bytes are counted on the original page.
// Data: wikitext/test.jsonl ({"page": ...} rows), or the raw file wikitext2/wiki.test.raw, split into
// pages exactly as the HF wikitext_document_level script does (62 test pages).
#include "eval/tasks/wikitext.h"

#include <fstream>

#include "eval/jsonl.h"
#include "eval/tasks/tasks.h"
#include "eval/text.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf::eval {

std::string wikitext_detokenize(const std::string& page) {
  std::string s = page;
  // contractions
  s = replace_all(s, "s '", "s'");
  s = regex_replace_all(s, "/' [0-9]/", "/'[0-9]/");
  // number separators
  s = replace_all(s, " @-@ ", "-");
  s = replace_all(s, " @,@ ", ",");
  s = replace_all(s, " @.@ ", ".");
  // punctuation
  s = replace_all(s, " : ", ": ");
  s = replace_all(s, " ; ", "; ");
  s = replace_all(s, " . ", ". ");
  s = replace_all(s, " ! ", "! ");
  s = replace_all(s, " ? ", "? ");
  s = replace_all(s, " , ", ", ");
  // double brackets
  s = regex_replace_all(s, "\\(\\s*([^\\)]*?)\\s*\\)", "($1)");
  s = regex_replace_all(s, "\\[\\s*([^\\]]*?)\\s*\\]", "[$1]");
  s = regex_replace_all(s, "{\\s*([^}]*?)\\s*}", "{$1}");
  s = regex_replace_all(s, "\\\"\\s*([^\\\"]*?)\\s*\\\"", "\"$1\"");
  s = regex_replace_all(s, "'\\s*([^']*?)\\s*'", "'$1'");
  // miscellaneous
  s = replace_all(s, "= = = =", "====");
  s = replace_all(s, "= = =", "===");
  s = replace_all(s, "= =", "==");
  s = replace_all(s, " \xc2\xb0 ", "\xc2\xb0");
  s = replace_all(s, " \n", "\n");
  s = replace_all(s, "\n ", "\n");
  s = replace_all(s, " N ", " 1 ");
  s = replace_all(s, " 's", "'s");
  return s;
}

std::vector<std::string> wikitext_split_pages(const std::string& raw) {
  std::vector<std::string> pages;
  std::vector<std::string> lines = split(raw, '\n');
  std::vector<std::string> cur;
  for (const auto& line : lines) {
    std::string r = py_strip(replace_all(replace_all(line, "= = =", "==="), "= =", "=="));
    if (starts_with(r, "= ") && ends_with(py_strip(r), " =")) {
      std::string page = join(cur, "\n");
      if (!py_strip(page).empty()) pages.push_back(page);
      cur.clear();
    }
    cur.push_back(line);
  }
  pages.push_back(join(cur, "\n"));
  return pages;
}

void register_wikitext(TaskRegistry& r) {
  TaskDef t;
  t.name = "wikitext";
  t.version = 2.0;
  t.output_type = OutputType::LoglikelihoodRolling;
  t.data_files = {{"wikitext/test.jsonl", "HF EleutherAI/wikitext_document_level JSONL"},
                  {"wikitext2/wiki.test.raw", "the raw wikitext-2-raw-v1 test file"}};
  t.metrics = {{"word_perplexity", "weighted_perplexity", false},
               {"byte_perplexity", "weighted_perplexity", false},
               {"bits_per_byte", "bits_per_byte", false}};
  // The !function hooks appear as their Python source (inspect.getsource), as lm-eval dumps them.
  t.lm_config = {{"dataset_path", "EleutherAI/wikitext_document_level"},
                 {"dataset_name", "wikitext-2-raw-v1"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"test_split", "test"},
                 {"doc_to_text", ""},
                 {"doc_to_target",
                  "def wikitext_detokenizer(doc):\n"
                  "    string = doc[\"page\"]\n"
                  "    # contractions\n"
                  "    string = string.replace(\"s '\", \"s'\")\n"
                  "    string = re.sub(r\"/' [0-9]/\", r\"/'[0-9]/\", string)\n"
                  "    # number separators\n"
                  "    string = string.replace(\" @-@ \", \"-\")\n"
                  "    string = string.replace(\" @,@ \", \",\")\n"
                  "    string = string.replace(\" @.@ \", \".\")\n"
                  "    # punctuation\n"
                  "    string = string.replace(\" : \", \": \")\n"
                  "    string = string.replace(\" ; \", \"; \")\n"
                  "    string = string.replace(\" . \", \". \")\n"
                  "    string = string.replace(\" ! \", \"! \")\n"
                  "    string = string.replace(\" ? \", \"? \")\n"
                  "    string = string.replace(\" , \", \", \")\n"
                  "    # double brackets\n"
                  "    string = re.sub(r\"\\(\\s*([^\\)]*?)\\s*\\)\", r\"(\\1)\", string)\n"
                  "    string = re.sub(r\"\\[\\s*([^\\]]*?)\\s*\\]\", r\"[\\1]\", string)\n"
                  "    string = re.sub(r\"{\\s*([^}]*?)\\s*}\", r\"{\\1}\", string)\n"
                  "    string = re.sub(r\"\\\"\\s*([^\\\"]*?)\\s*\\\"\", r'\"\\1\"', string)\n"
                  "    string = re.sub(r\"'\\s*([^']*?)\\s*'\", r\"'\\1'\", string)\n"
                  "    # miscellaneous\n"
                  "    string = string.replace(\"= = = =\", \"====\")\n"
                  "    string = string.replace(\"= = =\", \"===\")\n"
                  "    string = string.replace(\"= =\", \"==\")\n"
                  "    string = string.replace(\" \" + chr(176) + \" \", chr(176))\n"
                  "    string = string.replace(\" \\n\", \"\\n\")\n"
                  "    string = string.replace(\"\\n \", \"\\n\")\n"
                  "    string = string.replace(\" N \", \" 1 \")\n"
                  "    string = string.replace(\" 's\", \"'s\")\n"
                  "\n"
                  "    return string\n"},
                 {"process_results",
                  "def process_results(doc, results):\n"
                  "    (loglikelihood,) = results\n"
                  "    # IMPORTANT: wikitext counts number of words in *original doc before detokenization*\n"
                  "    _words = len(re.split(r\"\\s+\", doc[\"page\"]))\n"
                  "    _bytes = len(doc[\"page\"].encode(\"utf-8\"))\n"
                  "    return {\n"
                  "        \"word_perplexity\": (loglikelihood, _words),\n"
                  "        \"byte_perplexity\": (loglikelihood, _bytes),\n"
                  "        \"bits_per_byte\": (loglikelihood, _bytes),\n"
                  "    }\n"},
                 {"should_decontaminate", true},
                 {"doc_to_decontamination_query", "{{page}}"},
                 {"metric_list", ojson::array({lm_metric("word_perplexity"), lm_metric("byte_perplexity"),
                                               lm_metric("bits_per_byte")})}};
  t.load = [](const std::string& path, int64_t limit) {
    if (ends_with(path, ".jsonl")) return load_jsonl(path, limit);
    std::vector<Doc> docs;
    auto pages = wikitext_split_pages(read_file(path));
    for (size_t i = 0; i < pages.size() && (limit < 0 || static_cast<int64_t>(i) < limit); ++i) {
      Doc d;
      d.value = json{{"page", pages[i]}};
      d.file = path;
      d.line = static_cast<int64_t>(i) + 1;  // page number for raw files
      docs.push_back(std::move(d));
    }
    return docs;
  };
  t.doc_to_target = [](const json& doc) { return TextOrIndex::of(wikitext_detokenize(str_field(doc, "page"))); };
  t.doc_to_counts = [](const json& doc) {
    std::string page = str_field(doc, "page");
    return std::make_pair(count_regex_split_ws(page), static_cast<int64_t>(page.size()));
  };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
