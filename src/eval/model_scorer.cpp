#include "eval/model_scorer.h"

#include <torch/torch.h>

#include <algorithm>

namespace mf::eval {

bool TokenizerEncoder::default_add_bos() const {
  // HF's default for add_special_tokens=True: does encoding "" with specials produce BOS first?
  auto ids = tok_.encode("", true);
  return !ids.empty() && tok_.bos_id() >= 0 && ids.front() == tok_.bos_id();
}

TransformerScorer::TransformerScorer(std::shared_ptr<Model> model, int64_t max_length) : model_(std::move(model)) {
  max_length_ = max_length > 0 ? max_length : model_->config().max_position_embeddings;
  if (max_length_ <= 0) max_length_ = 2048;
}

namespace {

// Right- or left-padded int64 batch and its mask.
std::pair<at::Tensor, at::Tensor> pad_batch(const std::vector<const std::vector<int32_t>*>& seqs, int64_t width,
                                            bool left) {
  const int64_t b = static_cast<int64_t>(seqs.size());
  at::Tensor ids = at::zeros({b, width}, at::kLong), mask = at::zeros({b, width}, at::kLong);
  auto pi = ids.accessor<int64_t, 2>();
  auto pm = mask.accessor<int64_t, 2>();
  for (int64_t r = 0; r < b; ++r) {
    const auto& s = *seqs[r];
    int64_t off = left ? width - static_cast<int64_t>(s.size()) : 0;
    for (size_t j = 0; j < s.size(); ++j) {
      pi[r][off + j] = s[j];
      pm[r][off + j] = 1;
    }
  }
  return {ids, mask};
}

// log p(target) and argmax check for the hidden states `h` [N, H] at scored positions.
void score_positions(Model& model, const at::Tensor& h, const std::vector<int64_t>& targets, std::vector<double>& lp,
                     std::vector<bool>& greedy) {
  at::Tensor logp = at::log_softmax(model.lm_head(h).to(at::kFloat), -1);
  at::Tensor tgt = at::tensor(targets, at::kLong).to(logp.device());
  // Read back on the CPU in one copy each (the model may live on CUDA).
  at::Tensor picked = logp.gather(1, tgt.unsqueeze(1)).squeeze(1).to(at::kCPU, at::kDouble).contiguous();
  at::Tensor best = logp.argmax(1).eq(tgt).to(at::kCPU).contiguous();
  lp.assign(picked.data_ptr<double>(), picked.data_ptr<double>() + picked.numel());
  const bool* b = best.data_ptr<bool>();
  greedy.assign(b, b + targets.size());
}

}  // namespace

std::vector<TokenScore> TransformerScorer::score(const std::vector<ScoreRow>& rows) {
  torch::NoGradGuard no_grad;
  std::vector<TokenScore> out(rows.size());
  if (rows.empty()) return out;
  std::vector<const std::vector<int32_t>*> seqs;
  int64_t width = 0;
  for (const auto& r : rows) {
    seqs.push_back(&r.input);
    width = std::max<int64_t>(width, r.input.size());
  }
  auto [ids, mask] = pad_batch(seqs, width, /*left=*/false);
  at::Tensor hidden = model_->forward_hidden(ids.to(model_->device()), mask.to(model_->device()));
  // Gather the hidden states of every scored position: row r, positions n-m .. n-1.
  std::vector<int64_t> flat, targets;
  for (size_t r = 0; r < rows.size(); ++r) {
    int64_t n = rows[r].input.size(), m = rows[r].targets.size();
    for (int64_t j = 0; j < m; ++j) {
      flat.push_back(static_cast<int64_t>(r) * width + (n - m + j));
      targets.push_back(rows[r].targets[j]);
    }
  }
  at::Tensor h = hidden.reshape({-1, hidden.size(-1)}).index_select(0, at::tensor(flat, at::kLong).to(hidden.device()));
  std::vector<double> lp;
  std::vector<bool> greedy;
  score_positions(*model_, h, targets, lp, greedy);
  size_t k = 0;
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t j = 0; j < rows[r].targets.size(); ++j, ++k) {
      out[r].logprob += lp[k];
      out[r].greedy = out[r].greedy && greedy[k];
    }
  return out;
}

std::vector<std::vector<TokenScore>> TransformerScorer::score_shared(const std::vector<SharedGroup>& groups) {
  torch::NoGradGuard no_grad;
  std::vector<std::vector<TokenScore>> out(groups.size());
  if (groups.empty()) return out;
  const at::Device dev = model_->device();
  // 1. All prefixes in one left-padded batch: the last column predicts every first token.
  std::vector<const std::vector<int32_t>*> prefixes;
  int64_t width = 0;
  for (const auto& g : groups) {
    prefixes.push_back(&g.prefix);
    width = std::max<int64_t>(width, g.prefix.size());
  }
  auto [ids, mask] = pad_batch(prefixes, width, /*left=*/true);
  KvCache cache = model_->make_cache();
  at::Tensor hidden = model_->forward_hidden(ids.to(dev), mask.to(dev), &cache);
  at::Tensor last = hidden.select(1, width - 1);  // [G, H]

  std::vector<int64_t> rows_of, first_targets;  // one entry per continuation
  for (size_t g = 0; g < groups.size(); ++g) {
    out[g].resize(groups[g].continuations.size());
    for (const auto& c : groups[g].continuations) {
      rows_of.push_back(static_cast<int64_t>(g));
      first_targets.push_back(c.front());
    }
  }
  std::vector<double> lp;
  std::vector<bool> greedy;
  score_positions(*model_, last.index_select(0, at::tensor(rows_of, at::kLong).to(dev)), first_targets, lp, greedy);
  size_t k = 0;
  int64_t longest = 0;
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t c = 0; c < groups[g].continuations.size(); ++c, ++k) {
      out[g][c] = {lp[k], greedy[k]};
      longest = std::max<int64_t>(longest, groups[g].continuations[c].size());
    }
  if (longest <= 1) return out;  // single-token continuations: the prefix pass was all

  // 2. Every continuation's remaining tokens on top of its group's cached prefix.
  cache.select_rows(at::tensor(rows_of, at::kLong).to(dev));
  std::vector<std::vector<int32_t>> inputs;
  for (const auto& g : groups)
    for (const auto& c : g.continuations) inputs.emplace_back(c.begin(), c.end() - 1);
  std::vector<const std::vector<int32_t>*> seqs;
  for (const auto& s : inputs) seqs.push_back(&s);
  auto [cids, cmask] = pad_batch(seqs, longest - 1, /*left=*/false);
  at::Tensor ch = model_->forward_hidden(cids.to(dev), cmask.to(dev), &cache);
  std::vector<int64_t> flat, targets;
  k = 0;
  for (const auto& g : groups)
    for (const auto& c : g.continuations) {
      for (size_t j = 1; j < c.size(); ++j) {
        flat.push_back(static_cast<int64_t>(k) * (longest - 1) + static_cast<int64_t>(j - 1));
        targets.push_back(c[j]);
      }
      ++k;
    }
  score_positions(*model_, ch.reshape({-1, ch.size(-1)}).index_select(0, at::tensor(flat, at::kLong).to(dev)), targets,
                  lp, greedy);
  size_t pos = 0;
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t c = 0; c < groups[g].continuations.size(); ++c)
      for (size_t j = 1; j < groups[g].continuations[c].size(); ++j, ++pos) {
        out[g][c].logprob += lp[pos];
        out[g][c].greedy = out[g][c].greedy && greedy[pos];
      }
  return out;
}

}  // namespace mf::eval
