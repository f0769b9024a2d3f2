// moeforge_fuzz: runs a fuzz target without libFuzzer, for CI on the regular build: every file of
// the given corpus, then seeded random mutations of them for a time budget. A crash, an exception
// other than mf::Error, or an input running past 10 s is a failure: the input is written to
// ./fuzz-failure-<target> and the exit code is 1.
//
//   moeforge_fuzz TARGET [--seconds S] [--seed N] CORPUS_DIR_OR_FILE...
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "fuzz_target.h"

namespace mf::fuzz {

namespace {

std::map<std::string, TargetFn>& targets() {
  static std::map<std::string, TargetFn> t;
  return t;
}

// The input being run, for the signal handlers (async-signal-safe writes only).
const std::vector<uint8_t>* g_current = nullptr;
char g_failure_path[256];

void save_current_and_exit(const char* why) {
  if (g_current) {
    int fd = open(g_failure_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      if (write(fd, g_current->data(), g_current->size()) < 0) {
      }
      close(fd);
    }
  }
  if (write(2, why, strlen(why)) < 0) {
  }
  _exit(1);
}

void on_signal(int sig) {
  save_current_and_exit(sig == SIGALRM ? "moeforge_fuzz: an input ran past 10 s (saved)\n"
                                       : "moeforge_fuzz: crash (saved)\n");
}

void collect(const std::string& path, std::vector<std::vector<uint8_t>>& out) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    DIR* d = opendir(path.c_str());
    if (!d) return;
    std::vector<std::string> names;
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    closedir(d);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) collect(path + "/" + n, out);
  } else if (S_ISREG(st.st_mode)) {
    std::ifstream f(path, std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
}

// Byte strings parsers trip on: deep nesting, overflowing numbers, quotes, invalid UTF-8.
const std::vector<std::string>& dictionary() {
  static const std::vector<std::string> d = {
      "[[[[[[[[", "{\"a\":{\"a\":", "1e400", "-1", "0", "99999999999999999999", "18446744073709551616",
      "nan", "\"", "\\u0000", "\xff\xfe", "\xc3", "{}", "[]", "null", "true", ":", ",", "\n", "---\n", "{{", "}}",
      "- ", "&a *a", "!!binary"};
  return d;
}

std::vector<uint8_t> mutate(const std::vector<std::vector<uint8_t>>& corpus, std::mt19937_64& rng) {
  std::vector<uint8_t> x = corpus.empty() ? std::vector<uint8_t>{} : corpus[rng() % corpus.size()];
  const int steps = 1 + static_cast<int>(rng() % 4);
  for (int s = 0; s < steps; ++s) {
    const size_t n = x.size();
    switch (rng() % 6) {
      case 0:  // flip a bit
        if (n) x[rng() % n] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:  // random byte
        if (n) x[rng() % n] = static_cast<uint8_t>(rng());
        break;
      case 2: {  // delete a range
        if (!n) break;
        size_t b = rng() % n, len = 1 + rng() % std::min<size_t>(n - b, 64);
        x.erase(x.begin() + b, x.begin() + b + len);
        break;
      }
      case 3: {  // duplicate a range
        if (!n) break;
        size_t b = rng() % n, len = 1 + rng() % std::min<size_t>(n - b, 64);
        std::vector<uint8_t> piece(x.begin() + b, x.begin() + b + len);
        x.insert(x.begin() + rng() % (n + 1), piece.begin(), piece.end());
        break;
      }
      case 4: {  // dictionary token
        const std::string& t = dictionary()[rng() % dictionary().size()];
        x.insert(x.begin() + (n ? rng() % (n + 1) : 0), t.begin(), t.end());
        break;
      }
      default: {  // splice with another corpus entry
        if (corpus.empty()) break;
        const auto& other = corpus[rng() % corpus.size()];
        size_t cut = n ? rng() % n : 0, from = other.empty() ? 0 : rng() % other.size();
        x.resize(cut);
        x.insert(x.end(), other.begin() + from, other.end());
      }
    }
  }
  return x;
}

int run_one(TargetFn fn, const std::vector<uint8_t>& input) {
  g_current = &input;
  alarm(10);
  try {
    fn(input.data(), input.size());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moeforge_fuzz: exception other than mf::Error: %s\n", e.what());
    save_current_and_exit("moeforge_fuzz: input saved\n");
  }
  alarm(0);
  return 0;
}

}  // namespace

bool register_target(const char* name, TargetFn fn) {
  targets()[name] = fn;
  return true;
}

}  // namespace mf::fuzz

int main(int argc, char** argv) {
  using namespace mf::fuzz;
  std::string usage = "usage: moeforge_fuzz TARGET [--seconds S] [--seed N] CORPUS...\ntargets:";
  for (const auto& [name, fn] : targets()) usage += " " + name;
  if (argc < 2 || !targets().count(argv[1])) {
    std::fprintf(stderr, "%s\n", usage.c_str());
    return 2;
  }
  const std::string name = argv[1];
  double seconds = 0;
  uint64_t seed = 1;
  std::vector<std::vector<uint8_t>> corpus;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seconds" && i + 1 < argc) seconds = std::stod(argv[++i]);
    else if (a == "--seed" && i + 1 < argc) seed = std::stoull(argv[++i]);
    else collect(a, corpus);
  }
  std::snprintf(g_failure_path, sizeof g_failure_path, "fuzz-failure-%s", name.c_str());
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGALRM}) signal(sig, on_signal);

  TargetFn fn = targets().at(name);
  for (const auto& input : corpus) run_one(fn, input);
  std::mt19937_64 rng(seed);
  int64_t runs = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    run_one(fn, mutate(corpus, rng));
    ++runs;
  }
  std::printf("%s: %zu corpus files, %lld mutated inputs (seed %llu): no failure\n", name.c_str(), corpus.size(),
              static_cast<long long>(runs), static_cast<unsigned long long>(seed));
  return 0;
}
