// Plain configuration types shared by the MoE layer, its routers and its routing plan.
// No torch here: the CLI and the checkpoint writer read and write these as strings.
#pragma once
#include <cstdint>
#include <string>

namespace mf::moe {

// Expert nonlinearity. `gated` experts (SwiGLU, GeGLU) compute act(G x) * (U x).
enum class Act { SiLU, GELU, GELUTanh, ReLU };

// Router score function applied to the logits.
enum class ScoreFn { Softmax, Sigmoid };

// How the set of experts of a token is chosen from its scores.
//   TopK:    the k highest scores (ties -> lowest expert index).
//   TopP:    scores sorted descending, keep the shortest prefix whose mass reaches p (the
//            element that crosses p is kept) — MixLoRA-dynamic, HEMoE gate_top_p.
//   DynKMax: every expert with score >= tau * max score — HEMoE gate_dynk_max.
enum class Selection { TopK, TopP, DynKMax };

// Combine weight of a selected expert.
//   Prob:   its score (Switch: max prob; Qwen2-MoE with norm_topk_prob=false; OLMoE).
//   Renorm: its score divided by the sum over the selected experts (Mixtral, Qwen3, Tutel k>1).
//   UnitST: exactly 1 in the forward pass, gradient of the score (straight-through, HEMoE).
//   Ones:   exactly 1, no gradient (EMoE avg-k, MoEfication).
enum class GateMode { Prob, Renorm, UnitST, Ones };

// Training-only router noise. Jitter: x *= U(1-eps, 1+eps) before the router GEMM (Switch).
// Gauss: logits += N(0,1) * eps / E (Tutel gate_noise, EMoE).
enum class NoiseKind { None, Jitter, Gauss };

// Capacity per expert (Tutel semantics, spe = ceil(tokens / E)):
//   None:     dropless.
//   Factor:   C = k * int(factor * spe).
//   Absolute: C given (Switch expert_capacity, per group).
//   Bounded:  C = min(dropless C, k * int(factor * spe)) (Tutel's negative capacity factor).
enum class CapacityMode { None, Factor, Absolute, Bounded };

// Which (token, slot) pairs win capacity: token order (all slot-0 choices before any slot-1
// choice), or batch-prioritized routing (V-MoE BPR: tokens by decreasing top score).
enum class Priority { TokenOrder, BatchPrioritized };

struct CapacityConfig {
  CapacityMode mode = CapacityMode::None;
  double factor = 1.0;
  int64_t absolute = 0;
  // Tokens per capacity group (Switch: one sequence). 0 = the whole batch is one group.
  int64_t group_size = 0;
  Priority priority = Priority::TokenOrder;
};

struct SelectionConfig {
  Selection selection = Selection::TopK;
  int64_t k = 2;
  double top_p = 0.8;
  double dynk_tau = 0.5;
  // Upper bound on experts per token for TopP / DynKMax (0 = E).
  int64_t max_k = 0;
  GateMode gate = GateMode::Renorm;
};

// Tutel's capacity for `tokens` tokens of one group; `dropless` is max location + 1.
int64_t capacity_for(const CapacityConfig& cfg, int64_t tokens, int64_t num_experts, int64_t k,
                     int64_t dropless);

// String forms (for the CLI and config files); parse_* throw mf::Error on unknown names.
const char* to_string(Act a);
const char* to_string(ScoreFn s);
const char* to_string(Selection s);
const char* to_string(GateMode g);
const char* to_string(CapacityMode c);
Act parse_act(const std::string& s);  // silu|swish, gelu, gelu_tanh|gelu_new|gelu_pytorch_tanh, relu
ScoreFn parse_score_fn(const std::string& s);
Selection parse_selection(const std::string& s);
GateMode parse_gate_mode(const std::string& s);
CapacityMode parse_capacity_mode(const std::string& s);

}  // namespace mf::moe
