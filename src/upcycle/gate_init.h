// Router initialisation of an upcycled MoE: mergekit-moe's gate modes
// (../shared/specs/merge_and_eval.md §C.1). Each MoE layer's router is an [E, H] matrix whose
// row e is a vector for expert e; a Qwen2-MoE shared-expert gate is one more such row.
//   random          N(0, 1)
//   uniform_random  U(-1/sqrt(H), 1/sqrt(H)) (nn.Linear's initialisation)
//   cheap_embed     sum of the input-embedding rows of the expert's positive prompts, L2-normalised;
//                   the same rows for every layer (no forward pass)
//   hidden          per layer l, the residual-stream input of layer l (embedding output for l = 0,
//                   output of layer l-1 otherwise) at the last token of each positive prompt
//                   (BOS-prefixed), averaged over prompts, minus the same for the negative
//                   prompts, L2-normalised
//   zeros           0 (moeforge's, not mergekit's: how HyperMoE's reference GPT-2 MoE initialises
//                   w_gate; every expert scores alike until training moves the router)
// Random modes draw from a generator seeded by (seed, layer), so a layer's rows do not depend
// on which other layers are upcycled.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "upcycle/upcycle.h"

namespace mf {

struct GateRows {
  std::vector<at::Tensor> router;       // per MoE layer: [E, H] fp32
  std::vector<at::Tensor> shared_gate;  // per MoE layer: [1, H] fp32 (empty without a shared expert)
};

// `moe_layers`: ascending layer indices; `hidden`: the model width. Prompt modes load the base
// model and its tokenizer from config.base_model.
GateRows init_gate_rows(const UpcycleConfig& config, const std::vector<int64_t>& moe_layers, int64_t hidden);

// Ratio of the largest to the smallest singular value of a gate matrix (inf when rank-deficient).
double condition_number(const at::Tensor& rows);

bool is_prompt_gate_mode(const std::string& mode);  // cheap_embed, hidden

// Every gate mode, in the order errors and help list them.
const std::vector<std::string>& gate_modes();

}  // namespace mf
