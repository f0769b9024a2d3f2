// Sampling, streaming generation with the KV cache, and rolling perplexity.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "model/generate.h"
#include "model/perplexity.h"
#include "model_fixtures.h"
#include "util/error.h"

using namespace mf;
using mf::testing_fixtures::tiny_model;

TEST(ModelGenerate, SamplingDistributionFollowsTransformersOrder) {
  at::Tensor logits = torch::log(torch::tensor({0.1f, 0.4f, 0.2f, 0.3f}));
  SamplingOptions o;
  EXPECT_LE((sampling_distribution(logits, o) - torch::tensor({0.1f, 0.4f, 0.2f, 0.3f})).abs().max().item<float>(), 1e-6);
  o.top_k = 2;  // keeps 0.4 and 0.3 -> 4/7, 3/7
  at::Tensor p = sampling_distribution(logits, o);
  EXPECT_NEAR(p[1].item<float>(), 4.0 / 7, 1e-6);
  EXPECT_NEAR(p[3].item<float>(), 3.0 / 7, 1e-6);
  EXPECT_EQ(p[0].item<float>(), 0.0f);
  o.top_k = 0;
  o.top_p = 0.7;  // 0.4 + 0.3 reaches 0.7: keep those two
  p = sampling_distribution(logits, o);
  EXPECT_NEAR(p[1].item<float>(), 4.0 / 7, 1e-6);
  EXPECT_EQ(p[2].item<float>(), 0.0f);
  o.top_p = 0.75;  // needs the 0.2 token too
  EXPECT_NEAR(sampling_distribution(logits, o)[2].item<float>(), 0.2 / 0.9, 1e-6);
  o.top_p = 1.0;
  o.temperature = 0.5;  // p^2 renormalised
  p = sampling_distribution(logits, o);
  EXPECT_NEAR(p[1].item<float>(), 0.16 / 0.30, 1e-5);
  o.temperature = 0;
  EXPECT_EQ(sample_token(logits, o, *std::make_unique<Rng>(1)), 1);
}

TEST(ModelGenerate, SampleFrequenciesMatchDistribution) {
  at::Tensor logits = torch::log(torch::tensor({0.5f, 0.3f, 0.2f}));
  SamplingOptions o;
  Rng rng(42);
  int counts[3] = {0, 0, 0};
  const int n = 20000;
  for (int i = 0; i < n; ++i) counts[sample_token(logits, o, rng)]++;
  // 5 standard deviations of a binomial proportion at n = 20000 is < 0.018.
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.018);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.018);
  EXPECT_NEAR(counts[2] / double(n), 0.2, 0.018);
}

TEST(ModelGenerate, GreedyWithCacheEqualsRecomputation) {
  for (const auto& name : {"llama3_tied", "gpt2", "mixtral"}) {
    auto m = tiny_model(name, 3, 0.3);
    std::vector<int64_t> prompt = {5, 9, 11, 4};
    GenerateOptions o;
    o.max_new_tokens = 6;
    o.sampling.temperature = 0;
    std::vector<int64_t> streamed;
    auto got = generate(*m, prompt, o, [&](int64_t t) {
      streamed.push_back(t);
      return true;
    });
    EXPECT_EQ(streamed, got);
    // Reference: full forward over the growing sequence, argmax of the last position.
    torch::NoGradGuard ng;
    std::vector<int64_t> seq = prompt, expect;
    for (int i = 0; i < 6; ++i) {
      at::Tensor l = m->forward(torch::tensor(seq, torch::kLong).view({1, -1}));
      int64_t t = l[0][-1].argmax().item<int64_t>();
      expect.push_back(t);
      seq.push_back(t);
    }
    EXPECT_EQ(got, expect) << name;
    // Stops right after a stop id.
    o.stop_ids = {expect[1]};
    auto stopped = generate(*m, prompt, o);
    EXPECT_EQ(stopped.back(), expect[1]) << name;
    EXPECT_LE(stopped.size(), 2u) << name;
  }
}

TEST(ModelGenerate, SeedMakesSamplingReproducible) {
  auto m = tiny_model("qwen2", 4, 0.3);
  GenerateOptions o;
  o.max_new_tokens = 8;
  o.sampling.temperature = 1.0;
  o.sampling.top_p = 0.9;
  o.seed = 7;
  EXPECT_EQ(generate(*m, {3, 4, 5}, o), generate(*m, {3, 4, 5}, o));
}

TEST(ModelGenerate, RollingPerplexityScoresEveryTokenOnce) {
  auto m = tiny_model("llama", 5, 0.3);
  std::vector<int64_t> ids;
  for (int i = 0; i < 23; ++i) ids.push_back(3 + (i * 7) % 60);
  // context >= length: one window; equals the mean NLL of one full forward.
  torch::NoGradGuard ng;
  at::Tensor t = torch::tensor(ids, torch::kLong);
  at::Tensor l = m->forward(t.view({1, -1}))[0];
  double full = at::cross_entropy_loss(l.narrow(0, 0, 22), t.narrow(0, 1, 22)).item<double>();
  PerplexityResult one = rolling_perplexity(*m, ids, 64, 64);
  EXPECT_EQ(one.tokens, 22);
  EXPECT_EQ(one.windows, 1);
  EXPECT_NEAR(one.mean_nll(), full, 1e-5);
  EXPECT_NEAR(one.perplexity(), std::exp(full), 1e-4);
  // Windows of 8 advancing by 3: still 22 tokens; the token at 9 is scored in window [3, 11)
  // from positions 3..8, check that value by hand.
  PerplexityResult r = rolling_perplexity(*m, ids, 8, 3);
  EXPECT_EQ(r.tokens, 22);
  double by_hand = 0;
  int64_t scored = 1;
  for (int64_t b = 0; scored < 23; b += 3) {
    int64_t e = std::min<int64_t>(b + 8, 23);
    at::Tensor w = m->forward(t.slice(0, b, e).view({1, -1}))[0];
    for (int64_t j = std::max(scored, b + 1); j < e; ++j)
      by_hand -= at::log_softmax(w[j - 1 - b], 0)[ids[j]].item<double>();
    scored = e;
  }
  EXPECT_NEAR(r.nll_sum, by_hand, 1e-3);
  EXPECT_THROW(rolling_perplexity(*m, ids, 8, 9), UsageError);
}
