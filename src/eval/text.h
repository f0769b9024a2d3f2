// Python-compatible string helpers for building lm-eval prompts byte for byte:
// str.strip/rstrip/capitalize/split(' '), len() in code points, and re.sub through PCRE2.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mf::eval {

// Python's str.isspace() for the ASCII range plus the common Unicode spaces (U+0085, U+00A0, U+1680,
// U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000, and \x1c-\x1f), on UTF-8 text.
std::string py_rstrip(const std::string& s);
std::string py_lstrip(const std::string& s);
std::string py_strip(const std::string& s);
// Number of Unicode code points (Python len()) of UTF-8 text.
int64_t utf8_length(const std::string& s);
// Python str.capitalize(): first character upper case, the rest lower case (ASCII letters only).
std::string py_capitalize(const std::string& s);
// Python str.split(sep) with an explicit separator (keeps empty pieces).
std::vector<std::string> py_split(const std::string& s, const std::string& sep);
// Python str.split() with no argument: runs of whitespace, no empty pieces.
std::vector<std::string> py_split_ws(const std::string& s);
// Replaces every occurrence of `from` (non-overlapping, left to right) like Python str.replace.
std::string replace_all(const std::string& s, const std::string& from, const std::string& to);
// Python re.sub(pattern, repl, s) for PCRE-compatible patterns; `repl` uses $1 for groups.
std::string regex_replace_all(const std::string& s, const std::string& pattern, const std::string& repl);
// len(re.split(r"\s+", s)) — the wikitext word count (counts the empty pieces at the ends).
int64_t count_regex_split_ws(const std::string& s);

}  // namespace mf::eval
