// Evaluator speed (issue 6): requests per second with shared-context scoring vs scoring every choice
// as its own row, same model, same requests, same run. Task: the ARC-Easy documents of
// tests/data/benchmarks (4-choice questions, 3- and 5-choice ones included), tokenized word-wise.
// Model: the real runtime and scorer (mf::Model + TransformerScorer, what `moeforge eval` runs) on a
// random Llama with the reference-model proportions of design.md (hidden 256, FFN 1024, 4 layers,
// 8 heads, vocabulary 8192), fp32. The shared path packs a question's context and all its choices
// into one row with a tree-shaped attention mask (Model::forward_hidden_packed).
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "../tests/eval_fakes.h"
#include "eval/engine.h"
#include "eval/model_scorer.h"
#include "eval/registry.h"
#include "eval/requests.h"
#include "model/model.h"

namespace {

using namespace mf::eval;

constexpr int64_t kVocab = 8192;

// The word-wise test tokenizer's ids folded into the model's vocabulary.
class FoldedVocab : public LoglikelihoodModel {
 public:
  FoldedVocab() : scorer_(make_model(), 512) {}
  int64_t max_length() const override { return scorer_.max_length(); }
  std::vector<TokenScore> score(const std::vector<ScoreRow>& rows) override {
    std::vector<ScoreRow> r = rows;
    for (auto& row : r) {
      fold(row.input);
      fold(row.targets);
    }
    return scorer_.score(r);
  }
  std::vector<std::vector<TokenScore>> score_shared(const std::vector<SharedGroup>& groups) override {
    std::vector<SharedGroup> g = groups;
    for (auto& grp : g) {
      fold(grp.prefix);
      for (auto& c : grp.continuations) fold(c);
    }
    return scorer_.score_shared(g);
  }

 private:
  static std::shared_ptr<mf::Model> make_model() {
    mf::json j = {{"model_type", "llama"},     {"vocab_size", kVocab},   {"hidden_size", 256},
                  {"intermediate_size", 1024}, {"num_hidden_layers", 4}, {"num_attention_heads", 8},
                  {"max_position_embeddings", 512}};
    auto m = mf::Model::create(mf::parse_model_config(j, "bench"));
    m->init_random(1234, 0.05);
    m->eval();
    return m;
  }
  template <typename V>
  static void fold(V& ids) {
    for (auto& t : ids) t = static_cast<typename V::value_type>(t % kVocab);
  }
  TransformerScorer scorer_;
};

std::vector<TokenRequest> arc_requests() {
  static const std::string data =
      std::string(__FILE__).substr(0, std::string(__FILE__).rfind("/bench/")) + "/tests/data/benchmarks";
  TaskRegistry reg = TaskRegistry::builtin();
  const TaskDef& t = *reg.find_task("arc_easy");
  auto insts = build_instances(t, load_task_docs(t, resolve_data_file(t, data)));
  static mf::eval::testing::PieceEncoder enc;
  RequestTokenizer tok(enc, BosPolicy::Off);
  std::vector<TokenRequest> out;
  for (const auto& i : insts)
    for (const auto& r : i.requests) out.push_back(tok.encode_request(r));
  return out;
}

void BM_EvalArcScoring(benchmark::State& state) {
  const bool shared = state.range(0) != 0;
  static FoldedVocab model;
  static const std::vector<TokenRequest> reqs = arc_requests();
  EngineOptions opt;
  opt.progress = false;
  opt.share_context = shared;
  opt.batch_tokens = state.range(1);
  EngineStats st;
  if (shared) {
    // Same numbers both ways (fp32 noise only) before timing anything.
    EngineOptions indep = opt;
    indep.share_context = false;
    auto a = run_requests(model, reqs, indep);
    auto b = run_requests(model, reqs, opt);
    for (size_t i = 0; i < a.size(); ++i)
      if (std::fabs(a[i].logprob - b[i].logprob) > 1e-3 * (1.0 + std::fabs(a[i].logprob))) {
        state.SkipWithError("shared-context scores differ from independent scores");
        return;
      }
  }
  for (auto _ : state) {
    auto s = run_requests(model, reqs, opt, &st);
    benchmark::DoNotOptimize(s.data());
  }
  state.counters["requests/s"] =
      benchmark::Counter(static_cast<double>(reqs.size()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["model_tokens"] = static_cast<double>(st.input_tokens);
  state.counters["padded_tokens"] = static_cast<double>(st.padded_tokens);
  state.counters["batches"] = static_cast<double>(st.batches);
  state.SetLabel(shared ? "shared context" : "independent rows");
}
// Args: {shared (0/1), batch token budget}.
BENCHMARK(BM_EvalArcScoring)->Args({0, 4096})->Args({1, 4096})->Args({0, 1024})->Args({1, 1024})->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(2.0);

}  // namespace
