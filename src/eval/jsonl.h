// JSONL documents with one-line errors "<file>:<line>: <what>"; each line is kept in Doc::raw.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/task.h"

namespace mf::eval {

// Reads up to `limit` documents (limit < 0: all). Blank lines are skipped; every other line must be
// one JSON object.
std::vector<Doc> load_jsonl(const std::string& path, int64_t limit = -1);

}  // namespace mf::eval
