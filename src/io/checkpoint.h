// Hugging Face model directories: config.json + model.safetensors or sharded
// model-0000i-of-0000N.safetensors with model.safetensors.index.json; tokenizer and
// generation_config files alongside. Format: ../shared/specs/merge_and_eval.md §C.3.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "util/json.h"

namespace mf {

class Checkpoint {
 public:
  // `path` is a model directory (or a single .safetensors file, then config() is empty).
  // Validates the index (every shard exists, names every tensor its shard holds) lazily per shard.
  static Checkpoint open(const std::string& path);

  const std::string& dir() const { return dir_; }
  const json& config() const { return config_; }
  const std::string& config_path() const { return config_path_; }
  // All tensor names, sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const StTensorInfo& info(const std::string& name) const;
  at::Tensor get(const std::string& name) const;
  at::Tensor get(const std::string& name, at::ScalarType dtype) const;
  // Weight files (shards) in order.
  const std::vector<std::string>& files() const { return files_; }
  uint64_t total_bytes() const;  // sum of tensor bytes
  // The file that holds `name` (for error messages).
  std::string file_of(const std::string& name) const;

 private:
  std::shared_ptr<SafetensorsFile> shard(size_t i) const;
  std::string dir_, config_path_;
  json config_;
  std::vector<std::string> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
  mutable std::vector<std::shared_ptr<SafetensorsFile>> open_;
};

struct SaveOptions {
  uint64_t max_shard_bytes = 5000000000ull;  // transformers' "5GB"
  // Files copied from this directory if present (tokenizer files, generation_config.json).
  std::string copy_aux_from;
};

// Writes a complete HF directory atomically: everything is built under a temporary name and
// renamed into place. Tensors are written in the given order (shards fill in that order).
void save_checkpoint(const std::string& out_dir, const json& config,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors, const SaveOptions& options = {});

// Records the weights' dtype in config.json: "torch_dtype" (transformers < 5) and, where the
// config uses transformers >= 5's "dtype" key, that one too, so the two never disagree.
void set_config_dtype(json& config, at::ScalarType dtype);

// Files copied along with weights when a model is rewritten.
const std::vector<std::string>& auxiliary_model_files();

}  // namespace mf
