// Seeded random numbers: one seed drives both our own generator and libtorch's.
#pragma once
#include <cstdint>

namespace mf {

// splitmix64: derives independent streams from one seed (seed ^ stream id).
uint64_t splitmix64(uint64_t& state);

// xoshiro256** — small, fast, reproducible across platforms (std::mt19937 distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t seed = 0);
  uint64_t next_u64();
  // Uniform in [0, n).
  uint64_t below(uint64_t n);
  // Uniform in [0, 1).
  double uniform();
  double normal();

 private:
  uint64_t s_[4];
};

// Seeds libtorch's default CPU generator (and CUDA when present).
void seed_torch(uint64_t seed);

}  // namespace mf
