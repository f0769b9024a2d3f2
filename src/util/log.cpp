#include "util/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "util/error.h"

namespace mf {

namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::info)};
std::mutex g_mutex;
}  // namespace

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }

LogLevel parse_log_level(const std::string& name) {
  if (name == "debug") return LogLevel::debug;
  if (name == "info") return LogLevel::info;
  if (name == "warn" || name == "warning") return LogLevel::warn;
  if (name == "error") return LogLevel::error;
  if (name == "quiet") return LogLevel::quiet;
  throw UsageError("unknown log level '" + name + "' (debug, info, warn, error, quiet)");
}

void progress_clear_line();  // progress.cpp: keeps a live bar from being overwritten mid-line

void log_message(LogLevel level, const std::string& message) {
  static const char* names[] = {"debug", "info", "warning", "error", ""};
  std::lock_guard<std::mutex> lock(g_mutex);
  progress_clear_line();
  if (level == LogLevel::info)
    std::fprintf(stderr, "%s\n", message.c_str());
  else
    std::fprintf(stderr, "%s: %s\n", names[static_cast<int>(level)], message.c_str());
  std::fflush(stderr);
}

}  // namespace mf
