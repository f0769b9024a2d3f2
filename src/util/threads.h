// Intra-op thread setup. Debian's libtorch defaults to ONE thread, so every entry point
// calls this explicitly (`--threads`, default: all cores).
#pragma once

namespace mf {

// n <= 0 means OMP_NUM_THREADS when set (torchrun sets it per rank), else all cores. Returns the
// number of threads in effect.
int setup_threads(int n);
int hardware_threads();

}  // namespace mf
