#include "model/kv_cache.h"

#include <algorithm>

namespace mf {

void KvCache::clear() {
  for (auto& t : k_) t = at::Tensor();
  for (auto& t : v_) t = at::Tensor();
  mask_ = at::Tensor();
  length_ = 0;
}

void KvCache::select_rows(const at::Tensor& index) {
  for (size_t l = 0; l < k_.size(); ++l) {
    if (!k_[l].defined()) continue;
    k_[l] = k_[l].narrow(2, 0, length_).index_select(0, index);
    v_[l] = v_[l].narrow(2, 0, length_).index_select(0, index);
  }
  if (mask_.defined()) mask_ = mask_.narrow(1, 0, length_).index_select(0, index);
}

at::Tensor KvCache::extend_mask(const at::Tensor& new_mask) {
  at::Tensor full = mask_.defined() && length_ > 0 ? at::cat({mask_.narrow(1, 0, length_), new_mask}, 1) : new_mask;
  mask_ = full;
  return full;
}

std::pair<at::Tensor, at::Tensor> KvCache::append(int64_t layer, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(layer >= 0 && layer < num_layers(), "KvCache: layer out of range");
  const int64_t t = k.size(2), need = length_ + t;
  at::Tensor& kb = k_[layer];
  at::Tensor& vb = v_[layer];
  if (!kb.defined() || kb.size(2) < need || kb.size(0) != k.size(0) || kb.scalar_type() != k.scalar_type()) {
    int64_t cap = std::max<int64_t>({need, capacity_, kb.defined() ? 2 * kb.size(2) : 0, 16});
    auto shape = k.sizes().vec();
    shape[2] = cap;
    at::Tensor nk = at::empty(shape, k.options()), nv = at::empty(shape, v.options());
    if (kb.defined() && length_ > 0) {
      nk.narrow(2, 0, length_).copy_(kb.narrow(2, 0, length_));
      nv.narrow(2, 0, length_).copy_(vb.narrow(2, 0, length_));
    }
    kb = nk;
    vb = nv;
  }
  kb.narrow(2, length_, t).copy_(k);
  vb.narrow(2, length_, t).copy_(v);
  return {kb.narrow(2, 0, need), vb.narrow(2, 0, need)};
}

}  // namespace mf
