#include "model/generate.h"

#include <algorithm>

#include "util/error.h"

namespace mf {

at::Tensor sampling_distribution(const at::Tensor& logits_in, const SamplingOptions& o) {
  at::Tensor logits = logits_in.to(at::kCPU, at::kFloat).reshape({-1});  // sampling runs on the CPU
  const int64_t V = logits.numel();
  if (o.temperature <= 0) {
    at::Tensor p = at::zeros({V});
    p[logits.argmax().item<int64_t>()] = 1.0;
    return p;
  }
  logits = logits / o.temperature;
  if (o.top_k > 0 && o.top_k < V) {
    // Keep everything at least as large as the k-th largest value (transformers keeps ties).
    double kth = std::get<0>(at::topk(logits, o.top_k)).min().item<double>();
    logits = logits.masked_fill(logits < kth, -INFINITY);
  }
  at::Tensor p = at::softmax(logits, 0);
  if (o.top_p < 1.0) {
    auto sorted = at::sort(p, /*stable=*/true, 0, /*descending=*/true);
    at::Tensor sp = std::get<0>(sorted), idx = std::get<1>(sorted);
    // Keep the smallest prefix whose mass reaches top_p (at least one token).
    at::Tensor before = sp.cumsum(0) - sp;  // mass strictly before each token
    at::Tensor drop = before >= o.top_p;
    drop[0] = false;
    p = p.index_put({idx.masked_select(drop)}, at::zeros({1}));
    p = p / p.sum();
  }
  return p;
}

int64_t sample_token(const at::Tensor& logits, const SamplingOptions& o, Rng& rng) {
  if (o.temperature <= 0) return logits.to(at::kCPU, at::kFloat).reshape({-1}).argmax().item<int64_t>();
  at::Tensor p = sampling_distribution(logits, o).contiguous();
  const float* d = p.data_ptr<float>();
  const int64_t V = p.numel();
  double u = rng.uniform(), acc = 0;
  int64_t last = 0;
  for (int64_t i = 0; i < V; ++i) {
    if (d[i] <= 0) continue;
    last = i;
    acc += d[i];
    if (u < acc) return i;
  }
  return last;  // rounding: u beyond the accumulated mass
}

std::vector<int64_t> generate(Model& model, const std::vector<int64_t>& prompt, const GenerateOptions& o,
                              const std::function<bool(int64_t)>& on_token) {
  if (prompt.empty()) fail("generation needs a non-empty prompt");
  at::NoGradGuard guard;
  Rng rng(o.seed);
  KvCache cache = model.make_cache(static_cast<int64_t>(prompt.size()) + o.max_new_tokens);
  std::vector<int64_t> out;
  at::Tensor ids = at::tensor(prompt, at::kLong).view({1, -1});
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    at::Tensor h = model.forward_hidden(ids, {}, &cache);
    at::Tensor logits = model.lm_head(h.narrow(1, h.size(1) - 1, 1))[0][0];
    int64_t tok = sample_token(logits, o.sampling, rng);
    out.push_back(tok);
    if (on_token && !on_token(tok)) break;
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), tok) != o.stop_ids.end()) break;
    ids = at::full({1, 1}, tok, at::kLong);
  }
  return out;
}

}  // namespace mf
