// JSON helpers with errors that name the file and the key.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace mf {

using json = nlohmann::json;

// Parses a JSON file; "<path>: invalid JSON: ..." on failure.
json read_json_file(const std::string& path);
json parse_json(const std::string& text, const std::string& origin);
// Writes pretty JSON (2-space indent, trailing newline) atomically.
void write_json_file(const std::string& path, const json& value);

// Required / optional typed lookups: "<origin>: missing key 'x'" / "key 'x' must be <type>".
template <typename T>
T json_get(const json& j, const std::string& key, const std::string& origin);
template <typename T>
T json_get_or(const json& j, const std::string& key, const T& fallback, const std::string& origin);

}  // namespace mf
