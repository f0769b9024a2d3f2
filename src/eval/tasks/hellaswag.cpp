// HellaSwag (lm-eval tasks/hellaswag/hellaswag.yaml + utils.py; Rowan/hellaswag, split validation).
// Data: the HF JSONL, the original release's hellaswag_val.jsonl, copies that carry `ctx` but not
// ctx_a / ctx_b, and llama.cpp's hellaswag_val_full.txt (docs/eval.md gives the rules).
#include "eval/jsonl.h"
#include "eval/tasks/tasks.h"
#include "eval/text.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/fs_checks.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::eval {

// lm-eval hellaswag preprocess(): strip, " [title]" -> ". ", drop "[...]" spans, "  " -> " ".
std::string hellaswag_preprocess(const std::string& text) {
  std::string s = py_strip(text);
  s = replace_all(s, " [title]", ". ");
  s = regex_replace_all(s, "\\[.*?\\]", "");
  s = replace_all(s, "  ", " ");
  return s;
}

std::pair<std::string, std::string> hellaswag_split_ctx(const std::string& ctx) {
  auto closing = [](char c) { return c == '"' || c == '\'' || c == ')'; };
  size_t end = ctx.size();
  while (end > 0 && (ctx[end - 1] == ' ' || closing(ctx[end - 1]))) --end;
  if (end > 0 && (ctx[end - 1] == '.' || ctx[end - 1] == '!' || ctx[end - 1] == '?')) return {ctx, ""};
  size_t cut = std::string::npos;  // where ctx_b starts: after the last sentence end and its space
  for (size_t i = 0; i < ctx.size(); ++i) {
    if (ctx[i] != '.' && ctx[i] != '!' && ctx[i] != '?') continue;
    size_t j = i + 1;
    while (j < ctx.size() && closing(ctx[j])) ++j;
    if (j < ctx.size() && ctx[j] == ' ') cut = j + 1;
  }
  if (cut == std::string::npos) return {"", ctx};
  return {ctx.substr(0, cut - 1), ctx.substr(cut)};
}

namespace {

// Rowan/hellaswag's columns other than those hellaswag_row writes itself, in the dataset's order
// (ind, activity_label, ctx_a, ctx_b, ctx, endings, source_id, split, split_type, label).
const char* const kTailColumns[] = {"source_id", "split", "split_type"};

// A row of any JSONL layout -> the HF row; std::nullopt when it is one already (string label). The
// original release has the same fields in another order and an integer label; copies without
// ctx_a / ctx_b get them from ctx (hellaswag_split_ctx).
std::optional<ojson> hellaswag_row(const json& row) {
  const bool has_ab = row.contains("ctx_a") && row.contains("ctx_b");
  if (has_ab && row.contains("label") && row["label"].is_string()) return std::nullopt;
  if (!has_ab && !row.contains("ctx")) fail("missing fields 'ctx_a' and 'ctx_b' (nor 'ctx')");
  const auto ab = has_ab ? std::make_pair(str_field(row, "ctx_a"), str_field(row, "ctx_b"))
                         : hellaswag_split_ctx(str_field(row, "ctx"));
  ojson out;
  if (row.contains("ind")) out["ind"] = ojson(row["ind"]);
  out["activity_label"] = str_field(row, "activity_label");
  out["ctx_a"] = ab.first;
  out["ctx_b"] = ab.second;
  out["ctx"] = row.contains("ctx") ? str_field(row, "ctx") : ab.second.empty() ? ab.first : ab.first + " " + ab.second;
  out["endings"] = str_list_field(row, "endings");
  for (const char* k : kTailColumns)
    if (row.contains(k)) out[k] = ojson(row[k]);
  out["label"] = std::to_string(int_field(row, "label"));
  return out;
}

std::vector<Doc> read_jsonl_any(const std::string& path, int64_t limit) {
  return load_jsonl_mapped(path, limit, hellaswag_row);
}

// llama.cpp's `perplexity --hellaswag` file (klosax/hellaswag_text_data): 6 lines per task,
// "<activity_label>: <ctx>", the gold index, the 4 endings, text already cleaned by its own rules.
std::vector<Doc> read_llamacpp_txt(const std::string& path, int64_t limit) {
  require_regular_file(path);
  std::vector<std::string> lines = split(read_file(path), '\n');
  for (auto& l : lines)
    if (!l.empty() && l.back() == '\r') l.pop_back();
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (lines.size() % 6 != 0)
    fail_file(path, std::to_string(lines.size()) +
                        " lines; llama.cpp's HellaSwag file has 6 per task (activity label: context, gold, 4 endings)");
  log_warn(path, ": llama.cpp's HellaSwag text file: its WikiHow endings that began with a bracket tag ",
           "([step], [title], ...) lost the leading space lm-eval keeps, so those requests differ from lm-eval's ",
           "(docs/eval.md)");
  std::vector<Doc> docs;
  for (size_t g = 0; g < lines.size() / 6 && (limit < 0 || static_cast<int64_t>(docs.size()) < limit); ++g) {
    const int64_t line = static_cast<int64_t>(6 * g + 1);
    const std::string& head = lines[6 * g];
    const size_t colon = head.find(": ");
    if (colon == std::string::npos)
      fail_file(path + ":" + std::to_string(line), "expected '<activity label>: <context>'");
    const std::string& gold = lines[6 * g + 1];
    if (gold.size() != 1 || gold[0] < '0' || gold[0] > '3')
      fail_file(path + ":" + std::to_string(line + 1), "expected the gold ending 0-3 (got '" + gold + "')");
    const std::string ctx = head.substr(colon + 2);
    const auto ab = hellaswag_split_ctx(ctx);
    ojson row;
    row["activity_label"] = head.substr(0, colon);
    row["ctx_a"] = ab.first;
    row["ctx_b"] = ab.second;
    row["ctx"] = ctx;
    row["endings"] = ojson::array({lines[6 * g + 2], lines[6 * g + 3], lines[6 * g + 4], lines[6 * g + 5]});
    row["label"] = gold;
    docs.push_back(canonical_doc(row, path, line));
  }
  return docs;
}

// lm-eval utils.process_docs' _process_doc (the fields it adds: query, choices, gold).
ojson process_hellaswag(const json& doc) {
  std::string ctx = str_field(doc, "ctx_a") + " " + py_capitalize(str_field(doc, "ctx_b"));
  ojson out = ojson::object();
  out["query"] = hellaswag_preprocess(str_field(doc, "activity_label") + ": " + ctx);
  ojson choices = ojson::array();
  for (const auto& e : str_list_field(doc, "endings")) choices.push_back(hellaswag_preprocess(e));
  out["choices"] = choices;
  out["gold"] = int_field(doc, "label");
  return out;
}

}  // namespace

void register_hellaswag(TaskRegistry& r) {
  TaskDef t;
  t.name = "hellaswag";
  t.version = 1.0;
  t.data_files = {{"hellaswag/validation.jsonl", "HF Rowan/hellaswag JSONL, or a copy with ctx only", read_jsonl_any},
                  {"hellaswag/hellaswag_val.jsonl", "the original release", read_jsonl_any},
                  {"hellaswag_val.jsonl", "the original release", read_jsonl_any},
                  {"hellaswag/hellaswag_val_full.txt", "llama.cpp's text file", read_llamacpp_txt},
                  {"hellaswag_val_full.txt", "llama.cpp's text file", read_llamacpp_txt}};
  t.metrics = {metric_acc(), metric_acc_norm()};
  t.lm_config = {{"tag", ojson::array({"multiple_choice"})},
                 {"dataset_path", "Rowan/hellaswag"},
                 {"training_split", "train"},
                 {"validation_split", "validation"},
                 {"process_docs",
                  "def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:\n"
                  "    def _process_doc(doc):\n"
                  "        ctx = doc[\"ctx_a\"] + \" \" + doc[\"ctx_b\"].capitalize()\n"
                  "        out_doc = {\n"
                  "            \"query\": preprocess(doc[\"activity_label\"] + \": \" + ctx),\n"
                  "            \"choices\": [preprocess(ending) for ending in doc[\"endings\"]],\n"
                  "            \"gold\": int(doc[\"label\"]),\n"
                  "        }\n"
                  "        return out_doc\n"
                  "\n"
                  "    return dataset.map(_process_doc)\n"},
                 {"doc_to_text", "{{query}}"},
                 {"doc_to_target", "{{label}}"},
                 {"doc_to_choice", "choices"},
                 {"metric_list", ojson::array({lm_metric("acc", "mean", true), lm_metric("acc_norm", "mean", true)})}};
  t.process_doc = [](const json& doc) { return json(process_hellaswag(doc)); };
  // dataset.map() keeps the original columns and appends query, choices, gold.
  t.log_doc = [](const Doc& d) {
    ojson out = doc_in_file_order(d);
    const ojson added = process_hellaswag(d.value);
    for (auto it = added.begin(); it != added.end(); ++it) out[it.key()] = it.value();
    return out;
  };
  t.doc_to_text = [](const json& doc) { return TextOrIndex::of(str_field(doc, "query")); };
  t.doc_to_choice = [](const json& doc) { return str_list_field(doc, "choices"); };
  t.doc_to_target = [](const json& doc) { return TextOrIndex::of(int_field(doc, "gold")); };
  r.add_task(std::move(t));
}

}  // namespace mf::eval
