// moeforge entry point: global options, subcommand dispatch, and the single place where
// errors become `error: <message>` with exit code 1 (usage errors: 2).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "util/compat.h"
#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/threads.h"

namespace {

int report(const std::string& message, int code) {
  std::fprintf(stderr, "error: %s\n", mf::one_line(message).c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  mf::cli::GlobalOptions globals;
  CLI::App app{"moeforge: turn dense language models into Mixture-of-Experts models; train, merge, run and evaluate them."};
  app.name("moeforge");
  app.set_version_flag("--version", std::string("moeforge ") + MOEFORGE_VERSION + " (libtorch " +
                                        mf::torch_version_string() + ")");
  app.option_defaults()->always_capture_default();
  // Bounded: an OpenMP pool of a million threads exhausts the machine before any error.
  app.add_option("--threads", globals.threads, "intra-op threads, 0..1024 (default: OMP_NUM_THREADS, else all cores)")
      ->check(mf::cli::non_negative() & CLI::Validator(
                  [](std::string& s) { return std::stod(s) <= 1024 ? std::string() : s + " must be <= 1024"; }, "<= 1024"));
  app.add_option("--log-level", globals.log_level, "debug, info, warn, error")
      ->check(CLI::IsMember({"debug", "info", "warn", "warning", "error", "quiet"}));
  app.add_flag("-q,--quiet", globals.quiet, "only errors; no progress bars");
  app.require_subcommand(1);
  app.fallthrough();
  app.parse_complete_callback([&]() {
    mf::set_log_level(globals.quiet ? mf::LogLevel::error : mf::parse_log_level(globals.log_level));
    if (globals.quiet) mf::Progress::set_enabled(false);
    mf::setup_threads(globals.threads);
  });
  mf::cli::add_all_commands(app, globals);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string message = e.what();
    // CLI11 reports an unknown command as a missing one; name it instead.
    if (app.get_subcommands().empty() && !app.remaining().empty() && app.remaining()[0][0] != '-')
      message = "unknown command '" + app.remaining()[0] + "'";
    report(message, 2);
    std::fprintf(stderr, "Run 'moeforge --help' for usage.\n");
    return 2;
  } catch (const mf::UsageError& e) {
    report(e.what(), 2);
    std::fprintf(stderr, "Run 'moeforge --help' for usage.\n");
    return 2;
  } catch (const mf::Error& e) {
    return report(e.what(), 1);
  } catch (const c10::Error& e) {
    // libtorch's own messages are multi-line with a C++ backtrace; keep the first line.
    return report(std::string("internal: ") + e.what_without_backtrace(), 1);
  } catch (const std::bad_alloc&) {
    return report("out of memory", 1);
  } catch (const std::exception& e) {
    return report(std::string("internal: ") + e.what(), 1);
  }
  return 0;
}
