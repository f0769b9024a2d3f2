// GGUF v3 writer: metadata (every scalar value type, strings, arrays), tensor infos and
// tensor data aligned to `general.alignment` (32). Tensor data is produced one tensor at a time
// by a callback while the file is written, so a model never has to be in memory as a whole;
// the file is written under a temporary name next to its final one and renamed into place
// only when complete (mf::AtomicFile): an error or a kill leaves nothing half-written.
//
//   gguf::Writer w("llama");
//   w.add_u32("llama.block_count", 6);
//   w.add_tensor("token_embd.weight", {256, 8192}, gguf::TensorType::F16,
//                [&](const gguf::Sink& sink) { sink(bytes.data(), bytes.size()); });
//   w.write("out.gguf");
//
// Layout (llama.cpp ggml/include/gguf.h): magic "GGUF", version u32, tensor count u64, KV count
// u64, the KV pairs (key string, value type u32, value), the tensor infos (name, n_dims u32,
// ne[n_dims] u64 with ne[0] the contiguous row, type u32, offset u64 from the data start), zero
// padding to the alignment, then each tensor's bytes padded to the alignment. Little-endian.
#pragma once
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "gguf/gguf.h"

namespace mf::gguf {

using Sink = std::function<void(const void* data, size_t n)>;
// Writes exactly the tensor's bytes through the sink, in any number of pieces.
using TensorFill = std::function<void(const Sink& sink)>;

class Writer {
 public:
  // Starts the metadata with general.architecture = `arch` and general.alignment = 32.
  explicit Writer(const std::string& arch);

  void add_u8(const std::string& key, uint8_t v);
  void add_i8(const std::string& key, int8_t v);
  void add_u16(const std::string& key, uint16_t v);
  void add_i16(const std::string& key, int16_t v);
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_u64(const std::string& key, uint64_t v);
  void add_i64(const std::string& key, int64_t v);
  void add_f32(const std::string& key, float v);
  void add_f64(const std::string& key, double v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_string_array(const std::string& key, const std::vector<std::string>& v);
  void add_i32_array(const std::string& key, const std::vector<int32_t>& v);
  void add_u32_array(const std::string& key, const std::vector<uint32_t>& v);
  void add_f32_array(const std::string& key, const std::vector<float>& v);
  bool has_key(const std::string& key) const { return keys_.count(key) != 0; }
  size_t kv_count() const { return n_kv_; }

  // `ne` in ggml order (ne[0] = row length, i.e. the reverse of a PyTorch shape), 1..4 dims.
  // Throws mf::Error on a duplicate name, a bad shape, or a row length the type's block size
  // does not divide.
  void add_tensor(const std::string& name, const std::vector<int64_t>& ne, TensorType type, TensorFill fill);
  size_t tensor_count() const { return tensors_.size(); }
  uint64_t data_bytes() const;  // tensor data, padding included

  // Writes the file atomically. `progress(done_bytes, total_bytes)` is called after each tensor.
  void write(const std::string& path, const std::function<void(uint64_t, uint64_t)>& progress = {}) const;

 private:
  struct TensorInfo {
    std::string name;
    std::vector<int64_t> ne;
    TensorType type;
    uint64_t nbytes = 0, offset = 0;
    TensorFill fill;
  };
  void begin_kv(const std::string& key, ValueType type);
  void begin_array(const std::string& key, ValueType elem, uint64_t n);
  template <typename T>
  void put(T v);
  void put_string(const std::string& s);

  std::string kv_;  // serialised KV pairs, in insertion order
  size_t n_kv_ = 0;
  std::set<std::string> keys_;
  std::vector<TensorInfo> tensors_;
  std::set<std::string> tensor_names_;
  uint64_t next_offset_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
};

}  // namespace mf::gguf
