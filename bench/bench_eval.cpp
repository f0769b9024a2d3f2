// Evaluator speed (issue 6): requests per second with shared-context scoring vs scoring every choice
// as its own row, same model, same requests, same run. Task: the ARC-Easy documents of
// tests/data/benchmarks (4-choice questions, 3- and 5-choice ones included), tokenized word-wise.
// Model: a fixed random causal transformer in libtorch with the reference-model proportions of
// design.md (hidden 256, FFN 1024, 4 layers, 8 heads, vocabulary 8192), fp32, whose shared-context
// path packs a question's context and all its choices into one row with a tree-shaped attention mask.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "../tests/eval_fakes.h"
#include "eval/engine.h"
#include "eval/registry.h"
#include "eval/requests.h"
#include "util/compat.h"

namespace {

using namespace mf::eval;

class TinyTransformer : public LoglikelihoodModel {
 public:
  TinyTransformer() {
    torch::manual_seed(1234);
    emb_ = torch::randn({V, D}) * 0.05;
    pos_ = torch::randn({kMax, D}) * 0.02;
    for (int l = 0; l < L; ++l) {
      wqkv_.push_back(torch::randn({D, 3 * D}) / std::sqrt(double(D)));
      wo_.push_back(torch::randn({D, D}) / std::sqrt(double(D)));
      w1_.push_back(torch::randn({D, F}) / std::sqrt(double(D)));
      w2_.push_back(torch::randn({F, D}) / std::sqrt(double(F)));
    }
  }
  int64_t max_length() const override { return kMax; }

  std::vector<TokenScore> score(const std::vector<ScoreRow>& rows) override {
    torch::NoGradGuard ng;
    const int64_t B = static_cast<int64_t>(rows.size());
    int64_t T = 0;
    for (const auto& r : rows) T = std::max<int64_t>(T, static_cast<int64_t>(r.input.size()));
    auto ids = torch::zeros({B, T}, torch::kLong);
    auto acc = ids.accessor<int64_t, 2>();
    for (int64_t b = 0; b < B; ++b)
      for (size_t t = 0; t < rows[b].input.size(); ++t) acc[b][static_cast<int64_t>(t)] = rows[b].input[t] % V;
    auto positions = torch::arange(T).unsqueeze(0).expand({B, T});
    auto h = forward(ids, positions, at::Tensor(), /*causal=*/true);
    std::vector<int64_t> rb, rt, tg;
    std::vector<size_t> owner;
    for (int64_t b = 0; b < B; ++b) {
      const auto& r = rows[b];
      const size_t start = r.input.size() - r.targets.size();
      for (size_t k = 0; k < r.targets.size(); ++k) {
        rb.push_back(b);
        rt.push_back(static_cast<int64_t>(start + k));
        tg.push_back(r.targets[k] % V);
        owner.push_back(static_cast<size_t>(b));
      }
    }
    std::vector<TokenScore> out(rows.size());
    collect(h.index({torch::tensor(rb), torch::tensor(rt)}), tg, owner, out);
    return out;
  }

  // Shared contexts as one packed "tree" row per group: prefix, then every continuation's input tokens
  // (c[:-1]) one after the other, each attending to the prefix and to its own earlier tokens only, with
  // positions continuing after the prefix. One forward pass, P + sum(|c| - 1) tokens per group.
  std::vector<std::vector<TokenScore>> score_shared(const std::vector<SharedGroup>& groups) override {
    torch::NoGradGuard ng;
    const int64_t G = static_cast<int64_t>(groups.size());
    std::vector<int64_t> len(static_cast<size_t>(G));
    int64_t T = 0;
    for (int64_t g = 0; g < G; ++g) {
      int64_t n = static_cast<int64_t>(groups[g].prefix.size());
      for (const auto& c : groups[g].continuations) n += static_cast<int64_t>(c.size()) - 1;
      len[g] = n;
      T = std::max(T, n);
    }
    auto ids = torch::zeros({G, T}, torch::kLong);
    auto pos = torch::zeros({G, T}, torch::kLong);
    auto mask = torch::full({G, 1, T, T}, -INFINITY);
    auto ia = ids.accessor<int64_t, 2>();
    auto pa = pos.accessor<int64_t, 2>();
    auto ma = mask.accessor<float, 4>();
    std::vector<int64_t> rb, rt, tg;
    std::vector<size_t> owner;
    std::vector<std::vector<TokenScore>> out(groups.size());
    size_t flat_index = 0;
    for (int64_t g = 0; g < G; ++g) {
      const auto& pre = groups[g].prefix;
      const int64_t P = static_cast<int64_t>(pre.size());
      for (int64_t i = 0; i < P; ++i) {
        ia[g][i] = pre[static_cast<size_t>(i)] % V;
        pa[g][i] = i;
        for (int64_t k = 0; k <= i; ++k) ma[g][0][i][k] = 0.f;
      }
      for (int64_t i = P; i < T; ++i) ma[g][0][i][i] = 0.f;  // padding rows: attend to themselves
      int64_t at = P;
      out[g].resize(groups[g].continuations.size());
      for (const auto& c : groups[g].continuations) {
        const int64_t n = static_cast<int64_t>(c.size()) - 1;
        for (int64_t j = 0; j < n; ++j) {
          ia[g][at + j] = c[static_cast<size_t>(j)] % V;
          pa[g][at + j] = std::min<int64_t>(P + j, kMax - 1);
          for (int64_t k = 0; k < P; ++k) ma[g][0][at + j][k] = 0.f;
          for (int64_t k = 0; k <= j; ++k) ma[g][0][at + j][at + k] = 0.f;
        }
        // Target k is predicted at the prefix's last position (k = 0) or at the continuation's token k-1.
        for (size_t k = 0; k < c.size(); ++k) {
          rb.push_back(g);
          rt.push_back(k == 0 ? P - 1 : at + static_cast<int64_t>(k) - 1);
          tg.push_back(c[k] % V);
          owner.push_back(flat_index);
        }
        ++flat_index;
        at += n;
      }
    }
    auto h = forward(ids, pos, mask, false);
    std::vector<TokenScore> flat(flat_index);
    collect(h.index({torch::tensor(rb), torch::tensor(rt)}), tg, owner, flat);
    size_t r = 0;
    for (auto& o : out)
      for (auto& sc : o) sc = flat[r++];
    return out;
  }

 private:
  static constexpr int64_t V = 8192, D = 256, F = 1024, L = 4, H = 8, kMax = 512;

  // Sums log-probabilities of `targets` at the hidden rows `h` into out[owner[i]].
  void collect(const at::Tensor& h, const std::vector<int64_t>& targets, const std::vector<size_t>& owner,
               std::vector<TokenScore>& out) {
    auto logp = torch::log_softmax(torch::mm(at::layer_norm(h, {D}), emb_.t()), -1);
    auto t = torch::tensor(targets);
    auto lp = logp.gather(1, t.unsqueeze(1)).squeeze(1);
    auto greedy = logp.argmax(1).eq(t);
    auto lpa = lp.accessor<float, 1>();
    auto ga = greedy.accessor<bool, 1>();
    for (size_t i = 0; i < owner.size(); ++i) {
      out[owner[i]].logprob += lpa[static_cast<int64_t>(i)];
      out[owner[i]].greedy = out[owner[i]].greedy && ga[static_cast<int64_t>(i)];
    }
  }

  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& mask, bool causal) {
    const int64_t B = ids.size(0), T = ids.size(1), dh = D / H;
    auto x = emb_.index_select(0, ids.reshape(-1)).view({B, T, D}) +
             pos_.index_select(0, positions.reshape(-1)).view({B, T, D});
    for (int l = 0; l < L; ++l) {
      auto qkv = torch::matmul(at::layer_norm(x, {D}), wqkv_[l]).view({B, T, 3, H, dh}).permute({2, 0, 3, 1, 4});
      auto a = mf::sdpa(qkv[0], qkv[1], qkv[2], mask, causal).permute({0, 2, 1, 3}).reshape({B, T, D});
      x = x + torch::matmul(a, wo_[l]);
      x = x + torch::matmul(torch::gelu(torch::matmul(at::layer_norm(x, {D}), w1_[l])), w2_[l]);
    }
    return x;
  }

  at::Tensor emb_, pos_;
  std::vector<at::Tensor> wqkv_, wo_, w1_, w2_;
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
  static TinyTransformer model;
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
