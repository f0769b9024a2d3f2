// Same-run baselines for bandwidth-bound benchmarks. This VM's memory bandwidth drifts by ±30 %
// within minutes (other tenants), so a bandwidth-bound result is divided by a streaming read of
// the same number of bytes timed right after it, inside the same benchmark loop, not by a number
// taken at another moment.
#pragma once
#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

namespace mf::bench {

// Reads `bytes` (rounded down to 64) of a 1 GiB pool with all intra-op threads and returns the
// seconds taken. Successive calls walk the pool, so the bytes come from DRAM, not the caches.
inline double timed_stream_read(int64_t bytes) {
  static std::vector<uint64_t> pool(size_t(1) << 27, 1);  // 1 GiB, touched once here
  static int64_t pos = 0;
  const int64_t size = static_cast<int64_t>(pool.size());
  std::vector<uint64_t> sink(64, 0);
  double seconds = 0;
  for (int64_t left = bytes / 64 * 8; left > 0;) {  // in words, whole 64-byte lines
    const int64_t n = std::min(left, size);
    if (pos + n > size) pos = 0;
    const uint64_t* p = pool.data() + pos;
    pos += n;
    left -= n;
    const auto t0 = std::chrono::steady_clock::now();
    at::parallel_for(0, n / 8, 4096, [&](int64_t b, int64_t e) {
      uint64_t a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t i = b; i < e; ++i)
        for (int j = 0; j < 8; ++j) a[j] ^= p[i * 8 + j];
      sink[at::get_thread_num() % 64] ^= a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
    });
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  benchmark::DoNotOptimize(sink.data());  // the sums are "used": the loads stay
  benchmark::ClobberMemory();
  return seconds;
}

}  // namespace mf::bench
