// Leveled logging to stderr. `--log-level` and `-q` set the threshold once in main().
#pragma once
#include <string>

#include "util/str.h"

namespace mf {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3, quiet = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();
// Parses debug|info|warn|error|quiet; throws UsageError otherwise.
LogLevel parse_log_level(const std::string& name);
void log_message(LogLevel level, const std::string& message);

template <typename... Args>
void log_debug(const Args&... args) {
  if (log_level() <= LogLevel::debug) log_message(LogLevel::debug, cat(args...));
}
template <typename... Args>
void log_info(const Args&... args) {
  if (log_level() <= LogLevel::info) log_message(LogLevel::info, cat(args...));
}
template <typename... Args>
void log_warn(const Args&... args) {
  if (log_level() <= LogLevel::warn) log_message(LogLevel::warn, cat(args...));
}

}  // namespace mf
