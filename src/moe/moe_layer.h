// The MoE layer shared by every MoE feature: router -> routing plan (counting sort) ->
// gather -> per-expert GEMMs -> gate-weighted combine (+ optional sigmoid-gated shared
// expert). Three execution paths with identical results:
//   * autograd (GradMode on): generic per-expert ops + the custom gather/combine functions;
//   * inference, small batch (T <= small_batch_tokens, bf16/fp32 weights): one fused
//     GEMV-style pass that reads each selected expert's weights once (decode);
//   * inference, large batch: gather, out-variant GEMMs per expert into one buffer, fused
//     activation, fp32 combine.
// Weights keep their dtype (bf16 on CPU), routing is fp32, combine accumulates in fp32.
#pragma once
#include <torch/torch.h>

#include "moe/expert_bank.h"
#include "moe/routers/router.h"
#include "moe/routing_plan.h"
#include "moe/telemetry.h"

namespace mf::moe {

struct MoELayerOptions {
  CapacityConfig capacity;          // default: dropless
  int64_t small_batch_tokens = 16;  // fused decode path up to this many tokens (inference only)
  // Large-batch inference: run whole experts per thread (single-threaded GEMMs) when there are
  // at least two active experts per thread; otherwise each expert's GEMMs use all threads.
  // (Thread scheduling inside one process; expert parallelism across processes is src/dist.)
  bool whole_experts_per_thread = true;
};

struct MoEOutput {
  at::Tensor y;             // same shape and dtype as x
  RouterOutput route;       // logits / probs / idx / gates ([T, ...] with T = x.numel() / d)
  RoutingPlan plan;
  at::Tensor shared_gate;   // [T, 1] sigmoid gate of the shared expert (undefined without one)
};

// Expert parallelism (src/dist/expert_parallel.h): the layer keeps only this process's experts and
// hands the routed rows to `run`, which sends them to the processes that own their experts and
// returns every row's expert output. rows [N, d] (the experts' dtype) are in plan order, grouped
// by global expert id; the result is [N, d] in the same order, autograd-capable.
using RemoteExperts = std::function<at::Tensor(const at::Tensor& rows, const RoutingPlan& plan)>;

// Observation points of one forward (the runtime's hooks, model/hooks.h): the router logits,
// and each expert's hidden activation and output (ExpertCallbacks, moe/expert_bank.h). Each
// callback returns the tensor the layer continues with: its argument, or a replacement of the
// same shape. With expert_hidden or expert_output set, the layer runs its generic per-expert
// path (autograd-capable).
struct MoECallbacks : ExpertCallbacks {
  std::function<at::Tensor(const at::Tensor& logits)> router_logits;  // [T, E] fp32
};

class MoELayerImpl : public torch::nn::Module {
 public:
  MoELayerImpl(ExpertBank experts, Router router, MoELayerOptions opt = {});
  // An expert-parallel layer: `local` holds this process's experts, `run` computes the routed rows
  // (see RemoteExperts), `expert_params` are the parameter counts of all the router's experts.
  MoELayerImpl(ExpertBank local, Router router, RemoteExperts run, std::vector<int64_t> expert_params,
               MoELayerOptions opt = {});

  // Qwen2-MoE shared expert: bank with one expert, gate_weight [1, d] (undefined = ungated).
  // gate_weight is copied differentiably (gradients flow back to it when it requires grad).
  void set_shared_expert(ExpertBank shared, const at::Tensor& gate_weight);

  // x [..., d] -> y [..., d].
  at::Tensor forward(const at::Tensor& x) { return forward_full(x).y; }
  MoEOutput forward_full(const at::Tensor& x, const MoECallbacks* callbacks = nullptr);

  // Telemetry of one forward (mask [T] optional).
  MoETelemetry telemetry(const MoEOutput& out, const at::Tensor& mask = {}) const;

  ExpertBankImpl& experts() { return *experts_; }
  const ExpertBankImpl& experts() const { return *experts_; }
  RouterImpl& router() { return *router_; }
  const RouterImpl& router() const { return *router_; }
  bool has_shared_expert() const { return static_cast<bool>(shared_); }
  MoELayerOptions& options() { return opt_; }
  int64_t dim() const { return experts_->dim(); }
  // All experts of the layer (the router's), also when only some live in this process.
  int64_t num_experts() const { return router_->num_experts(); }

  // Expert parallelism: `local` (this process's experts) replaces the bank and `run` computes the
  // routed rows of every forward (the router keeps all experts). Observers of single experts
  // (MoECallbacks::per_expert) are refused in this mode.
  void distribute_experts(ExpertBank local, RemoteExperts run);
  bool experts_distributed() const { return static_cast<bool>(remote_); }

  // Converts the expert weights (and the shared expert) to `dtype`; the router stays fp32.
  void to_dtype(at::ScalarType dtype);

 private:
  at::Tensor run_autograd(const at::Tensor& x, const MoEOutput& o, const MoECallbacks* cb);
  at::Tensor run_remote(const at::Tensor& x, const MoEOutput& o);
  at::Tensor run_grouped(const at::Tensor& x, const MoEOutput& o);
  at::Tensor run_fused(const at::Tensor& x, const MoEOutput& o, bool with_shared, const at::Tensor& shared_gate);

  ExpertBank experts_{nullptr};
  Router router_;
  ExpertBank shared_{nullptr};
  at::Tensor shared_gate_w_;
  MoELayerOptions opt_;
  RemoteExperts remote_;
  std::vector<int64_t> expert_params_;  // of all experts, kept when they are distributed
};
TORCH_MODULE(MoELayer);

}  // namespace mf::moe
