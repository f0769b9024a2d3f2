// safetensors: memory-mapped, validated reader and a writer that follows the reference rules
// (dtype-alignment order, space-padded header, {"format":"pt"} metadata, atomic rename).
// Format: ../shared/specs/merge_and_eval.md §C.4.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace mf {

enum class StDType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2, U16, U32, U64 };

const char* st_dtype_name(StDType t);
int st_dtype_size(StDType t);
// Torch dtype a tensor of this type is exposed as (F8 types are upcast to float32).
at::ScalarType st_to_torch(StDType t);
StDType torch_to_st(at::ScalarType t);  // throws mf::Error for types safetensors cannot hold

struct StTensorInfo {
  std::string name;
  StDType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data buffer
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Maps and validates the file; throws mf::Error "<path>: <problem>".
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // In data-offset order.
  const std::vector<StTensorInfo>& tensors() const { return tensors_; }
  const StTensorInfo* find(const std::string& name) const;
  bool contains(const std::string& name) const { return find(name) != nullptr; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const { return size_; }

  // The tensor as stored. Zero-copy (copy-on-write private mapping, so writes are safe) when
  // the data is aligned; copied otherwise; F8 types are decoded to float32. When the last
  // zero-copy view of a tensor is freed, its whole pages leave the process's RSS (a later get
  // reads them from the file again; in-place changes are not kept once no view holds them), so
  // a model whose layers replace loaded tensors by copies (fused expert weights, conversions)
  // does not keep both resident.
  at::Tensor get(const std::string& name) const;
  // The tensor converted to `dtype` (the source pages are released as above once converted, so
  // loading a whole checkpoint as bf16 stays near 1x its size in RSS).
  at::Tensor get(const std::string& name, at::ScalarType dtype) const;
  // Raw bytes of a tensor (for byte-exact pass-through copies).
  const uint8_t* raw(const StTensorInfo& info) const { return data_ + info.begin; }

 private:
  SafetensorsFile() = default;
  void release_view(size_t index) const;  // a zero-copy view of tensors_[index] was freed
  std::string path_;
  std::vector<StTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
  uint8_t* map_ = nullptr;
  const uint8_t* data_ = nullptr;  // start of the data buffer inside the mapping
  uint64_t size_ = 0;
  std::weak_ptr<SafetensorsFile> self_;
  mutable std::mutex views_mutex_;
  mutable std::vector<int> live_views_;  // zero-copy views alive per tensor
};

// Parses and validates a header (the JSON after the 8-byte length) against a data buffer of
// `data_size` bytes. Exposed for the fuzzer and tests.
void parse_safetensors_header(const std::string& header_json, uint64_t data_size, const std::string& origin,
                              std::vector<StTensorInfo>& tensors, std::map<std::string, std::string>& metadata);

// Writes `tensors` (any device, any layout: made contiguous CPU copies) to `path` atomically.
// `{"format":"pt"}` is always part of the metadata.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace mf
