// Tokenizer throughput: Llama-3 tokenizer.json encode on English text, single thread and
// batch (all cores). English text = Debian's /usr/share/common-licenses (~260 KB, on every
// Debian system). Baseline in the same run: the PCRE2 pre-tokenizer split alone, so the ratio
// says what the BPE + byte map + cache costs on top of the regex.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "tokenizer/pretokenize.h"
#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "util/fs.h"

namespace {

const std::string& english_text() {
  static const std::string text = [] {
    std::string s;
    for (const char* name : {"GPL-3", "GPL-2", "LGPL-2.1", "GFDL-1.3", "Apache-2.0", "MPL-2.0", "Artistic", "CC0-1.0"}) {
      std::string p = std::string("/usr/share/common-licenses/") + name;
      if (mf::path_exists(p)) s += mf::read_file(p);
    }
    return s;
  }();
  return text;
}

const mf::Tokenizer& llama3() {
  static auto t = mf::Tokenizer::load(mf::parent_dir(mf::parent_dir(__FILE__)) + "/tests/data/tokenizers/llama3");
  return *t;
}

// Texts of ~2 KB (paragraph-sized documents), as a data loader would batch them.
std::vector<std::string> documents() {
  const std::string& t = english_text();
  std::vector<std::string> docs;
  for (size_t i = 0; i < t.size(); i += 2048) docs.push_back(t.substr(i, 2048));
  return docs;
}

}  // namespace

static void BM_TokenizerRegexSplitBaseline(benchmark::State& state) {
  const mf::Regex re(mf::kLlama3Pattern);
  const std::string& text = english_text();
  std::vector<std::pair<size_t, size_t>> m;
  for (auto _ : state) {
    re.find_all(text, m);
    benchmark::DoNotOptimize(m.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
}
BENCHMARK(BM_TokenizerRegexSplitBaseline)->Unit(benchmark::kMillisecond)->UseRealTime();

static void BM_TokenizerEncodeLlama3(benchmark::State& state) {
  const auto& tok = llama3();
  const std::string& text = english_text();
  size_t n = 0;
  for (auto _ : state) {
    auto ids = tok.encode(text);
    n = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(text.size()));
  state.counters["tokens"] = double(n);
}
BENCHMARK(BM_TokenizerEncodeLlama3)->Unit(benchmark::kMillisecond)->UseRealTime();

static void BM_TokenizerEncodeBatchLlama3(benchmark::State& state) {
  const auto& tok = llama3();
  const auto docs = documents();
  int64_t bytes = 0;
  for (const auto& d : docs) bytes += int64_t(d.size());
  for (auto _ : state) {
    auto ids = tok.encode_batch(docs, false);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * bytes);
}
BENCHMARK(BM_TokenizerEncodeBatchLlama3)->Unit(benchmark::kMillisecond)->UseRealTime();
