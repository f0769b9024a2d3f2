// MMLU (lm-eval tasks/mmlu/default; cais/mmlu, one config per subject, split test): 57 subject tasks
// mmlu_<subject>, four category groups and the size-weighted group mmlu.
// Data: mmlu/<subject>/test.jsonl (HF fields question, subject, choices, answer), or one file
// mmlu/all/test.jsonl (the cais/mmlu "all" config) from which each subject takes its rows.
#include <map>
#include <mutex>

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

TaskDef subject_task(const std::string& subject, const std::string& category) {
  TaskDef t;
  t.name = "mmlu_" + subject;
  t.alias = subject;
  t.version = 1.0;
  t.data_files = {"mmlu/" + subject + "/test.jsonl", "mmlu/all/test.jsonl"};
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
  t.load = [subject](const std::string& path, int64_t limit) {
    if (!ends_with(path, "/all/test.jsonl")) return load_jsonl(path, limit);
    // The combined file is read once for all 57 subjects.
    static std::mutex mu;
    static std::map<std::string, std::vector<Doc>> cache;
    std::vector<Doc> all;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto it = cache.find(path);
      if (it == cache.end()) it = cache.emplace(path, load_jsonl(path, -1)).first;
      all = it->second;
    }
    std::vector<Doc> out;
    for (auto& d : all) {
      if (limit >= 0 && static_cast<int64_t>(out.size()) >= limit) break;
      try {
        if (str_field(d.value, "subject") == subject) out.push_back(std::move(d));
      } catch (const Error& e) {
        fail(d.origin() + ": " + e.what());
      }
    }
    return out;
  };
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
