#include "util/error.h"

namespace mf {

void fail(const std::string& message) { throw Error(message); }

void fail_file(const std::string& path, const std::string& what) { throw Error(path + ": " + what); }

std::string one_line(const std::string& message) {
  std::string out;
  out.reserve(message.size());
  bool space = false;
  for (char c : message) {
    if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

}  // namespace mf
