#include "util/threads.h"

#include <ATen/Parallel.h>

#include <thread>

namespace mf {

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int setup_threads(int n) {
  if (n <= 0) n = hardware_threads();
  at::set_num_threads(n);
  return at::get_num_threads();
}

}  // namespace mf
