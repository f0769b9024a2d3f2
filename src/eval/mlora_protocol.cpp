// mLoRA's multiple-choice evaluation (mlora_protocol.h), after mLoRA's evaluator: prompt tokens
// with special tokens, right padding, pooled logits at len(tokens) - 1, label-restricted
// softmax(-1).argmax(-1).
#include "eval/mlora_protocol.h"

#include <algorithm>
#include <map>

#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/str.h"

namespace mf::eval {

namespace {

// input_ids [B, T], lengths [B] -> the logits at each row's last real position, [B, V].
using LastLogitsFn = std::function<at::Tensor(const at::Tensor& input_ids, const at::Tensor& lengths)>;

// Rows [B, T, ...] -> row b at position lengths[b] - 1, [B, ...].
at::Tensor at_last_position(const at::Tensor& x, const at::Tensor& lengths) {
  const int64_t B = x.size(0), T = x.size(1);
  std::vector<int64_t> flat_shape{B * T};
  for (int64_t d = 2; d < x.dim(); ++d) flat_shape.push_back(x.size(d));
  const at::Tensor pos = (at::arange(B, at::kLong) * T + lengths.to(at::kCPU, at::kLong) - 1).to(x.device());
  return x.reshape(flat_shape).index_select(0, pos);
}

MloraEvalResult evaluate_items(const std::vector<McItem>& items, const McEncodeFn& encode, const LastLogitsFn& last,
                    const MloraEvalOptions& opt) {
  if (opt.batch_size < 1) fail(cat("mLoRA evaluation: batch size must be at least 1 (got ", opt.batch_size, ")"));
  std::map<std::string, int64_t> label_ids;  // a task's few labels, encoded once
  auto label_id = [&](const std::string& label) {
    auto it = label_ids.find(label);
    if (it == label_ids.end()) it = label_ids.emplace(label, mlora_label_token_ids(encode, {label})[0]).first;
    return it->second;
  };
  MloraEvalResult r;
  r.predictions.reserve(items.size());
  const size_t bs = static_cast<size_t>(opt.batch_size);
  for (size_t start = 0; start < items.size(); start += bs) {
    const size_t end = std::min(items.size(), start + bs);
    std::vector<std::vector<int32_t>> rows;
    int64_t T = 0;
    for (size_t i = start; i < end; ++i) {
      const McItem& it = items[i];
      if (it.answer < 0 || it.answer >= static_cast<int64_t>(it.labels.size()))
        fail(cat("item ", i, ": answer index ", it.answer, " out of range for ", it.labels.size(), " labels"));
      std::vector<int32_t> t = encode(it.prompt, true);
      if (opt.max_seq_len > 0 && static_cast<int64_t>(t.size()) > opt.max_seq_len)
        t.resize(static_cast<size_t>(opt.max_seq_len));
      if (t.empty()) fail(cat("item ", i, ": the prompt encodes to no token"));
      T = std::max(T, static_cast<int64_t>(t.size()));
      rows.push_back(std::move(t));
    }
    const auto B = static_cast<int64_t>(rows.size());
    at::Tensor ids = at::full({B, T}, static_cast<int64_t>(opt.pad_id), at::kLong);
    at::Tensor lengths = at::empty({B}, at::kLong);
    auto ia = ids.accessor<int64_t, 2>();
    auto la = lengths.accessor<int64_t, 1>();
    for (int64_t b = 0; b < B; ++b) {
      const auto& row = rows[static_cast<size_t>(b)];
      for (size_t j = 0; j < row.size(); ++j) ia[b][static_cast<int64_t>(j)] = row[j];
      la[b] = static_cast<int64_t>(row.size());
    }
    at::Tensor scores = last(ids, lengths);
    if (scores.dim() != 2 || scores.size(0) != B)
      fail(cat("mLoRA evaluation: expected last-position logits of shape [", B, ", V], got ", scores.sizes()));
    scores = scores.to(at::kCPU, at::kFloat).contiguous();
    const int64_t V = scores.size(1);
    auto sa = scores.accessor<float, 2>();
    for (int64_t b = 0; b < B; ++b) {
      const McItem& it = items[start + static_cast<size_t>(b)];
      std::vector<float> restricted(it.labels.size());
      for (size_t k = 0; k < it.labels.size(); ++k) {
        const int64_t id = label_id(it.labels[k]);
        if (id >= V) fail(cat("label '", it.labels[k], "' is token ", id, ", outside the logits' vocabulary of ", V));
        restricted[k] = sa[b][id];
      }
      // softmax(-1).argmax(-1) as mLoRA: the first of equal maxima wins.
      const at::Tensor probs = at::softmax(at::tensor(at::ArrayRef<float>(restricted)), 0).contiguous();
      auto pa = probs.accessor<float, 1>();
      int64_t best = 0;
      for (int64_t k = 1; k < probs.size(0); ++k)
        if (pa[k] > pa[best]) best = k;
      r.predictions.push_back(best);
      r.correct += best == it.answer ? 1 : 0;
      ++r.total;
    }
  }
  return r;
}

}  // namespace

std::vector<int64_t> mlora_label_token_ids(const McEncodeFn& encode, const std::vector<std::string>& labels) {
  std::vector<int64_t> out;
  for (const auto& label : labels) {
    const std::vector<int32_t> ids = encode(" " + label, false);
    if (ids.empty()) fail("label '" + label + "': ' " + label + "' encodes to no token");
    out.push_back(ids.back());
  }
  return out;
}

MloraEvalResult mlora_evaluate(const std::vector<McItem>& items, const McEncodeFn& encode,
                               const BatchLogitsFn& logits, const MloraEvalOptions& options) {
  const LastLogitsFn last = [&logits](const at::Tensor& ids, const at::Tensor& lengths) {
    const at::Tensor full = logits(ids, lengths);
    if (full.dim() != 3 || full.size(0) != ids.size(0) || full.size(1) != ids.size(1))
      fail(cat("mLoRA evaluation: the logits function returned shape ", full.sizes(), " for input ", ids.sizes(),
               " (expected [B, T, V])"));
    return at_last_position(full, lengths);
  };
  return evaluate_items(items, encode, last, options);
}

MloraEvalResult mlora_evaluate(Model& model, const Tokenizer& tok, const std::vector<McItem>& items,
                               MloraEvalOptions options) {
  options.pad_id = mlora_pad_id(tok);
  torch::NoGradGuard no_grad;
  struct ModeGuard {
    Model& m;
    bool was_training;
    ~ModeGuard() { m.train(was_training); }
  } mode{model, model.is_training()};
  model.eval();
  const at::Device device = model.device();
  const LastLogitsFn last = [&model, device](const at::Tensor& ids, const at::Tensor& lengths) {
    const at::Tensor mask = (at::arange(ids.size(1), at::kLong).unsqueeze(0) < lengths.unsqueeze(1)).to(at::kLong);
    const at::Tensor hidden = model.forward_hidden(ids.to(device), mask.to(device));  // [B, T, H]
    return model.lm_head(at_last_position(hidden, lengths).unsqueeze(1)).squeeze(1);  // [B, V]
  };
  return evaluate_items(items, mc_encoder(tok), last, options);
}

}  // namespace mf::eval
