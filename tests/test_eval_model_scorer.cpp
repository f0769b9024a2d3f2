// The evaluator's scorer on a real (tiny, random) transformer: every path — batched rows, shared
// prefixes with single- and multi-token continuations, left-padded prefix batches — must give
// the log-probabilities of a plain full-sequence forward, computed here independently.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "eval/model_scorer.h"
#include "model_fixtures.h"

using namespace mf;
using namespace mf::eval;

namespace {

// Oracle: one unpadded forward of prefix+continuation, log_softmax at every position.
TokenScore oracle(Model& m, const std::vector<int32_t>& prefix, const std::vector<int32_t>& cont) {
  torch::NoGradGuard g;
  std::vector<int64_t> all(prefix.begin(), prefix.end());
  all.insert(all.end(), cont.begin(), cont.end() - 1);
  auto logits = m.forward(torch::tensor(all).unsqueeze(0));
  auto logp = torch::log_softmax(logits[0].to(torch::kDouble), -1);
  TokenScore s;
  for (size_t j = 0; j < cont.size(); ++j) {
    int64_t pos = static_cast<int64_t>(prefix.size() + j) - 1;
    s.logprob += logp[pos][cont[j]].item<double>();
    s.greedy = s.greedy && logp[pos].argmax().item<int64_t>() == cont[j];
  }
  return s;
}

}  // namespace

TEST(EvalModelScorer, SharedAndBatchedPathsEqualFullForward) {
  for (const std::string family : {"llama", "qwen2", "mixtral", "gpt2", "mistral"}) {  // mistral: sliding window 5
    SCOPED_TRACE(family);
    auto model = mf::testing_fixtures::tiny_model(family);
    TransformerScorer scorer(model, 64);
    int64_t v = model->config().vocab_size;
    auto tok = [&](int i) { return static_cast<int32_t>((i * 7 + 3) % v); };
    std::vector<SharedGroup> groups = {
        {{tok(1), tok(2), tok(3), tok(4), tok(5)}, {{tok(6)}, {tok(7), tok(8)}, {tok(9), tok(10), tok(11)}}},
        {{tok(12), tok(13)}, {{tok(14), tok(15)}, {tok(16)}}},
        {{tok(17)}, {{tok(18)}, {tok(19)}, {tok(20)}, {tok(21)}}},
    };
    auto shared = scorer.score_shared(groups);
    std::vector<ScoreRow> rows;
    for (const auto& g : groups)
      for (const auto& c : g.continuations) {
        ScoreRow r{g.prefix, c};
        r.input.insert(r.input.end(), c.begin(), c.end() - 1);
        rows.push_back(r);
      }
    auto batched = scorer.score(rows);
    size_t k = 0;
    for (size_t g = 0; g < groups.size(); ++g)
      for (size_t c = 0; c < groups[g].continuations.size(); ++c, ++k) {
        TokenScore want = oracle(*model, groups[g].prefix, groups[g].continuations[c]);
        EXPECT_NEAR(shared[g][c].logprob, want.logprob, 1e-4) << g << "," << c;
        EXPECT_NEAR(batched[k].logprob, want.logprob, 1e-4) << g << "," << c;
        EXPECT_EQ(shared[g][c].greedy, want.greedy);
        EXPECT_EQ(batched[k].greedy, want.greedy);
      }
  }
}
