#include "eval/jsonl.h"

#include <fstream>

#include "util/error.h"
#include "util/fs_checks.h"
#include "util/json.h"

namespace mf::eval {

std::vector<Doc> load_jsonl(const std::string& path, int64_t limit) {
  std::vector<Doc> docs;
  if (limit == 0) return docs;
  // The lines are kept (Doc::raw): lm-eval's doc_hash depends on the file's key order.
  require_regular_file(path);  // a FIFO would block the open
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, "cannot open file");
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    Doc doc;
    doc.file = path;
    doc.line = line_no;
    doc.value = parse_json(line, doc.origin());
    if (!doc.value.is_object()) fail_file(doc.origin(), "expected a JSON object");
    doc.raw = std::move(line);
    docs.push_back(std::move(doc));
    if (limit > 0 && static_cast<int64_t>(docs.size()) >= limit) break;
  }
  return docs;
}

Doc canonical_doc(const nlohmann::ordered_json& row, const std::string& file, int64_t line) {
  Doc d;
  d.value = json::parse(row.dump());
  d.raw = row.dump();
  d.file = file;
  d.line = line;
  return d;
}

void with_origin(const std::string& origin, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    fail_file(origin, one_line(e.what()));
  } catch (const nlohmann::json::exception& e) {
    fail_file(origin, one_line(e.what()));
  }
}

std::vector<Doc> load_jsonl_mapped(const std::string& path, int64_t limit, const RowMap& map) {
  std::vector<Doc> docs = load_jsonl(path, limit);
  for (Doc& d : docs) {
    std::optional<nlohmann::ordered_json> row;
    with_origin(d.origin(), [&] { row = map(d.value); });
    if (row) d = canonical_doc(*row, d.file, d.line);
  }
  return docs;
}

}  // namespace mf::eval
