// Per-sample FFN neuron importance with ONE backward pass (spec dense_to_moe.md §1.2 (c)).
//
// The score of neuron i for sample s is the first-order Taylor estimate of the loss change
// when the neuron is removed, I_s(i) = |Σ_W Σ W·∂ℓ_s/∂W| over the neuron's weights (row i of
// G and U, column i of D; or row i of W1 and column i of W2). It never needs weight
// gradients: with z_W = W x the pre-activation of an input matrix W and a the intermediate,
// Σ_h W[i,h]·∂ℓ/∂W[i,h] = Σ_t δz_{t,i}·z_{t,i} and Σ_h D[h,i]·∂ℓ/∂D[h,i] = Σ_t δa_{t,i}·a_{t,i}.
//   gated (SwiGLU):  I = |Σ_t (2·δa·a + δg·g)|      with δg = ∂ℓ/∂g = δa·u·silu'(g), g = G x,
//                    which is the spec's |Σ_t δa (2a + u·g·silu'(g))|; U contributes Σ δa·a
//                    because δu·u = δa·act(g)·u = δa·a. Holds for any gate activation.
//   two-matrix (GPT-2, ReLU/GELU):  I = |Σ_t (δz·(z − b1) + δa·a)|, z = W1 x + b1 (the bias is
//                    not part of the score).
// δa and δg/δz come from backward hooks on the ffn_intermediate and ffn_preact points, so
// one backward pass of Σ_s ℓ_s yields every layer (samples do not interact, so ∂(Σ_s ℓ_s)/∂a
// restricted to sample s's tokens is ∂ℓ_s/∂a). Positions of padding carry zero gradient.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "model/model.h"

namespace mf {

enum class FfnKind { gated, two_matrix };
const char* ffn_kind_name(FfnKind k);

// The FFN form of a dense model; throws mf::Error for MoE layers in `layers` or gated FFNs
// with biases (no supported family has them).
FfnKind profile_ffn_kind(const ModelConfig& cfg, const std::vector<int>& layers);

class ImportanceCollector {
 public:
  // Registers hooks on `model` (removed by the destructor). `layers` sorted, distinct. The
  // first layer's FFN input is made to require grad when it does not already, so backward
  // reaches every profiled layer even when no parameter requires grad (and goes no lower).
  ImportanceCollector(Model& model, std::vector<int> layers);
  ~ImportanceCollector();
  ImportanceCollector(const ImportanceCollector&) = delete;
  ImportanceCollector& operator=(const ImportanceCollector&) = delete;

  // Before each forward: the batch shape (rows of the hooked tensors are b*T + t).
  void begin_batch(int64_t batch, int64_t seq);
  // After backward: the signed per-sample score Σ_W Σ W·∂ℓ_s/∂W, float32 [B, F], of layers()[k].
  at::Tensor signed_scores(size_t k) const;
  const std::vector<int>& layers() const { return layers_; }
  FfnKind kind() const { return kind_; }

 private:
  int slot(int layer) const;
  Model& model_;
  std::vector<int> layers_;
  FfnKind kind_;
  std::vector<int> hook_ids_;
  int64_t batch_ = 0, seq_ = 0;
  std::vector<at::Tensor> a_, z_;            // forward activations of the current batch
  std::vector<at::Tensor> sum_a_, sum_z_;    // Σ_t δa·a, Σ_t δz·z per sample [B, F]
  std::vector<at::Tensor> sum_dz_;           // two-matrix: Σ_t δz [B, F] (for the bias term)
  std::vector<at::Tensor> bias_;             // two-matrix: b1 [F] float32
};

}  // namespace mf
