// Directory commits and leftovers of interrupted runs (issue 22, class 7): replacing an existing
// output never leaves a moment without one (renameat2 RENAME_EXCHANGE), and the temporaries of
// killed runs (`<final>.tmp-<pid>-<n>` whose process is gone) are removed by the next writer of the
// same output, while those of live processes and every other name are kept.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <exception>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "util/fs.h"
#include "util/fs_checks.h"
#include "util/log.h"

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

using namespace mf;

namespace {

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/mf_fs_commit/" + name;
  remove_all(d);
  make_dirs(d);
  return d;
}

// Whether the filesystem holding `dir` can exchange two directories in one step.
bool exchange_supported(const std::string& dir) {
  const std::string a = dir + "/probe_a", b = dir + "/probe_b";
  make_dirs(a);
  make_dirs(b);
  const bool ok = ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE) == 0;
  remove_all(a);
  remove_all(b);
  return ok;
}

// The PID of a process that has exited and been reaped (and not been reused since): what a run
// killed earlier leaves in its temporary names. -1 if none could be made.
pid_t dead_pid() {
  for (int attempt = 0; attempt < 20; ++attempt) {
    const pid_t child = ::fork();
    if (child < 0) return -1;
    if (child == 0) ::_exit(0);
    int status = 0;
    if (::waitpid(child, &status, 0) != child) return -1;
    if (::kill(child, 0) == -1 && errno == ESRCH) return child;
  }
  return -1;
}

void write_plain(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary);
  f << content;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// Log lines of `f` (stderr, at level info). An exception from `f` is recorded as a failure.
template <typename F>
std::string stderr_of(F f) {
  const LogLevel saved = log_level();
  set_log_level(LogLevel::info);
  ::testing::internal::CaptureStderr();
  std::string error;
  try {
    f();
  } catch (const std::exception& e) {
    error = e.what();
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  set_log_level(saved);
  EXPECT_EQ(error, "");
  return err;
}

}  // namespace

// ---- the commit ----

TEST(FsCommit, NewOutputIsRenamedIntoPlaceAndNothingIsLeft) {
  const std::string dir = fresh_dir("new_output");
  const std::string out = dir + "/out";
  {
    AtomicDir d(out);
    write_plain(path_join(d.path(), "a"), "1");
    d.commit();
  }
  EXPECT_EQ(read_file(out + "/a"), "1");
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"out"});
}

TEST(FsCommit, ReplacingAnOutputNeverLeavesItMissing) {
  const std::string dir = fresh_dir("exchange");
  if (!exchange_supported(dir)) GTEST_SKIP() << "the filesystem of " << dir << " has no RENAME_EXCHANGE";
  const std::string out = dir + "/out";
  make_dirs(out);
  write_plain(out + "/n", "initial");

  std::atomic<bool> done{false};
  std::atomic<int64_t> checks{0}, missing{0};
  std::thread watcher([&] {
    while (!done.load()) {
      if (!path_exists(out)) missing++;
      checks++;
    }
  });
  while (checks.load() == 0) std::this_thread::yield();  // watching before the first commit

  constexpr int kCommits = 300;
  std::string error;
  int64_t checks_during_commits = 0;
  try {
    for (int i = 0; i < kCommits; ++i) {
      AtomicDir d(out);
      write_plain(path_join(d.path(), "n"), std::to_string(i));
      d.commit();
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  checks_during_commits = checks.load();
  done = true;
  watcher.join();

  EXPECT_EQ(error, "");
  EXPECT_EQ(missing.load(), 0) << "the output was missing in " << missing.load() << " of " << checks.load()
                               << " checks";
  EXPECT_GT(checks_during_commits, 1);
  EXPECT_EQ(read_file(out + "/n"), std::to_string(kCommits - 1));
  EXPECT_EQ(list_dir(out), std::vector<std::string>{"n"});
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"out"});  // earlier outputs removed, no temporaries
}

TEST(FsCommit, ReplacingKeepsTheTargetOfALinkedOutput) {
  const std::string dir = fresh_dir("linked");
  const std::string target = dir + "/target", out = dir + "/out";
  make_dirs(target);
  write_plain(target + "/old", "keep");
  ASSERT_EQ(::symlink(target.c_str(), out.c_str()), 0);
  {
    AtomicDir d(out);
    write_plain(path_join(d.path(), "new"), "1");
    d.commit();
  }
  EXPECT_TRUE(is_directory(out));
  EXPECT_EQ(list_dir(out), std::vector<std::string>{"new"});  // the link is replaced by the output
  EXPECT_EQ(read_file(target + "/old"), "keep");              // its target is left alone
  EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"out", "target"}));
}

// ---- leftovers of interrupted runs ----

TEST(FsCommit, LeftoversOfDeadRunsAreRemovedOthersKept) {
  const std::string dir = fresh_dir("leftovers");
  const pid_t dead = dead_pid();
  ASSERT_GT(dead, 0);
  const std::string d = std::to_string(dead), live = std::to_string(::getpid());
  const std::string out = dir + "/out";

  // A killed run's partial output directory, and a killed AtomicFile's partial file.
  const std::string dead_dir = out + ".tmp-" + d + "-3", dead_file = out + ".tmp-" + d + "-0";
  make_dirs(dead_dir + "/sub");
  write_plain(dead_dir + "/sub/model.safetensors", "partial");
  write_plain(dead_file, "partial");
  // A run in progress (this process) keeps its temporary.
  const std::string live_dir = out + ".tmp-" + live + "-999999";
  make_dirs(live_dir);
  write_plain(live_dir + "/partial", "in progress");
  // Names that are not exactly `out.tmp-<pid>-<n>` are never touched, whatever PID they hold.
  const std::vector<std::string> others = {
      "out.tmp-notapid", "out.bak",          "out.tmp-" + d,        "out.tmp-" + d + "-",
      "out.tmp-" + d + "-1x", "out.tmp-" + d + "-01", "out.tmp-0" + d + "-1", "out.tmp--" + d + "-1",
      "out.tmp-" + d + "-1-2", "out.tmp-" + d + "-1.old", "out.tmp-0-0", "out.tmp-99999999999-0",
      "other.tmp-" + d + "-1", "xout.tmp-" + d + "-1", "out.TMP-" + d + "-1", "out"};
  for (const std::string& name : others) make_dirs(dir + "/" + name);
  write_plain(dir + "/out/old", "earlier output");

  const std::string log = stderr_of([&] {
    AtomicDir o(out);
    EXPECT_FALSE(path_exists(dead_dir));
    EXPECT_FALSE(path_exists(dead_file));
    EXPECT_TRUE(path_exists(live_dir + "/partial"));
    write_plain(path_join(o.path(), "new"), "1");
    o.commit();
  });
  EXPECT_NE(log.find("removed the leftover of an interrupted run: " + dead_dir + "\n"), std::string::npos) << log;
  EXPECT_NE(log.find("removed the leftover of an interrupted run: " + dead_file + "\n"), std::string::npos) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 2) << log;  // one line per removal, nothing else

  std::vector<std::string> expected = others;
  expected.push_back("out.tmp-" + live + "-999999");
  EXPECT_EQ(list_dir(dir), sorted(expected));
  EXPECT_EQ(list_dir(out), std::vector<std::string>{"new"});
  EXPECT_EQ(read_file(live_dir + "/partial"), "in progress");
}

TEST(FsCommit, LeftoverFilesOfDeadWritersAreRemoved) {
  const std::string dir = fresh_dir("leftover_files");
  const pid_t dead = dead_pid();
  ASSERT_GT(dead, 0);
  const std::string d = std::to_string(dead), live = std::to_string(::getpid());
  const std::string path = dir + "/config.json";
  write_plain(path + ".tmp-" + d + "-7", "{\"partial");
  write_plain(path + ".tmp-" + live + "-8", "{\"in progress");
  write_plain(path + ".tmp-" + d + "-7.keep", "not ours");
  write_file_atomic(path, "{}");
  EXPECT_EQ(read_file(path), "{}");
  EXPECT_EQ(list_dir(dir), sorted({"config.json", "config.json.tmp-" + d + "-7.keep", "config.json.tmp-" + live + "-8"}));
}

TEST(FsCommit, EarlierOutputLeftByAnInterruptedCommitIsReportedNotRemoved) {
  const std::string dir = fresh_dir("previous");
  const pid_t dead = dead_pid();
  ASSERT_GT(dead, 0);
  const std::string out = dir + "/out";
  const std::string previous = out + ".previous-" + std::to_string(dead) + "-2";
  make_dirs(previous);
  write_plain(previous + "/config.json", "{}");
  const std::string log = stderr_of([&] { AtomicDir o(out); });
  EXPECT_NE(log.find("an interrupted run left an earlier output at " + previous), std::string::npos) << log;
  EXPECT_EQ(read_file(previous + "/config.json"), "{}");
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"out.previous-" + std::to_string(dead) + "-2"});
}

TEST(FsCommit, LeftoversNextToARelativeOutputAreRemoved) {
  const std::string dir = fresh_dir("relative");
  const pid_t dead = dead_pid();
  ASSERT_GT(dead, 0);
  const std::string stale = "out.tmp-" + std::to_string(dead) + "-1";
  make_dirs(dir + "/" + stale);
  char cwd[PATH_MAX];
  ASSERT_NE(::getcwd(cwd, sizeof cwd), nullptr);
  ASSERT_EQ(::chdir(dir.c_str()), 0);
  const std::string log = stderr_of([&] {
    AtomicDir o("out");
    o.commit();
  });
  ASSERT_EQ(::chdir(cwd), 0);
  EXPECT_EQ(log, "removed the leftover of an interrupted run: " + stale + "\n");
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"out"});
}
