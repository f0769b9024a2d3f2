// Small string helpers used across the code base.
#pragma once
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace mf {

template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

std::vector<std::string> split(const std::string& s, char sep);
std::string trim(const std::string& s);
bool starts_with(const std::string& s, const std::string& prefix);
bool ends_with(const std::string& s, const std::string& suffix);
std::string join(const std::vector<std::string>& parts, const std::string& sep);
// 1536 -> "1.50 KiB"
std::string format_bytes(double bytes);
// 1234567 -> "1.23M"
std::string format_count(double n);
// seconds -> "1:02:03" / "02:03"
std::string format_duration(double seconds);
// Parses "5GB", "500MB", "1GiB", "1024" (bytes). Throws mf::Error on bad input.
uint64_t parse_size(const std::string& text);

}  // namespace mf
