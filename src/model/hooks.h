// Per-layer observation points of the runtime. Profiling (activation statistics, neuron
// importance), splitting, merging (expert outputs) and training are built on these.
//
// Every tensor is flattened over tokens: N = B*T rows in batch-major order (row b*T + t).
// Forward callbacks see the activation; backward callbacks see its gradient (installed
// through autograd tensor hooks, so they fire only when the tensor requires grad).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace mf {

enum class HookPoint {
  ffn_input,         // [N, H]: input to the FFN / MoE block (after the pre-FFN norm)
  ffn_intermediate,  // [n, I]: act(gate(x)) * up(x) (GPT-2: gelu(c_fc(x))); for MoE experts one event per expert
  router_logits,     // [N, E] float32: router logits of an MoE layer
  expert_output,     // [n, H]: an expert's output before weighting (MoE layers; expert >= 0)
  block_output,      // [N, H]: the residual stream after the whole decoder layer
  ffn_preact,        // [n, I]: input of the FFN's activation function: gate(x) (gated FFNs), c_fc(x) + bias (GPT-2)
};
constexpr int kNumHookPoints = 6;
const char* hook_point_name(HookPoint p);

struct HookEvent {
  int layer = 0;
  HookPoint point = HookPoint::ffn_input;
  bool backward = false;  // true: `tensor` is the gradient of the activation
  at::Tensor tensor;
  // MoE: routed expert index; -1 for dense FFNs and layer-wide points; -2 for a shared expert.
  int expert = -1;
  // For expert events: the rows of the flattened batch (int64 [n]) the expert processed.
  at::Tensor tokens;
  // Flattened attention mask (bool [N], true = real token); undefined when there is no padding.
  at::Tensor valid;
  // Forward hooks may set this to a tensor of the same shape/dtype: the model continues with it
  // (ablations, masking neurons). Ignored for backward events.
  at::Tensor replacement;
};

using HookFn = std::function<void(HookEvent&)>;

class Hooks {
 public:
  // layer = -1: every layer. Returns an id for remove().
  int add(HookPoint point, HookFn fn, bool backward = false, int layer = -1);
  void remove(int id);
  void clear();
  bool empty() const { return entries_.empty(); }
  bool wants(HookPoint point, int layer) const;

  // Called by the model: runs forward hooks, attaches backward hooks, returns the tensor to
  // continue with (the replacement if a hook set one).
  at::Tensor fire(HookPoint point, int layer, const at::Tensor& t, const at::Tensor& valid, int expert = -1,
                  const at::Tensor& tokens = {});

 private:
  struct Entry {
    int id;
    HookPoint point;
    int layer;
    bool backward;
    HookFn fn;
  };
  std::vector<Entry> entries_;
  int next_id_ = 1;
};

}  // namespace mf
