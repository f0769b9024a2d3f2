// A causal language model of any supported family. Modules are torch::nn::Module and their
// named_parameters() are exactly the Hugging Face tensor names (a tied lm_head is not a
// separate parameter), so training code gets a named parameter list and checkpoints round-trip.
//
//   auto m = mf::Model::load("path/to/hf_dir", {at::kBFloat16, at::kCPU});
//   at::Tensor logits = m->forward(ids /*[B,T] int64*/, mask /*[B,T], 1 = real*/);  // [B,T,V] fp32
//
// Padding may be on either side; positions count real tokens only. With a KvCache, call
// forward with the new tokens only (and their mask); the cache remembers earlier masks.
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/ffn_block.h"
#include "model/hooks.h"
#include "model/kv_cache.h"

namespace mf {

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;  // kFloat or kBFloat16 (kHalf on CUDA)
  at::Device device = at::kCPU;
};

// "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16" -> dtype; "cpu"/"cuda[:n]" -> device.
// Throw mf::UsageError on anything else.
at::ScalarType parse_dtype(const std::string& name);
at::Device parse_device(const std::string& name);

class Model : public torch::nn::Module {
 public:
  // A model with uninitialised fp32 CPU parameters (fill with init_random or load weights).
  static std::shared_ptr<Model> create(const ModelConfig& cfg);
  // Loads a Hugging Face directory: parses config.json, validates every tensor's name and
  // shape against the config (one-line errors naming the tensor), converts to options.dtype.
  static std::shared_ptr<Model> load(const std::string& dir, const LoadOptions& options = {});

  const ModelConfig& config() const { return cfg_; }
  Hooks& hooks() { return hooks_; }
  at::ScalarType dtype() const;
  at::Device device() const;

  // logits [B, T, V] as float32.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}, KvCache* cache = nullptr);
  // Hidden states after the final norm [B, T, H] (model dtype); lm_head() maps them to fp32 logits.
  virtual at::Tensor forward_hidden(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                                    KvCache* cache = nullptr) = 0;
  // One cache-free pass over packed rows (make_packed_forward_state in layers.h): positions
  // [B, T] int64 and which keys each query may attend to, allowed [B, T, T] bool.
  virtual at::Tensor forward_hidden_packed(const at::Tensor& input_ids, const at::Tensor& positions,
                                           const at::Tensor& allowed) = 0;
  virtual at::Tensor lm_head(const at::Tensor& hidden) = 0;

  KvCache make_cache(int64_t capacity = 0) const { return KvCache(cfg_.num_layers, capacity); }

  // Tensors under their checkpoint names, in expected_tensors() order (tied lm_head omitted),
  // then any parameter the config does not describe (a swapped-in block's), ready for
  // save_checkpoint().
  std::vector<std::pair<std::string, at::Tensor>> hf_tensors();
  // Sets parameters from `get(name)` (canonical HF names); converts dtype/device to the model's.
  void set_weights(const std::function<at::Tensor(const std::string&)>& get);
  // Random weights (N(0, std), norms around 1), deterministic in `seed`.
  void init_random(uint64_t seed, double std = 0.02);

  // The FFN slot of each decoder layer (dense MLP, MoE block, or a block a feature put there).
  // set_ffn swaps the block of a layer; its parameters appear under the slot's checkpoint name.
  virtual std::shared_ptr<FfnBlock> ffn(int64_t layer) const = 0;
  virtual void set_ffn(int64_t layer, std::shared_ptr<FfnBlock> block) = 0;

  // Call after every optimizer step: refreshes what blocks derive from their weights (EMoE
  // avg-k gates, fused expert tensors).
  void after_optimizer_step();
  // Per MoE layer, what the last forward did: tokens per expert, activated-FFN fraction.
  std::vector<MoeLayerStats> moe_stats() const;
  // The auxiliary losses of the last forward in training mode (coefficients applied): each
  // block's own, plus HF's load-balancing loss pooled over the MoE layers of Mixtral /
  // Qwen2-MoE / OLMoE blocks. Training recipes add aux_loss() (their sum, 0 when none) to the
  // LM loss.
  std::vector<AuxLoss> aux_losses() const;
  at::Tensor aux_loss() const;

  // Checkpoint tensors that are not parameters, kept for round trips (moeforge's I32
  // `mlp.experts.{e}.neurons` provenance). Loaded by load(), written by hf_tensors().
  std::map<std::string, at::Tensor>& extra_tensors() { return extra_tensors_; }

 protected:
  explicit Model(ModelConfig cfg) : cfg_(std::move(cfg)) {}
  Hooks* active_hooks() { return hooks_.empty() ? nullptr : &hooks_; }
  ModelConfig cfg_;
  Hooks hooks_;
  std::map<std::string, at::Tensor> extra_tensors_;
};

// Whether a parameter name belongs to an MoE router: moeforge `.mlp.router.`, Qwen2-MoE /
// OLMoE `.mlp.gate.weight`, Mixtral `.block_sparse_moe.gate.weight`. Router-only training
// freezes every parameter for which this is false.
bool is_router_parameter(const std::string& name);

// The Llama graph (llama.cpp), shared by Llama, Mistral, Qwen2 and the MoE families built on it;
// family entries (model/family.h) name it as their `build`.
std::shared_ptr<Model> build_llama_family(const ModelConfig& cfg);

}  // namespace mf
