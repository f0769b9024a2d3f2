// One error type for everything the user can get wrong. main() prints `error: <message>`
// on one line and exits 1 (2 for usage errors); nothing else ever reaches the terminal.
#pragma once
#include <stdexcept>
#include <string>

namespace mf {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Bad command-line usage: exit code 2.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message) {}
};

[[noreturn]] void fail(const std::string& message);
// "<path>: <what>" — the form every input error takes.
[[noreturn]] void fail_file(const std::string& path, const std::string& what);

// Collapses a message to one line (newlines and tabs become spaces, runs squeezed).
std::string one_line(const std::string& message);

}  // namespace mf
