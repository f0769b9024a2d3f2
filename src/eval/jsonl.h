// JSONL documents with one-line errors "<file>:<line>: <what>"; each line is kept in Doc::raw.
// Also the two helpers every layout reader uses to hand out canonical (HF field layout) documents.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "eval/task.h"

namespace mf::eval {

// Reads up to `limit` documents (limit < 0: all). Blank lines are skipped; every other line must be
// one JSON object.
std::vector<Doc> load_jsonl(const std::string& path, int64_t limit = -1);

// A document built from a canonical row: `value` is the row, `raw` its JSON text in the row's key
// order (the dataset's column order, on which lm-eval's doc_hash depends), origin file:line.
Doc canonical_doc(const nlohmann::ordered_json& row, const std::string& file, int64_t line);

// JSONL whose rows `map` turns into canonical rows; std::nullopt keeps a row as it is (already in
// the HF layout). mf::Error from `map` becomes "<file>:<line>: <what>".
using RowMap = std::function<std::optional<nlohmann::ordered_json>(const json& row)>;
std::vector<Doc> load_jsonl_mapped(const std::string& path, int64_t limit, const RowMap& map);

// Runs fn and prefixes an mf::Error it throws with "<origin>: " (one line).
void with_origin(const std::string& origin, const std::function<void()>& fn);

}  // namespace mf::eval
