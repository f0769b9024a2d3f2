// Lenient field access for tokenizer files: a missing key or JSON null means "default",
// a value of the wrong type is an error naming the file.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace mf::tokjson {

inline bool get_bool(const nlohmann::json& j, const char* key, bool fallback, const std::string& origin) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_boolean()) fail_file(origin, std::string("'") + key + "' must be true or false");
  return j[key].get<bool>();
}

inline std::string get_string(const nlohmann::json& j, const char* key, const std::string& fallback,
                              const std::string& origin) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_string()) fail_file(origin, std::string("'") + key + "' must be a string");
  return j[key].get<std::string>();
}

}  // namespace mf::tokjson
