// MMLU (lm-eval tasks/mmlu/default; cais/mmlu, one config per subject, split test): 57 subject tasks
// mmlu_<subject>, four category groups and the size-weighted group mmlu.
// Data (docs/eval.md): the cais/mmlu JSONL per subject or for all subjects, CSV exports of it, and
// the original release's header-less data/test/<subject>_test.csv; every layout is read into the
// cais/mmlu row {question, subject, choices, answer}.
#include <filesystem>
#include <map>
#include <mutex>

#include "eval/csv.h"
#include "eval/jsonl.h"
#include "eval/tasks/tasks.h"
#include "eval/text.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf::eval {

namespace {

struct Subject {
  const char* name;
  const char* category;  // stem, humanities, social_sciences, other
};

// lm-eval tasks/mmlu/_generate_configs.py SUBJECTS.
const Subject kSubjects[] = {
    {"abstract_algebra", "stem"}, {"anatomy", "stem"}, {"astronomy", "stem"}, {"business_ethics", "other"},
    {"clinical_knowledge", "other"}, {"college_biology", "stem"}, {"college_chemistry", "stem"},
    {"college_computer_science", "stem"}, {"college_mathematics", "stem"}, {"college_medicine", "other"},
    {"college_physics", "stem"}, {"computer_security", "stem"}, {"conceptual_physics", "stem"},
    {"econometrics", "social_sciences"}, {"electrical_engineering", "stem"}, {"elementary_mathematics", "stem"},
    {"formal_logic", "humanities"}, {"global_facts", "other"}, {"high_school_biology", "stem"},
    {"high_school_chemistry", "stem"}, {"high_school_computer_science", "stem"},
    {"high_school_european_history", "humanities"}, {"high_school_geography", "social_sciences"},
    {"high_school_government_and_politics", "social_sciences"}, {"high_school_macroeconomics", "social_sciences"},
    {"high_school_mathematics", "stem"}, {"high_school_microeconomics", "social_sciences"},
    {"high_school_physics", "stem"}, {"high_school_psychology", "social_sciences"},
    {"high_school_statistics", "stem"}, {"high_school_us_history", "humanities"},
    {"high_school_world_history", "humanities"}, {"human_aging", "other"}, {"human_sexuality", "social_sciences"},
    {"international_law", "humanities"}, {"jurisprudence", "humanities"}, {"logical_fallacies", "humanities"},
    {"machine_learning", "stem"}, {"management", "other"}, {"marketing", "other"}, {"medical_genetics", "other"},
    {"miscellaneous", "other"}, {"moral_disputes", "humanities"}, {"moral_scenarios", "humanities"},
    {"nutrition", "other"}, {"philosophy", "humanities"}, {"prehistory", "humanities"},
    {"professional_accounting", "other"}, {"professional_law", "humanities"}, {"professional_medicine", "other"},
    {"professional_psychology", "social_sciences"}, {"public_relations", "social_sciences"},
    {"security_studies", "social_sciences"}, {"sociology", "social_sciences"},
    {"us_foreign_policy", "social_sciences"}, {"virology", "other"}, {"world_religions", "humanities"},
};

// cais/mmlu's row from a row of any accepted layout: `choices` as a JSON array or a list cell of a
// CSV export (csv.h), or four columns A..D (the original release); `answer` as 0-3 (ClassLabel) or a
// letter A-D; `subject` from the row, else from the file's name or directory.
ojson mmlu_row(const json& row, const std::string& file_subject) {
  ojson out;
  out["question"] = str_field(row, "question");
  std::string subject = file_subject;
  if (row.contains("subject") && row["subject"].is_string() && !row["subject"].get<std::string>().empty())
    subject = row["subject"].get<std::string>();
  if (subject.empty()) fail("missing field 'subject'");
  out["subject"] = subject;
  std::vector<std::string> choices;
  if (row.contains("choices")) {
    const json& c = row["choices"];
    choices = c.is_string() ? parse_list_cell(c.get<std::string>()) : str_list_field(row, "choices");
  } else if (row.contains("A") && row.contains("B") && row.contains("C") && row.contains("D")) {
    choices = {str_field(row, "A"), str_field(row, "B"), str_field(row, "C"), str_field(row, "D")};
  } else {
    fail("missing field 'choices' (nor columns A, B, C, D)");
  }
  if (choices.size() != 4) fail("field 'choices' must have 4 entries (has " + std::to_string(choices.size()) + ")");
  out["choices"] = choices;
  const json& a = field(row, "answer");
  const std::string text = a.is_string() ? a.get<std::string>() : a.dump();
  if (text.size() != 1 || ((text[0] < '0' || text[0] > '3') && (text[0] < 'A' || text[0] > 'D')))
    fail("field 'answer' must be 0-3 or A-D (got '" + text + "')");
  out["answer"] = text[0] <= '3' ? text[0] - '0' : text[0] - 'A';
  return out;
}

bool is_cais_row(const json& row) {
  auto has = [&](const char* k, json::value_t t) { return row.contains(k) && row.at(k).type() == t; };
  return row.size() == 4 && has("question", json::value_t::string) && has("subject", json::value_t::string) &&
         has("choices", json::value_t::array) && row.contains("answer") && row.at("answer").is_number_integer();
}

// JSONL in the cais/mmlu layout is kept as it is (its key order is the dataset's); other rows map.
std::vector<Doc> read_jsonl(const std::string& path, const std::string& file_subject) {
  return load_jsonl_mapped(path, -1, [&](const json& row) -> std::optional<ojson> {
    if (is_cais_row(row)) return std::nullopt;
    return mmlu_row(row, file_subject);
  });
}

// CSV with a header naming the columns (datasets' to_csv: question,subject,choices,answer).
std::vector<Doc> read_header_csv(const std::string& path, const std::vector<CsvRecord>& recs,
                                 const std::string& file_subject) {
  std::vector<Doc> docs;
  if (recs.empty()) return docs;
  const auto& header = recs[0].fields;
  for (size_t r = 1; r < recs.size(); ++r) {
    const std::string origin = path + ":" + std::to_string(recs[r].line);
    if (recs[r].fields.size() != header.size())
      fail_file(origin, std::to_string(recs[r].fields.size()) + " fields, the header has " +
                            std::to_string(header.size()) + " (" + join(header, ",") + ")");
    json row = json::object();
    for (size_t k = 0; k < header.size(); ++k) row[header[k]] = recs[r].fields[k];
    with_origin(origin, [&] { docs.push_back(canonical_doc(mmlu_row(row, file_subject), path, recs[r].line)); });
  }
  return docs;
}

// The original release: question, A, B, C, D, answer letter, no header.
std::vector<Doc> read_hendrycks_csv(const std::string& path, const std::string& subject) {
  const auto recs = read_csv(path);
  if (!recs.empty() && recs[0].fields.size() > 1 && recs[0].fields[0] == "question")
    return read_header_csv(path, recs, subject);  // a copy that gained a header row
  std::vector<Doc> docs;
  for (const auto& rec : recs) {
    const std::string origin = path + ":" + std::to_string(rec.line);
    if (rec.fields.size() != 6)
      fail_file(origin, std::to_string(rec.fields.size()) + " fields, expected 6 (question, A, B, C, D, answer)");
    const json row = {{"question", rec.fields[0]}, {"A", rec.fields[1]}, {"B", rec.fields[2]},
                      {"C", rec.fields[3]},        {"D", rec.fields[4]}, {"answer", rec.fields[5]}};
    with_origin(origin, [&] { docs.push_back(canonical_doc(mmlu_row(row, subject), path, rec.line)); });
  }
  return docs;
}

// A file holding all subjects is read once for all 57 tasks (again when it changes).
std::vector<Doc> read_combined(const std::string& path, const std::string& subject) {
  static std::mutex mu;
  static std::map<std::string, std::pair<std::string, std::vector<Doc>>> cache;
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(path, ec);
  const std::string stamp =
      std::to_string(file_size(path)) + ":" + std::to_string(ec ? 0 : mtime.time_since_epoch().count());
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(path);
  if (it == cache.end() || it->second.first != stamp) {
    std::vector<Doc> docs = ends_with(path, ".csv") ? read_header_csv(path, read_csv(path), "") : read_jsonl(path, "");
    it = cache.insert_or_assign(path, std::make_pair(stamp, std::move(docs))).first;
  }
  std::vector<Doc> out;
  for (const auto& d : it->second.second)
    if (d.value.value("subject", "") == subject) out.push_back(d);
  return out;
}

void add_data_files(TaskDef& t, const std::string& s) {
  auto limited = [](std::vector<Doc> docs, int64_t limit) {
    if (limit >= 0 && static_cast<int64_t>(docs.size()) > limit) docs.resize(static_cast<size_t>(limit));
    return docs;
  };
  const DocReader combined = [s, limited](const std::string& p, int64_t n) { return limited(read_combined(p, s), n); };
  const DocReader one_csv = [s, limited](const std::string& p, int64_t n) {
    return limited(read_header_csv(p, read_csv(p), s), n);
  };
  const DocReader orig = [s, limited](const std::string& p, int64_t n) { return limited(read_hendrycks_csv(p, s), n); };
  const std::string rows = "rows with subject '" + s + "'";
  t.data_files = {{"mmlu/" + s + "/test.jsonl", "HF cais/mmlu JSONL"},
                  {"mmlu/all/test.jsonl", "HF cais/mmlu 'all' JSONL, " + rows, combined},
                  {"mmlu/test.jsonl", "one JSONL for all subjects, " + rows, combined},
                  {"mmlu/" + s + "/test.csv", "CSV export with a header", one_csv},
                  {"mmlu/all/test.csv", "CSV export with a header, " + rows, combined},
                  {"mmlu/test.csv", "CSV export with a header, " + rows, combined},
                  {"test/" + s + "_test.csv", "the original release's CSV, no header", orig},
                  {"mmlu/data/test/" + s + "_test.csv", "the original release's CSV, no header", orig}};
}

TaskDef subject_task(const std::string& subject, const std::string& category) {
  TaskDef t;
  t.name = "mmlu_" + subject;
  t.alias = subject;
  t.version = 1.0;
  add_data_files(t, subject);
  t.metrics = {metric_acc()};
  t.description = "The following are multiple choice questions (with answers) about " + join(split(subject, '_'), " ") +
                  ".\n\n";
  t.lm_config = {{"task_alias", subject},
                 {"tag", "mmlu_" + category + "_tasks"},
                 {"dataset_path", "cais/mmlu"},
                 {"dataset_name", subject},
                 {"test_split", "test"},
                 {"fewshot_split", "dev"},
                 {"doc_to_text",
                  "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"},
                 {"doc_to_target", "answer"},
                 {"doc_to_choice", ojson::array({"A", "B", "C", "D"})},
                 {"fewshot_config", {{"sampler", "first_n"}}},
                 {"metric_list", ojson::array({lm_metric("acc", "mean", true)})}};
  t.doc_to_text = [](const json& doc) {
    auto c = str_list_field(doc, "choices");
    if (c.size() != 4) fail("field 'choices' must have 4 entries (has " + std::to_string(c.size()) + ")");
    return TextOrIndex::of(py_strip(str_field(doc, "question")) + "\nA. " + c[0] + "\nB. " + c[1] + "\nC. " + c[2] +
                           "\nD. " + c[3] + "\nAnswer:");
  };
  t.doc_to_choice = [](const json&) { return std::vector<std::string>{"A", "B", "C", "D"}; };
  t.doc_to_target = [](const json& doc) { return TextOrIndex::of(int_field(doc, "answer")); };
  return t;
}

}  // namespace

std::vector<std::string> mmlu_subjects() {
  std::vector<std::string> out;
  for (const auto& s : kSubjects) out.push_back(s.name);
  return out;
}

void register_mmlu(TaskRegistry& r) {
  // lm-eval's mmlu group lists its categories in this order.
  const char* categories[] = {"stem", "other", "social_sciences", "humanities"};
  GroupDef top{"mmlu", "mmlu", {}, true, 2.0};
  for (const char* cat : categories) {
    GroupDef g{std::string("mmlu_") + cat, join(split(cat, '_'), " "), {}, true, 2.0};
    for (const auto& s : kSubjects)
      if (std::string(s.category) == cat) {
        r.add_task(subject_task(s.name, cat));
        g.children.push_back(std::string("mmlu_") + s.name);
      }
    top.children.push_back(g.name);
    r.add_group(std::move(g));
  }
  r.add_group(std::move(top));
}

}  // namespace mf::eval
