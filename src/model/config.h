// Typed model configuration parsed from a Hugging Face config.json, the tensor list each
// architecture implies, and parameter counts. Pure C++ (no torch): `moeforge info`, checkpoint
// validation and the runtime all use it. Every supported key is documented in docs/format.md.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "util/json.h"

namespace mf {

// Architectures the runtime implements. Llama-type = Llama, Mistral, Qwen2 (and SmolLM, which
// is a Llama checkpoint); they share one graph with switches.
// moeforge: a dense→MoE split of a Llama-type model (docs/format.md "moeforge MoE models").
enum class Family { llama, mistral, qwen2, gpt2, mixtral, qwen2_moe, olmoe, moeforge };

const char* family_name(Family f);
// The model_types of family_registry() (model/family.h): the built-ins in registration order,
// "llama, mistral, qwen2, gpt2, mixtral, qwen2_moe, olmoe, moeforge", then any added at run time.
// Defined in model/registry.cpp.
std::string supported_model_types();

struct RopeScaling {
  std::string type;  // "" (none / "default"), "linear" or "llama3"
  double factor = 1.0;
  // llama3 only
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

// The `router` object of a moeforge config (docs/format.md): strings as written in config.json.
struct MoeforgeRouter {
  std::string type = "linear";      // an entry of moe::router_registry(): linear | mlp | avgk | ...
  std::string score = "softmax";    // softmax | sigmoid
  std::string selection = "top_k";  // top_k | top_p | dynk_max
  std::string gate = "unit";        // unit | renorm | prob | ones
  double top_p = 0.8;
  double dynk_tau = 0.5;
  std::string aux_loss = "hemoe";   // hemoe | switch | none
  double aux_loss_coef = 5e-4;
  int64_t num_source_experts = 0;   // type merged: N, the rows of the original router
  nlohmann::json config = nlohmann::json::object();  // the whole section (router-specific keys)
};

struct ModelConfig {
  std::string model_type;  // as in config.json
  Family family = Family::llama;
  std::string origin;  // file the config came from (for error messages)

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // dense FFN width (OLMoE: each expert's width)
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double norm_eps = 1e-6;  // rms_norm_eps, or GPT-2's layer_norm_epsilon
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 0;  // GPT-2: n_positions
  bool tie_word_embeddings = false;
  bool attention_bias = false;    // bias on q/k/v (Qwen2 family: always)
  bool attention_out_bias = false;  // bias on o_proj (Llama attention_bias sets both)
  bool mlp_bias = false;          // Llama mlp_bias
  std::string hidden_act = "silu";
  // Sliding-window attention: key j is visible from query i iff i - j < sliding_window.
  // 0 = off. Applies to layers >= sliding_window_first_layer (Qwen2's max_window_layers).
  int64_t sliding_window = 0;
  int64_t sliding_window_first_layer = 0;
  std::vector<int64_t> bos_token_ids;
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = -1;

  // MoE families (0 / defaults for dense ones)
  int64_t num_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;  // width of one routed expert
  int64_t shared_expert_intermediate_size = 0;  // Qwen2-MoE
  bool norm_topk_prob = false;  // renormalise the top-k probabilities (Mixtral: always)
  int64_t decoder_sparse_step = 1;
  std::vector<int64_t> mlp_only_layers;
  double router_aux_loss_coef = 0.0;
  double router_jitter_noise = 0.0;
  // OLMoE
  bool qk_norm = false;   // RMSNorm over the full q / k projection width
  double clip_qkv = 0.0;  // 0 = off
  // moeforge (family == Family::moeforge; everything else follows base_family)
  Family base_family = Family::llama;   // llama | mistral | qwen2
  std::vector<int64_t> moe_layers;       // ascending layer indices with an MoE FFN
  std::vector<std::vector<int64_t>> expert_sizes;  // [moe layer][expert] widths, moe_layers order
  // Also set for a stock MoE family wrapped as moeforge with the exact merged expert map
  // (`merge --output exact` of a Qwen2-MoE / OLMoE model; docs/format.md): router.type merged,
  // moe_layers (the family's MoE layers) and expert_sizes (every expert of the family's width
  // when config.json has none). For every other stock config router.type stays "linear" and
  // both lists stay empty.
  MoeforgeRouter router;

  json raw;  // the whole config.json as read

  bool is_moe() const { return num_experts > 0; }
  // Whether layer `l` has a routed MoE block (Qwen2-MoE: decoder_sparse_step / mlp_only_layers).
  bool layer_is_moe(int64_t l) const;
  // Width of the routed experts (homogeneous families).
  int64_t expert_intermediate_size() const { return moe_intermediate_size; }
  // Widths of the routed experts of MoE layer `l` (every family; moeforge and a wrapped merged
  // stock family: expert_sizes).
  std::vector<int64_t> layer_expert_widths(int64_t l) const;
  // Sliding window in effect at layer `l` (0 = full causal attention).
  int64_t layer_sliding_window(int64_t l) const;
  // Name of the FFN module in tensor names: "mlp" or (Mixtral) "block_sparse_moe".
  std::string ffn_module_name() const;
};

// Parses a config.json object: the model_type's FamilyEntry::parse reads the family's keys.
// Errors are one line naming `origin` and the key:
// "<origin>: missing key 'hidden_size'", "<origin>: key 'x' must be an integer",
// "<origin>: unsupported model_type \"bert\" (supported: ...)".
ModelConfig parse_model_config(const json& j, const std::string& origin);
ModelConfig read_model_config(const std::string& config_json_path);

// One tensor a checkpoint of this architecture holds, with its HF (transformers v4) name.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  bool required = true;  // false: may be present or absent (lm_head.weight of tied models)
};

// Every tensor, in model order, with the exact names save_pretrained writes.
std::vector<TensorSpec> expected_tensors(const ModelConfig& cfg);

// Tensor names a checkpoint may hold that the model does not use (buffers older transformers
// versions saved: rotary inv_freq, GPT-2's attn.bias / attn.masked_bias).
bool is_ignorable_tensor(const ModelConfig& cfg, const std::string& name);

// Maps the names stored in a checkpoint to the canonical names of expected_tensors().
// GPT-2 checkpoints exported from the original release lack the "transformer." prefix.
std::string canonical_tensor_name(const ModelConfig& cfg, const std::string& stored_name);

// Checks a checkpoint's tensors (name -> shape) against the config: throws mf::Error
// "<file>: missing tensor X", "<file>: unexpected tensor X" or
// "<file>: tensor X has shape [a, b] but config.json implies [c, d]". `file_of` names the
// file holding a tensor (used for the message); missing tensors are reported against `origin`.
void validate_tensors(const ModelConfig& cfg, const std::map<std::string, std::vector<int64_t>>& present,
                      const std::string& origin,
                      const std::map<std::string, std::string>& file_of = {});

int64_t total_parameters(const ModelConfig& cfg);
// Parameters a single token touches in a forward pass (routed experts: only the top-k ones;
// embeddings counted once, as the rows a token reads plus the output projection). With
// experts of different widths (moeforge) this is the expectation under uniform routing:
// k/E × (sum of the layer's expert parameters) per MoE layer; active_parameter_range gives
// the extremes.
int64_t active_parameters_per_token(const ModelConfig& cfg);
// Fewest / most parameters a token can touch: per MoE layer the narrowest expert (top_p /
// dynk_max may select just one; top_k: the k narrowest) and the k widest experts.
struct ActiveParameterRange {
  int64_t min = 0, max = 0;
};
ActiveParameterRange active_parameter_range(const ModelConfig& cfg);

std::string shape_string(const std::vector<int64_t>& shape);  // "[2, 3]"

}  // namespace mf
