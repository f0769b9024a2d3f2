// YAML documents as JSON values (yaml-cpp underneath), so configs written in YAML (lm-eval task
// files, mergekit-moe configs) are read with the same JSON helpers as config.json.
#pragma once
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "util/json.h"

namespace mf {

// Whether s is a non-empty run of ASCII digits (how YAML plain scalars and lm-eval's
// doc_to_target strings are told apart from text).
bool is_digits(const std::string& s);

// A YAML value as Python's yaml.full_load gives it: plain scalars become integers, floats,
// booleans or null when they read as such; quoted scalars stay strings. Mapping order is kept.
nlohmann::ordered_json yaml_to_json(const YAML::Node& n);

// Every document of a YAML stream (YAML::LoadAll), except that yaml-cpp 0.7's endless loop on
// some invalid streams (jbeder/yaml-cpp#1040: a lone ',') is a YAML::ParserException instead.
std::vector<YAML::Node> load_all_yaml(const std::string& text);

// The single YAML document of a file as JSON; mf::Error "<path>: <what>" on a syntax error.
nlohmann::ordered_json read_yaml_file(const std::string& path);

}  // namespace mf
