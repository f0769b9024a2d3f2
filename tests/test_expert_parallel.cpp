// Expert parallelism (src/dist/expert_parallel.h): an MoE layer whose experts are spread over 2 and
// 3 Gloo ranks must equal the same layer in one process, outputs and gradients within 1e-6 (fp32).
// Every rank builds the full layer from the same seed and all ranks' inputs, computes the
// single-process reference on the concatenated batch, then runs its own tokens through the
// expert-parallel copy. Cases: 5 experts on 2 and 3 ranks (3+2, 2+2+1: uneven), homogeneous and
// heterogeneous expert widths; the last rank's experts made unreachable (it receives zero rows);
// a pass where rank 0 has no tokens at all; 2 experts on 3 ranks (a rank owns no expert).
#include <gtest/gtest.h>

#include "dist/dist.h"
#include "dist/expert_parallel.h"
#include "dist_ranks.h"
#include "moe/lora_expert_bank.h"
#include "moe_test_util.h"
#include "test_helpers.h"
#include "util/str.h"

using namespace mf;
using namespace mf::testing_dist;

namespace {

constexpr int64_t kDim = 8;

struct Case {
  int64_t experts;
  bool heterogeneous;
};

// The layer every rank builds identically: top-2 softmax router (renormalised), SwiGLU experts.
// Router rows of the experts the last rank owns are -1 everywhere: with positive inputs their
// logits are far below the others, so no token reaches them.
moe::MoELayer make_layer(const Case& c, int64_t world) {
  at::manual_seed(1234 + c.experts * 10 + (c.heterogeneous ? 1 : 0));
  const dist::ExpertShard cold = dist::expert_shard(c.experts, world - 1, world);
  at::Tensor rw = at::randn({c.experts, kDim});
  if (cold.count > 0 && c.experts > 2) rw.narrow(0, cold.first, cold.count).fill_(-1.0);
  std::vector<at::Tensor> gate, up, down;
  for (int64_t e = 0; e < c.experts; ++e) {
    const int64_t f = c.heterogeneous ? 3 + (e * 2) % 5 : 6;
    gate.push_back(at::randn({f, kDim}) * 0.3);
    up.push_back(at::randn({f, kDim}) * 0.3);
    down.push_back(at::randn({kDim, f}) * 0.3);
  }
  moe::ExpertBank bank = c.heterogeneous ? moe::expert_bank_from_lists(gate, up, down)
                                         : moe::expert_bank_from_stacked(at::stack(gate), at::stack(up), at::stack(down));
  moe::MoELayer layer = moe::testing::softmax_topk_layer(rw, bank, 2, true);
  for (at::Tensor p : layer->parameters()) p.set_requires_grad(true);
  return layer;
}

// Inputs and output cotangents of every rank for one pass (identical on every rank).
struct Batch {
  std::vector<at::Tensor> x, dy;
};
Batch make_batch(int64_t world, int64_t pass) {
  Batch b;
  for (int64_t r = 0; r < world; ++r) {
    at::manual_seed(100 + pass * 10 + r);
    const int64_t T = pass == 1 && r == 0 ? 0 : 5 + r;
    b.x.push_back(at::rand({T, kDim}) + 0.1);
    b.dy.push_back(at::randn({T, kDim}));
  }
  return b;
}

// Max |a - b| relative to max(1, max |b|).
double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  if (b.numel() == 0) return a.numel() == 0 ? 0.0 : 1.0;
  const double scale = std::max(1.0, b.abs().max().item<double>());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() / scale;
}

// The gradient of expert e's input (w_in) or output (w_out) projection in a dense bank; zeros
// when no token reached the tensor.
at::Tensor expert_grad(const moe::ExpertBankImpl& bank, int64_t e, const std::string& which) {
  const auto params = bank.named_parameters();
  const bool stacked = bank.as_dense()->homogeneous();
  const at::Tensor p = stacked ? params[which] : params[which + "_" + std::to_string(e)];
  const at::Tensor g = p.grad().defined() ? p.grad() : at::zeros_like(p);
  return stacked ? g.select(0, e) : g;
}

void check_case(dist::Group& group, const std::shared_ptr<dist::Group>& shared, const Case& c) {
  const int64_t W = group.world_size(), r = group.rank();
  const std::string what = cat("E=", c.experts, c.heterogeneous ? " heterogeneous" : " homogeneous", " rank ", r);
  moe::MoELayer ref = make_layer(c, W);
  moe::MoELayer ep = make_layer(c, W);
  dist::distribute_experts(*ep, shared);
  const dist::ExpertShard mine = dist::expert_shard(c.experts, r, W);
  ASSERT_TRUE(ep->experts_distributed());
  ASSERT_EQ(ep->experts().num_experts(), mine.count) << what;
  ASSERT_EQ(ep->num_experts(), c.experts);

  for (int64_t pass = 0; pass < 2; ++pass) {
    const Batch b = make_batch(W, pass);
    int64_t offset = 0;
    for (int64_t q = 0; q < r; ++q) offset += b.x[q].size(0);
    const int64_t T = b.x[r].size(0);

    // Single-process reference on every rank's tokens.
    for (at::Tensor p : ref->parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor x_all = at::cat(b.x).requires_grad_(true);
    const moe::MoEOutput ro = ref->forward_full(x_all);
    (ro.y * at::cat(b.dy)).sum().backward();
    if (c.experts > 2) {
      const dist::ExpertShard cold = dist::expert_shard(c.experts, W - 1, W);
      int64_t cold_rows = 0;
      for (int64_t e = cold.first; e < cold.first + cold.count; ++e) cold_rows += ro.plan.counts[e];
      EXPECT_EQ(cold_rows, 0) << what << ": the last rank's experts should receive nothing";
    }

    // The expert-parallel layer on this rank's tokens only.
    for (at::Tensor p : ep->parameters()) p.mutable_grad() = at::Tensor();
    at::Tensor x = b.x[r].clone().requires_grad_(true);
    const at::Tensor y = ep->forward(x);
    (y * b.dy[r]).sum().backward();

    const std::string at_pass = what + cat(" pass ", pass);
    EXPECT_LE(rel_diff(y, ro.y.narrow(0, offset, T)), 1e-6) << at_pass;
    EXPECT_LE(rel_diff(x.grad(), x_all.grad().narrow(0, offset, T)), 1e-6) << at_pass;
    // The replicated router: the sum of the ranks' gradients is the whole batch's.
    at::Tensor rg = ep->router().parameters()[0].grad().clone();
    std::vector<at::Tensor> sum{rg};
    group.all_reduce_sum(sum);
    EXPECT_LE(rel_diff(rg, ref->router().parameters()[0].grad()), 1e-6) << at_pass;
    // This rank's experts: their gradients already hold every rank's tokens.
    for (int64_t j = 0; j < mine.count; ++j) {
      const int64_t e = mine.first + j;
      for (const char* w : {"w_in", "w_out"}) {
        const at::Tensor want = expert_grad(ref->experts(), e, w);
        const at::Tensor got = expert_grad(ep->experts(), j, w);
        EXPECT_LE(rel_diff(got, want), 1e-6) << at_pass << " expert " << e << " " << w;
      }
    }
    // Inference (no autograd) takes the same exchange.
    at::NoGradGuard no_grad;
    EXPECT_LE(rel_diff(ep->forward(b.x[r]), ro.y.narrow(0, offset, T).detach()), 1e-6) << at_pass << " no-grad";
  }
  EXPECT_EQ(dist::distributed_expert_parameters(*ep).size(), ep->experts().parameters().size());
}

void child_expert_parallel() {
  auto group = dist::init(dist::env_from_torchrun(), std::chrono::seconds(60));
  for (const Case& c : {Case{5, false}, Case{5, true}, Case{2, false}}) check_case(*group, group, c);
  dist::shutdown(group);
  if (!::testing::Test::HasFailure()) write_verdict("ok");
}

void run_expert_parallel(int world) {
  const std::string dir = fresh_dir("expert_parallel_" + std::to_string(world));
  std::vector<RankRun> runs;
  for (int r = 0; r < world; ++r) runs.push_back({r, "expert_parallel"});
  const auto outcome =
      run_ranks(world, runs, dist::free_port(), dir, {}, std::chrono::seconds(180), "ExpertParallelChild.Rank");
  EXPECT_FALSE(outcome.timed_out) << logs(dir, runs);
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(outcome.codes[static_cast<size_t>(r)], 0) << "rank " << r << logs(dir, runs);
    EXPECT_EQ(read_or_empty(rank_file(dir, r, ".txt")), "ok") << "rank " << r << logs(dir, runs);
  }
}

}  // namespace

// One rank of the multi-rank tests below; skipped when run on its own.
TEST(ExpertParallelChild, Rank) {
  if (std::getenv("MOEFORGE_DIST_CHILD") == nullptr) GTEST_SKIP() << "a rank started by the ExpertParallel tests";
  at::set_num_threads(1);
  child_expert_parallel();
}

TEST(ExpertParallel, TwoRanksEqualOneProcess) { run_expert_parallel(2); }

TEST(ExpertParallel, ThreeRanksEqualOneProcess) { run_expert_parallel(3); }

TEST(ExpertParallel, ShardsAreContiguousBlocksWithTheRemainderFirst) {
  auto shards = [](int64_t E, int64_t W) {
    std::vector<std::pair<int64_t, int64_t>> v;
    for (int64_t r = 0; r < W; ++r) {
      const dist::ExpertShard s = dist::expert_shard(E, r, W);
      v.emplace_back(s.first, s.count);
    }
    return v;
  };
  using V = std::vector<std::pair<int64_t, int64_t>>;
  EXPECT_EQ(shards(5, 2), (V{{0, 3}, {3, 2}}));
  EXPECT_EQ(shards(5, 3), (V{{0, 2}, {2, 2}, {4, 1}}));
  EXPECT_EQ(shards(8, 4), (V{{0, 2}, {2, 2}, {4, 2}, {6, 2}}));
  EXPECT_EQ(shards(2, 3), (V{{0, 1}, {1, 1}, {2, 0}}));
  EXPECT_THROW(dist::expert_shard(4, 2, 2), Error);
  for (int64_t E : {2, 5, 7, 8})
    for (int64_t W = 1; W <= E; ++W)
      for (int64_t r = 0; r < W; ++r) {
        const dist::ExpertShard s = dist::expert_shard(E, r, W);
        for (int64_t e = s.first; e < s.first + s.count; ++e) EXPECT_EQ(dist::expert_owner(E, e, W), r) << E << " " << W;
      }
}

TEST(ExpertParallel, OneProcessLeavesTheLayerAsItIs) {
  auto group = dist::init(dist::DistEnv{});
  moe::MoELayer layer = make_layer({5, false}, 1);
  moe::MoELayer plain = make_layer({5, false}, 1);
  dist::distribute_experts(*layer, group);
  EXPECT_FALSE(layer->experts_distributed());
  const at::Tensor x = at::rand({7, kDim});
  EXPECT_TRUE(at::equal(layer->forward(x), plain->forward(x)));
}

TEST(ExpertParallel, ShardOfABankCopiesItsExperts) {
  moe::MoELayer layer = make_layer({5, true}, 2);
  const moe::ExpertBank part = dist::shard_expert_bank(layer->experts(), {2, 2});
  ASSERT_EQ(part->num_experts(), 2);
  const at::Tensor x = at::rand({3, kDim});
  for (int64_t j = 0; j < 2; ++j) {
    EXPECT_EQ(part->width(j), layer->experts().width(2 + j));
    EXPECT_TRUE(at::equal(part->forward_expert(j, x), layer->experts().forward_expert(2 + j, x)));
  }
  EXPECT_THROW(dist::shard_expert_bank(layer->experts(), {4, 2}), Error);
  // A LoRA bank is not spread over processes.
  const moe::DenseExpertBank base =
      moe::expert_bank_from_stacked(at::randn({1, 4, kDim}), at::randn({1, 4, kDim}), at::randn({1, kDim, 4}));
  moe::LoraExpertBankImpl lora(base, std::vector<moe::LoraExpertDeltas>(2));
  const std::string msg = mf::testing_helpers::error_of([&] { dist::shard_expert_bank(lora, {0, 1}); });
  EXPECT_NE(msg.find("cannot be spread over processes"), std::string::npos) << msg;
}
