#include "profile/calibration_data.h"

#include <algorithm>

#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"

namespace mf {

std::vector<CalibrationDoc> read_calibration_jsonl(const std::string& path, const std::string& domain_field,
                                                   bool required_domain) {
  const std::string field = domain_field.empty() ? "domain" : domain_field;
  std::vector<CalibrationDoc> docs;
  for_each_jsonl_object(path, [&](const json& j, int64_t line_no) {
    auto where = [&](const std::string& what) { fail(cat(path, ":", line_no, ": ", what)); };
    CalibrationDoc doc;
    doc.line = line_no;
    auto text = j.find("text");
    auto prompt = j.find("prompt");
    auto response = j.find("response");
    if (text != j.end()) {
      if (!text->is_string()) where("key 'text' must be a string");
      doc.text = text->get<std::string>();
    } else if (prompt != j.end() || response != j.end()) {
      if (prompt == j.end()) where("SFT line without key 'prompt'");
      if (response == j.end()) where("SFT line without key 'response'");
      if (!prompt->is_string()) where("key 'prompt' must be a string");
      if (!response->is_string()) where("key 'response' must be a string");
      doc.sft = true;
      doc.text = prompt->get<std::string>();
      doc.response = response->get<std::string>();
    } else {
      where("missing key 'text' (or 'prompt' and 'response')");
    }
    auto d = j.find(field);
    if (d != j.end() && !d->is_null()) {
      if (d->is_string()) doc.domain = d->get<std::string>();
      else if (d->is_number() || d->is_boolean()) doc.domain = d->dump();
      else where(cat("key '", field, "' must be a string or a number"));
      if (doc.domain.empty()) where(cat("key '", field, "' is empty"));
      doc.has_domain = true;
    } else if (required_domain) {
      where(cat("no field '", field, "' (--domain-field)"));
    }
    docs.push_back(std::move(doc));
    return true;
  });
  if (docs.empty()) fail_file(path, "no documents (expected JSONL lines with a 'text' field)");
  return docs;
}

std::vector<Sample> tokenize_calibration(const std::vector<CalibrationDoc>& docs, const Tokenizer& tok,
                                         int64_t seq_len) {
  std::vector<std::string> first;
  std::vector<std::string> responses;
  std::vector<size_t> sft_index;
  first.reserve(docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    first.push_back(docs[i].text);
    if (docs[i].sft) {
      responses.push_back(docs[i].response);
      sft_index.push_back(i);
    }
  }
  auto ids = tok.encode_batch(first, /*add_special_tokens=*/true);
  auto rids = tok.encode_batch(responses, /*add_special_tokens=*/false);
  std::vector<Sample> out(docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    out[i].ids.assign(ids[i].begin(), ids[i].end());
    out[i].index = static_cast<int64_t>(i);
  }
  for (size_t r = 0; r < sft_index.size(); ++r) {
    Sample& s = out[sft_index[r]];
    // At least position 1: the first token is never a target.
    s.loss_begin = std::max<int64_t>(1, static_cast<int64_t>(s.ids.size()));
    s.ids.insert(s.ids.end(), rids[r].begin(), rids[r].end());
    if (tok.eos_id() >= 0) s.ids.push_back(tok.eos_id());
  }
  for (auto& s : out)
    if (static_cast<int64_t>(s.ids.size()) > seq_len) s.ids.resize(seq_len);
  return out;
}

std::vector<std::vector<int64_t>> make_length_batches(const std::vector<Sample>& samples, int64_t batch_tokens) {
  std::vector<int64_t> order;
  for (size_t i = 0; i < samples.size(); ++i)
    if (samples[i].loss_tokens() > 0) order.push_back(static_cast<int64_t>(i));
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return samples[a].ids.size() > samples[b].ids.size(); });
  std::vector<std::vector<int64_t>> batches;
  int64_t longest = 0;
  for (int64_t i : order) {
    const int64_t len = static_cast<int64_t>(samples[i].ids.size());
    if (!batches.empty() && static_cast<int64_t>(batches.back().size() + 1) * std::max(longest, len) <= batch_tokens) {
      batches.back().push_back(i);
      longest = std::max(longest, len);
    } else {
      batches.push_back({i});
      longest = len;
    }
  }
  return batches;
}

PaddedBatch pad_batch(const std::vector<Sample>& samples, const std::vector<int64_t>& which) {
  const int64_t B = static_cast<int64_t>(which.size());
  int64_t T = 0;
  for (int64_t i : which) T = std::max<int64_t>(T, static_cast<int64_t>(samples[i].ids.size()));
  PaddedBatch pb;
  pb.ids = at::zeros({B, T}, at::kLong);
  at::Tensor mask = at::zeros({B, T}, at::kLong);
  pb.weights = at::zeros({B, T}, at::kFloat);
  auto ids = pb.ids.accessor<int64_t, 2>();
  auto m = mask.accessor<int64_t, 2>();
  auto w = pb.weights.accessor<float, 2>();
  bool padded = false;
  for (int64_t b = 0; b < B; ++b) {
    const Sample& s = samples[which[b]];
    const int64_t n = static_cast<int64_t>(s.ids.size());
    padded = padded || n < T;
    for (int64_t t = 0; t < n; ++t) {
      ids[b][t] = s.ids[t];
      m[b][t] = 1;
    }
    const int64_t scored = s.loss_tokens();
    for (int64_t t = s.loss_begin; t < n; ++t) w[b][t] = 1.0f / static_cast<float>(scored);
    pb.tokens += n;
  }
  if (padded) pb.mask = mask;
  return pb;
}

}  // namespace mf
