// Multi-rank tests: each rank is a fresh process, this test binary executed again
// (/proc/self/exe --gtest_filter=<child test>) with torchrun's variables and
// MOEFORGE_DIST_CHILD=<scenario>. The ranks are exec'd, never just forked: a forked copy of a
// process that has run libtorch inherits its OpenMP and c10 thread pools as dead threads and
// their locks in whatever state they were, and can hang in its first parallel region. Between fork
// and exec the parent's helper only calls async-signal-safe functions on data prepared before the
// fork. Each rank writes its log to <dir>/rank<R>.log (shown when a test fails) and its verdict to
// <dir>/rank<R>.txt.
#pragma once
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "util/fs.h"

extern char** environ;

namespace mf::testing_dist {

inline std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  buf[n] = '\0';
  return buf;
}

// Variables a rank must not inherit from the test process: torchrun's, the child protocol's, and
// gtest's own (an inherited GTEST_OUTPUT would overwrite the parent's report; sharding could
// filter the child's one test away).
inline bool dropped_var(const std::string& key) {
  static const char* const names[] = {"RANK",
                                      "WORLD_SIZE",
                                      "LOCAL_RANK",
                                      "LOCAL_WORLD_SIZE",
                                      "GROUP_RANK",
                                      "ROLE_RANK",
                                      "GROUP_WORLD_SIZE",
                                      "ROLE_WORLD_SIZE",
                                      "MASTER_ADDR",
                                      "MASTER_PORT",
                                      "MOEFORGE_DIST_CHILD",
                                      "MOEFORGE_DIST_CHILD_OUT",
                                      "MOEFORGE_DIST_TIMEOUT",
                                      "GLOO_SOCKET_IFNAME",
                                      "GTEST_OUTPUT",
                                      "GTEST_FILTER",
                                      "GTEST_SHARD_INDEX",
                                      "GTEST_TOTAL_SHARDS",
                                      "GTEST_SHARD_STATUS_FILE"};
  for (const char* n : names)
    if (key == n) return true;
  return false;
}

struct RankRun {
  int rank;
  std::string scenario;  // collectives | expect_failure | die_after_init
};

struct RanksOutcome {
  std::vector<int> codes;  // exit code, 128 + signal, or -1 when killed at the deadline
  double seconds = 0;
  bool timed_out = false;
};

inline std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/mf_dist/" + name;
  remove_all(d);
  make_dirs(d);
  return d;
}

inline std::string rank_file(const std::string& dir, int rank, const char* ext) {
  return dir + "/rank" + std::to_string(rank) + ext;
}

inline std::string read_or_empty(const std::string& path) {
  try {
    return read_file(path);
  } catch (const std::exception&) {
    return "";
  }
}

// Every rank's log, for failure messages.
inline std::string logs(const std::string& dir, const std::vector<RankRun>& runs) {
  std::string out;
  for (const auto& run : runs)
    out += "\n--- rank " + std::to_string(run.rank) + " log ---\n" + read_or_empty(rank_file(dir, run.rank, ".log"));
  return out;
}

// Starts `runs` (ranks of a job of `world` ranks, rendezvous at 127.0.0.1:port) and waits for all
// of them, at most `limit`; ranks still running then are SIGKILLed.
inline RanksOutcome run_ranks(int world, const std::vector<RankRun>& runs, int port, const std::string& dir,
                       const std::map<std::string, std::string>& extra_env, std::chrono::seconds limit,
                             const std::string& child_test = "DistChild.Rank") {
  const std::string exe = self_exe();
  std::vector<std::vector<std::string>> envs(runs.size()), argvs(runs.size());
  std::vector<std::string> log_paths(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      const std::string kv = *e;
      if (!dropped_var(kv.substr(0, kv.find('=')))) envs[i].push_back(kv);
    }
    const std::string r = std::to_string(runs[i].rank), w = std::to_string(world);
    for (const std::string& kv :
         {"RANK=" + r, "LOCAL_RANK=" + r, "WORLD_SIZE=" + w, "LOCAL_WORLD_SIZE=" + w, std::string("MASTER_ADDR=127.0.0.1"),
          "MASTER_PORT=" + std::to_string(port), "MOEFORGE_DIST_CHILD=" + runs[i].scenario,
          "MOEFORGE_DIST_CHILD_OUT=" + dir})
      envs[i].push_back(kv);
    for (const auto& [k, v] : extra_env) envs[i].push_back(k + "=" + v);
    argvs[i] = {exe, "--gtest_filter=" + child_test};
    log_paths[i] = rank_file(dir, runs[i].rank, ".log");
  }
  auto pointers = [](std::vector<std::string>& strings) {
    std::vector<char*> p;
    for (auto& s : strings) p.push_back(s.data());
    p.push_back(nullptr);
    return p;
  };
  std::vector<std::vector<char*>> envps, argvps;
  for (size_t i = 0; i < runs.size(); ++i) {
    envps.push_back(pointers(envs[i]));
    argvps.push_back(pointers(argvs[i]));
  }

  RanksOutcome outcome;
  outcome.codes.assign(runs.size(), -1);
  std::vector<pid_t> pids(runs.size(), 0);
  std::fflush(nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < runs.size(); ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      const int fd = ::open(log_paths[i].c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execve(argvps[i][0], argvps[i].data(), envps[i].data());
      ::_exit(127);
    }
    pids[i] = pid;  // < 0: fork failed; reported as code -1
  }
  const auto deadline = t0 + limit;
  size_t running = 0;
  for (pid_t p : pids) running += p > 0 ? 1 : 0;
  while (running > 0 && std::chrono::steady_clock::now() < deadline) {
    for (size_t i = 0; i < runs.size(); ++i) {
      if (pids[i] <= 0) continue;
      int status = 0;
      if (::waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        outcome.codes[i] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        pids[i] = 0;
        --running;
      }
    }
    if (running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    if (pids[i] <= 0) continue;
    outcome.timed_out = true;
    ::kill(pids[i], SIGKILL);
    int status = 0;
    ::waitpid(pids[i], &status, 0);
  }
  outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return outcome;
}

inline void write_verdict(const std::string& text) {
  const char* dir = std::getenv("MOEFORGE_DIST_CHILD_OUT");
  const char* rank = std::getenv("RANK");
  if (dir == nullptr || rank == nullptr) return;
  std::ofstream(std::string(dir) + "/rank" + rank + ".txt", std::ios::binary) << text;
}


}  // namespace mf::testing_dist
