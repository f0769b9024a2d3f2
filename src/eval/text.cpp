#include "eval/text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>

#include "util/error.h"

namespace mf::eval {

namespace {

// Length in bytes of the whitespace character ending at `end` (0 if none).
size_t ws_len_before(const std::string& s, size_t end) {
  if (end == 0) return 0;
  unsigned char c = static_cast<unsigned char>(s[end - 1]);
  if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f)) return 1;
  // Multi-byte: find the start of the code point.
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  std::string cp = s.substr(start, end - start);
  static const char* spaces[] = {"\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\xa8", "\xe2\x80\xa9",
                                 "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80"};
  for (const char* sp : spaces)
    if (cp == sp) return cp.size();
  // U+2000..U+200A: e2 80 80..8a
  if (cp.size() == 3 && static_cast<unsigned char>(cp[0]) == 0xe2 && static_cast<unsigned char>(cp[1]) == 0x80 &&
      static_cast<unsigned char>(cp[2]) >= 0x80 && static_cast<unsigned char>(cp[2]) <= 0x8a)
    return 3;
  return 0;
}

size_t ws_len_at(const std::string& s, size_t pos) {
  if (pos >= s.size()) return 0;
  unsigned char c = static_cast<unsigned char>(s[pos]);
  size_t n = 1;
  if (c >= 0xF0) n = 4;
  else if (c >= 0xE0) n = 3;
  else if (c >= 0xC0) n = 2;
  if (pos + n > s.size()) return 0;
  return ws_len_before(s, pos + n) == n ? n : 0;
}

}  // namespace

std::string py_rstrip(const std::string& s) {
  size_t end = s.size();
  while (size_t n = ws_len_before(s, end)) end -= n;
  return s.substr(0, end);
}

std::string py_lstrip(const std::string& s) {
  size_t pos = 0;
  while (size_t n = ws_len_at(s, pos)) pos += n;
  return s.substr(pos);
}

std::string py_strip(const std::string& s) { return py_lstrip(py_rstrip(s)); }

int64_t utf8_length(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

std::string py_capitalize(const std::string& s) {
  std::string out = s;
  bool first = true;
  for (char& c : out) {
    if (first) {
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
      first = false;
    } else if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return out;
}

std::vector<std::string> py_split(const std::string& s, const std::string& sep) {
  if (sep.empty()) fail("split: empty separator");
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    if (pos == std::string::npos) break;
    out.push_back(s.substr(start, pos - start));
    start = pos + sep.size();
  }
  out.push_back(s.substr(start));
  return out;
}

std::vector<std::string> py_split_ws(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    while (size_t n = ws_len_at(s, pos)) pos += n;
    if (pos >= s.size()) break;
    size_t start = pos;
    while (pos < s.size() && ws_len_at(s, pos) == 0) ++pos;
    out.push_back(s.substr(start, pos - start));
  }
  return out;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  out.reserve(s.size());
  size_t start = 0;
  while (true) {
    size_t pos = s.find(from, start);
    if (pos == std::string::npos) break;
    out.append(s, start, pos - start);
    out += to;
    start = pos + from.size();
  }
  out.append(s, start, std::string::npos);
  return out;
}

namespace {
struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};
std::unique_ptr<pcre2_code, CodeDeleter> compile(const std::string& pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err,
                                   &off, nullptr);
  if (!code) fail("invalid regular expression '" + pattern + "'");
  return std::unique_ptr<pcre2_code, CodeDeleter>(code);
}
}  // namespace

std::string regex_replace_all(const std::string& s, const std::string& pattern, const std::string& repl) {
  auto code = compile(pattern);
  PCRE2_SIZE out_len = s.size() * 2 + 64;
  std::string out;
  for (int attempt = 0; attempt < 2; ++attempt) {
    out.assign(out_len, '\0');
    int rc = pcre2_substitute(code.get(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0,
                              PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, nullptr, nullptr,
                              reinterpret_cast<PCRE2_SPTR>(repl.data()), repl.size(),
                              reinterpret_cast<PCRE2_UCHAR*>(&out[0]), &out_len);
    if (rc >= 0) {
      out.resize(out_len);
      return out;
    }
    if (rc != PCRE2_ERROR_NOMEMORY) fail("regular expression substitution failed for '" + pattern + "'");
  }
  fail("regular expression substitution failed for '" + pattern + "'");
}

int64_t count_regex_split_ws(const std::string& s) {
  // re.split(r"\s+", s) gives (number of whitespace runs + 1) pieces, including empty ones at the ends.
  int64_t runs = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t n = ws_len_at(s, pos);
    if (n == 0) {
      ++pos;
      continue;
    }
    ++runs;
    while ((n = ws_len_at(s, pos))) pos += n;
  }
  return runs + 1;
}

}  // namespace mf::eval
