// Reader for the statistics `moeforge profile` writes, as far as `moeforge split` needs them:
//   DIR/profile.safetensors  layers.{l}.importance      F32 [F, D]  log1p + per-domain normalised
//                            layers.{l}.importance_raw  F32 [F, D]  Σ over samples of |score|
//                            layers.{l}.coactivation    F32 [F, F]  (optional)
//   DIR/profile.json         {"domains": D, ...}
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "io/safetensors.h"

namespace mf {

class SplitProfile {
 public:
  // Opens DIR/profile.safetensors (required) and DIR/profile.json (read when present; its
  // "domains" must then match the importance tensors). Errors: "<file>: <what>".
  static SplitProfile open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const std::string& safetensors_path() const { return st_path_; }
  // sha256 of profile.safetensors (provenance).
  const std::string& sha256() const { return sha256_; }
  int64_t domains() const { return domains_; }  // 0 when profile.json is absent

  bool has(int layer, const std::string& what) const;
  // `layers.{layer}.{what}` as float32 with `rows` rows (and `cols` columns when cols > 0).
  // Missing: "<file>: no tensor layers.3.importance (method hemoe needs importance; run moeforge profile)".
  at::Tensor get(int layer, const std::string& what, const std::string& method, int64_t rows, int64_t cols = 0) const;

  static std::string tensor_name(int layer, const std::string& what);

 private:
  std::string dir_, st_path_, sha256_;
  int64_t domains_ = 0;
  std::shared_ptr<SafetensorsFile> file_;
};

}  // namespace mf
