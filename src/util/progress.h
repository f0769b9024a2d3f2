// A progress bar with rate and ETA on stderr. On a terminal it redraws one line; when stderr
// is not a terminal (CI logs, pipes) it prints a plain line every few seconds instead.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace mf {

class Progress {
 public:
  // total <= 0: unknown length (no percentage, no ETA).
  Progress(std::string label, int64_t total, std::string unit = "it");
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t n = 1);
  void set(int64_t done);
  // Extra text shown after the rate, e.g. "loss 2.31".
  void set_postfix(const std::string& text);
  void finish();

  int64_t done() const { return done_; }
  double elapsed_seconds() const;

  // Globally silence bars (-q, tests).
  static void set_enabled(bool enabled);

 private:
  void draw(bool final_line);

  std::string label_, unit_, postfix_;
  int64_t total_, done_ = 0;
  bool finished_ = false, tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace mf
