#include "eval/model_scorer.h"

#include <torch/torch.h>

#include <algorithm>

#include "util/error.h"

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
  // One packed row per group: the prefix, then every continuation's input tokens (all but its
  // last). Each continuation attends to the prefix and to itself, and its positions restart
  // where the prefix ends, so every token sees exactly what it would in its own row; the prefix
  // is computed once instead of once per choice, with no copies of a cache.
  const int64_t G = static_cast<int64_t>(groups.size());
  int64_t width = 1;
  for (const auto& g : groups) {
    if (g.prefix.empty()) fail("shared-context scoring needs a non-empty context");
    int64_t len = static_cast<int64_t>(g.prefix.size());
    for (const auto& c : g.continuations) len += static_cast<int64_t>(c.size()) - 1;
    width = std::max(width, len);
  }
  at::Tensor ids = at::zeros({G, width}, at::kLong), pos = at::zeros({G, width}, at::kLong);
  at::Tensor allowed = at::zeros({G, width, width}, at::kBool);
  auto pi = ids.accessor<int64_t, 2>();
  auto pp = pos.accessor<int64_t, 2>();
  auto pa = allowed.accessor<bool, 3>();
  std::vector<int64_t> flat, targets;  // scored positions (row-major in [G, width]) and their tokens
  for (int64_t g = 0; g < G; ++g) {
    const auto& grp = groups[g];
    const int64_t P = static_cast<int64_t>(grp.prefix.size());
    for (int64_t i = 0; i < P; ++i) {
      pi[g][i] = grp.prefix[i];
      pp[g][i] = i;
      for (int64_t j = 0; j <= i; ++j) pa[g][i][j] = true;
    }
    int64_t at_ = P;
    for (const auto& c : grp.continuations) {
      flat.push_back(g * width + P - 1);  // the prefix's last position predicts c[0]
      targets.push_back(c[0]);
      const int64_t n = static_cast<int64_t>(c.size()) - 1;
      for (int64_t a = 0; a < n; ++a) {
        const int64_t i = at_ + a;
        pi[g][i] = c[a];
        pp[g][i] = P + a;
        for (int64_t j = 0; j < P; ++j) pa[g][i][j] = true;
        for (int64_t j = at_; j <= i; ++j) pa[g][i][j] = true;
        flat.push_back(g * width + i);
        targets.push_back(c[a + 1]);
      }
      at_ += n;
    }
    for (int64_t i = at_; i < width; ++i) pa[g][i][i] = true;  // padding attends to itself only
  }
  const at::Device dev = model_->device();
  at::Tensor hidden = model_->forward_hidden_packed(ids, pos, allowed);
  std::vector<double> lp;
  std::vector<bool> greedy;
  score_positions(*model_, hidden.reshape({-1, hidden.size(-1)}).index_select(0, at::tensor(flat, at::kLong).to(dev)),
                  targets, lp, greedy);
  size_t k = 0;
  for (int64_t g = 0; g < G; ++g)
    for (const auto& c : groups[g].continuations) {
      TokenScore t{0.0, true};
      for (size_t j = 0; j < c.size(); ++j, ++k) {
        t.logprob += lp[k];
        t.greedy = t.greedy && greedy[k];
      }
      out[g].push_back(t);
    }
  return out;
}

}  // namespace mf::eval
