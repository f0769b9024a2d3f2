// Small helpers shared by the test files.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <functional>
#include <string>

#include "util/error.h"
#include "util/fs.h"

namespace mf::testing_helpers {

// The message of the mf::Error that `f` throws, or "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const mf::Error& e) {
    return e.what();
  }
  return "";
}

struct CliRun {
  int code;         // exit status (-1: killed by a signal)
  std::string out;  // stdout (plus stderr when merged)
  std::string err;  // stderr when not merged
};

// Runs the built `moeforge ARGS` (MOEFORGE_BIN) through the shell; `prefix` goes before the
// binary (environment assignments, `timeout 60`).
inline CliRun run_moeforge(const std::string& args, bool merge_stderr = false, const std::string& prefix = "") {
  const std::string err_file = ::testing::TempDir() + "/moeforge_stderr.txt";
  const std::string cmd =
      prefix + std::string(MOEFORGE_BIN) + " " + args + (merge_stderr ? " 2>&1" : " 2>" + err_file);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, "", "popen failed"};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, merge_stderr ? "" : mf::read_file(err_file)};
}

}  // namespace mf::testing_helpers
