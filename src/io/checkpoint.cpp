#include "io/checkpoint.h"

#include <cstdio>
#include <set>

#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf {

namespace {
const char* kIndexName = "model.safetensors.index.json";
const char* kSingleName = "model.safetensors";
}  // namespace

const std::vector<std::string>& auxiliary_model_files() {
  static const std::vector<std::string> files = {
      "tokenizer.json",        "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
      "vocab.json",            "merges.txt",            "generation_config.json",  "added_tokens.json",
      "chat_template.jinja",   "README.md"};
  return files;
}

Checkpoint Checkpoint::open(const std::string& path) {
  Checkpoint ck;
  if (!path_exists(path)) fail_file(path, "no such file or directory");
  if (!is_directory(path)) {
    // A bare .safetensors file.
    ck.dir_ = parent_dir(path);
    ck.files_.push_back(path);
    ck.open_.resize(1);
    ck.open_[0] = SafetensorsFile::open(path);
    for (const auto& t : ck.open_[0]->tensors()) ck.where_[t.name] = 0;
    return ck;
  }
  ck.dir_ = path;
  ck.config_path_ = path_join(path, "config.json");
  if (!path_exists(ck.config_path_)) fail_file(path, "not a model directory: config.json is missing");
  ck.config_ = read_json_file(ck.config_path_);
  if (!ck.config_.is_object()) fail_file(ck.config_path_, "expected a JSON object");

  std::string index_path = path_join(path, kIndexName);
  std::string single = path_join(path, kSingleName);
  if (path_exists(index_path)) {
    json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail_file(index_path, "missing object 'weight_map'");
    std::map<std::string, std::string> file_of;  // tensor -> shard file name
    std::set<std::string> shard_names;           // sorted: model-00001-of-N first
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail_file(index_path, "weight_map entry '" + it.key() + "' is not a file name");
      std::string file = it.value().get<std::string>();
      if (file.find('/') != std::string::npos || file == "..")
        fail_file(index_path, "weight_map names a file outside the model directory: '" + file + "'");
      file_of[it.key()] = file;
      shard_names.insert(file);
    }
    std::map<std::string, size_t> file_ids;
    for (const auto& file : shard_names) {
      std::string shard_path = path_join(path, file);
      if (!path_exists(shard_path)) fail_file(index_path, "shard '" + file + "' is missing");
      file_ids[file] = ck.files_.size();
      ck.files_.push_back(shard_path);
    }
    for (const auto& [name, file] : file_of) ck.where_[name] = file_ids[file];
    if (ck.files_.empty()) fail_file(index_path, "weight_map is empty");
  } else if (path_exists(single)) {
    ck.files_.push_back(single);
  } else {
    fail_file(path, "no model.safetensors or model.safetensors.index.json (only safetensors weights are supported)");
  }
  ck.open_.resize(ck.files_.size());
  if (ck.where_.empty()) {
    ck.open_[0] = SafetensorsFile::open(ck.files_[0]);
    for (const auto& t : ck.open_[0]->tensors()) ck.where_[t.name] = 0;
  }
  return ck;
}

std::shared_ptr<SafetensorsFile> Checkpoint::shard(size_t i) const {
  if (!open_[i]) {
    auto f = SafetensorsFile::open(files_[i]);
    // Every tensor the index assigns to this shard must be in it.
    for (const auto& [name, idx] : where_)
      if (idx == i && !f->contains(name))
        fail_file(path_join(dir_, kIndexName),
                  "tensor '" + name + "' is mapped to '" + base_name(files_[i]) + "' which does not contain it");
    open_[i] = f;
  }
  return open_[i];
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& [name, idx] : where_) out.push_back(name);
  return out;
}

std::string Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? dir_ : files_[it->second];
}

const StTensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_file(dir_, "missing tensor '" + name + "'");
  return *shard(it->second)->find(name);
}

at::Tensor Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_file(dir_, "missing tensor '" + name + "'");
  return shard(it->second)->get(name);
}

at::Tensor Checkpoint::get(const std::string& name, at::ScalarType dtype) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail_file(dir_, "missing tensor '" + name + "'");
  return shard(it->second)->get(name, dtype);
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t total = 0;
  for (size_t i = 0; i < files_.size(); ++i)
    for (const auto& t : shard(i)->tensors()) total += t.nbytes();
  return total;
}

void set_config_dtype(json& config, at::ScalarType dtype) {
  const char* name = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  config["torch_dtype"] = name;
  if (config.contains("dtype")) config["dtype"] = name;
}

void save_checkpoint(const std::string& out_dir, const json& config,
                     const std::vector<std::pair<std::string, at::Tensor>>& tensors, const SaveOptions& options) {
  if (options.max_shard_bytes == 0) fail_file(out_dir, "shard size must be positive");
  // Split in the given order, like transformers' shard_checkpoint: start a new shard when the
  // next tensor would overflow the current one (a tensor larger than the limit gets its own).
  std::vector<std::vector<size_t>> shards(1);
  uint64_t current = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    uint64_t bytes = static_cast<uint64_t>(tensors[i].second.numel()) * tensors[i].second.element_size();
    if (!shards.back().empty() && current + bytes > options.max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += bytes;
    total += bytes;
  }

  AtomicDir dir(out_dir);
  if (!config.is_null()) write_json_file(path_join(dir.path(), "config.json"), config);
  if (shards.size() == 1) {
    std::vector<std::pair<std::string, at::Tensor>> all(tensors.begin(), tensors.end());
    save_safetensors(path_join(dir.path(), kSingleName), all);
  } else {
    json weight_map = json::object();
    char name[64];
    for (size_t s = 0; s < shards.size(); ++s) {
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
      std::vector<std::pair<std::string, at::Tensor>> part;
      for (size_t i : shards[s]) {
        part.push_back(tensors[i]);
        weight_map[tensors[i].first] = name;
      }
      save_safetensors(path_join(dir.path(), name), part);
    }
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    write_json_file(path_join(dir.path(), kIndexName), index);
  }
  if (!options.copy_aux_from.empty())
    for (const auto& f : auxiliary_model_files()) {
      std::string src = path_join(options.copy_aux_from, f);
      if (path_exists(src) && !is_directory(src)) copy_file(src, path_join(dir.path(), f));
    }
  dir.commit();
}

}  // namespace mf
