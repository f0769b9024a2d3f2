#include "profile/domains.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>

#include "io/safetensors.h"
#include "model/model.h"
#include "profile/calibration_data.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

at::Tensor l2_normalize_rows(const at::Tensor& x) {
  at::Tensor f = x.to(at::kFloat);
  at::Tensor n = f.norm(2, {1}, /*keepdim=*/true);
  return f / at::where(n > 0, n, at::ones_like(n));
}

namespace {

// Squared distances [n, k] = |x|² - 2 x·c + |c|², clamped at 0.
at::Tensor squared_distances(const at::Tensor& x, const at::Tensor& c, const at::Tensor& x2) {
  at::Tensor c2 = (c * c).sum(1).unsqueeze(0);
  return (x2 - 2 * at::mm(x, c.t()) + c2).clamp_min(0);
}

}  // namespace

KMeansResult domain_kmeans(const at::Tensor& x_in, int k, uint64_t seed, int max_iter) {
  at::Tensor x = x_in.to(at::kCPU, at::kDouble).contiguous();  // double: exact, order-independent sums
  const int64_t n = x.size(0), d = x.size(1);
  if (k < 1) fail("k-means: k must be >= 1");
  if (n < k) fail(cat("k-means: ", k, " clusters need at least ", k, " documents, got ", n));
  Rng rng(seed);
  at::Tensor x2 = (x * x).sum(1, /*keepdim=*/true);
  // k-means++: first centre uniform, then each next one with probability ∝ D(x)².
  std::vector<int64_t> centres{static_cast<int64_t>(rng.below(n))};
  at::Tensor best = squared_distances(x, x[centres[0]].unsqueeze(0), x2).view(-1);
  while (static_cast<int>(centres.size()) < k) {
    auto bd = best.accessor<double, 1>();
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += bd[i];
    int64_t pick = -1;
    if (total > 0) {
      double r = rng.uniform() * total, acc = 0;
      for (int64_t i = 0; i < n; ++i) {
        acc += bd[i];
        if (bd[i] > 0 && acc >= r) {
          pick = i;
          break;
        }
      }
      if (pick < 0)  // rounding at the end of the cumulative sum
        for (int64_t i = n - 1; i >= 0 && pick < 0; --i)
          if (bd[i] > 0) pick = i;
    } else {
      // Every point coincides with a centre: take any unused index.
      for (int64_t i = 0; i < n && pick < 0; ++i)
        if (std::find(centres.begin(), centres.end(), i) == centres.end()) pick = i;
    }
    centres.push_back(pick);
    best = at::minimum(best, squared_distances(x, x[pick].unsqueeze(0), x2).view(-1));
  }
  at::Tensor c = x.index_select(0, at::tensor(centres, at::kLong)).clone();
  KMeansResult res;
  std::vector<int32_t> labels(n, -1);
  for (int it = 0; it < std::max(1, max_iter); ++it) {
    at::Tensor dist = squared_distances(x, c, x2);
    at::Tensor lab = std::get<1>(dist.min(1));
    auto la = lab.accessor<int64_t, 1>();
    bool changed = false;
    for (int64_t i = 0; i < n; ++i) {
      if (labels[i] != la[i]) changed = true;
      labels[i] = static_cast<int32_t>(la[i]);
    }
    res.iterations = it + 1;
    if (!changed && it > 0) break;
    // Mean step; an empty cluster takes the point farthest from its current centre.
    at::Tensor sums = at::zeros({k, d}, at::kDouble).index_add_(0, lab, x);
    at::Tensor counts = at::zeros({k}, at::kDouble).index_add_(0, lab, at::ones({n}, at::kDouble));
    auto ca = counts.accessor<double, 1>();
    at::Tensor mind = std::get<0>(dist.min(1));
    for (int j = 0; j < k; ++j) {
      if (ca[j] > 0) {
        c[j].copy_(sums[j] / ca[j]);
      } else {
        int64_t far = mind.argmax().item<int64_t>();
        c[j].copy_(x[far]);
        mind[far].fill_(0);
        labels[far] = -1;  // force another assignment round
      }
    }
  }
  at::Tensor dist = squared_distances(x, c, x2);
  auto [mind, lab] = dist.min(1);
  auto la = lab.accessor<int64_t, 1>();
  for (int64_t i = 0; i < n; ++i) labels[i] = static_cast<int32_t>(la[i]);
  res.labels = std::move(labels);
  res.inertia = mind.sum().item<double>();
  res.centroids = c.to(at::kFloat);
  return res;
}

namespace {

at::Tensor read_npy(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0) fail_file(path, "not a .npy file");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) fail_file(path, "truncated .npy header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    fail_file(path, cat(".npy version ", major, " is not supported"));
  }
  if (offset + header_len > bytes.size()) fail_file(path, "truncated .npy header");
  const std::string header = bytes.substr(offset, header_len);
  auto value_of = [&](const std::string& key) -> std::string {
    auto p = header.find("'" + key + "'");
    if (p == std::string::npos) fail_file(path, "npy header has no '" + key + "'");
    p = header.find(':', p);
    return trim(header.substr(p + 1));
  };
  const std::string descr = value_of("descr");
  at::ScalarType dtype;
  size_t item;
  if (starts_with(descr, "'<f4'")) dtype = at::kFloat, item = 4;
  else if (starts_with(descr, "'<f8'")) dtype = at::kDouble, item = 8;
  else fail_file(path, "embeddings must be float32 or float64 (little endian), got descr " + descr.substr(0, 6));
  if (!starts_with(value_of("fortran_order"), "False")) fail_file(path, "Fortran-order arrays are not supported");
  std::string shape = value_of("shape");
  auto open = shape.find('('), close = shape.find(')');
  if (open == std::string::npos || close == std::string::npos) fail_file(path, "bad shape in the npy header");
  std::vector<int64_t> dims;
  for (const auto& part : split(shape.substr(open + 1, close - open - 1), ',')) {
    std::string t = trim(part);
    if (t.empty()) continue;
    try {
      dims.push_back(std::stoll(t));
    } catch (...) {
      fail_file(path, "bad shape in the npy header");
    }
  }
  if (dims.size() != 2) fail_file(path, cat("embeddings must be a 2-D array, got ", dims.size(), " dimensions"));
  const size_t data_off = offset + header_len;
  const size_t need = static_cast<size_t>(dims[0]) * static_cast<size_t>(dims[1]) * item;
  if (bytes.size() - data_off < need) fail_file(path, "file is shorter than its shape says");
  at::Tensor t = at::empty({dims[0], dims[1]}, dtype);
  std::memcpy(t.data_ptr(), bytes.data() + data_off, need);
  return t.to(at::kFloat);
}

}  // namespace

at::Tensor read_embeddings_file(const std::string& path) {
  if (!path_exists(path)) fail_file(path, "no such file");
  at::Tensor t;
  if (ends_with(path, ".npy")) {
    t = read_npy(path);
  } else if (ends_with(path, ".safetensors")) {
    auto f = SafetensorsFile::open(path);
    const StTensorInfo* info = f->find("embeddings");
    if (!info) {
      if (f->tensors().size() != 1) fail_file(path, "expected a tensor named 'embeddings' (or exactly one tensor)");
      info = &f->tensors()[0];
    }
    if (info->shape.size() != 2) fail_file(path, cat("tensor ", info->name, " must be 2-D [documents, dim]"));
    t = f->get(info->name, at::kFloat).clone();
  } else {
    fail_file(path, "embeddings must be a .npy or .safetensors file");
  }
  if (!at::isfinite(t).all().item<bool>()) fail_file(path, "embeddings hold NaN or infinite values");
  return t;
}

at::Tensor mean_pooled_embeddings(Model& model, const std::vector<Sample>& samples, int64_t batch_tokens,
                                  const std::function<void(int64_t)>& on_batch, const BatchSharding& sharding) {
  torch::NoGradGuard no_grad;
  const int64_t n = static_cast<int64_t>(samples.size());
  at::Tensor out = at::zeros({n, model.config().hidden_size}, at::kFloat);
  // Batch by length like the profiling pass; every sample with at least one token counts.
  std::vector<int64_t> order;
  for (int64_t i = 0; i < n; ++i)
    if (!samples[i].ids.empty()) order.push_back(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return samples[a].ids.size() > samples[b].ids.size(); });
  int64_t done = 0, batch_index = 0;
  size_t pos = 0;
  while (pos < order.size()) {
    const int64_t longest = static_cast<int64_t>(samples[order[pos]].ids.size());
    const int64_t take = std::max<int64_t>(1, batch_tokens / std::max<int64_t>(1, longest));
    std::vector<int64_t> which(order.begin() + pos, order.begin() + std::min(order.size(), pos + take));
    pos += which.size();
    if (sharding.owns(batch_index++)) {
      PaddedBatch pb = pad_batch(samples, which);
      const auto dev = model.device();
      at::Tensor mask = pb.mask.defined() ? pb.mask : at::ones_like(pb.ids);
      at::Tensor h = model.forward_hidden(pb.ids.to(dev), pb.mask.defined() ? pb.mask.to(dev) : at::Tensor());
      at::Tensor m = mask.to(dev, at::kFloat).unsqueeze(-1);
      at::Tensor mean = (h.to(at::kFloat) * m).sum(1) / m.sum(1);
      out.index_copy_(0, at::tensor(which, at::kLong), mean.to(at::kCPU));
    }
    done += static_cast<int64_t>(which.size());
    if (on_batch) on_batch(done);
  }
  sharding.sum({out});  // a row is non-zero on one rank only, so its sum is that rank's row exactly
  return out;
}

std::vector<int32_t> domains_from_labels(const std::vector<std::string>& labels, std::vector<std::string>* names) {
  std::map<std::string, int32_t> ids;
  for (const auto& l : labels) ids.emplace(l, 0);
  int32_t next = 0;
  std::vector<std::string> sorted;
  for (auto& [name, id] : ids) {
    id = next++;
    sorted.push_back(name);
  }
  std::vector<int32_t> out;
  out.reserve(labels.size());
  for (const auto& l : labels) out.push_back(ids.at(l));
  if (names) *names = std::move(sorted);
  return out;
}

}  // namespace mf
