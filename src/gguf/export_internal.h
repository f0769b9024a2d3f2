// Internals of the GGUF exporter shared by export.cpp (driver, tensor encoding),
// export_arch.cpp (architecture keys and tensor mapping) and export_vocab.cpp (tokenizer keys).
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "gguf/export.h"
#include "gguf/gguf_writer.h"
#include "model/config.h"

namespace mf::gguf {

// One GGUF tensor to produce. `shape` is the PyTorch shape of what `make` returns (the GGUF ne
// is its reverse). Stacked expert tensors are produced one expert at a time (`parts` > 0:
// make_part(e) returns expert e's [out, in] matrix and shape is [parts, out, in]) so that a
// layer's experts are never all in memory at once.
struct TensorJob {
  std::string name;
  std::vector<int64_t> shape;
  bool keep_f32 = false;  // norms, biases, routers, position embeddings, rope factors
  std::function<at::Tensor()> make;
  int64_t parts = 0;
  std::function<at::Tensor(int64_t)> make_part;
};

// Architecture keys (written into `w`) and the tensor list for `cfg` exported as `arch`
// (gguf_architecture(cfg)). Nothing is read until a job runs.
std::vector<TensorJob> plan_architecture(const ModelConfig& cfg, const TensorGetter& get, const std::string& arch,
                                         Writer& w);
// The llama.cpp architecture name `cfg` exports as ("llama", "qwen2", "qwen2moe", "olmoe",
// "gpt2"), or throws the refusal.
std::string gguf_architecture(const ModelConfig& cfg);

// tokenizer.ggml.* keys from the tokenizer files of `model_dir`; the token list is padded to
// cfg.vocab_size. Throws mf::Error naming the tokenizer file for what llama.cpp cannot express.
void add_tokenizer_metadata(Writer& w, const std::string& model_dir, const ModelConfig& cfg);

// The GGUF type a tensor is stored as under `outtype` (1-D tensors, norms, routers: F32; Q8_0 rows
// not a multiple of 32: F16, as llama.cpp's converter does).
TensorType tensor_type_for(const TensorJob& job, OutType outtype);
// Writes `t` (any float dtype, CPU) as `type` through `sink`: F32/F16/BF16 with round-to-nearest-
// even (ggml's conversions), Q8_0 as ggml's quantize_row_q8_0_ref (blocks of 32: fp16 scale
// amax/127, then roundf(x / scale) as int8).
void encode_tensor(const at::Tensor& t, TensorType type, const Sink& sink);

}  // namespace mf::gguf
