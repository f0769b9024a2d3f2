// HyperMoE's HyperExpert (moe_routing_training.md §3; Zhao et al., ACL 2024): per token, a
// bottleneck adapter whose weights a hypernetwork generates from the experts the router did
// NOT select, added to the MoE layer's output:
//   s_t = sum_{j not selected} Emb_l[j]                       (per-layer expert embeddings)
//   z_t = Lin(ReLU(Lin(s_t)))                                 (per-layer processor)
//   h_t = ReLU(Lin([z_t; LayerEmb[l]]))                       (shared generator, one per model)
//   W_down = reshape(Ud h_t + cd) [d, a], b_down = Bd h_t + bd, W_up = reshape(Uu h_t + cu) [a, d], b_up
//   o_t = ReLU(x_t W_down + b_down) W_up + b_up               (x_t: the MoE layer's input)
// The reference materialises W_down and W_up for every token (2 d a floats per token per layer).
// Here no per-token weight tensor exists, forward or backward. Two exact paths:
//   * grouped: h_t depends only on the token's selected set, and a batch has few distinct sets
//     (at most C(E, k)): generate the adapter once per distinct set, run each set's tokens
//     through it (cost ~ 4 d a per token instead of 4 d a m);
//   * factorised: x W_down(h) = sum_m h_m (x Ud_m) + x C_d: one GEMM of x against Ud viewed as
//     [d, a m] followed by a contraction with h (and the up projection through the outer
//     product (a_t x h_t) [a m] against Uu), in token chunks, recomputed in the backward pass
//     (custom autograd: only x, h and the adapter activations are kept).
// "auto" takes grouped while sets are at least 4x fewer than tokens.
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

namespace mf::moe {

// The reference's hyper-parameters (HyperMoE scripts), config keys of docs/format.md.
struct HyperMoeOptions {
  int64_t experts_embedding_dim = 128;
  int64_t process_dim = 128;
  int64_t hypernet_input = 128;
  int64_t hypernetwork_bottleneck = 128;
  int64_t layer_emb_dim = 10;
  int64_t adapter_dim = 64;
};

enum class HyperPath { Auto, Grouped, Factorised };

// Per MoE layer: expert embeddings [E, experts_embedding_dim] (N(0, 1), nn.Embedding's init) and
// the processor Sequential(Linear, ReLU, Linear) (nn.Linear's init). Tensor names:
// expert_embedding.weight, processor.0.{weight,bias}, processor.2.{weight,bias}.
class HyperExpertImpl : public torch::nn::Module {
 public:
  HyperExpertImpl(int64_t num_experts, const HyperMoeOptions& opt);
  // s [S, E] selection masks (1 = selected) -> processed embeddings z [S, hypernet_input] of
  // the unselected sets.
  at::Tensor process(const at::Tensor& selected);
  void reset_parameters();  // the reference's initialisation (also done by the constructor)

  torch::nn::Embedding expert_embedding{nullptr};
  torch::nn::Sequential processor{nullptr};
};
TORCH_MODULE(HyperExpert);

// Shared by every MoE layer of a model: layer embeddings [L, layer_emb_dim] (N(0, 1)), the
// bottleneck Linear(hypernet_input + layer_emb_dim -> hypernetwork_bottleneck) and the four
// heads with the "hyperfanin" initialisation (weights U(+-1e-3 sqrt(3 / (m fan))), fan = d for
// down_weight, a for up_weight, U(+-1e-3 sqrt(3 / m)) for the bias heads, head biases 0).
// Tensor names: layer_embedding.weight, bottleneck.*, down_weight.*, down_bias.*, up_weight.*,
// up_bias.*.
class HyperGeneratorImpl : public torch::nn::Module {
 public:
  HyperGeneratorImpl(int64_t dim, int64_t num_layers, const HyperMoeOptions& opt);
  // z [S, hypernet_input] of MoE layer `layer` -> h [S, hypernetwork_bottleneck].
  at::Tensor hidden(const at::Tensor& z, int64_t layer);
  void reset_parameters();  // the reference's initialisation (also done by the constructor)

  int64_t dim() const { return dim_; }
  int64_t adapter_dim() const { return opt_.adapter_dim; }
  const HyperMoeOptions& options() const { return opt_; }

  torch::nn::Embedding layer_embedding{nullptr};
  torch::nn::Linear bottleneck{nullptr}, down_weight{nullptr}, down_bias{nullptr}, up_weight{nullptr},
      up_bias{nullptr};

 private:
  void init_heads();  // hyperfanin
  int64_t dim_;
  HyperMoeOptions opt_;
};
TORCH_MODULE(HyperGenerator);

// The HyperExpert's output o [T, d] for the MoE input x [T, d] and the router's selection idx
// [T, K] (int64, -1 = empty slot) in MoE layer `layer` (its index among the MoE layers).
// Differentiable in x and every parameter; computed in the parameters' dtype, returned in x's.
at::Tensor hyper_expert_output(HyperExpertImpl& expert, HyperGeneratorImpl& gen, int64_t layer,
                               const at::Tensor& x, const at::Tensor& idx, HyperPath path = HyperPath::Auto);

// y[t, q] = sum_{p, m} W[p, q, m] u[t, p] h[t, m] without forming any [T, p, q] tensor: token
// chunks (`chunk` tokens; 0 = sized to ~4M intermediate elements), the cheaper contraction
// order, recomputation in the backward pass. Exposed for tests.
at::Tensor bilinear_contract(const at::Tensor& u, const at::Tensor& h, const at::Tensor& W, int64_t chunk = 0);

// Checkpoint tensors (names relative to the module, shapes) of one layer's HyperExpert with E
// experts, and of the generator for hidden size d and L MoE layers.
using TensorShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;
TensorShapes hyper_expert_tensors(int64_t num_experts, const HyperMoeOptions& opt);
TensorShapes hyper_generator_tensors(int64_t dim, int64_t num_layers, const HyperMoeOptions& opt);

// The config's "hypermoe" object (docs/format.md); one-line errors naming `origin`.
HyperMoeOptions parse_hypermoe_options(const nlohmann::json& j, const std::string& origin);
nlohmann::json to_json(const HyperMoeOptions& opt);

}  // namespace mf::moe
