// Key/value cache for incremental decoding: per layer, preallocated [B, Hkv, capacity, D]
// buffers that grow by doubling, plus the attention mask of every position seen so far
// (so left-padded batches keep their padding masked while decoding).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace mf {

class KvCache {
 public:
  KvCache() = default;
  // `capacity`: positions to preallocate (grows automatically when exceeded).
  KvCache(int64_t num_layers, int64_t capacity = 0) : k_(num_layers), v_(num_layers), capacity_(capacity) {}

  int64_t length() const { return length_; }  // positions stored
  int64_t num_layers() const { return static_cast<int64_t>(k_.size()); }
  bool empty() const { return length_ == 0; }
  void clear();

  // Attention mask of all stored positions plus `new_mask` [B, T] (int64, 1 = real token).
  // Called once per forward pass before the layers run; returns the full mask [B, length+T].
  at::Tensor extend_mask(const at::Tensor& new_mask);
  const at::Tensor& mask() const { return mask_; }

  // Stores layer `layer`'s new keys/values [B, Hkv, T, D] at positions [length, length+T) and
  // returns views of everything stored so far [B, Hkv, length+T, D].
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& k, const at::Tensor& v);
  // Re-indexes the batch: row i becomes the old row index[i] (int64 [B']), e.g. to score several
  // continuations on top of one shared prefix.
  void select_rows(const at::Tensor& index);

  // Advances length by T after all layers appended.
  void commit(int64_t t) { length_ += t; }

 private:
  std::vector<at::Tensor> k_, v_;
  at::Tensor mask_;
  int64_t capacity_ = 0;
  int64_t length_ = 0;
};

}  // namespace mf
