// Tokenized request forming (lm-eval _encode_pair, BOS policy, rolling windows) and the scoring
// engine (batching, truncation, shared-context groups) against hand-computable fake models.
#include <gtest/gtest.h>

#include <cmath>

#include "eval/engine.h"
#include "eval/requests.h"
#include "eval_fakes.h"
#include "util/error.h"

using namespace mf;
using namespace mf::eval;
using mf::eval::testing::BigramModel;
using mf::eval::testing::HistoryModel;
using mf::eval::testing::PieceEncoder;

using Pieces = std::vector<std::string>;

TEST(EvalRequests, TrailingSpaceMoveOnStrings) {
  Request r = move_trailing_space({"Answer: \n ", "Paris"});
  EXPECT_EQ(r.context, "Answer:");
  EXPECT_EQ(r.continuation, " \n Paris");
  Request same = move_trailing_space({"Answer:", " Paris"});
  EXPECT_EQ(same.context, "Answer:");
  EXPECT_EQ(same.continuation, " Paris");
}

TEST(EvalRequests, JointTokenizationSplitsAtContextLength) {
  PieceEncoder enc;
  RequestTokenizer tok(enc, BosPolicy::Off);
  // The space moves to the continuation, so " Paris" stays one piece.
  TokenRequest a = tok.encode_request({"Question: Capital?\nAnswer: ", "Paris"});
  EXPECT_EQ(enc.decode(a.context), (Pieces{"Question:", " Capital?", "\n", "Answer:"}));
  EXPECT_EQ(enc.decode(a.continuation), (Pieces{" Paris"}));
  // A merge across the boundary: whole = ["abcd", " e"], context alone = ["abc"] -> continuation is
  // whole[1:] = [" e"] (lm-eval keeps the context tokens as encoded alone).
  TokenRequest b = tok.encode_request({"abc", "d e"});
  EXPECT_EQ(enc.decode(b.context), (Pieces{"abc"}));
  EXPECT_EQ(enc.decode(b.continuation), (Pieces{" e"}));
}

TEST(EvalRequests, BosPolicy) {
  PieceEncoder llama_like(true, /*default_bos=*/true), qwen_like(true, false), no_bos(false, false);
  Request r{"Q:", " yes"};
  EXPECT_EQ(llama_like.decode(RequestTokenizer(llama_like, BosPolicy::Auto).encode_request(r).context),
            (Pieces{"<bos>", "Q:"}));
  EXPECT_EQ(llama_like.decode(RequestTokenizer(llama_like, BosPolicy::Off).encode_request(r).context), (Pieces{"Q:"}));
  EXPECT_EQ(qwen_like.decode(RequestTokenizer(qwen_like, BosPolicy::Auto).encode_request(r).context), (Pieces{"Q:"}));
  EXPECT_EQ(qwen_like.decode(RequestTokenizer(qwen_like, BosPolicy::On).encode_request(r).context),
            (Pieces{"<bos>", "Q:"}));
  EXPECT_EQ(no_bos.decode(RequestTokenizer(no_bos, BosPolicy::On).encode_request(r).context), (Pieces{"Q:"}));
  // Continuation tokens never carry the BOS.
  EXPECT_EQ(llama_like.decode(RequestTokenizer(llama_like, BosPolicy::On).encode_request(r).continuation),
            (Pieces{" yes"}));
  EXPECT_EQ(parse_bos_policy("off"), BosPolicy::Off);
  EXPECT_THROW(parse_bos_policy("maybe"), UsageError);
}

TEST(EvalRequests, EmptyContextUsesPrefixToken) {
  PieceEncoder enc(true, false), no_bos(false, false);
  Request r{"", "hello world"};
  TokenRequest off = RequestTokenizer(enc, BosPolicy::Off).encode_request(r);
  EXPECT_EQ(enc.decode(off.context), (Pieces{"<bos>"}));
  EXPECT_EQ(enc.decode(off.continuation), (Pieces{"hello", " world"}));
  // With BOS added by policy the BOS is not doubled.
  TokenRequest on = RequestTokenizer(enc, BosPolicy::On).encode_request(r);
  EXPECT_EQ(enc.decode(on.context), (Pieces{"<bos>"}));
  EXPECT_EQ(enc.decode(on.continuation), (Pieces{"hello", " world"}));
  // A whitespace-only context moves entirely into the continuation; the prefix token conditions.
  TokenRequest ws = RequestTokenizer(enc, BosPolicy::Off).encode_request({" ", "hello"});
  EXPECT_EQ(enc.decode(ws.context), (Pieces{"<bos>"}));
  EXPECT_EQ(enc.decode(ws.continuation), (Pieces{" hello"}));
  // No BOS: EOS conditions.
  TokenRequest eos = RequestTokenizer(no_bos, BosPolicy::Off).encode_request(r);
  EXPECT_EQ(no_bos.decode(eos.context), (Pieces{"<eos>"}));
}

TEST(EvalRequests, RollingWindowsHandDerived) {
  // 7 tokens, max_length 3, prefix token 1 (lm-eval get_rolling_token_windows + make_disjoint_window).
  std::vector<int32_t> toks{10, 11, 12, 13, 14, 15, 16};
  auto w = rolling_windows(toks, 1, 3);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].context, (std::vector<int32_t>{1}));
  EXPECT_EQ(w[0].continuation, (std::vector<int32_t>{10, 11, 12}));
  EXPECT_EQ(w[1].context, (std::vector<int32_t>{12}));
  EXPECT_EQ(w[1].continuation, (std::vector<int32_t>{13, 14, 15}));
  EXPECT_EQ(w[2].context, (std::vector<int32_t>{13, 14, 15}));
  EXPECT_EQ(w[2].continuation, (std::vector<int32_t>{16}));
  // Every window fits exactly: inputs are the preceding max_length tokens.
  EXPECT_EQ(make_row(w[1], 3).input, (std::vector<int32_t>{12, 13, 14}));
  EXPECT_EQ(make_row(w[2], 3).input, (std::vector<int32_t>{13, 14, 15}));
  // Short documents give one window.
  auto one = rolling_windows({10, 11}, 1, 8);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(make_row(one[0], 8).input, (std::vector<int32_t>{1, 10}));
  EXPECT_TRUE(rolling_windows({}, 1, 8).empty());
}

TEST(EvalEngine, LeftTruncationToMaxLength) {
  TokenRequest r{{1, 2, 3, 4}, {0, 1}};
  ScoreRow row = make_row(r, 3);  // (ctx+cont)[-4:][:-1]
  EXPECT_EQ(row.input, (std::vector<int32_t>{3, 4, 0}));
  EXPECT_EQ(row.targets, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(make_row(r, 10).input, (std::vector<int32_t>{1, 2, 3, 4, 0}));
  EXPECT_THROW(make_row({{1}, {1, 2, 3, 4}}, 3), Error);
}

namespace {
// Rows of probabilities over 5 tokens; row r is p(next | r).
std::vector<std::vector<double>> table() {
  return {{0.10, 0.20, 0.30, 0.25, 0.15},
          {0.50, 0.10, 0.10, 0.20, 0.10},
          {0.05, 0.05, 0.10, 0.70, 0.10},
          {0.20, 0.20, 0.20, 0.10, 0.30},
          {0.60, 0.10, 0.10, 0.10, 0.10}};
}
}  // namespace

TEST(EvalEngine, BigramScoresAreSumsOfTableEntries) {
  BigramModel m(table(), 16);
  EngineOptions opt;
  opt.progress = false;
  std::vector<TokenRequest> reqs = {{{1, 2}, {3, 4}}, {{1, 2}, {3}}, {{4}, {0, 1, 2}}, {{0}, {}}};
  for (bool share : {true, false}) {
    opt.share_context = share;
    auto s = run_requests(m, reqs, opt);
    ASSERT_EQ(s.size(), 4u);
    EXPECT_DOUBLE_EQ(s[0].logprob, std::log(0.70) + std::log(0.30));  // p(3|2) p(4|3)
    EXPECT_TRUE(s[0].greedy);  // 3 is the argmax after 2, 4 the argmax after 3
    EXPECT_DOUBLE_EQ(s[1].logprob, std::log(0.70));
    EXPECT_TRUE(s[1].greedy);
    EXPECT_DOUBLE_EQ(s[2].logprob, std::log(0.60) + std::log(0.20) + std::log(0.10));
    EXPECT_FALSE(s[2].greedy);  // after 0 the argmax is 2, not 1
    EXPECT_EQ(s[3].logprob, 0.0);  // empty continuation: nothing scored
    EXPECT_TRUE(s[3].greedy);
  }
}

TEST(EvalEngine, TruncatedRequestScoresTheKeptWindow) {
  BigramModel m(table(), 3);
  EngineOptions opt;
  opt.progress = false;
  EngineStats st;
  auto s = run_requests(m, {{{1, 2, 3, 4}, {0, 1}}}, opt, &st);
  EXPECT_DOUBLE_EQ(s[0].logprob, std::log(0.60) + std::log(0.20));  // p(0|4) p(1|0)
  EXPECT_EQ(st.truncated, 1);
  ASSERT_EQ(m.seen_inputs.size(), 1u);
  EXPECT_EQ(m.seen_inputs[0], (std::vector<int32_t>{3, 4, 0}));
}

TEST(EvalEngine, LongestFirstAndTokenBudget) {
  BigramModel m(table(), 64);
  EngineOptions opt;
  opt.progress = false;
  opt.share_context = false;
  opt.batch_tokens = 8;
  std::vector<TokenRequest> reqs;
  for (int n = 1; n <= 6; ++n) reqs.push_back({std::vector<int32_t>(static_cast<size_t>(n), 1), {2}});
  EngineStats st;
  run_requests(m, reqs, opt, &st);
  // Inputs have lengths 6..1 (ctx + cont - 1). Longest first; budget 8 = rows x longest:
  // [6], [5], [4,3], [2,1]  -> 4 batches.
  ASSERT_EQ(m.seen_inputs.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(m.seen_inputs[i].size(), 6 - i);
  EXPECT_EQ(st.batches, 4);
  EXPECT_EQ(st.padded_tokens, 6 + 5 + 2 * 4 + 2 * 2);
}

TEST(EvalEngine, SharedContextEqualsIndependentScoring) {
  // 30 four-choice questions with long contexts and multi-token choices, plus a truncated one.
  std::vector<TokenRequest> reqs;
  for (int q = 0; q < 30; ++q) {
    std::vector<int32_t> ctx;
    for (int k = 0; k < 20 + q % 7; ++k) ctx.push_back((q * 31 + k * 7) % 50);
    for (int c = 0; c < 4; ++c) {
      std::vector<int32_t> cont;
      for (int k = 0; k <= (q + c) % 4; ++k) cont.push_back((q + 3 * c + 5 * k) % 50);
      reqs.push_back({ctx, cont});
    }
  }
  reqs.push_back({std::vector<int32_t>(70, 3), {4, 5}});
  reqs.push_back({std::vector<int32_t>(70, 3), {6}});
  HistoryModel indep(50, 64), shared(50, 64);
  EngineOptions opt;
  opt.progress = false;
  opt.batch_tokens = 200;
  opt.share_context = false;
  EngineStats si, ss;
  auto a = run_requests(indep, reqs, opt, &si);
  opt.share_context = true;
  auto b = run_requests(shared, reqs, opt, &ss);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].logprob, b[i].logprob) << i;
    EXPECT_EQ(a[i].greedy, b[i].greedy) << i;
  }
  EXPECT_EQ(ss.groups, 30);    // the truncated pair cannot share
  EXPECT_EQ(ss.rows, 2);
  EXPECT_EQ(ss.truncated, 2);
  EXPECT_GT(shared.shared_calls, 0);
  EXPECT_LT(ss.input_tokens * 2, si.input_tokens);  // contexts counted once instead of 4 times
}

TEST(EvalEngine, SingleTokenChoicesCostOneContext) {
  // MMLU-like: 4 single-token continuations of one context need only the context's tokens.
  std::vector<TokenRequest> reqs;
  for (int32_t c = 0; c < 4; ++c) reqs.push_back({{5, 6, 7, 8, 9}, {c}});
  HistoryModel m(20, 32);
  EngineOptions opt;
  opt.progress = false;
  EngineStats st;
  run_requests(m, reqs, opt, &st);
  EXPECT_EQ(st.groups, 1);
  EXPECT_EQ(st.input_tokens, 5);
  EXPECT_EQ(st.padded_tokens, 5);
}

TEST(EvalEngine, DefaultSharedPathExpandsToRows) {
  // A model without its own shared path still gets correct results through score().
  BigramModel m(table(), 16);
  EngineOptions opt;
  opt.progress = false;
  auto s = run_requests(m, {{{1, 2}, {3, 4}}, {{1, 2}, {0}}}, opt);
  EXPECT_DOUBLE_EQ(s[0].logprob, std::log(0.70) + std::log(0.30));
  EXPECT_DOUBLE_EQ(s[1].logprob, std::log(0.05));
  ASSERT_EQ(m.seen_inputs.size(), 2u);
  EXPECT_EQ(m.seen_inputs[0], (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(m.seen_inputs[1], (std::vector<int32_t>{1, 2}));
}

TEST(EvalEngine, SharedGroupsNeverExceedMaxLength) {
  // Context of 2 tokens, three 4-token continuations, max_length 8: packed = 2 + 3 + 3 = 8 fits,
  // the third continuation would make 11 and is scored as its own row.
  std::vector<TokenRequest> reqs = {{{1, 2}, {3, 4, 5, 6}}, {{1, 2}, {7, 8, 9, 10}}, {{1, 2}, {11, 12, 13, 14}}};
  HistoryModel shared(30, 8), indep(30, 8);
  EngineOptions opt;
  opt.progress = false;
  EngineStats st;
  auto a = run_requests(shared, reqs, opt, &st);
  EXPECT_EQ(st.groups, 1);
  EXPECT_EQ(st.rows, 1);
  EXPECT_EQ(st.input_tokens, 8 + 5);
  opt.share_context = false;
  auto b = run_requests(indep, reqs, opt);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].logprob, b[i].logprob) << i;
  // Rolling first windows all share the prefix token: with continuations of max_length tokens
  // every one is scored alone.
  std::vector<TokenRequest> rolling = {{{1}, {3, 4, 5, 6, 7, 8, 9, 10}}, {{1}, {11, 12, 13, 14, 15, 16, 17, 18}}};
  run_requests(shared, rolling, opt, &st);
  opt.share_context = true;
  run_requests(shared, rolling, opt, &st);
  EXPECT_EQ(st.groups, 0);
  EXPECT_EQ(st.rows, 2);
}
