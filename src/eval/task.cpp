#include "eval/task.h"

#include "util/error.h"

namespace mf::eval {

const char* output_type_name(OutputType t) {
  switch (t) {
    case OutputType::MultipleChoice: return "multiple_choice";
    case OutputType::Loglikelihood: return "loglikelihood";
    case OutputType::LoglikelihoodRolling: return "loglikelihood_rolling";
  }
  return "?";
}

const json& field(const json& doc, const std::string& key) {
  if (!doc.is_object()) fail("document is not a JSON object");
  auto it = doc.find(key);
  if (it == doc.end() || it->is_null()) fail("missing field '" + key + "'");
  return *it;
}

std::string str_field(const json& doc, const std::string& key) {
  const json& v = field(doc, key);
  if (!v.is_string()) fail("field '" + key + "' must be a string");
  return v.get<std::string>();
}

int64_t int_field(const json& doc, const std::string& key) {
  const json& v = field(doc, key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    bool digits = !s.empty();
    for (char c : s) digits = digits && c >= '0' && c <= '9';
    if (digits && s.size() < 18) return std::stoll(s);
  }
  fail("field '" + key + "' must be an integer");
}

std::vector<std::string> str_list_field(const json& doc, const std::string& key) {
  const json& v = field(doc, key);
  if (!v.is_array()) fail("field '" + key + "' must be a list of strings");
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) fail("field '" + key + "' must be a list of strings");
    out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace mf::eval
