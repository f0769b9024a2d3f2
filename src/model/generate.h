// Token sampling and streaming generation with a KV cache. Sampling follows transformers'
// processor order: temperature, then top-k, then top-p (nucleus); temperature 0 = greedy.
// Randomness comes from mf::Rng, so a seed gives the same text on every platform.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"
#include "util/rng.h"

namespace mf {

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off
};

// Picks the next token from logits [V] (any float dtype). Greedy ties go to the lowest id.
int64_t sample_token(const at::Tensor& logits, const SamplingOptions& options, Rng& rng);
// The distribution sample_token draws from (float32 [V]); zero outside top-k / top-p.
at::Tensor sampling_distribution(const at::Tensor& logits, const SamplingOptions& options);

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  SamplingOptions sampling;
  uint64_t seed = 0;
  std::vector<int64_t> stop_ids;  // generation ends after emitting one of these (EOS)
};

// Runs the prompt through the model once (prefill), then one token at a time with a KV cache.
// `on_token` is called for every new token as soon as it is chosen (streaming); returning
// false stops early. Returns the new tokens (including a final stop token, if any).
std::vector<int64_t> generate(Model& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                              const std::function<bool(int64_t)>& on_token = {});

}  // namespace mf
