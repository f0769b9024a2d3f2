// Every subcommand lives in its own file src/cli/cmd_<name>.cpp and registers itself here.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace mf::cli {

// Number checks for command-line options with a one-line message ("--limit: -5 must be >= 0");
// CLI11's own NonNegativeNumber prints the whole range up to DBL_MAX.
inline CLI::Validator at_least(double lo, const char* what) {
  return CLI::Validator(
      [lo, what](std::string& s) -> std::string {
        double v = 0;
        try {
          size_t used = 0;
          v = std::stod(s, &used);
          if (used != s.size()) return s + " is not a number";
        } catch (const std::exception&) {
          return s + " is not a number";
        }
        return v >= lo ? std::string() : s + " must be " + what;
      },
      what);
}
inline CLI::Validator non_negative() { return at_least(0.0, ">= 0"); }
inline CLI::Validator positive() { return at_least(1e-300, "> 0"); }

// Global options every command sees (parsed before the command runs).
struct GlobalOptions {
  int threads = 0;  // 0 = all cores
  std::string log_level = "info";
  bool quiet = false;
};

// Each add_* creates its subcommand on `app` and sets its callback. The callback throws
// mf::Error for user mistakes; main() turns that into `error: ...` and exit 1.

void add_info_command(CLI::App& app, const GlobalOptions& globals);
void add_init_command(CLI::App& app, const GlobalOptions& globals);
void add_tokenize_command(CLI::App& app, const GlobalOptions& globals);
void add_tokenizer_command(CLI::App& app, const GlobalOptions& globals);
void add_generate_command(CLI::App& app, const GlobalOptions& globals);
void add_perplexity_command(CLI::App& app, const GlobalOptions& globals);
void add_eval_command(CLI::App& app, const GlobalOptions& globals);
void add_train_command(CLI::App& app, const GlobalOptions& globals);
void add_convert_command(CLI::App& app, const GlobalOptions& globals);
void add_quickstart_command(CLI::App& app, const GlobalOptions& globals);
void add_profile_command(CLI::App& app, const GlobalOptions& globals);
void add_split_command(CLI::App& app, const GlobalOptions& globals);
void add_upcycle_command(CLI::App& app, const GlobalOptions& globals);
void add_experts_command(CLI::App& app, const GlobalOptions& globals);
void add_merge_command(CLI::App& app, const GlobalOptions& globals);
void add_launch_command(CLI::App& app, const GlobalOptions& globals);

inline void add_all_commands(CLI::App& app, const GlobalOptions& globals) {
  add_info_command(app, globals);
  add_init_command(app, globals);
  add_tokenize_command(app, globals);
  add_tokenizer_command(app, globals);
  add_generate_command(app, globals);
  add_perplexity_command(app, globals);
  add_eval_command(app, globals);
  add_train_command(app, globals);
  add_convert_command(app, globals);
  add_quickstart_command(app, globals);
  add_profile_command(app, globals);
  add_split_command(app, globals);
  add_upcycle_command(app, globals);
  add_experts_command(app, globals);
  add_launch_command(app, globals);
  add_merge_command(app, globals);
}

}  // namespace mf::cli
