// Model::load: config.json -> typed config -> tensor validation -> weights in the requested
// dtype on the requested device. Every mismatch is a one-line error naming file and tensor.
#include <set>

#include "io/checkpoint.h"
#include "model/hypermoe_ffn.h"
#include "model/load.h"
#include "model/model.h"
#include "util/error.h"
#include "util/huge_pages.h"
#include "util/log.h"

namespace mf {

std::shared_ptr<Model> Model::load(const std::string& dir, const LoadOptions& options) {
  return load_model_with_overrides(dir, options, json::object());
}

std::shared_ptr<Model> load_model_with_overrides(const std::string& dir, const LoadOptions& options,
                                                 const json& overrides) {
  Checkpoint ck = Checkpoint::open(dir);
  if (ck.config().empty()) fail_file(dir, "not a model directory: config.json is missing");
  json config = ck.config();
  for (auto it = overrides.begin(); it != overrides.end(); ++it) config[it.key()] = it.value();
  ModelConfig cfg = parse_model_config(config, ck.config_path());

  std::map<std::string, std::vector<int64_t>> present;
  std::map<std::string, std::string> file_of;
  for (const auto& name : ck.names()) {
    present[name] = ck.info(name).shape;
    file_of[name] = ck.file_of(name);
  }
  // Overrides that add HyperMoE to a model without it (train --hypermoe): its tensors start from
  // their own initialisation instead of the checkpoint.
  std::set<std::string> fresh;
  if (overrides.contains("hypermoe") && !ck.config().contains("hypermoe"))
    for (const auto& spec : expected_tensors(cfg))
      if (is_hypermoe_tensor(spec.name) && !present.count(spec.name) && fresh.insert(spec.name).second)
        present[spec.name] = spec.shape;
  validate_tensors(cfg, present, dir, file_of);
  std::map<std::string, std::string> stored;  // canonical -> stored name
  for (const auto& [name, shape] : present) stored[canonical_tensor_name(cfg, name)] = name;

  if (options.dtype != at::kFloat && options.dtype != at::kBFloat16 && options.dtype != at::kHalf)
    throw UsageError("unsupported dtype for a model (use float32, bfloat16 or float16)");
  // libtorch's CPU kernels have no float16 matmul (addmm fails on 'Half' tensors): refuse up
  // front instead of failing in the first layer. fp16 checkpoints load fine as bf16/fp32.
  if (options.dtype == at::kHalf && options.device.is_cpu())
    throw UsageError("--dtype float16 computes on CUDA only (libtorch has no float16 matmul on CPU); use bfloat16 "
                     "(same size) or float32 — float16 checkpoints load in either");
  auto model = Model::create(cfg);
  {
    at::NoGradGuard guard;
    HugePageWeights weights;
    for (auto& p : model->named_parameters()) {
      if (fresh.count(p.key())) {
        p.value().set_data(p.value().to(options.dtype).to(options.device));
        continue;
      }
      const std::string& src = stored.at(p.key());
      at::Tensor t = ck.get(src, options.dtype);
      p.value().set_data(t.to(options.device).contiguous());
    }
    // Optional non-parameter tensors (moeforge neuron indices) travel along unchanged.
    auto params = model->named_parameters();
    for (const auto& spec : expected_tensors(cfg)) {
      auto it = stored.find(spec.name);
      if (it != stored.end() && !params.contains(spec.name)) model->extra_tensors()[spec.name] = ck.get(it->second).clone();
    }
  }
  model->eval();
  log_debug("loaded ", cfg.model_type, " from ", dir, ": ", total_parameters(cfg), " parameters");
  return model;
}

}  // namespace mf
