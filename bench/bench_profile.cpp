// Profiling throughput (issue 9 item 1): tokens/s of the profiling pass (forward + ONE backward
// per batch with per-sample importance, activation statistics, no weight gradients) against a
// plain training forward + backward (weight gradients on, the same per-sample mean CE loss) of
// the same model on the same batches, measured interleaved in the same run. Also reported: a
// forward + backward with activation gradients only (what the profiler's backward costs by itself).
// Model: the reference proportions of design.md (hidden 256, FFN 1024, 4 layers, 8 heads,
// vocab 8192), documents of 256 random tokens, 8 per batch.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <chrono>

#include "model/config.h"
#include "model/model.h"
#include "profile/calibration_data.h"
#include "profile/profiler.h"
#include "util/rng.h"

namespace {

mf::json bench_config() {
  return {{"model_type", "llama"},   {"hidden_size", 256},       {"intermediate_size", 1024},
          {"num_hidden_layers", 4},  {"num_attention_heads", 8}, {"num_key_value_heads", 8},
          {"vocab_size", 8192},      {"max_position_embeddings", 512}, {"rope_theta", 10000.0},
          {"rms_norm_eps", 1e-6},    {"tie_word_embeddings", true}};
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void BM_ProfileVsForwardBackward(benchmark::State& state) {
  const bool bf16 = state.range(0) != 0;
  const bool coact = state.range(1) != 0;
  const int64_t seq = 256, per_batch = 8, batches = 3, rounds = 3;
  auto model = mf::Model::create(mf::parse_model_config(bench_config(), "bench"));
  model->init_random(0);
  if (bf16) model->to(at::kBFloat16);
  std::vector<mf::Sample> samples;
  mf::Rng rng(1);
  for (int64_t i = 0; i < per_batch * batches; ++i) {
    mf::Sample s;
    for (int64_t t = 0; t < seq; ++t) s.ids.push_back(static_cast<int64_t>(rng.below(8192)));
    s.index = i;
    s.domain = static_cast<int>(i % 4);
    samples.push_back(std::move(s));
  }
  std::vector<std::vector<int64_t>> groups;
  for (int64_t b = 0; b < batches; ++b) {
    groups.emplace_back();
    for (int64_t i = 0; i < per_batch; ++i) groups.back().push_back(b * per_batch + i);
  }
  const double tokens = static_cast<double>(seq * per_batch * batches);
  std::vector<int> layers = {0, 1, 2, 3};
  double t_train = 0, t_act = 0, t_prof = 0;
  for (auto _ : state) {
    t_train = t_act = t_prof = 0;
    for (int64_t r = 0; r < rounds; ++r) {
      // Training forward + backward: weight gradients on.
      for (auto& p : model->parameters()) p.set_requires_grad(true);
      double t0 = now_s();
      for (const auto& g : groups) {
        mf::calibration_loss(*model, mf::pad_batch(samples, g)).backward();
        for (auto& p : model->parameters()) p.mutable_grad() = at::Tensor();
      }
      t_train += now_s() - t0;
      // Activation-only forward + backward (gradient from the first layer's FFN input up).
      for (auto& p : model->parameters()) p.set_requires_grad(false);
      t0 = now_s();
      {
        // The graph starts at layer 0's FFN input, as in the profiler.
        int id = model->hooks().add(mf::HookPoint::ffn_input, [](mf::HookEvent& ev) {
          ev.replacement = ev.tensor.detach().requires_grad_(true);
        }, false, 0);
        for (const auto& g : groups) mf::calibration_loss(*model, mf::pad_batch(samples, g)).backward();
        model->hooks().remove(id);
      }
      t_act += now_s() - t0;
      // The profiling pass.
      t0 = now_s();
      {
        mf::Profiler prof(*model, layers, 4, coact);
        for (const auto& g : groups) prof.run(samples, g);
        benchmark::DoNotOptimize(prof.results());
      }
      t_prof += now_s() - t0;
    }
  }
  const double n = tokens * rounds;
  state.counters["profile_tok/s"] = n / t_prof;
  state.counters["train_fwd_bwd_tok/s"] = n / t_train;
  state.counters["act_fwd_bwd_tok/s"] = n / t_act;
  state.counters["ratio_vs_train"] = t_train / t_prof;
  state.counters["ratio_vs_act_only"] = t_act / t_prof;
}

}  // namespace

// args: bf16 (0/1), co-activation (0/1)
BENCHMARK(BM_ProfileVsForwardBackward)
    ->Args({0, 0})
    ->Args({1, 0})
    ->Args({0, 1})
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();
