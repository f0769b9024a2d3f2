// Sparse upcycling: a dense Llama-graph model (Llama, Mistral, Qwen2) becomes a Mixtral,
// Qwen2-MoE, OLMoE or moeforge checkpoint whose experts are copies (or fine-grained slices) of
// dense FFNs, possibly of several donors of the same architecture (mergekit-moe,
// Branch-Train-MiX). The first three are stock Hugging Face directories (transformers v4
// per-expert tensor names); moeforge is docs/format.md's family ("moeforge MoE models"), whose
// router may be HyperMoE's / Shazeer's noisy top-k gate (`router`).
//
// Expert e of a layer with granularity G is slice s = e mod G of its donor's FFN: rows
// [s f/G, (s+1) f/G) of gate_proj / up_proj and the same columns of down_proj, the down
// projection multiplied by G x residual_scale. With G = 1 every expert is the whole FFN; with
// G > 1 the routed sum reproduces the dense FFN when every slice is selected with equal weight
// (k = N under a uniform router) and estimates it without bias under uniform top-k routing.
// Router rows come from gate_init.h. docs/upcycle.md has the options and the mergekit mapping.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mf {

struct UpcycleExpert {
  std::string source_model;  // dense donor directory
  std::vector<std::string> positive_prompts, negative_prompts;
  double noise_scale = 0.0;     // std of Gaussian noise added to the expert's weights
  double residual_scale = 1.0;  // multiplies down_proj (on top of the granularity factor)
};

struct UpcycleConfig {
  std::string origin;      // the YAML file, or "command line" (errors name it)
  std::string base_model;  // attention, norms, embeddings, LM head, tokenizer
  std::string family = "mixtral";  // mixtral | qwen2_moe | olmoe | moeforge
  std::string gate_mode = "random";  // random | uniform_random | cheap_embed | hidden | zeros
  // moeforge only: linear (router.weight) | noisy_topk (router.weight and a zero
  // router.noise.weight, Shazeer et al. 2017's w_gate / w_noise). Other families: linear.
  std::string router = "linear";
  std::string dtype;       // "" = the base config's torch_dtype
  int64_t top_k = 2;
  int64_t granularity = 1;
  std::vector<UpcycleExpert> experts;        // routed experts, in router-row order
  std::optional<UpcycleExpert> shared_expert;  // a full copy of its donor's FFN
  std::vector<int64_t> layers;  // layers made sparse (empty = all)
  uint64_t seed = 0;            // random gate modes and noise
  uint64_t max_shard_bytes = 5000000000ull;  // transformers' "5GB"
};

// Reads a mergekit-moe style YAML config (base_model, gate_mode, dtype, experts_per_token,
// architecture, experts, shared_experts; moeforge keys granularity, layers, seed, router). Relative
// donor paths are relative to the working directory, as in mergekit.
UpcycleConfig load_upcycle_yaml(const std::string& path);

// Checks the config and every donor (same architecture, sizes and tokenizer as the base).
// Throws mf::Error "<file>: <what>" before anything is written.
void validate_upcycle(const UpcycleConfig& config);

struct UpcycleResult {
  int64_t moe_layers = 0;
  int64_t total_parameters = 0, active_parameters = 0;
  std::vector<double> gate_condition_numbers;  // per MoE layer (mergekit warns above 5)
};

// Validates, builds every tensor and writes `out_dir` atomically (config.json, weights,
// tokenizer files of the base model). `overwrite` allows replacing a non-empty directory.
UpcycleResult run_upcycle(const UpcycleConfig& config, const std::string& out_dir, bool overwrite = false);

}  // namespace mf
