// JSON helpers with errors that name the file and the key.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

namespace mf {

using json = nlohmann::json;

// Parses a JSON file; "<path>: invalid JSON: ..." on failure.
json read_json_file(const std::string& path);
json parse_json(const std::string& text, const std::string& origin);
// JSON Lines: calls fn(object, line) for every non-blank line in order (line numbers from 1; errors
// about a line start "<path>:<line>: "); fn returns false to stop early. A line that is not valid
// JSON or not an object fails with "<path>:<line>: invalid JSON: ..." / "...: expected a JSON object".
void for_each_jsonl_object(const std::string& path, const std::function<bool(const json&, int64_t)>& fn);

// Writes pretty JSON (2-space indent, trailing newline) atomically.
void write_json_file(const std::string& path, const json& value);

// Required / optional typed lookups: "<origin>: missing key 'x'" / "key 'x' must be <type>".
template <typename T>
T json_get(const json& j, const std::string& key, const std::string& origin);
template <typename T>
T json_get_or(const json& j, const std::string& key, const T& fallback, const std::string& origin);

}  // namespace mf
