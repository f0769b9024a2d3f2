#include "util/json.h"

#include <cmath>
#include <fstream>

#include "util/error.h"
#include "util/fs.h"
#include "util/fs_checks.h"
#include "util/str.h"

namespace mf {

namespace {

// Deeper JSON is refused before it is parsed: nlohmann's parser is iterative, but copying and
// destroying a value recurse once per level (a crash at a few hundred thousand levels). No
// configuration, tokenizer or data line comes anywhere near this.
constexpr int64_t kMaxJsonDepth = 1000;

// Whether brackets nest deeper than kMaxJsonDepth outside strings. One linear pass; for valid JSON
// this is exactly the nesting depth, and for invalid JSON the parser stops at the first error,
// before it has built anything deeper than this count.
bool nested_too_deep(const std::string& text) {
  int64_t depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;  // the escaped character cannot end the string
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

}  // namespace

json parse_json(const std::string& text, const std::string& origin) {
  if (nested_too_deep(text)) fail_file(origin, cat("invalid JSON: nested deeper than ", kMaxJsonDepth, " levels"));
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    // Syntax errors, and out_of_range for numbers such as 1e400 ("number overflow parsing '1e400'").
    std::string what = e.what();
    // nlohmann prefixes "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
    auto pos = what.find("] ");
    fail_file(origin, "invalid JSON: " + one_line(pos == std::string::npos ? what : what.substr(pos + 2)));
  }
}

json read_json_file(const std::string& path) { return parse_json(read_file(path), path); }

void for_each_jsonl_object(const std::string& path, const std::function<bool(const json&, int64_t)>& fn) {
  require_regular_file(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, "cannot open file");
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string origin = path + ":" + std::to_string(line_no);
    const json j = parse_json(line, origin);
    if (!j.is_object()) fail_file(origin, "expected a JSON object");
    if (!fn(j, line_no)) return;
  }
}

void write_json_file(const std::string& path, const json& value) { write_file_atomic(path, value.dump(2) + "\n"); }

namespace {
template <typename T>
const char* type_name();
template <> const char* type_name<int64_t>() { return "an integer"; }
template <> const char* type_name<int>() { return "an integer"; }
template <> const char* type_name<double>() { return "a number"; }
template <> const char* type_name<bool>() { return "a boolean"; }
template <> const char* type_name<std::string>() { return "a string"; }

template <typename T>
bool has_type(const json& v) {
  if constexpr (std::is_same_v<T, bool>) return v.is_boolean();
  // A float counts when it is a whole number within int64 (1e9 as num_hidden_layers); the range test
  // comes first: casting 1e20 to int64 is undefined behaviour.
  else if constexpr (std::is_integral_v<T>)
    return v.is_number_integer() ||
           (v.is_number_float() && std::fabs(v.get<double>()) < 9.2e18 &&
            v.get<double>() == static_cast<double>(static_cast<int64_t>(v.get<double>())));
  else if constexpr (std::is_floating_point_v<T>) return v.is_number();
  else return v.is_string();
}
}  // namespace

template <typename T>
T json_get(const json& j, const std::string& key, const std::string& origin) {
  if (!j.is_object()) fail_file(origin, "expected a JSON object");
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail_file(origin, "missing key '" + key + "'");
  if (!has_type<T>(*it)) fail_file(origin, "key '" + key + "' must be " + type_name<T>());
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>)
    return static_cast<T>(it->is_number_float() ? static_cast<int64_t>(it->get<double>()) : it->get<int64_t>());
  else
    return it->get<T>();
}

template <typename T>
T json_get_or(const json& j, const std::string& key, const T& fallback, const std::string& origin) {
  if (!j.is_object()) fail_file(origin, "expected a JSON object");
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return json_get<T>(j, key, origin);
}

template int64_t json_get<int64_t>(const json&, const std::string&, const std::string&);
template int json_get<int>(const json&, const std::string&, const std::string&);
template double json_get<double>(const json&, const std::string&, const std::string&);
template bool json_get<bool>(const json&, const std::string&, const std::string&);
template std::string json_get<std::string>(const json&, const std::string&, const std::string&);
template int64_t json_get_or<int64_t>(const json&, const std::string&, const int64_t&, const std::string&);
template int json_get_or<int>(const json&, const std::string&, const int&, const std::string&);
template double json_get_or<double>(const json&, const std::string&, const double&, const std::string&);
template bool json_get_or<bool>(const json&, const std::string&, const bool&, const std::string&);
template std::string json_get_or<std::string>(const json&, const std::string&, const std::string&, const std::string&);

}  // namespace mf
