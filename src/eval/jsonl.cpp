#include "eval/jsonl.h"

#include <fstream>

#include "util/error.h"

namespace mf::eval {

std::vector<Doc> load_jsonl(const std::string& path, int64_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, "cannot open file");
  std::vector<Doc> docs;
  std::string line;
  int64_t lineno = 0;
  while ((limit < 0 || static_cast<int64_t>(docs.size()) < limit) && std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string origin = path + ":" + std::to_string(lineno);
    Doc doc;
    try {
      doc.value = json::parse(line);
    } catch (const json::parse_error& e) {
      std::string what = e.what();
      auto pos = what.find("] ");
      fail(origin + ": invalid JSON: " + one_line(pos == std::string::npos ? what : what.substr(pos + 2)));
    }
    if (!doc.value.is_object()) fail(origin + ": expected a JSON object");
    doc.file = path;
    doc.line = lineno;
    docs.push_back(std::move(doc));
  }
  return docs;
}

}  // namespace mf::eval
