#include "split/profile_data.h"

#include "model/config.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/str.h"

namespace mf {

std::string SplitProfile::tensor_name(int layer, const std::string& what) { return cat("layers.", layer, ".", what); }

SplitProfile SplitProfile::open(const std::string& dir) {
  SplitProfile p;
  p.dir_ = dir;
  if (!is_directory(dir)) fail_file(dir, "not a profile directory (run moeforge profile)");
  p.st_path_ = path_join(dir, "profile.safetensors");
  if (!path_exists(p.st_path_)) fail_file(p.st_path_, "no such file (run moeforge profile)");
  p.file_ = SafetensorsFile::open(p.st_path_);
  p.sha256_ = sha256_file(p.st_path_);
  std::string js = path_join(dir, "profile.json");
  if (path_exists(js)) {
    json j = read_json_file(js);
    p.domains_ = json_get_or<int64_t>(j, "domains", 0, js);
    if (p.domains_ < 0) fail_file(js, "key 'domains' must be >= 0");
  }
  return p;
}

bool SplitProfile::has(int layer, const std::string& what) const { return file_->contains(tensor_name(layer, what)); }

at::Tensor SplitProfile::get(int layer, const std::string& what, const std::string& method, int64_t rows,
                             int64_t cols) const {
  const std::string name = tensor_name(layer, what);
  const StTensorInfo* info = file_->find(name);
  if (!info)
    fail_file(st_path_, cat("no tensor ", name, " (method ", method, " needs ", what, "; run moeforge profile)"));
  std::vector<int64_t> want = {rows};
  if (cols > 0) want.push_back(cols);
  bool ok = info->shape.size() == 2 && info->shape[0] == rows && (cols <= 0 || info->shape[1] == cols);
  if (!ok) {
    std::string expect = cols > 0 ? shape_string(want) : cat("[", rows, ", D]");
    fail_file(st_path_, cat("tensor ", name, " has shape ", shape_string(info->shape), ", the model needs ", expect));
  }
  if (what == "importance" || what == "importance_raw") {
    if (domains_ > 0 && info->shape[1] != domains_)
      fail_file(st_path_, cat("tensor ", name, " has ", info->shape[1], " domain columns but profile.json says ",
                              domains_, " domains"));
  }
  at::Tensor t = file_->get(name, at::kFloat);
  if (!at::isfinite(t).all().item<bool>()) fail_file(st_path_, cat("tensor ", name, " holds NaN or infinite values"));
  return t;
}

}  // namespace mf
