// src/dist (torch.distributed c10d groups over Gloo) and `moeforge launch`.
//
// Parsing torchrun's environment and single-process groups are tested in this process. The
// multi-rank tests run real Gloo groups of 2 and 3 ranks over loopback; each rank is a fresh
// process started by tests/dist_ranks.h (entry point DistChild.Rank).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dist/dist.h"
#include "dist_ranks.h"
#include "test_helpers.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

using namespace mf;
using mf::testing_helpers::error_of;
using namespace mf::testing_dist;

namespace {

// ------------------------------------------------------------------ environment

const char* const kDistVars[] = {"RANK",        "WORLD_SIZE",  "LOCAL_RANK",            "LOCAL_WORLD_SIZE",
                                 "MASTER_ADDR", "MASTER_PORT", "MOEFORGE_DIST_TIMEOUT", "GLOO_SOCKET_IFNAME"};

// Clears torchrun's variables for one test and restores the process environment afterwards.
class EnvGuard {
 public:
  EnvGuard() {
    for (const char* name : kDistVars) unset(name);
  }
  ~EnvGuard() {
    for (const auto& [name, value] : saved_) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }
  EnvGuard(const EnvGuard&) = delete;
  EnvGuard& operator=(const EnvGuard&) = delete;

  void set(const char* name, const std::string& value) {
    save(name);
    ::setenv(name, value.c_str(), 1);
  }
  void unset(const char* name) {
    save(name);
    ::unsetenv(name);
  }

 private:
  void save(const char* name) {
    if (saved_.count(name)) return;
    const char* v = std::getenv(name);
    saved_[name] = v ? std::optional<std::string>(v) : std::nullopt;
  }
  std::map<std::string, std::optional<std::string>> saved_;
};

// Rank `rank`'s test tensor number k: arange(n) * (rank + 1) + k in `dtype`, shaped `shape`.
at::Tensor rank_value(int64_t k, int64_t rank, std::vector<int64_t> shape, at::ScalarType dtype) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return (at::arange(n, at::kDouble) * static_cast<double>(rank + 1) + static_cast<double>(k)).view(shape).to(dtype);
}

// The byte strings of all_gather_strings: empty, with NUL and 0xff bytes, and longer ones.
std::string word_of(int64_t rank) {
  if (rank == 0) return "";
  if (rank == 1) return std::string("x\0\xffy", 4);
  return std::string(static_cast<size_t>(rank * 3), static_cast<char>('a' + rank));
}

// Rows rank `src` sends rank `dst` in the all-to-all tests, and their values.
int64_t rows_a(int64_t src, int64_t dst) { return (src + 2 * dst) % 3; }  // zero pieces, self ones included
int64_t rows_b(int64_t src, int64_t dst, int64_t world) {                // the last rank is left out
  return src == world - 1 || dst == world - 1 ? 0 : src + dst + 1;
}
double cell(int64_t src, int64_t dst, int64_t row, int64_t col) {
  return static_cast<double>(src * 1000 + dst * 100 + row * 10 + col);
}

// Stacks, for each peer p in order, `count(p)` rows whose element c is cell(src(p), dst(p), row, c).
template <class Count, class Src, class Dst>
at::Tensor stacked_rows(int64_t world, std::vector<int64_t> row_shape, at::ScalarType dtype, Count count, Src src,
                        Dst dst) {
  int64_t row_numel = 1;
  for (int64_t d : row_shape) row_numel *= d;
  std::vector<double> values;
  int64_t rows = 0;
  for (int64_t p = 0; p < world; ++p) {
    for (int64_t k = 0; k < count(p); ++k, ++rows)
      for (int64_t c = 0; c < row_numel; ++c) values.push_back(cell(src(p), dst(p), k, c));
  }
  std::vector<int64_t> shape{rows};
  shape.insert(shape.end(), row_shape.begin(), row_shape.end());
  at::Tensor t = at::empty({static_cast<int64_t>(values.size())}, at::kDouble);
  for (size_t i = 0; i < values.size(); ++i) t[static_cast<int64_t>(i)].fill_(values[i]);
  return t.view(shape).to(dtype);
}

void child_collectives() {
  const dist::DistEnv env = dist::env_from_torchrun();
  ASSERT_TRUE(env.active());
  auto g = dist::init(env, std::chrono::seconds(30));
  ASSERT_TRUE(g);
  const int64_t W = g->world_size(), r = g->rank();
  ASSERT_EQ(W, env.world_size);
  ASSERT_EQ(r, env.rank);
  ASSERT_TRUE(g->process_group());

  // all_reduce_sum: float, int64, bool (a sum of bools is their OR) and bfloat16; undefined and
  // empty tensors are skipped.
  {
    at::Tensor f = at::arange(6, at::kFloat).view({2, 3}) * static_cast<double>(r + 1);
    at::Tensor l = at::full({4}, r, at::kLong);
    at::Tensor b = at::zeros({3}, at::kBool);
    b.narrow(0, r % 3, 1).fill_(true);
    at::Tensor h = (at::arange(1, 4, at::kFloat) * static_cast<double>(r + 1)).to(at::kBFloat16);
    at::Tensor e = at::empty({0}, at::kFloat);
    std::vector<at::Tensor> ts{f, at::Tensor(), l, b, h, e};
    g->all_reduce_sum(ts);
    const double tri = static_cast<double>(W * (W + 1) / 2);
    EXPECT_TRUE(at::allclose(f, at::arange(6, at::kFloat).view({2, 3}) * tri)) << f;
    EXPECT_TRUE(at::equal(l, at::full({4}, W * (W - 1) / 2, at::kLong))) << l;
    at::Tensor b_expected = at::zeros({3}, at::kBool);
    for (int64_t k = 0; k < W; ++k) b_expected.narrow(0, k % 3, 1).fill_(true);
    EXPECT_TRUE(at::equal(b, b_expected)) << b;
    EXPECT_EQ(h.scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::allclose(h.to(at::kDouble), at::arange(1, 4, at::kDouble) * tri)) << h;
  }

  // all_reduce_mean_bucketed with buckets smaller than one tensor (16 bytes: each tensor alone,
  // except the two 8-byte ones that share one), then with one bucket per dtype.
  for (int64_t bucket : {int64_t{16}, int64_t{25} << 20}) {
    std::vector<at::Tensor> ts{
        rank_value(0, r, {10}, at::kFloat),
        at::Tensor(),
        rank_value(2, r, {3, 4}, at::kDouble),
        rank_value(3, r, {3, 4}, at::kFloat).t(),  // non-contiguous
        rank_value(4, r, {6}, at::kBFloat16),
        rank_value(5, r, {2}, at::kFloat),
        rank_value(6, r, {2}, at::kFloat),
        at::empty({0}, at::kFloat),
    };
    void* first_storage = ts[0].data_ptr();
    g->all_reduce_mean_bucketed(ts, bucket);
    // mean over ranks of arange * (rank + 1) + k = arange * (W + 1) / 2 + k
    auto expected = [&](int64_t k, std::vector<int64_t> shape) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      return (at::arange(n, at::kDouble) * (static_cast<double>(W + 1) / 2.0) + static_cast<double>(k)).view(shape);
    };
    EXPECT_EQ(ts[0].data_ptr(), first_storage) << "averaged in place";
    EXPECT_FALSE(ts[1].defined());
    EXPECT_TRUE(at::allclose(ts[0].to(at::kDouble), expected(0, {10}))) << "bucket " << bucket << ": " << ts[0];
    EXPECT_TRUE(at::allclose(ts[2], expected(2, {3, 4}))) << ts[2];
    EXPECT_TRUE(at::allclose(ts[3].to(at::kDouble), expected(3, {3, 4}).t())) << ts[3];
    EXPECT_EQ(ts[4].scalar_type(), at::kBFloat16);
    EXPECT_TRUE(at::allclose(ts[4].to(at::kDouble), expected(4, {6}), 1e-2, 1e-2)) << ts[4];
    EXPECT_TRUE(at::allclose(ts[5].to(at::kDouble), expected(5, {2}))) << ts[5];
    EXPECT_TRUE(at::allclose(ts[6].to(at::kDouble), expected(6, {2}))) << ts[6];
  }

  // broadcast from the first and the last rank; int32, bfloat16 (sent as raw bits), non-contiguous.
  for (int64_t root : {int64_t{0}, W - 1}) {
    at::Tensor t = r == root ? at::arange(5, at::kInt) * 7 : at::zeros({5}, at::kInt);
    g->broadcast(t, root);
    EXPECT_TRUE(at::equal(t, at::arange(5, at::kInt) * 7)) << "root " << root << ": " << t;
  }
  {
    const at::Tensor want = at::tensor({1.5, -2.25, 3.0}, at::kDouble).to(at::kBFloat16);
    at::Tensor t = r == W - 1 ? want.clone() : at::zeros({3}, at::kBFloat16);
    g->broadcast(t, W - 1);
    EXPECT_TRUE(at::equal(t, want)) << t;
    const at::Tensor base = at::arange(6, at::kDouble).view({2, 3});
    at::Tensor nc = (r == 0 ? base.clone() : at::zeros({2, 3}, at::kDouble)).t();
    g->broadcast(nc, 0);
    EXPECT_TRUE(at::equal(nc, base.t())) << nc;
  }

  // all_gather_strings: different lengths, empty strings, arbitrary bytes; then all empty.
  {
    std::vector<std::string> want;
    for (int64_t k = 0; k < W; ++k) want.push_back(word_of(k));
    EXPECT_EQ(g->all_gather_strings(word_of(r)), want);
    EXPECT_EQ(g->all_gather_strings(""), std::vector<std::string>(static_cast<size_t>(W), ""));
  }

  // all_to_all_single with uneven splits and zero-row pieces (int64 rows of 3).
  {
    std::vector<int64_t> in_splits, out_splits;
    for (int64_t p = 0; p < W; ++p) {
      in_splits.push_back(rows_a(r, p));
      out_splits.push_back(rows_a(p, r));
    }
    const at::Tensor input = stacked_rows(
        W, {3}, at::kLong, [&](int64_t p) { return rows_a(r, p); }, [&](int64_t) { return r; },
        [&](int64_t p) { return p; });
    const at::Tensor want = stacked_rows(
        W, {3}, at::kLong, [&](int64_t p) { return rows_a(p, r); }, [&](int64_t p) { return p; },
        [&](int64_t) { return r; });
    const at::Tensor out = g->all_to_all_single(input, in_splits, out_splits);
    EXPECT_EQ(out.scalar_type(), at::kLong);
    EXPECT_TRUE(at::equal(out, want)) << "rank " << r << " got\n" << out << "\nwant\n" << want;
  }
  // ... where the last rank sends and receives nothing at all (float rows of 2x2).
  {
    std::vector<int64_t> in_splits, out_splits;
    for (int64_t p = 0; p < W; ++p) {
      in_splits.push_back(rows_b(r, p, W));
      out_splits.push_back(rows_b(p, r, W));
    }
    const at::Tensor input = stacked_rows(
        W, {2, 2}, at::kFloat, [&](int64_t p) { return rows_b(r, p, W); }, [&](int64_t) { return r; },
        [&](int64_t p) { return p; });
    const at::Tensor want = stacked_rows(
        W, {2, 2}, at::kFloat, [&](int64_t p) { return rows_b(p, r, W); }, [&](int64_t p) { return p; },
        [&](int64_t) { return r; });
    const at::Tensor out = g->all_to_all_single(input, in_splits, out_splits);
    EXPECT_EQ(out.sizes(), want.sizes());
    EXPECT_TRUE(at::equal(out, want)) << "rank " << r << " got\n" << out << "\nwant\n" << want;
  }
  // ... and bfloat16 rows with equal splits.
  {
    std::vector<int64_t> ones(static_cast<size_t>(W), 1);
    const at::Tensor input = (at::arange(W, at::kDouble) * 0.5 + static_cast<double>(r)).view({W, 1}).to(at::kBFloat16);
    const at::Tensor want = (at::arange(W, at::kDouble) + static_cast<double>(r) * 0.5).view({W, 1}).to(at::kBFloat16);
    const at::Tensor out = g->all_to_all_single(input, ones, ones);
    EXPECT_TRUE(at::equal(out, want)) << out;
  }
  // The statistics count the rows sent to other ranks: int64 rows of 3, float rows of 2x2, one
  // bfloat16 per rank.
  {
    int64_t sent = 0;
    for (int64_t p = 0; p < W; ++p)
      if (p != r) sent += rows_a(r, p) * 3 * 8 + rows_b(r, p, W) * 4 * 4 + 2;
    const dist::CommStats& a2a = g->comm_stats().at("all_to_all");
    EXPECT_EQ(a2a.calls, 3);
    EXPECT_EQ(a2a.bytes, sent);
    EXPECT_GT(a2a.seconds, 0.0);
  }
  // A split that does not match the input is this rank's own mistake, reported before any traffic.
  EXPECT_NE(error_of([&] { g->all_to_all_single(at::zeros({2, 3}), std::vector<int64_t>(W, 0), std::vector<int64_t>(W, 0)); })
                .find("the input split sizes add up to 0 rows but the input has 2"),
            std::string::npos);

  g->barrier();
  dist::shutdown(g);
  EXPECT_FALSE(g);
  if (!::testing::Test::HasFailure()) write_verdict("ok");
}

// Joins, then tries collectives until one fails; writes the error line (empty: none failed).
void child_expect_failure() {
  std::shared_ptr<dist::Group> g;
  std::string message;
  try {
    g = dist::init(dist::env_from_torchrun(), dist::default_timeout());
    g->barrier();
    for (int i = 0; i < 20; ++i) {
      std::vector<at::Tensor> ts{at::ones({4})};
      g->all_reduce_sum(ts);
    }
  } catch (const Error& e) {
    message = e.what();
  }
  write_verdict(message);
  g.reset();  // tearing down after a failure must not hang either
}

// Joins and dies like a crashed rank: no shutdown, no destructors.
void child_die_after_init() {
  auto g = dist::init(dist::env_from_torchrun(), dist::default_timeout());
  g->barrier();
  write_verdict("joined");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  std::fflush(nullptr);
  ::_exit(0);
}

void expect_one_line_loss(const std::string& message, int rank) {
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_TRUE(starts_with(message, "rank " + std::to_string(rank) + ": ")) << message;
  EXPECT_NE(message.find(" the other ranks during "), std::string::npos) << message;
  EXPECT_TRUE(ends_with(message, "; the run stops")) << message;
}

}  // namespace

// ------------------------------------------------------------------ torchrun environment

TEST(DistEnv, WithoutWorldSizeItIsOneProcess) {
  EnvGuard env;
  env.set("RANK", "3");  // ignored without WORLD_SIZE
  const auto e = dist::env_from_torchrun();
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(e.master_addr, "127.0.0.1");
  EXPECT_EQ(e.master_port, 29500);
  EXPECT_FALSE(e.active());
  env.set("WORLD_SIZE", "");  // empty counts as unset
  EXPECT_FALSE(dist::env_from_torchrun().active());
}

TEST(DistEnv, ReadsTorchrunVariables) {
  EnvGuard env;
  env.set("RANK", "2");
  env.set("WORLD_SIZE", "4");
  env.set("LOCAL_RANK", "0");
  env.set("LOCAL_WORLD_SIZE", "2");
  env.set("MASTER_ADDR", "node0.example");
  env.set("MASTER_PORT", "1234");
  const auto e = dist::env_from_torchrun();
  EXPECT_EQ(e.rank, 2);
  EXPECT_EQ(e.world_size, 4);
  EXPECT_EQ(e.local_rank, 0);
  EXPECT_EQ(e.master_addr, "node0.example");
  EXPECT_EQ(e.master_port, 1234);
  EXPECT_TRUE(e.active());
}

TEST(DistEnv, Defaults) {
  EnvGuard env;
  env.set("RANK", "1");
  env.set("WORLD_SIZE", "3");
  const auto e = dist::env_from_torchrun();
  EXPECT_EQ(e.local_rank, 1) << "LOCAL_RANK defaults to RANK";
  EXPECT_EQ(e.master_addr, "127.0.0.1");
  EXPECT_EQ(e.master_port, 29500);

  EnvGuard one;
  one.set("WORLD_SIZE", "1");  // RANK may be absent for one process
  EXPECT_FALSE(dist::env_from_torchrun().active());
  EXPECT_EQ(dist::env_from_torchrun().rank, 0);
}

TEST(DistEnv, RejectsMalformedOrInconsistentValues) {
  struct Case {
    std::vector<std::pair<const char*, const char*>> vars;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{{"WORLD_SIZE", "2"}}, "torchrun environment: WORLD_SIZE=2 is set but RANK is not"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "2"}}, "torchrun environment: RANK=2 is not below WORLD_SIZE=2"},
      {{{"WORLD_SIZE", "1"}, {"RANK", "1"}}, "torchrun environment: RANK=1 is not below WORLD_SIZE=1"},
      {{{"WORLD_SIZE", "two"}}, "torchrun environment: WORLD_SIZE='two' is not a non-negative integer"},
      {{{"WORLD_SIZE", "0"}}, "torchrun environment: WORLD_SIZE=0 must be at least 1"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "-1"}}, "torchrun environment: RANK='-1' is not a non-negative integer"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "1x"}}, "torchrun environment: RANK='1x' is not a non-negative integer"},
      {{{"WORLD_SIZE", " 2"}, {"RANK", "0"}}, "torchrun environment: WORLD_SIZE=' 2' is not a non-negative integer"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"LOCAL_RANK", "a"}},
       "torchrun environment: LOCAL_RANK='a' is not a non-negative integer"},
      {{{"WORLD_SIZE", "4"}, {"RANK", "3"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}},
       "torchrun environment: LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_PORT", "70000"}},
       "torchrun environment: MASTER_PORT='70000' is not a port number (1-65535)"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_PORT", "0"}},
       "torchrun environment: MASTER_PORT='0' is not a port number (1-65535)"},
      {{{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"MASTER_PORT", "http"}},
       "torchrun environment: MASTER_PORT='http' is not a port number (1-65535)"},
  };
  for (const auto& c : cases) {
    EnvGuard env;
    std::string where;
    for (const auto& [k, v] : c.vars) {
      env.set(k, v);
      where += std::string(k) + "=" + v + " ";
    }
    EXPECT_EQ(error_of([] { dist::env_from_torchrun(); }), c.message) << where;
  }
}

TEST(DistEnv, DefaultTimeout) {
  EnvGuard env;
  EXPECT_EQ(dist::default_timeout().count(), 300000);
  env.set("MOEFORGE_DIST_TIMEOUT", "2.5");
  EXPECT_EQ(dist::default_timeout().count(), 2500);
  for (const char* bad : {"0", "-3", "soon", "5s", "nan", "inf"}) {
    env.set("MOEFORGE_DIST_TIMEOUT", bad);
    EXPECT_EQ(error_of([] { dist::default_timeout(); }),
              std::string("MOEFORGE_DIST_TIMEOUT='") + bad + "' is not a positive number of seconds");
  }
}

TEST(DistEnv, FreePort) {
  const int p = dist::free_port();
  EXPECT_GT(p, 0);
  EXPECT_LE(p, 65535);
}

// ------------------------------------------------------------------ one process

TEST(DistGroup, OneProcessIsLocal) {
  auto g = dist::init(dist::DistEnv{}, std::chrono::seconds(5));
  ASSERT_TRUE(g);
  EXPECT_EQ(g->rank(), 0);
  EXPECT_EQ(g->world_size(), 1);
  EXPECT_FALSE(g->active());
  EXPECT_FALSE(g->process_group());

  at::Tensor a = at::arange(4, at::kFloat);
  std::vector<at::Tensor> ts{a, at::Tensor()};
  g->all_reduce_sum(ts);
  EXPECT_TRUE(at::equal(a, at::arange(4, at::kFloat)));
  g->all_reduce_mean_bucketed(ts, 4);
  EXPECT_TRUE(at::equal(a, at::arange(4, at::kFloat)));
  EXPECT_NE(error_of([&] { g->all_reduce_mean_bucketed({at::arange(3)}); }).find("only floating-point tensors"),
            std::string::npos);

  g->broadcast(a, 0);
  EXPECT_TRUE(at::equal(a, at::arange(4, at::kFloat)));
  EXPECT_EQ(error_of([&] { g->broadcast(a, 1); }), "rank 0: broadcast: root 1 is not a rank (0..0)");

  EXPECT_EQ(g->all_gather_strings("abc"), std::vector<std::string>{"abc"});

  const at::Tensor x = at::arange(6, at::kLong).view({3, 2});
  EXPECT_TRUE(at::equal(g->all_to_all_single(x, {3}, {3}), x));
  EXPECT_EQ(error_of([&] { g->all_to_all_single(x, {2}, {2}); }),
            "rank 0: all_to_all_single: the input split sizes add up to 2 rows but the input has 3");
  EXPECT_EQ(error_of([&] { g->all_to_all_single(x, {3, 0}, {3, 0}); }),
            "rank 0: all_to_all_single: 2 input and 2 output split sizes for 1 ranks");

  g->barrier();
  dist::shutdown(g);
  EXPECT_FALSE(g);
  dist::shutdown(g);  // nothing left: a no-op
}

TEST(DistGroup, InitRejectsAPlaceOutsideTheJob) {
  dist::DistEnv e;
  e.rank = 2;
  e.world_size = 2;
  EXPECT_NE(error_of([&] { dist::init(e, std::chrono::seconds(1)); }).find("is not a place in the job"),
            std::string::npos);
}

// ------------------------------------------------------------------ several processes

// One rank of a multi-rank test (see the top of this file); skipped when run on its own.
TEST(DistChild, Rank) {
  const char* scenario = std::getenv("MOEFORGE_DIST_CHILD");
  if (scenario == nullptr) GTEST_SKIP() << "a rank started by the DistMultiRank tests";
  at::set_num_threads(1);
  const std::string s = scenario;
  if (s == "collectives")
    child_collectives();
  else if (s == "expect_failure")
    child_expect_failure();
  else if (s == "die_after_init")
    child_die_after_init();
  else
    FAIL() << "unknown scenario " << s;
}

namespace {

void run_collectives(int world) {
  const std::string dir = fresh_dir("collectives_" + std::to_string(world));
  std::vector<RankRun> runs;
  for (int r = 0; r < world; ++r) runs.push_back({r, "collectives"});
  const auto outcome = run_ranks(world, runs, dist::free_port(), dir, {}, std::chrono::seconds(120));
  EXPECT_FALSE(outcome.timed_out) << logs(dir, runs);
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(outcome.codes[static_cast<size_t>(r)], 0) << "rank " << r << logs(dir, runs);
    EXPECT_EQ(read_or_empty(rank_file(dir, r, ".txt")), "ok") << "rank " << r << logs(dir, runs);
  }
}

}  // namespace

TEST(DistMultiRank, TwoRanks) { run_collectives(2); }

TEST(DistMultiRank, ThreeRanks) { run_collectives(3); }

TEST(DistMultiRank, MissingRankFailsInitWithinTheTimeout) {
  // World of 2, only rank 0 starts: its rendezvous (3 s timeout) must fail with one line.
  const std::string dir = fresh_dir("missing_rank");
  const std::vector<RankRun> runs{{0, "expect_failure"}};
  const auto outcome =
      run_ranks(2, runs, dist::free_port(), dir, {{"MOEFORGE_DIST_TIMEOUT", "3"}}, std::chrono::seconds(60));
  ASSERT_FALSE(outcome.timed_out) << logs(dir, runs);
  EXPECT_EQ(outcome.codes[0], 0) << logs(dir, runs);
  EXPECT_LT(outcome.seconds, 30.0);
  const std::string message = read_or_empty(rank_file(dir, 0, ".txt"));
  expect_one_line_loss(message, 0);
  EXPECT_NE(message.find("during rendezvous at 127.0.0.1:"), std::string::npos) << message;
}

TEST(DistMultiRank, DeadRankFailsTheNextCollective) {
  // Both ranks join; rank 1 then dies without a word. Rank 0's next collective must fail with
  // one line within the 3 s timeout (at once when the closed connection is noticed).
  const std::string dir = fresh_dir("dead_rank");
  const std::vector<RankRun> runs{{0, "expect_failure"}, {1, "die_after_init"}};
  const auto outcome =
      run_ranks(2, runs, dist::free_port(), dir, {{"MOEFORGE_DIST_TIMEOUT", "3"}}, std::chrono::seconds(60));
  ASSERT_FALSE(outcome.timed_out) << logs(dir, runs);
  EXPECT_EQ(outcome.codes[0], 0) << logs(dir, runs);
  EXPECT_EQ(outcome.codes[1], 0) << logs(dir, runs);
  EXPECT_EQ(read_or_empty(rank_file(dir, 1, ".txt")), "joined") << logs(dir, runs);
  EXPECT_LT(outcome.seconds, 30.0);
  const std::string message = read_or_empty(rank_file(dir, 0, ".txt"));
  expect_one_line_loss(message, 0);
  EXPECT_NE(message.find("lost contact with the other ranks during "), std::string::npos) << message;
}

// ------------------------------------------------------------------ moeforge launch

namespace {

using mf::testing_helpers::run_moeforge;

}  // namespace

TEST(DistLaunch, SetsTorchrunVariables) {
  const auto r = run_moeforge(
      "launch --nproc 3 --master-port 0 -- sh -c 'echo \"$RANK $LOCAL_RANK $WORLD_SIZE $LOCAL_WORLD_SIZE $MASTER_ADDR "
      "$MASTER_PORT\"'");
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  auto lines = split(trim(r.out), '\n');
  std::sort(lines.begin(), lines.end());
  ASSERT_EQ(lines.size(), 3u) << r.out;
  const std::string port = lines[0].substr(lines[0].rfind(' ') + 1);
  EXPECT_NE(port, "0");
  EXPECT_NE(port, "");
  for (int k = 0; k < 3; ++k)
    EXPECT_EQ(lines[static_cast<size_t>(k)], cat(k, " ", k, " 3 3 127.0.0.1 ", port)) << r.out;

  const auto fixed = run_moeforge("launch --nproc 1 --master-addr localhost --master-port 12345 -- sh -c 'echo $MASTER_ADDR:$MASTER_PORT'");
  EXPECT_EQ(fixed.code, 0) << fixed.err;
  EXPECT_EQ(fixed.out, "localhost:12345\n");
}

TEST(DistLaunch, OneFailedRankStopsTheOthers) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = run_moeforge("launch --nproc 3 -- sh -c 'if [ \"$RANK\" = 1 ]; then exit 3; fi; exec sleep 60'");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("error: launch: rank 1 exited with code 3\n"), std::string::npos) << r.err;
  EXPECT_LT(seconds, 30.0) << "the sleeping ranks were not stopped";

  const auto killed = run_moeforge("launch --nproc 2 -- sh -c 'kill -9 $$'");
  EXPECT_EQ(killed.code, 137) << killed.err;
  EXPECT_NE(killed.err.find("exited with code 137 (signal 9"), std::string::npos) << killed.err;
}

TEST(DistLaunch, UsageErrors) {
  auto r = run_moeforge("launch --nproc 2");
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("error: launch: give the command to run after '--'"), std::string::npos) << r.err;
  r = run_moeforge("launch --nproc 0 -- true");
  EXPECT_EQ(r.code, 2) << r.err;
  r = run_moeforge("launch --nproc 2 --master-port 70000 -- true");
  EXPECT_EQ(r.code, 2) << r.err;
  r = run_moeforge("launch --nproc 2 -- no-such-command-for-moeforge");
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("error: launch: cannot run 'no-such-command-for-moeforge': not found on PATH"), std::string::npos)
      << r.err;
}

TEST(DistLaunch, RunsAGlooJob) {
  // The whole path: launch's environment -> env_from_torchrun -> TCPStore + Gloo, 2 ranks.
  const std::string dir = fresh_dir("launch_job");
  const std::string prefix =
      "env -u GTEST_OUTPUT -u GTEST_FILTER -u GTEST_SHARD_INDEX -u GTEST_TOTAL_SHARDS -u GLOO_SOCKET_IFNAME "
      "MOEFORGE_DIST_CHILD=collectives MOEFORGE_DIST_CHILD_OUT=" +
      dir + " timeout 120 ";
  const auto r = run_moeforge("launch --nproc 2 --master-port 0 -- " + self_exe() + " --gtest_filter=DistChild.Rank",
                              /*merge_stderr=*/true, prefix);
  EXPECT_EQ(r.code, 0) << r.out;
  for (int k = 0; k < 2; ++k) EXPECT_EQ(read_or_empty(rank_file(dir, k, ".txt")), "ok") << "rank " << k << "\n" << r.out;
}
