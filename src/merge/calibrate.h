// The calibration pass of expert merging (spec merge_and_eval.md §A.2-A.4): documents are
// tokenized, concatenated and cut into blocks (HC-SMoE / Expert_Sparsity: 32 blocks of 2048
// tokens of C4), and one forward pass of the original model collects, per MoE layer,
//   * o_j = (1/T) Σ_t E_j(x_t): every expert on every token (HC-SMoE's "expert-output"),
//   * the usage frequency of each expert (share of the top-k selections; the reference counts
//     top-2 whatever the model's k, we use the model's k — docs/merge.md),
//   * the mean router probability (S-prune's soft counts),
//   * REAP's saliency: per expert, the mean over its routed tokens of gate · ‖E_j(x)‖₂,
//   * the N×N Gram matrix of the router-logit columns over all tokens, Σ_t z_t z_tᵀ (the
//     "router-logits" representation and M-SMoE's similarity need only inner products of the
//     logit columns, so no per-token logits are stored: memory N²·8 bytes per layer for any T),
//   * the first tokens' MoE inputs, to measure the merged layers' output error (and, for
//     `--router fit` and `--merge fix-dom` / `zipit`, the first keep_tokens of them with their router
//     logits: keep_tokens·(d + N)·4 bytes per layer), and for O-prune the router logits and the
//     Gram matrices of the experts' outputs of the first error_tokens tokens.
// Data parallel (options.sharding, profile/batch_sharding.h): block b is run by rank b mod W and
// the sums above are added up over the ranks (float64: one process's values up to summation
// order). The kept rows of the first tokens are not sums but a prefix of the stream: each lies at
// its stream position in a zero tensor on the rank that ran its block, and the sum over the ranks
// of those tensors is exactly one process's prefix. Every rank ends with the whole calibration.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "profile/batch_sharding.h"

namespace mf {

class Model;
class MoeFFN;
class Tokenizer;

struct MergeCalibOptions {
  std::string file;            // JSONL documents ({"text": ...})
  int64_t seq_len = 0;         // block length; 0 = min(2048, max_position_embeddings)
  int64_t blocks = 32;         // blocks used (fewer when the file is shorter; at least one)
  int64_t error_tokens = 4096; // MoE inputs kept per layer for the output-error report (and O-prune)
  bool gram = false;           // collect logits and per-token Gram matrices of those tokens
  int64_t keep_tokens = 0;     // MoE inputs kept per layer (at least error_tokens are)
  bool logits = false;         // keep the router logits of the kept tokens too
  BatchSharding sharding;      // data parallel: the blocks are shared out over the ranks (default: one process)
};

struct LayerCalibration {
  int64_t layer = 0;
  at::Tensor mean_output;  // [E, d] fp32: o_j
  at::Tensor frequency;    // [E] fp64: share of the top-k selections (sums to 1)
  at::Tensor soft_score;   // [E] fp64: mean router probability over tokens (sums to 1)
  at::Tensor reap;         // [E] fp64: REAP saliency (0 for an expert no token selected)
  at::Tensor logit_gram;   // [E, E] fp64: Σ over all tokens of z_t z_tᵀ (router logits z_t)
  at::Tensor inputs;       // [S, d] fp32: MoE inputs of the first S = max(error_tokens, keep_tokens) tokens
  at::Tensor logits;       // [S', E] fp32 router logits of the first S' tokens (options.gram: S' = error_tokens;
                           // options.logits: S' = S)
  at::Tensor gram;         // [error_tokens, E, E] fp64: <E_i(x_t), E_j(x_t)> (options.gram)
};

struct MergeCalibration {
  int64_t tokens = 0, blocks = 0, seq_len = 0;
  std::vector<LayerCalibration> layers;  // routed MoE layers in order
};

// Every routed expert of `block` on every row of x [T, d] (the block's dtype), one expert at a
// time: the sums of each expert's outputs over the rows [E, d], the outputs' L2 norms [T, E], and
// the outputs of the first keep_rows rows [keep_rows, E, d] (undefined when keep_rows is 0); fp64.
struct ExpertPass {
  at::Tensor out_sum, norms, kept;
};
ExpertPass every_expert_pass(MoeFFN& block, const at::Tensor& x, int64_t keep_rows);

MergeCalibration calibrate_merge(Model& model, const Tokenizer& tok, const MergeCalibOptions& options);

}  // namespace mf
