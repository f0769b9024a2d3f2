// moeforge launch --nproc N [--master-addr A] [--master-port P] -- COMMAND [ARGS...]
//
// torchrun for machines without Python: starts N copies of COMMAND on this machine, each with
// torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT;
// GROUP_RANK=0 and ROLE_RANK too), and waits for them. COMMAND is run as given (execvp): a bare
// name is looked up on PATH, so `moeforge launch --nproc 2 -- moeforge train ...` needs moeforge
// on PATH, or write its path (`-- ./build/moeforge train ...`). The ranks share the terminal
// (stdin, stdout, stderr are inherited). As soon as one rank fails (non-zero exit or a signal)
// the others get SIGTERM, then SIGKILL 10 s later, and launch exits with the failed rank's code
// (128 + signal number for a signal) after printing `error: launch: rank R exited with code C`.
// SIGINT/SIGTERM/SIGHUP to launch are passed on to the ranks the same way. OMP_NUM_THREADS is
// set to each rank's share of the cores unless already set (torchrun sets 1); moeforge's default
// thread count follows it (`--threads K` in COMMAND overrides).
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "dist/dist.h"
#include "util/error.h"
#include "util/log.h"
#include "util/str.h"
#include "util/threads.h"

extern char** environ;

namespace mf::cli {

namespace {

// The last signal launch received, and how many it has received.
volatile std::sig_atomic_t g_signal = 0;
volatile std::sig_atomic_t g_signal_count = 0;

void on_launch_signal(int sig) {
  g_signal = sig;
  g_signal_count = g_signal_count + 1;
}

// torchrun's variables; copies of them in launch's own environment are replaced.
const char* const kRankVars[] = {"RANK",        "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                                 "MASTER_PORT", "GROUP_RANK", "ROLE_RANK",  "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE"};

bool is_rank_var(const char* entry) {
  for (const char* name : kRankVars) {
    const size_t n = std::strlen(name);
    if (std::strncmp(entry, name, n) == 0 && entry[n] == '=') return true;
  }
  return false;
}

// One rank's environment: launch's own, minus stale torchrun variables, plus this rank's.
std::vector<std::string> rank_environment(int64_t rank, int64_t nproc, const std::string& addr, int port) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    if (!is_rank_var(*e)) env.emplace_back(*e);
  const std::string n = std::to_string(nproc), r = std::to_string(rank);
  env.push_back("RANK=" + r);
  env.push_back("LOCAL_RANK=" + r);
  env.push_back("WORLD_SIZE=" + n);
  env.push_back("LOCAL_WORLD_SIZE=" + n);
  env.push_back("GROUP_RANK=0");
  env.push_back("GROUP_WORLD_SIZE=1");
  env.push_back("ROLE_RANK=" + r);
  env.push_back("ROLE_WORLD_SIZE=" + n);
  env.push_back("MASTER_ADDR=" + addr);
  env.push_back("MASTER_PORT=" + std::to_string(port));
  // As torchrun, keep N ranks from each starting an OpenMP pool of every core; a share each
  // (torchrun: 1) unless the user set it. moeforge's own thread count is --threads.
  if (nproc > 1 && std::getenv("OMP_NUM_THREADS") == nullptr)
    env.push_back("OMP_NUM_THREADS=" + std::to_string(std::max<int64_t>(1, hardware_threads() / nproc)));
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// "code C" of a wait status: the exit code, or 128 + the signal number.
int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

struct Ranks {
  std::vector<pid_t> pids;  // 0 once reaped
  int running = 0;

  // Reaps every rank that has ended; calls `ended(rank, status)` for each.
  template <class F>
  void reap(F&& ended) {
    for (;;) {
      int status = 0;
      const pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return;  // none ended (0), or no children left / EINTR (-1)
      for (size_t r = 0; r < pids.size(); ++r) {
        if (pids[r] != pid) continue;
        pids[r] = 0;
        --running;
        ended(static_cast<int64_t>(r), status);
        break;
      }
    }
  }

  void signal_all(int sig) const {
    for (pid_t pid : pids)
      if (pid > 0) ::kill(pid, sig);
  }

  // SIGTERM to every running rank, SIGKILL to those still running after `grace` (at once if
  // launch itself gets a signal meanwhile); returns once all are reaped.
  void stop(std::chrono::milliseconds grace) {
    if (running == 0) return;
    const std::sig_atomic_t signals_before = g_signal_count;
    signal_all(SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    while (running > 0 && std::chrono::steady_clock::now() < deadline && g_signal_count == signals_before) {
      reap([](int64_t, int) {});
      if (running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (running > 0) signal_all(SIGKILL);
    while (running > 0) {
      int status = 0;
      const pid_t pid = ::waitpid(-1, &status, 0);
      if (pid < 0) {
        if (errno == EINTR) continue;
        break;  // ECHILD: nothing left to wait for
      }
      for (auto& p : pids)
        if (p == pid) {
          p = 0;
          --running;
        }
    }
  }
};

// 0..65535 (0: pick a free port).
CLI::Validator port_number() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        int64_t v = -1;
        const char* end = s.data() + s.size();
        auto [p, ec] = std::from_chars(s.data(), end, v);
        return ec == std::errc() && p == end && v >= 0 && v <= 65535 ? std::string()
                                                                      : s + " is not a port number (0-65535)";
      },
      "0-65535");
}

// Whether execvp would find `name` (a path, or a bare name looked up on PATH), so that a typo is
// one error line instead of one per rank.
bool runnable(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0;
  const char* path = std::getenv("PATH");
  for (const auto& dir : split(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin", ':')) {
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return true;
  }
  return false;
}

[[noreturn]] void exit_with(int code, const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: launch: %s\n", message.c_str());
  std::fflush(stderr);
  std::exit(code);
}

void run_launch(int64_t nproc, const std::string& addr, int port_option, std::vector<std::string> command) {
  if (!runnable(command.front()))
    throw Error(cat("launch: cannot run '", command.front(), "': ",
                    command.front().find('/') == std::string::npos ? "not found on PATH" : "not an executable file"));
  const int port = port_option == 0 ? dist::free_port() : port_option;
  log_info("launch: ", nproc, nproc == 1 ? " rank" : " ranks", ", MASTER_ADDR=", addr, " MASTER_PORT=", port, ": ",
           join(command, " "));

  // Everything the children need is built before the first fork: between fork and exec a child
  // only calls async-signal-safe functions.
  std::vector<std::vector<std::string>> envs;
  std::vector<std::vector<char*>> envps;
  envs.reserve(static_cast<size_t>(nproc));
  for (int64_t r = 0; r < nproc; ++r) envs.push_back(rank_environment(r, nproc, addr, port));
  for (auto& e : envs) envps.push_back(pointers(e));
  std::vector<char*> argv = pointers(command);
  const std::string exec_failed = "error: launch: cannot run '" + command.front() + "': ";

  struct sigaction action {};
  action.sa_handler = on_launch_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &action, nullptr);

  std::fflush(nullptr);  // nothing buffered may be written twice
  const pid_t launcher = ::getpid();
  Ranks ranks;
  ranks.pids.assign(static_cast<size_t>(nproc), 0);
  for (int64_t r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int err = errno;
      ranks.stop(std::chrono::seconds(10));
      exit_with(1, cat("cannot start rank ", r, ": ", std::strerror(err)));
    }
    if (pid == 0) {
      // The child: default dispositions for the signals launch catches (exec would reset them
      // anyway), and SIGKILL when launch dies, so that no rank outlives it.
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::signal(SIGHUP, SIG_DFL);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != launcher) ::_exit(1);
      ::execvpe(argv[0], argv.data(), envps[static_cast<size_t>(r)].data());
      const int err = errno;
      const char* why = std::strerror(err);
      ssize_t ignored = ::write(2, exec_failed.data(), exec_failed.size());
      ignored = ::write(2, why, std::strlen(why));
      ignored = ::write(2, "\n", 1);
      (void)ignored;
      ::_exit(err == ENOENT ? 127 : 126);
    }
    ranks.pids[static_cast<size_t>(r)] = pid;
    ++ranks.running;
  }

  int64_t failed_rank = -1;
  int failed_code = 0, failed_status = 0;
  while (ranks.running > 0 && failed_rank < 0 && g_signal == 0) {
    ranks.reap([&](int64_t r, int status) {
      const int code = exit_code_of(status);
      if (code != 0 && failed_rank < 0) {
        failed_rank = r;
        failed_code = code;
        failed_status = status;
      }
    });
    if (ranks.running > 0 && failed_rank < 0 && g_signal == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }

  if (failed_rank >= 0) {
    ranks.stop(std::chrono::seconds(10));
    std::string message = cat("rank ", failed_rank, " exited with code ", failed_code);
    if (WIFSIGNALED(failed_status))
      message += cat(" (signal ", WTERMSIG(failed_status), ", ", ::strsignal(WTERMSIG(failed_status)), ")");
    exit_with(failed_code, message);
  }
  if (g_signal != 0) {
    const int sig = g_signal;
    ranks.stop(std::chrono::seconds(10));
    exit_with(128 + sig, cat("stopped by signal ", sig, " (", ::strsignal(sig), "); the ranks were terminated"));
  }
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, SIG_DFL);
}

}  // namespace

void add_launch_command(CLI::App& app, const GlobalOptions& globals) {
  struct Opts {
    int64_t nproc = 1;
    std::string master_addr = "127.0.0.1";
    int master_port = 29500;
    std::vector<std::string> command;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "launch",
      "Run N ranks of a command on this machine with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...): "
      "moeforge launch --nproc 2 -- moeforge train ...");
  cmd->add_option("--nproc,--nproc-per-node", opts->nproc, "number of ranks (processes) to start")
      ->required()
      ->check(at_least(1.0, ">= 1"));
  cmd->add_option("--master-addr", opts->master_addr, "address of rank 0's rendezvous store (MASTER_ADDR)");
  cmd->add_option("--master-port", opts->master_port, "its port (MASTER_PORT); 0 = a free port")
      ->check(port_number());
  cmd->add_option("command", opts->command,
                  "after '--': the command each rank runs and its arguments (execvp: a bare name is looked up on PATH)");
  cmd->footer(
      "The command goes after '--' so that its options are not read as launch's. Ranks inherit the terminal; when one "
      "fails, the others are stopped (SIGTERM, SIGKILL after 10 s) and launch exits with its code.");
  cmd->callback([opts]() {
    if (opts->command.empty())
      throw UsageError("launch: give the command to run after '--', e.g. moeforge launch --nproc 2 -- moeforge train ...");
    if (opts->nproc > 4096) throw UsageError(cat("launch: --nproc ", opts->nproc, " is more than 4096 ranks"));
    if (opts->master_addr.empty()) throw UsageError("launch: --master-addr is empty");
    run_launch(opts->nproc, opts->master_addr, opts->master_port, opts->command);
  });
  (void)globals;
}

}  // namespace mf::cli
