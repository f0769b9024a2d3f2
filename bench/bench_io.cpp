// Checkpoint loading: open a 1 GiB safetensors checkpoint and materialise every tensor as bf16,
// against a plain sequential read() of the same file in the same run (warm page cache).
// Counters: GB/s of checkpoint bytes, and RSS growth / checkpoint size while all tensors live.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <vector>

#include "io/checkpoint.h"
#include "util/fs.h"

namespace {

const int64_t kRows = 4096, kCols = 1024;  // 64 tensors of 16 MiB (fp32) = 1 GiB

std::string fixture(at::ScalarType dtype) {
  std::string dir = "/tmp/moeforge-bench-io-" + std::string(c10::toString(dtype));
  if (mf::path_exists(dir + "/model.safetensors")) return dir;
  int n = dtype == at::kFloat ? 64 : 128;  // 1 GiB either way
  std::vector<std::pair<std::string, at::Tensor>> ts;
  for (int i = 0; i < n; ++i) ts.push_back({"layer." + std::to_string(i), torch::randn({kRows, kCols}).to(dtype)});
  mf::save_checkpoint(dir, mf::json{{"model_type", "bench"}}, ts);
  return dir;
}

double rss_bytes() {
  long pages = 0, resident = 0;
  std::ifstream("/proc/self/statm") >> pages >> resident;
  return static_cast<double>(resident) * sysconf(_SC_PAGESIZE);
}

void warm(const std::string& path) {
  std::vector<char> buf(1 << 22);
  int fd = ::open(path.c_str(), O_RDONLY);
  while (::read(fd, buf.data(), buf.size()) > 0) {
  }
  ::close(fd);
}

void BM_SequentialRead(benchmark::State& state) {
  std::string path = fixture(at::kFloat) + "/model.safetensors";
  warm(path);
  uint64_t size = mf::file_size(path);
  std::vector<char> buf(size);
  for (auto _ : state) {
    int fd = ::open(path.c_str(), O_RDONLY);
    uint64_t done = 0;
    ssize_t n;
    while (done < size && (n = ::read(fd, buf.data() + done, size - done)) > 0) done += n;
    ::close(fd);
    benchmark::DoNotOptimize(buf.data());
  }
  state.counters["GB/s"] = benchmark::Counter(size * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_SequentialRead)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);

void BM_LoadAsBf16(benchmark::State& state, at::ScalarType stored) {
  std::string dir = fixture(stored);
  warm(dir + "/model.safetensors");
  uint64_t size = mf::file_size(dir + "/model.safetensors");
  double rss_ratio = 0;
  for (auto _ : state) {
    double before = rss_bytes();
    auto ck = mf::Checkpoint::open(dir);
    std::vector<at::Tensor> held;
    for (const auto& name : ck.names()) {
      // bf16 on disk: a zero-copy view whose pages get() maps in; fp32: a converted copy.
      held.push_back(ck.get(name, at::kBFloat16));
    }
    rss_ratio = std::max(rss_ratio, (rss_bytes() - before) / size);
  }
  state.counters["GB/s"] = benchmark::Counter(size * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["rss/size"] = rss_ratio;
}
BENCHMARK_CAPTURE(BM_LoadAsBf16, stored_fp32, at::kFloat)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);
BENCHMARK_CAPTURE(BM_LoadAsBf16, stored_bf16, at::kBFloat16)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(5);

}  // namespace
