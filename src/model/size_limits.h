// Size checks a model config must pass before anything is sized by it (issue 22, class 4): every
// dimension within bounds, the tensors and parameters the config implies within bounds, far from
// more than a checkpoint holds, and within the memory a command may use. Everything is computed
// from the sizes alone, in floating point, so no check allocates or overflows.
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"

namespace mf {

// Bounds parse_model_config enforces on every config.json (errors name the key).
constexpr int64_t kMaxModelLayers = 100000;
constexpr int64_t kMaxModelExperts = 100000;
constexpr int64_t kMaxModelDim = 2147483647;  // a width, vocabulary, context length or heads x head_dim
constexpr int64_t kMaxModelTensors = 1000000;  // tensors a config may imply (optional ones included)
constexpr double kMaxModelParameters = 1e13;   // parameters a config may imply

struct ImpliedModelSize {
  double tensors = 0;           // every tensor of expected_tensors(), optional ones included
  double required_tensors = 0;  // those a checkpoint must hold
  double parameters = 0;        // == total_parameters(cfg) (exact below 2^53)
};

// The tensor count and parameter count of expected_tensors(cfg), without building the list.
ImpliedModelSize implied_model_size(const ModelConfig& cfg);

// Throws "<cfg.origin>: key 'num_hidden_layers' is 1000000000, above the limit of 100000" and the
// like. parse_model_config calls it on every config it returns.
void check_model_size_limits(const ModelConfig& cfg);

// Before the expected tensor list is built against a checkpoint: throws naming cfg.origin when the
// config implies far more tensors or parameters than the checkpoint's `stored_tensors` /
// `stored_parameters` (small differences are left to the per-tensor messages of validate_tensors).
void check_config_against_checkpoint(const ModelConfig& cfg, double stored_tensors, double stored_parameters);

// Bytes a model may take: $MOEFORGE_MAX_MEMORY (a size such as "8GiB", parse_size) when set,
// otherwise the machine's physical memory. `source` (optional) gets a phrase naming where the
// number came from ("this machine has", "MOEFORGE_MAX_MEMORY allows").
uint64_t model_memory_budget(std::string* source = nullptr);

// Throws "<cfg.origin>: the model would need 37.25 GiB (10.00B parameters x 4 bytes to
// initialise), more than the 23.43 GiB this machine has (...)" when parameters x
// `bytes_per_parameter` exceed model_memory_budget(). `purpose`: "to initialise", "to train", ...
void check_model_fits_memory(const ModelConfig& cfg, double bytes_per_parameter, const std::string& purpose);

}  // namespace mf
