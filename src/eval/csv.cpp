#include "eval/csv.h"

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/fs.h"
#include "util/fs_checks.h"

namespace mf::eval {

namespace {

[[noreturn]] void fail_at(const std::string& origin, int64_t line, const std::string& what) {
  fail_file(origin + ":" + std::to_string(line), what);
}

bool is_line_end(char c) { return c == '\n' || c == '\r'; }

// Consumes one line end (CRLF, LF or CR) at i.
void skip_line_end(const std::string& s, size_t& i) {
  if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
  ++i;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x110000) {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    fail("escape out of the Unicode range");
  }
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A Python string literal starting at s[i] (the quote); i ends after the closing quote.
std::string python_string(const std::string& s, size_t& i) {
  const char quote = s[i++];
  std::string out;
  while (true) {
    if (i >= s.size()) fail("unterminated string literal");
    char c = s[i++];
    if (c == quote) return out;
    if (c != '\\') {
      out += c;
      continue;
    }
    if (i >= s.size()) fail("unterminated string literal");
    char e = s[i++];
    switch (e) {
      case '\n': break;  // line continuation
      case '\\': case '\'': case '"': out += e; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case 'x': case 'u': case 'U': {
        const int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (int k = 0; k < digits; ++k) {
          int h = i < s.size() ? hex_value(s[i]) : -1;
          if (h < 0) fail(std::string("truncated \\") + e + " escape");
          cp = cp * 16 + static_cast<uint32_t>(h);
          ++i;
        }
        append_utf8(out, cp);
        break;
      }
      case 'N': fail("\\N{...} escapes are not supported");
      default:
        if (e >= '0' && e <= '7') {
          uint32_t cp = static_cast<uint32_t>(e - '0');
          for (int k = 0; k < 2 && i < s.size() && s[i] >= '0' && s[i] <= '7'; ++k) cp = cp * 8 + (s[i++] - '0');
          append_utf8(out, cp);
        } else {
          out += '\\';  // Python keeps unknown escapes as written
          out += e;
        }
    }
  }
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& origin) {
  std::vector<CsvRecord> records;
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  const size_t n = text.size();
  int64_t line = 1;
  while (i < n) {
    if (is_line_end(text[i])) {  // blank line
      skip_line_end(text, i);
      ++line;
      continue;
    }
    CsvRecord rec;
    rec.line = line;
    while (true) {
      std::string field;
      if (i < n && text[i] == '"') {
        const int64_t opened = line;
        ++i;
        while (true) {
          if (i >= n) fail_at(origin, opened, "unterminated quoted field");
          char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (c == '\r' && i + 1 < n && text[i + 1] == '\n') {
            field += '\n';
            i += 2;
            ++line;
            continue;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        if (i < n && text[i] != ',' && !is_line_end(text[i]))
          fail_at(origin, line, "a closing quote must be followed by ',' or the end of the line");
      } else {
        while (i < n && text[i] != ',' && !is_line_end(text[i])) field += text[i++];
      }
      rec.fields.push_back(std::move(field));
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      if (i < n) {
        skip_line_end(text, i);
        ++line;
      }
      break;
    }
    records.push_back(std::move(rec));
  }
  return records;
}

std::vector<CsvRecord> parse_tsv(const std::string& text, const std::string& origin) {
  (void)origin;  // nothing in a quote-less TSV can be malformed; callers check the columns
  std::vector<CsvRecord> records;
  size_t start = 0;
  for (int64_t line = 1; start < text.size(); ++line) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string row = text.substr(start, end - start);
    start = end + 1;
    if (!row.empty() && row.back() == '\r') row.pop_back();
    if (row.empty()) continue;
    CsvRecord rec;
    rec.line = line;
    size_t p = 0;
    while (true) {
      size_t tab = row.find('\t', p);
      rec.fields.push_back(row.substr(p, tab == std::string::npos ? std::string::npos : tab - p));
      if (tab == std::string::npos) break;
      p = tab + 1;
    }
    records.push_back(std::move(rec));
  }
  return records;
}

std::vector<CsvRecord> read_csv(const std::string& path) {
  require_regular_file(path);
  return parse_csv(read_file(path), path);
}

std::vector<CsvRecord> read_tsv(const std::string& path) {
  require_regular_file(path);
  return parse_tsv(read_file(path), path);
}

std::vector<std::string> parse_list_cell(const std::string& cell) {
  size_t b = 0, e = cell.size();
  while (b < e && is_blank(cell[b])) ++b;
  while (e > b && is_blank(cell[e - 1])) --e;
  const std::string s = cell.substr(b, e - b);
  if (s.size() < 2 || s.front() != '[' || s.back() != ']')
    fail("expected a list such as [\"a\", \"b\"], ['a', 'b'] or ['a' 'b']");
  // JSON first: it is what json.dumps writes, and JSON escapes differ slightly from Python's.
  try {
    const nlohmann::json j = nlohmann::json::parse(s);
    std::vector<std::string> out;
    bool strings = j.is_array();
    for (const auto& v : j)
      if (strings && v.is_string()) out.push_back(v.get<std::string>());
      else strings = false;
    if (strings) return out;
  } catch (const nlohmann::json::exception&) {
    // not JSON: a Python or numpy repr
  }
  std::vector<std::string> out;
  size_t i = 1;
  const size_t end = s.size() - 1;  // the closing ']'
  while (true) {
    while (i < end && is_blank(s[i])) ++i;
    if (i >= end) break;
    if (s.compare(i, 3, "...") == 0) fail("the list was shortened by numpy ('...'); export the dataset to JSON Lines");
    if (s[i] != '\'' && s[i] != '"') fail("expected a quoted string at character " + std::to_string(i + 1));
    out.push_back(python_string(s, i));
    if (i > end) fail("unterminated string literal");
    while (i < end && is_blank(s[i])) ++i;
    if (i < end && s[i] == ',') ++i;  // Python lists separate with ", ", numpy arrays with blanks
  }
  return out;
}

}  // namespace mf::eval
