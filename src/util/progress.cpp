#include "util/progress.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "util/str.h"

namespace mf {

namespace {
std::atomic<bool> g_enabled{true};
std::atomic<bool> g_line_dirty{false};  // a TTY bar occupies the current line
}  // namespace

void progress_clear_line() {
  if (g_line_dirty.exchange(false)) std::fprintf(stderr, "\r\033[K");
}

void Progress::set_enabled(bool enabled) { g_enabled = enabled; }

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(isatty(STDERR_FILENO)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::advance(int64_t n) { set(done_ + n); }

void Progress::set_postfix(const std::string& text) { postfix_ = text; }

void Progress::set(int64_t done) {
  done_ = done;
  if (!g_enabled || finished_) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  // TTY: redraw at most 10 times a second. Log files: one line every 10 seconds.
  if (since >= (tty_ ? 0.1 : 10.0)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (!g_enabled) return;
  // Short jobs finished before the first non-TTY line: stay silent rather than spam logs.
  if (!tty_ && elapsed_seconds() < 2.0) return;
  draw(true);
}

void Progress::draw(bool final_line) {
  double elapsed = elapsed_seconds();
  double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  std::string text = label_ + " ";
  if (total_ > 0) {
    double frac = std::min(1.0, static_cast<double>(done_) / total_);
    if (tty_) {
      const int width = 24;
      int filled = static_cast<int>(frac * width);
      text += "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
    }
    char pct[16];
    std::snprintf(pct, sizeof pct, "%3.0f%% ", frac * 100);
    text += pct + format_count(done_) + "/" + format_count(total_);
  } else {
    text += format_count(done_);
  }
  text += " " + unit_ + " | " + format_count(rate) + " " + unit_ + "/s | " + format_duration(elapsed);
  if (total_ > 0 && !final_line) {
    double eta = rate > 0 ? (total_ - done_) / rate : -1;
    text += " ETA " + format_duration(eta);
  }
  if (!postfix_.empty()) text += " | " + postfix_;
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s%s", text.c_str(), final_line ? "\n" : "");
    g_line_dirty = !final_line;
  } else {
    std::fprintf(stderr, "%s\n", text.c_str());
  }
  std::fflush(stderr);
}

}  // namespace mf
