#include "train/data.h"

#include <algorithm>
#include <memory>

#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/progress.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

std::vector<TextDocument> read_documents_jsonl(const std::string& path) {
  std::vector<TextDocument> docs;
  for_each_jsonl_object(path, [&](const json& j, int64_t line) {
    auto where = [&](const std::string& what) { fail(cat(path, ":", line, ": ", what)); };
    auto text = j.find("text");
    if (text == j.end()) where("missing key 'text'");
    if (!text->is_string()) where("key 'text' must be a string");
    TextDocument doc{text->get<std::string>(), "default"};
    auto domain = j.find("domain");
    if (domain != j.end() && !domain->is_null()) {
      if (!domain->is_string() || domain->get<std::string>().empty()) where("key 'domain' must be a non-empty string");
      doc.domain = domain->get<std::string>();
    }
    docs.push_back(std::move(doc));
    return true;
  });
  return docs;
}

TokenizeBatchFn tokenize_each(std::function<std::vector<int32_t>(const std::string&)> encode) {
  return [encode = std::move(encode)](const std::vector<std::string>& texts) {
    std::vector<std::vector<int32_t>> out;
    out.reserve(texts.size());
    for (const auto& t : texts) out.push_back(encode(t));
    return out;
  };
}

std::vector<int32_t> build_token_stream(const std::vector<std::string>& texts, const TokenizeBatchFn& tokenize,
                                        int32_t eos_id, const std::string& progress_label) {
  std::vector<int32_t> stream;
  const size_t chunk = 512;  // big enough for a threaded encode_batch, small enough for a live bar
  std::unique_ptr<Progress> bar;
  if (!progress_label.empty())
    bar = std::make_unique<Progress>(progress_label, static_cast<int64_t>(texts.size()), "doc");
  for (size_t i = 0; i < texts.size(); i += chunk) {
    std::vector<std::string> part(texts.begin() + i, texts.begin() + std::min(texts.size(), i + chunk));
    auto ids = tokenize(part);
    if (ids.size() != part.size()) fail("tokenizer returned a wrong number of sequences");
    for (const auto& doc : ids) {
      stream.insert(stream.end(), doc.begin(), doc.end());
      stream.push_back(eos_id);
    }
    if (bar) bar->advance(static_cast<int64_t>(part.size()));
  }
  if (bar) bar->finish();
  return stream;
}

PackedSequences::PackedSequences(std::vector<int32_t> stream, int64_t seq_len)
    : stream_(std::move(stream)), seq_len_(seq_len) {
  if (seq_len <= 0) fail("seq_len must be positive");
  const int64_t n = static_cast<int64_t>(stream_.size());
  num_windows_ = n > seq_len ? (n - 1) / seq_len : 0;
  stride_ = seq_len;
}

PackedSequences PackedSequences::from_rows(std::vector<int32_t> rows, int64_t seq_len) {
  if (seq_len <= 0) fail("seq_len must be positive");
  if (rows.size() % static_cast<size_t>(seq_len + 1) != 0) fail("rows: token count is not a multiple of seq_len + 1");
  PackedSequences p;
  p.stream_ = std::move(rows);
  p.seq_len_ = seq_len;
  p.stride_ = seq_len + 1;
  p.num_windows_ = static_cast<int64_t>(p.stream_.size()) / (seq_len + 1);
  return p;
}

int32_t PackedSequences::max_token() const {
  return stream_.empty() ? -1 : *std::max_element(stream_.begin(), stream_.end());
}

at::Tensor PackedSequences::windows(const std::vector<int64_t>& indices) const {
  const int64_t w = seq_len_ + 1;
  at::Tensor out = at::empty({static_cast<int64_t>(indices.size()), w}, at::kLong);
  int64_t* dst = out.data_ptr<int64_t>();
  for (size_t b = 0; b < indices.size(); ++b) {
    const int64_t i = indices[b];
    if (i < 0 || i >= num_windows_) fail(cat("window index ", i, " out of range [0, ", num_windows_, ")"));
    const int32_t* src = stream_.data() + i * stride_;
    for (int64_t t = 0; t < w; ++t) dst[b * w + t] = src[t];
  }
  return out;
}

ShuffledBatches::ShuffledBatches(const PackedSequences& data, int64_t batch_size, uint64_t seed)
    : data_(data), batch_size_(batch_size), seed_(seed) {
  if (batch_size <= 0) fail("batch_size must be positive");
  if (data.size() < batch_size)
    fail(cat("the training data holds ", data.size(), " sequences of ", data.seq_len() + 1,
             " tokens, fewer than one batch of ", batch_size));
  make_permutation();
}

void ShuffledBatches::make_permutation() {
  perm_.resize(static_cast<size_t>(data_.size()));
  for (size_t i = 0; i < perm_.size(); ++i) perm_[i] = static_cast<int64_t>(i);
  // One independent stream per epoch; Fisher-Yates with our own generator (portable).
  uint64_t s = seed_ ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(pos_.epoch + 1));
  Rng rng(splitmix64(s));
  for (size_t i = perm_.size(); i > 1; --i) std::swap(perm_[i - 1], perm_[rng.below(i)]);
}

at::Tensor ShuffledBatches::next() { return data_.windows(next_indices()); }

std::vector<int64_t> ShuffledBatches::next_indices() {
  if (pos_.offset + batch_size_ > static_cast<int64_t>(perm_.size())) {
    ++pos_.epoch;
    pos_.offset = 0;
    make_permutation();
  }
  std::vector<int64_t> idx(perm_.begin() + pos_.offset, perm_.begin() + pos_.offset + batch_size_);
  pos_.offset += batch_size_;
  return idx;
}

void ShuffledBatches::restore(const LoaderPosition& pos) {
  if (pos.epoch < 0 || pos.offset < 0 || pos.offset > data_.size()) fail("invalid data position in checkpoint");
  pos_ = pos;
  make_permutation();
}

}  // namespace mf
