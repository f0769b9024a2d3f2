// Fixtures of the merge tests (test_merge*.cpp): a tiny upcycled Mixtral (identical or noisy
// experts), a calibration file, and merge options sized for them.
#pragma once
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "merge/merge.h"
#include "upcycle/upcycle.h"
#include "util/fs.h"
#include "util/json.h"
#include "spm_llama_fixture.h"

namespace mf::merge_fixtures {

inline std::string fresh(const std::string& name) {
  std::string d = ::testing::TempDir() + "/mf_merge_" + name;
  remove_all(d);
  return d;
}

// A 2-layer random Llama (hidden 16, FFN 24) upcycled to a 4-expert top-2 Mixtral: identical
// copies, or with noise on each expert's weights (and router rows) so that they differ.
inline const std::string& mixtral(bool noisy) {
  static std::string dirs[2];
  std::string& d = dirs[noisy ? 1 : 0];
  if (d.empty()) {
    const std::string base = fresh("base");
    testing_fixtures::save_tiny_spm_llama(base);
    UpcycleConfig c;
    c.origin = "test";
    c.base_model = base;
    c.family = "mixtral";
    c.top_k = 2;
    c.dtype = "fp32";
    UpcycleExpert e;
    e.source_model = base;
    e.noise_scale = noisy ? 0.05 : 0.0;
    c.experts.assign(4, e);
    d = fresh(noisy ? "noisy" : "copies");
    run_upcycle(c, d);
  }
  return d;
}

inline const std::string& calib_file() {
  static const std::string path = [] {
    std::string p = fresh("calib.jsonl");
    std::ofstream f(p);
    const char* texts[] = {"The quick brown fox jumps over the lazy dog near the river bank.",
                           "In the beginning God created the heaven and the earth.",
                           "A compiler translates source code into machine code for a processor.",
                           "Bread is made from flour, water, salt and yeast, then baked in an oven."};
    for (int rep = 0; rep < 6; ++rep)
      for (const char* t : texts) f << json{{"text", t}}.dump() << "\n";
    return p;
  }();
  return path;
}

inline MergeOptions options(const std::string& method, int64_t r) {
  MergeOptions o;
  o.method = method;
  o.experts = r;
  o.calib.file = calib_file();
  o.calib.seq_len = 16;
  o.calib.blocks = 8;
  return o;
}


}  // namespace mf::merge_fixtures
