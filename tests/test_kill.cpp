// Kill tests (issue 22): `convert`, `split` and `train` are SIGKILLed at seeded random moments of
// their run. After every kill the output is either absent or complete (byte-identical to an
// uninterrupted run's), the next run of the same command cleans the killed runs' temporaries, and
// a training run resumed after any number of kills ends bit-identical to an uninterrupted one.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"

using namespace mf;

namespace {

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/mf_kill/" + name;
  remove_all(d);
  make_dirs(d);
  return d;
}

// Starts `moeforge -q ARGS` (arguments separated by single spaces) with its output discarded.
pid_t spawn(const std::string& args) {
  std::vector<std::string> words = {MOEFORGE_BIN, "-q"};
  for (const auto& w : split(args, ' '))
    if (!w.empty()) words.push_back(w);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::vector<char*> argv;
    for (auto& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

// Runs to the end: the exit code and the wall time in milliseconds.
std::pair<int, double> run_to_end(const std::string& args) {
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = spawn(args);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ms};
}

// Runs and SIGKILLs it after `delay_ms`; true when the kill landed before the process ended.
bool run_killed(const std::string& args, double delay_ms) {
  const pid_t pid = spawn(args);
  std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(delay_ms * 1000)));
  const bool killed = ::kill(pid, SIGKILL) == 0;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

// Runs and SIGKILLs once `ready()` holds (polled every 2 ms), `delay_ms` later; true when the kill
// landed, false when the process ended first.
bool run_killed_when(const std::string& args, const std::function<bool()>& ready, double delay_ms) {
  const pid_t pid = spawn(args);
  int status = 0;
  while (!ready()) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(delay_ms * 1000)));
  const bool killed = ::kill(pid, SIGKILL) == 0;
  ::waitpid(pid, &status, 0);
  return killed && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

// Every file under `dir` (relative name -> bytes).
std::map<std::string, std::string> snapshot(const std::string& dir, const std::string& rel = "") {
  std::map<std::string, std::string> out;
  for (const auto& name : list_dir(path_join(dir, rel))) {
    const std::string r = rel.empty() ? name : rel + "/" + name;
    if (is_directory(path_join(dir, r))) {
      for (auto& kv : snapshot(dir, r)) out.insert(std::move(kv));
    } else {
      out[r] = read_file(path_join(dir, r));
    }
  }
  return out;
}

// "" when equal, else the names that differ (never the bytes: gtest would diff megabytes).
std::string differences(const std::map<std::string, std::string>& a, const std::map<std::string, std::string>& b) {
  std::string out;
  for (const auto& [name, bytes] : a) {
    auto it = b.find(name);
    if (it == b.end()) out += " missing:" + name;
    else if (it->second != bytes) out += " differs:" + name;
  }
  for (const auto& kv : b)
    if (!a.count(kv.first)) out += " extra:" + kv.first;
  return out;
}

bool has_temporaries(const std::string& dir) {
  for (const auto& name : list_dir(dir))
    if (name.find(".tmp-") != std::string::npos) return true;
  return false;
}

// The kill protocol for a command writing the directory `out` in `dir`: a reference run, then
// kills at seeded random moments over the reference's duration (each followed by the check that
// `out` is absent or identical to the reference, then its removal), then one more full run that
// must clean up every leftover.
void kill_and_check(const std::string& dir, const std::string& out, const std::string& args, int kills,
                    uint64_t seed) {
  auto [code, ms] = run_to_end(args);
  ASSERT_EQ(code, 0) << args;
  const auto reference = snapshot(out);
  ASSERT_FALSE(reference.empty());
  remove_all(out);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> when(0.0, ms);
  int landed = 0;
  for (int i = 0; i < kills; ++i) {
    const double delay = when(rng);
    landed += run_killed(args, delay);
    if (path_exists(out)) {
      EXPECT_EQ(differences(reference, snapshot(out)), "") << "incomplete output after a kill at " << delay << " ms";
      remove_all(out);
    }
  }
  EXPECT_GT(landed, kills / 2) << "most kills should land before the end of the run";
  ASSERT_EQ(run_to_end(args).first, 0);
  EXPECT_EQ(differences(reference, snapshot(out)), "");
  EXPECT_FALSE(has_temporaries(dir)) << "leftovers of the killed runs were not removed";
}

}  // namespace

TEST(Kill, ConvertOutputIsCompleteOrAbsent) {
  const std::string dir = fresh_dir("convert");
  const std::string out = dir + "/out";
  kill_and_check(dir, out,
                 "convert " + std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny --dtype f32 --shard-size 4MB --out " + out,
                 8, 1);
}

TEST(Kill, SplitOutputIsCompleteOrAbsent) {
  const std::string dir = fresh_dir("split");
  const std::string out = dir + "/out";
  kill_and_check(dir, out,
                 "split " + std::string(MOEFORGE_SOURCE_DIR) +
                     "/models/tiny --method moefication --experts 4 --top-k 2 --out " + out,
                 8, 2);
}

TEST(Kill, TrainingKilledAnyNumberOfTimesResumesToTheSameModel) {
  const std::string dir = fresh_dir("train");
  auto config = [&](const std::string& run) {
    json c = {{"training",
               {{"seq_len", 32}, {"batch_size", 4}, {"max_steps", 12}, {"lr", 1e-3}, {"warmup_steps", 2},
                {"bf16", false}, {"save_every", 2}, {"keep_checkpoints", 2}, {"eval_every", 6}, {"eval_batches", 1},
                {"seed", 3}, {"init", std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny"},
                {"train_data", std::string(MOEFORGE_TEST_DATA) + "/train/tiny_train.jsonl"},
                {"validation_data", std::string(MOEFORGE_TEST_DATA) + "/train/tiny_validation.jsonl"},
                {"output_dir", dir + "/" + run}}}};
    write_json_file(dir + "/" + run + ".json", c);
    return "train --recipe pretrain --config " + dir + "/" + run + ".json";
  };
  auto [code, ms] = run_to_end(config("full"));
  ASSERT_EQ(code, 0);
  // train_record.json names the config file and the measured speed; everything else must match.
  auto comparable = [](std::map<std::string, std::string> files) {
    json record = json::parse(files.at("train_record.json"));
    record.erase("config");
    record.erase("tokens_per_s");
    files["train_record.json"] = record.dump(1);
    return files;
  };
  const auto reference = comparable(snapshot(dir + "/full/final"));

  // The same run, killed and restarted until it finishes: each kill lands a random few
  // milliseconds after a randomly chosen step of the remaining ones was logged, so it hits training
  // steps, checkpoint writes and the final directory alike, however slow the machine (sanitizers).
  const std::string args = config("killed");
  const std::string metrics = dir + "/killed/metrics.jsonl";
  auto logged_steps = [&] {
    if (!path_exists(metrics)) return int64_t{0};
    const std::string text = read_file(metrics);
    return static_cast<int64_t>(std::count(text.begin(), text.end(), '\n'));
  };
  std::mt19937_64 rng(7);
  int kills = 0;
  for (int attempt = 0; attempt < 12 && kills < 5; ++attempt) {
    const int64_t done = logged_steps();
    if (done >= 12) break;
    const int64_t target = done + 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(12 - done));
    const double delay = std::uniform_real_distribution<double>(0.0, 40.0)(rng);
    kills += run_killed_when(args, [&] { return logged_steps() >= target; }, delay);
    if (path_exists(dir + "/killed/final"))
      EXPECT_EQ(differences(reference, comparable(snapshot(dir + "/killed/final"))), "");
  }
  EXPECT_GE(kills, 3);
  ASSERT_EQ(run_to_end(args).first, 0);
  const auto resumed = comparable(snapshot(dir + "/killed/final"));
  EXPECT_EQ(differences(reference, resumed), "") << "the resumed run differs from the uninterrupted one";
  EXPECT_EQ(resumed.at("train_record.json"), reference.at("train_record.json"));
  // Every step logged once, in order.
  std::vector<int64_t> steps;
  for (const auto& line : split(read_file(dir + "/killed/metrics.jsonl"), '\n'))
    if (!line.empty()) steps.push_back(json::parse(line)["step"].get<int64_t>());
  std::vector<int64_t> expected(12);
  for (int i = 0; i < 12; ++i) expected[i] = i + 1;
  EXPECT_EQ(steps, expected);
}
