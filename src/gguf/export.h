// `moeforge convert MODEL --to gguf --outtype f32|f16|bf16|q8_0 --out FILE.gguf`: a model
// directory as a GGUF file that llama.cpp loads and computes identically (docs/gguf.md).
//
// Families: llama, mistral (llama.cpp arch "llama"), qwen2, gpt2, mixtral ("llama" with stacked
// experts), qwen2_moe ("qwen2moe"), olmoe, and moeforge models that are Mixtral-equivalent
// (every layer MoE, equal expert widths, linear softmax top-k router with renormalised gates).
// What llama.cpp cannot compute — experts of different widths, unit-weight / avg-k / MLP /
// merged routers, dense layers between MoE layers, Qwen2-MoE without a shared expert or with
// norm_topk_prob, OLMoE with clip_qkv — is refused with one line naming the alternative.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/config.h"

namespace mf::gguf {

enum class OutType { f32, f16, bf16, q8_0 };

// "f32" | "f16" | "bf16" | "q8_0" (also "fp32", "float32", "fp16", "float16", "bfloat16", "q8");
// anything else is a UsageError naming the supported types.
OutType parse_outtype(const std::string& name);
const char* outtype_name(OutType t);

// The tensor stored under a canonical HF name (expected_tensors() names), any float dtype, CPU.
using TensorGetter = std::function<at::Tensor(const std::string& name)>;

// The checks an output FILE.gguf gets before any work: not a directory; an existing file is
// replaced only when it is a GGUF file (an earlier output), never a user's other file or a FIFO
// or device; not one of `inputs`. Throws mf::Error "<out>: ...".
void check_gguf_output_path(const std::string& out, const std::vector<std::string>& inputs);

// Whether `cfg` can be exported; throws the one-line refusal otherwise (nothing is read).
void check_exportable(const ModelConfig& cfg);

struct ExportResult {
  std::string architecture;
  size_t tensors = 0, metadata_keys = 0;
  uint64_t bytes = 0;
};

// Writes `out` atomically. `model_dir` provides the tokenizer files and general.name.
ExportResult export_gguf(const std::string& model_dir, const ModelConfig& cfg, const TensorGetter& get,
                         const std::string& out, OutType outtype);

}  // namespace mf::gguf
