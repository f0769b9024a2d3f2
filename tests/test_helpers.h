// Small helpers shared by the test files.
#pragma once
#include <functional>
#include <string>

#include "util/error.h"

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

}  // namespace mf::testing_helpers
