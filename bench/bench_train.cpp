// Pretraining throughput of the tiny reference config (hidden 256, FFN 1024, 8 layers, 8 heads,
// vocab 8192, seq 256) through the real trainer (forward, backward, clipping, AdamW), in
// tokens/s and as a fraction of the bf16 GEMM peak measured in the same run on the model's
// training FLOPs (6 x matmul params + attention, train/pretrain.h).
// It needs the Llama runtime (src/model/); until that is part of the tree this file compiles
// to nothing.
#if __has_include("model/model.h")
#include <benchmark/benchmark.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <cstdlib>
#include <memory>

#include "model/config.h"
#include "model/model.h"
#include "train/pretrain.h"
#include "train/pretrain_model.h"
#include "train/trainer.h"
#include "util/fs.h"
#include "util/progress.h"
#include "util/rng.h"

namespace {

mf::json tiny_config() {
  return {{"model_type", "llama"},       {"hidden_size", 256},         {"intermediate_size", 1024},
          {"num_hidden_layers", 8},      {"num_attention_heads", 8},   {"num_key_value_heads", 8},
          {"vocab_size", 8192},          {"max_position_embeddings", 256}, {"rope_theta", 10000.0},
          {"rms_norm_eps", 1e-6},        {"tie_word_embeddings", true}};
}

// bf16 GEMM GFLOP/s on 2048^2, as bench_machine's BM_GemmPeak/bf16, measured here for the ratio.
double bf16_gemm_gflops() {
  const int64_t n = 2048;
  auto a = torch::randn({n, n}).to(at::kBFloat16), b = torch::randn({n, n}).to(at::kBFloat16);
  auto c = torch::mm(a, b);
  auto t0 = std::chrono::steady_clock::now();
  int reps = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < 2.0) {
    torch::mm_out(c, a, b);
    ++reps;
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * n * n * n * reps / s * 1e-9;
}

void BM_PretrainTiny(benchmark::State& state) {
  const bool bf16 = state.range(0) != 0;
  const int64_t seq = 256, batch = 8, steps = 6;
  mf::Progress::set_enabled(false);
  const mf::ModelConfig cfg = mf::parse_model_config(tiny_config(), "bench");
  std::vector<int32_t> stream(static_cast<size_t>(seq * batch * (steps + 2) + 1));
  mf::Rng rng(1);
  for (auto& t : stream) t = static_cast<int32_t>(rng.below(8192));
  mf::PackedSequences data(stream, seq);
  double tokens_per_s = 0.0;
  int64_t matmul_params = 0;
  mf::remove_all("/tmp/moeforge_bench_train");
  for (auto _ : state) {
    std::shared_ptr<mf::Model> model = mf::Model::create(cfg);
    model->init_random(0);
    matmul_params = 0;
    for (const auto& p : model->parameters()) matmul_params += p.numel();  // tied: embedding = lm_head
    mf::TrainerOptions o;
    o.batch_size = batch;
    o.max_steps = steps;
    o.schedule.lr = 1e-3;
    o.bf16 = bf16;
    o.progress = false;
    o.keep_checkpoints = 1;
    o.out_dir = "/tmp/moeforge_bench_train";
    o.resume = false;
    auto loss = [&](const at::Tensor& w) {
      return mf::next_token_loss(model->forward(w.slice(1, 0, seq)), w);
    };
    mf::TrainResult r = mf::train_loop(*model, loss, data, {}, o);
    tokens_per_s = r.tokens_per_s;
    mf::remove_all("/tmp/moeforge_bench_train");
  }
  const double flops = mf::training_flops_per_token(matmul_params, 8, seq, 256);
  const double peak = bf16_gemm_gflops();
  state.counters["tokens/s"] = tokens_per_s;
  state.counters["train_GFLOP/s"] = tokens_per_s * flops * 1e-9;
  state.counters["bf16_peak_GFLOP/s"] = peak;
  state.counters["frac_of_bf16_peak"] = tokens_per_s * flops * 1e-9 / peak;
}
BENCHMARK(BM_PretrainTiny)->ArgName("bf16")->Arg(0)->Arg(1)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

// MoE pretraining throughput as a ratio to dense pretraining of the same active FFN width, both
// through the real trainer with the pretrain recipe's loss terms (MoE: balance + z-loss),
// interleaved dense / MoE / dense / MoE in one run. Shapes of the bundled models (hidden 256,
// 6 layers, vocab 8192): arg 0 = Mixtral 8 x 1024 top-2 vs dense FFN 2048; arg 1 = Qwen2-MoE
// 32 x 64 top-4 + shared 1024 vs dense FFN 1280. bf16 autocast, seq 256, batch 8, 4 steps.
double pretrain_tokens_per_s(const mf::json& config) {
  const int64_t seq = 256, batch = 8, steps = 4;
  const mf::ModelConfig cfg = mf::parse_model_config(config, "bench");
  std::vector<int32_t> stream(static_cast<size_t>(seq * batch * (steps + 2) + 1));
  mf::Rng rng(1);
  for (auto& t : stream) t = static_cast<int32_t>(rng.below(8192));
  mf::PackedSequences data(stream, seq);
  std::shared_ptr<mf::Model> model = mf::Model::create(cfg);
  model->init_random(0);
  mf::PretrainModel pm = mf::pretrain_model_of(model);
  mf::TrainerOptions o;
  o.batch_size = batch;
  o.max_steps = steps;
  o.schedule.lr = 1e-3;
  o.bf16 = true;
  o.progress = false;
  o.keep_checkpoints = 1;
  o.out_dir = "/tmp/moeforge_bench_train_moe";
  o.resume = false;
  o.loss_terms = pm.loss_terms;
  mf::remove_all(o.out_dir);
  auto loss = [&](const at::Tensor& w) { return mf::next_token_loss(pm.logits(w.slice(1, 0, seq)), w); };
  // MOEFORGE_PROFILE_TRACE=PREFIX: chrome traces PREFIX.moe.json and PREFIX.dense.json of the
  // runs (libtorch's legacy profiler), to see which ops a training step spends its time in.
  const char* trace = std::getenv("MOEFORGE_PROFILE_TRACE");
  std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
  if (trace)
    profile = std::make_unique<torch::autograd::profiler::RecordProfile>(std::string(trace) +
                                                                         (cfg.is_moe() ? ".moe.json" : ".dense.json"));
  const double r = mf::train_loop(*model, loss, data, {}, o).tokens_per_s;
  profile.reset();
  mf::remove_all(o.out_dir);
  return r;
}

void BM_PretrainMoeVsDense(benchmark::State& state) {
  mf::Progress::set_enabled(false);
  mf::json base = tiny_config();
  base["num_hidden_layers"] = 6;
  mf::json dense = base, moe = base;
  if (state.range(0) == 0) {
    dense["intermediate_size"] = 2048;
    moe["model_type"] = "mixtral";
    moe["num_local_experts"] = 8;
    moe["num_experts_per_tok"] = 2;
    moe["router_aux_loss_coef"] = 0.01;
  } else {
    dense["intermediate_size"] = 1280;
    moe["model_type"] = "qwen2_moe";
    moe["num_experts"] = 32;
    moe["num_experts_per_tok"] = 4;
    moe["moe_intermediate_size"] = 64;
    moe["shared_expert_intermediate_size"] = 1024;
    moe["norm_topk_prob"] = true;
    moe["router_aux_loss_coef"] = 0.01;
  }
  double d = 0, m = 0;
  for (auto _ : state)
    for (int rep = 0; rep < 2; ++rep) {
      d += pretrain_tokens_per_s(dense) / 2;
      m += pretrain_tokens_per_s(moe) / 2;
    }
  state.counters["dense_tokens/s"] = d;
  state.counters["moe_tokens/s"] = m;
  state.counters["moe_over_dense"] = m / d;
}
BENCHMARK(BM_PretrainMoeVsDense)->ArgName("qwen")->Arg(0)->Arg(1)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace

#endif  // __has_include("model/model.h")
