#include "eval/jsonl.h"

#include "util/json.h"

namespace mf::eval {

std::vector<Doc> load_jsonl(const std::string& path, int64_t limit) {
  std::vector<Doc> docs;
  if (limit == 0) return docs;
  for_each_jsonl_object(path, [&](const json& j, int64_t line) {
    Doc doc;
    doc.value = j;
    doc.file = path;
    doc.line = line;
    docs.push_back(std::move(doc));
    return limit < 0 || static_cast<int64_t>(docs.size()) < limit;
  });
  return docs;
}

}  // namespace mf::eval
