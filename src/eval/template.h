// A small Jinja subset for custom task templates (what lm-eval task YAMLs use):
//   {{field}}, {{a.b}}, {{a[0]}}, {{a[-1]}}, {{a[1:3]}}, {{"x" + field}}, {{(label|int) - 1}},
//   list literals {{[sol1, sol2]}}, methods .strip() .lstrip() .rstrip() .lower() .upper()
//   .split(sep) .replace(a, b) .index(x), filters |int |string |lower |upper |trim |join(sep)
//   |first |last |length |replace(a, b).
// A template that is exactly one {{ expression }} yields the value itself (a list for doc_to_choice,
// an integer for doc_to_target); anything else renders to a string.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace mf::eval {

// Throws mf::Error with a one-line message (bad syntax, missing field, wrong type).
nlohmann::json render_template(const std::string& tmpl, const nlohmann::json& doc);
// Value as Jinja prints it (strings verbatim, lists as Python repr).
std::string template_to_string(const nlohmann::json& value);

}  // namespace mf::eval
