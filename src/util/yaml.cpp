#include "util/yaml.h"

#include <yaml-cpp/eventhandler.h>

#include <cstdlib>
#include <sstream>

#include "util/error.h"
#include "util/fs.h"

namespace mf {

bool is_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

nlohmann::ordered_json yaml_to_json(const YAML::Node& n) {
  using oj = nlohmann::ordered_json;
  if (!n || n.IsNull()) return nullptr;
  if (n.IsSequence()) {
    oj out = oj::array();
    for (const auto& e : n) out.push_back(yaml_to_json(e));
    return out;
  }
  if (n.IsMap()) {
    oj out = oj::object();
    for (const auto& kv : n) out[kv.first.as<std::string>()] = yaml_to_json(kv.second);
    return out;
  }
  const std::string s = n.as<std::string>();
  if (n.Tag() == "!") return s;  // quoted
  if (s == "true" || s == "True") return true;
  if (s == "false" || s == "False") return false;
  const std::string digits = !s.empty() && (s[0] == '-' || s[0] == '+') ? s.substr(1) : s;
  if (is_digits(digits) && digits.size() < 18) return static_cast<int64_t>(std::stoll(s));
  if (!s.empty() && s.find_first_not_of("0123456789.eE+-") == std::string::npos) {
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (end == s.c_str() + s.size()) return d;
  }
  return s;
}

namespace {

// Records where each document starts; parsing nothing else.
struct DocumentStarts : YAML::EventHandler {
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

}  // namespace

std::vector<YAML::Node> load_all_yaml(const std::string& text) {
  // yaml-cpp 0.7 leaves an unexpected token unconsumed and reports an empty document at the same
  // place forever; a document that starts where the previous one started is that loop.
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentStarts events;
  while (parser.HandleNextDocument(events)) {
    const size_t n = events.starts.size();
    if (n >= 2 && events.starts[n - 1].pos == events.starts[n - 2].pos)
      throw YAML::ParserException(events.starts.back(), "unexpected token: no document can start here");
  }
  return YAML::LoadAll(text);
}

nlohmann::ordered_json read_yaml_file(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return yaml_to_json(YAML::Load(text));
  } catch (const YAML::Exception& e) {
    fail_file(path, "invalid YAML: " + e.msg + " (line " + std::to_string(e.mark.line + 1) + ")");
  }
}

}  // namespace mf
