// LoRA-MoE training-step benchmarks (issue 17) on a Llama-shaped model: hidden 512, SwiGLU FFN
// 1408, 4 layers, 8 heads (MHA), vocab 8192, untied lm_head, fp32 on the CPU, training mode, one
// batch of 8 sequences x 128 tokens of seeded pseudo-random ids. The base is frozen, so a plain
// LoRA step is ~36 GFLOP forward + ~36 GFLOP of input gradients (order of a second on 2 cores).
// One step = zero grads, forward, next-token cross entropy + the model's aux losses
// (Model::aux_loss), backward, torch::optim::AdamW (lr 1e-4) on the trainable tensors,
// Model::after_optimizer_step. Every model starts from the same base weights (init_random(0)); the
// ids, the graph router's init and the dropout masks come from torch's global generator, seeded
// here, so a given command line is reproducible.
//   BM_LoraMoeStep: steps of (a) plain LoRA r 8 / alpha 16 / dropout 0.05 on gate_proj, up_proj,
//     down_proj (the expert targets), (b) MixLoRA (lora_moe_defaults("mixlora"): 8 experts, top-2,
//     r 8, Mixtral balance loss), (c) GMoE (lora_moe_defaults("gmoe"), its own defaults: graph
//     router, r 2, Poisson + Normal losses), interleaved a, b, c per iteration. Counters: median
//     step ms of each, the ratios to the plain-LoRA step (acceptance: mixlora_over_lora <= 1.6),
//     and the trainable parameter counts.
//   BM_GmoeRouterShare: GMoE's step as above, interleaved with forward + backward of its L graph
//     routers alone (GraphRouterImpl::route in training mode, as the MoE layer calls it; loss
//     sum(probs * R1) + sum(gates * R2), R fixed random) on the FFN inputs captured at
//     HookPoint::ffn_input from one forward of the same batch. Every router input requires grad
//     (in the step, layer 0's does not: the share is an upper bound). Counters: median router_ms,
//     gmoe_step_ms, router_share = router_ms / gmoe_step_ms (acceptance: <= 0.25).
//   ./build/moeforge_bench --benchmark_filter='LoraMoeStep|GmoeRouterShare'
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/hooks.h"
#include "model/lora_moe_ffn.h"
#include "model/model.h"
#include "moe/routers/graph_router.h"
#include "train/lora.h"
#include "train/trainer.h"

namespace {

constexpr int64_t kBatch = 8, kSeq = 128, kVocab = 8192, kLayers = 4;

mf::ModelConfig llama_config() {
  const mf::json j = {{"model_type", "llama"},        {"hidden_size", 512},          {"intermediate_size", 1408},
                      {"num_hidden_layers", kLayers}, {"num_attention_heads", 8},    {"num_key_value_heads", 8},
                      {"vocab_size", kVocab},         {"max_position_embeddings", 256}, {"rope_theta", 10000.0},
                      {"rms_norm_eps", 1e-6},         {"tie_word_embeddings", false}};
  return mf::parse_model_config(j, "bench");
}

// The base model, identical for every variant, with every parameter frozen.
std::shared_ptr<mf::Model> frozen_base() {
  std::shared_ptr<mf::Model> m = mf::Model::create(llama_config());
  m->init_random(0);
  for (auto& p : m->parameters()) p.set_requires_grad(false);
  m->train();
  return m;
}

// Token windows [B, T + 1]: inputs [:, :T], next-token targets [:, 1:].
at::Tensor batch_windows() {
  torch::manual_seed(1);
  return at::randint(0, kVocab, {kBatch, kSeq + 1}, at::kLong);
}

struct Trainee {
  std::shared_ptr<mf::Model> model;
  std::shared_ptr<mf::LoraAdapters> lora;  // plain LoRA only
  std::vector<at::Tensor> params;          // trainable
  std::unique_ptr<torch::optim::AdamW> opt;

  int64_t trainable() const {
    int64_t n = 0;
    for (const auto& p : params) n += p.numel();
    return n;
  }
  void step(const at::Tensor& windows) {
    opt->zero_grad();
    const at::Tensor logits = model->forward(windows.slice(1, 0, kSeq));
    const at::Tensor loss = mf::next_token_loss(logits, windows) + model->aux_loss();
    loss.backward();
    opt->step();
    model->after_optimizer_step();
  }
};

Trainee with_optimizer(std::shared_ptr<mf::Model> model, std::shared_ptr<mf::LoraAdapters> lora) {
  Trainee t{std::move(model), std::move(lora), {}, nullptr};
  std::set<const void*> seen;
  auto add = [&](const at::Tensor& p) {
    if (p.requires_grad() && seen.insert(p.unsafeGetTensorImpl()).second) t.params.push_back(p);
  };
  for (const auto& p : t.model->parameters()) add(p);
  if (t.lora)
    for (const auto& p : t.lora->parameters()) add(p);
  t.opt = std::make_unique<torch::optim::AdamW>(t.params, torch::optim::AdamWOptions(1e-4));
  return t;
}

// (a) Plain LoRA on the expert targets.
Trainee plain_lora() {
  std::shared_ptr<mf::Model> m = frozen_base();
  mf::LoraOptions lo;
  lo.r = 8;
  lo.alpha = 16.0;
  lo.dropout = 0.05;
  lo.targets = {"gate_proj", "up_proj", "down_proj"};
  lo.seed = 1;
  auto lora = std::make_shared<mf::LoraAdapters>(*m, lo);
  lora->train();
  return with_optimizer(std::move(m), std::move(lora));
}

// (b), (c) A LoRA-MoE conversion with the routing's defaults.
Trainee lora_moe(const std::string& routing) {
  std::shared_ptr<mf::Model> m = frozen_base();
  torch::manual_seed(2);  // the graph router's fresh init draws from the global generator
  mf::convert_to_lora_moe(*m, mf::lora_moe_defaults(routing), 1);
  m->train();
  return with_optimizer(std::move(m), nullptr);
}

template <typename F>
double seconds(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void BM_LoraMoeStep(benchmark::State& state) {
  Trainee lora = plain_lora(), mix = lora_moe("mixlora"), gmoe = lora_moe("gmoe");
  const at::Tensor windows = batch_windows();
  torch::manual_seed(3);  // dropout masks
  Trainee* models[3] = {&lora, &mix, &gmoe};
  std::vector<double> t[3];
  for (auto _ : state)
    for (int i = 0; i < 3; ++i) t[i].push_back(seconds([&] { models[i]->step(windows); }));
  const double base = median(t[0]);
  state.counters["lora_ms"] = base * 1e3;
  state.counters["mixlora_ms"] = median(t[1]) * 1e3;
  state.counters["gmoe_ms"] = median(t[2]) * 1e3;
  state.counters["mixlora_over_lora"] = median(t[1]) / base;
  state.counters["gmoe_over_lora"] = median(t[2]) / base;
  state.counters["lora_params"] = static_cast<double>(lora.trainable());
  state.counters["mixlora_params"] = static_cast<double>(mix.trainable());
  state.counters["gmoe_params"] = static_cast<double>(gmoe.trainable());
}
BENCHMARK(BM_LoraMoeStep)->Iterations(5)->Unit(benchmark::kSecond)->UseRealTime();

void BM_GmoeRouterShare(benchmark::State& state) {
  Trainee gmoe = lora_moe("gmoe");
  const at::Tensor windows = batch_windows();
  torch::manual_seed(3);
  // Every layer's FFN input [N, H] for this batch, from one training-mode forward.
  std::vector<at::Tensor> xs(static_cast<size_t>(kLayers));
  {
    at::NoGradGuard no_grad;
    const int id = gmoe.model->hooks().add(mf::HookPoint::ffn_input, [&](mf::HookEvent& e) {
      xs[static_cast<size_t>(e.layer)] = e.tensor.detach().clone();
    });
    gmoe.model->forward(windows.slice(1, 0, kSeq));
    gmoe.model->hooks().remove(id);
  }
  std::vector<std::shared_ptr<mf::moe::GraphRouterImpl>> routers;
  std::vector<at::Tensor> r_probs, r_gates;  // fixed cotangents of probs [N, E] and gates [N, K]
  for (int64_t l = 0; l < kLayers; ++l) {
    auto block = std::dynamic_pointer_cast<mf::LoraMoeFFN>(gmoe.model->ffn(l));
    if (!block || !block->graph_router() || !xs[static_cast<size_t>(l)].defined()) {
      state.SkipWithError("gmoe: layer without a graph router or without a captured FFN input");
      return;
    }
    routers.push_back(block->graph_router());
    at::NoGradGuard no_grad;
    const mf::moe::RouterOutput out = routers.back()->route(xs[static_cast<size_t>(l)], true);
    r_probs.push_back(at::randn_like(out.probs));
    r_gates.push_back(out.gates.defined() ? at::randn_like(out.gates) : at::Tensor());
  }
  auto routers_step = [&] {
    at::Tensor loss = at::zeros({}, at::kFloat);
    for (size_t l = 0; l < routers.size(); ++l) {
      const at::Tensor x = xs[l].detach().requires_grad_();
      const mf::moe::RouterOutput out = routers[l]->route(x, true);
      loss = loss + (out.probs * r_probs[l]).sum();
      if (r_gates[l].defined()) loss = loss + (out.gates * r_gates[l]).sum();
    }
    loss.backward();
  };
  std::vector<double> step_t, router_t;
  for (auto _ : state) {
    step_t.push_back(seconds([&] { gmoe.step(windows); }));
    router_t.push_back(seconds(routers_step));
  }
  // The routers' gradients of the last router-only pass are cleared by the next step's zero_grad.
  const double step = median(step_t), router = median(router_t);
  state.counters["gmoe_step_ms"] = step * 1e3;
  state.counters["router_ms"] = router * 1e3;
  state.counters["router_share"] = router / step;
}
BENCHMARK(BM_GmoeRouterShare)->Iterations(5)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace
