// Data-parallel `moeforge profile` and merge calibration through the real launchers (issue 19):
// Debian's torchrun (`--no_python --redirects 1 --tee 1`, docs/distributed.md) with 2 ranks and
// `moeforge launch` with 3, Gloo over loopback. Each rank runs every W-th batch (calibration
// block) exactly as one process runs it and the accumulated statistics are summed over the
// ranks, so everything written must equal a one-process run within 1e-6 relative (only the
// order of the sums changes): profile.json, every tensor of profile.safetensors, domains.jsonl;
// merge_report.json and the merged checkpoint tensor by tensor. Every process runs one thread:
// libtorch's CPU reductions depend on the thread count. Each rank's debug line shows that the
// work was shared out (no rank ran the whole pass), and only rank 0 prints.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "dist/dist.h"
#include "io/checkpoint.h"
#include "merge_fixtures.h"
#include "spm_llama_fixture.h"
#include "util/fs.h"
#include "util/json.h"

using namespace mf;

namespace {

constexpr double kRelTol = 1e-6;

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/mf_dist_profile/" + name;
  remove_all(d);
  make_dirs(d);
  return d;
}

bool have_torchrun() { return std::system("command -v torchrun > /dev/null 2>&1") == 0; }

// Command-line prefixes that run `moeforge` with one thread per process; the subcommand follows.
// The ranks log at debug level (their share of the pass), the single process quietly.
std::string one_process() { return std::string(MOEFORGE_BIN) + " -q --threads 1 "; }

std::string under_torchrun(int nproc) {
  return "OMP_NUM_THREADS=1 torchrun --no_python --redirects 1 --tee 1 --nproc_per_node " + std::to_string(nproc) +
         " --master_port " + std::to_string(dist::free_port()) + " " + MOEFORGE_BIN +
         " --log-level debug --threads 1 ";
}

std::string under_launch(int nproc) {
  return std::string("OMP_NUM_THREADS=1 ") + MOEFORGE_BIN + " launch --nproc " + std::to_string(nproc) +
         " --master-port 0 -- " + MOEFORGE_BIN + " --log-level debug --threads 1 ";
}

// Runs a shell command line; its exit code, stdout and stderr (together) into *log.
int run_shell(const std::string& cmd, std::string* log) {
  const std::string file = ::testing::TempDir() + "/mf_dist_profile_cmd.log";
  const int status = std::system((cmd + " > " + file + " 2>&1").c_str());
  *log = read_file(file);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

// Every rank logged "<pass>: rank R of W ran N of TOTAL ...": the shares add up to the whole
// pass and no rank ran all of it.
void expect_shared_out(const std::string& log, const std::string& pass, int world) {
  int64_t sum = 0, total = -1;
  for (int r = 0; r < world; ++r) {
    const std::string key = pass + ": rank " + std::to_string(r) + " of " + std::to_string(world) + " ran ";
    const size_t at = log.find(key);
    ASSERT_NE(at, std::string::npos) << "rank " << r << " logged no share of the " << pass << " pass\n" << log;
    long long n = -1, t = -1;
    ASSERT_EQ(std::sscanf(log.c_str() + at + key.size(), "%lld of %lld", &n, &t), 2) << log.substr(at, 80);
    EXPECT_LT(n, t) << "rank " << r << " ran the whole " << pass << " pass";
    if (total >= 0) EXPECT_EQ(t, total);
    total = t;
    sum += n;
  }
  EXPECT_EQ(sum, total) << pass;
}

// Largest |a − b| / max(|a|, |b|) over the elements (0 where both are 0), in float64.
double max_relative_difference(const at::Tensor& a, const at::Tensor& b) {
  if (a.numel() == 0) return 0;
  const at::Tensor x = a.to(at::kDouble), y = b.to(at::kDouble);
  const at::Tensor scale = at::maximum(x.abs(), y.abs());
  return at::where(scale > 0, (x - y).abs() / scale, at::zeros_like(scale)).max().item<double>();
}

// Two safetensors files or model directories: the same tensor names and shapes, every element
// within kRelTol relative.
void expect_close_tensors(const std::string& a, const std::string& b) {
  const Checkpoint ca = Checkpoint::open(a), cb = Checkpoint::open(b);
  ASSERT_EQ(ca.names(), cb.names()) << a << " vs " << b;
  ASSERT_FALSE(ca.names().empty()) << a;
  for (const auto& name : ca.names()) {
    const at::Tensor x = ca.get(name), y = cb.get(name);
    ASSERT_EQ(x.sizes(), y.sizes()) << name;
    EXPECT_LE(max_relative_difference(x, y), kRelTol) << name;
  }
}

// The same JSON structure; numbers within kRelTol relative, everything else equal.
void expect_close_json(const json& a, const json& b, const std::string& where) {
  if (a.is_number() && b.is_number()) {
    const double x = a.get<double>(), y = b.get<double>();
    EXPECT_LE(std::abs(x - y), kRelTol * std::max(std::abs(x), std::abs(y))) << where << ": " << x << " vs " << y;
  } else if (a.is_object() && b.is_object()) {
    std::vector<std::string> ka, kb;
    for (const auto& item : a.items()) ka.push_back(item.key());
    for (const auto& item : b.items()) kb.push_back(item.key());
    ASSERT_EQ(ka, kb) << where;
    for (const auto& item : a.items()) expect_close_json(item.value(), b.at(item.key()), where + "." + item.key());
  } else if (a.is_array() && b.is_array()) {
    ASSERT_EQ(a.size(), b.size()) << where;
    for (size_t i = 0; i < a.size(); ++i) expect_close_json(a[i], b[i], where + "[" + std::to_string(i) + "]");
  } else {
    EXPECT_EQ(a, b) << where;
  }
}

// ---------------------------------------------------------------------------------------------
// profile

// The 2-layer Llama of the profile tests (llama2-spm tokenizer).
const std::string& profile_model() {
  static const std::string dir = [] {
    const std::string d = fresh_dir("llama");
    testing_fixtures::save_tiny_spm_llama(d);
    return d;
  }();
  return dir;
}

// 18 documents of 1 to 3 sentences (so that --batch-tokens 96 makes about ten batches of 1 to 6
// documents) and two SFT lines, with a 'domain' field.
const std::string& profile_data() {
  static const std::string path = [] {
    const char* sentences[] = {
        "In the beginning God created the heaven and the earth.",
        "The quick brown fox jumps over the lazy dog.",
        "int main(void) { return 0; }",
        "And the earth was without form, and void; and darkness was upon the face of the deep.",
        "Pack my box with five dozen liquor jugs.",
        "#include <stdio.h> static int x = 3; int y = x * 2;"};
    std::string lines;
    for (int i = 0; i < 18; ++i) {
      std::string text = sentences[i % 6];
      for (int s = 1; s <= i % 3; ++s) text += std::string(" ") + sentences[(i + s) % 6];
      lines += json({{"text", text}, {"domain", i % 2 ? "prose" : "code"}}).dump() + "\n";
    }
    lines += json({{"prompt", "Question: what is 2+2?"}, {"response", " four"}, {"domain", "prose"}}).dump() + "\n";
    lines += json({{"prompt", "Write a C statement."}, {"response", " return 1;"}, {"domain", "code"}}).dump() + "\n";
    const std::string p = fresh_dir("data") + "/calib.jsonl";
    write_file_atomic(p, lines);
    return p;
  }();
  return path;
}

std::string profile_args(const std::string& out, const std::string& extra) {
  return "profile " + profile_model() + " --data " + profile_data() + " --out " + out +
         " --coactivation --batch-tokens 96" + extra;
}

void expect_same_profile(const std::string& one, const std::string& many) {
  json a = read_json_file(one + "/profile.json"), b = read_json_file(many + "/profile.json");
  a.erase("timings");  // wall-clock times differ between any two runs
  b.erase("timings");
  expect_close_json(a, b, "profile.json");
  expect_close_tensors(one + "/profile.safetensors", many + "/profile.safetensors");
  EXPECT_EQ(read_file(one + "/domains.jsonl"), read_file(many + "/domains.jsonl"));
}

// One process, then `ranks_prefix` (a launcher with W ranks): equal profiles.
void check_profile(const std::string& name, const std::string& ranks_prefix, int world, const std::string& extra) {
  const std::string dir = fresh_dir(name);
  std::string log;
  ASSERT_EQ(run_shell(one_process() + profile_args(dir + "/one", extra), &log), 0) << log;
  ASSERT_EQ(run_shell(ranks_prefix + profile_args(dir + "/many", extra), &log), 0) << log;
  expect_shared_out(log, "profile", world);
  EXPECT_EQ(count_of(log, "profiled "), 1u) << "only rank 0 prints the summary\n" << log;
  expect_same_profile(dir + "/one", dir + "/many");
}

// ---------------------------------------------------------------------------------------------
// merge

std::string merge_args(const std::string& method_args, const std::string& out) {
  return "merge " + merge_fixtures::mixtral(true) + " --experts 2 " + method_args + " --calib " +
         merge_fixtures::calib_file() + " --seq-len 16 --blocks 8 --out " + out;
}

// One process, then `ranks_prefix` (a launcher with W ranks): the same report and checkpoint.
void check_merge(const std::string& name, const std::string& ranks_prefix, int world, const std::string& method_args) {
  const std::string dir = fresh_dir(name);
  std::string log;
  ASSERT_EQ(run_shell(one_process() + merge_args(method_args, dir + "/one"), &log), 0) << log;
  ASSERT_EQ(run_shell(ranks_prefix + merge_args(method_args, dir + "/many"), &log), 0) << log;
  expect_shared_out(log, "calibrate", world);
  EXPECT_EQ(count_of(log, "experts per layer in"), 1u) << "only rank 0 prints the summary\n" << log;
  expect_close_json(read_json_file(dir + "/one/merge_report.json"), read_json_file(dir + "/many/merge_report.json"),
                    "merge_report.json");
  expect_close_tensors(dir + "/one", dir + "/many");
}

}  // namespace

// k-means domains on the model's embeddings: the embedding pass is shared out too.
TEST(DistProfile, TwoRanksUnderTorchrunEqualOneProcess) {
  if (!have_torchrun()) GTEST_SKIP() << "torchrun missing: install python3-torch (scripts/install-deps.sh)";
  check_profile("torchrun", under_torchrun(2), 2, " --domains 3");
}

// Domains from the 'domain' field.
TEST(DistProfile, ThreeRanksUnderMoeforgeLaunchEqualOneProcess) {
  check_profile("launch", under_launch(3), 3, "");
}

// HC-SMoE with --router fit: mean expert outputs and frequencies are summed over the ranks; the
// kept inputs and router logits of the first tokens (all 128 here) are assembled from the ranks
// that ran their blocks.
TEST(DistMerge, TwoRanksUnderTorchrunEqualOneProcess) {
  if (!have_torchrun()) GTEST_SKIP() << "torchrun missing: install python3-torch (scripts/install-deps.sh)";
  check_merge("merge_torchrun", under_torchrun(2), 2, "--method hc-smoe --router fit");
}

// The same, and O-prune (per-token Gram matrices of the expert outputs, assembled likewise).
TEST(DistMerge, ThreeRanksUnderMoeforgeLaunchEqualOneProcess) {
  check_merge("merge_launch_hc", under_launch(3), 3, "--method hc-smoe --router fit");
  check_merge("merge_launch_oprune", under_launch(3), 3, "--method o-prune");
}
