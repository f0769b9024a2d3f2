// One fuzz target per parser (fuzz/fuzz_<name>.cpp). Each defines
//   MOEFORGE_FUZZ_TARGET(name) { ...use data, size...; }
// which becomes, with -DMOEFORGE_LIBFUZZER (the clang build of scripts/fuzz.sh), libFuzzer's
// LLVMFuzzerTestOneInput, and otherwise an entry of the replay driver `moeforge_fuzz`
// (fuzz/replay_main.cpp) that CI runs over the committed corpus and seeded mutations.
// The contract of every target: the parser either succeeds or throws mf::Error; anything else
// (crash, other exception, sanitizer report, hang) is a finding.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace mf::fuzz {

using TargetFn = void (*)(const uint8_t* data, size_t size);
// Registers a target of the replay driver; returns true (used in a static initialiser).
bool register_target(const char* name, TargetFn fn);

// Writes the input to a file named `name` in a per-process temporary directory (tmpfs where
// available) and returns its path: the parsers are tested through their real file entry points.
std::string write_input(const uint8_t* data, size_t size, const std::string& name);

}  // namespace mf::fuzz

#ifdef MOEFORGE_LIBFUZZER
#define MOEFORGE_FUZZ_TARGET(name)                                             \
  static void fuzz_##name(const uint8_t* data, size_t size);                  \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {    \
    fuzz_##name(data, size);                                                   \
    return 0;                                                                  \
  }                                                                            \
  static void fuzz_##name(const uint8_t* data, size_t size)
#else
#define MOEFORGE_FUZZ_TARGET(name)                                                                   \
  static void fuzz_##name(const uint8_t* data, size_t size);                                        \
  [[maybe_unused]] static const bool registered_##name = mf::fuzz::register_target(#name, fuzz_##name); \
  static void fuzz_##name(const uint8_t* data, size_t size)
#endif
