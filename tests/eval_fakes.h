// Hand-computable stand-ins for a tokenizer and a language model, for the evaluator's tests and
// benchmark.
#pragma once
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "eval/engine.h"
#include "eval/requests.h"

namespace mf::eval::testing {

// GPT-2-like pieces: a space directly before a non-space joins the following run of non-space
// characters (" Paris"); any other whitespace character is a piece of its own. Ids are handed out
// on first sight (starting at 10); BOS = 1, EOS = 2.
class PieceEncoder : public TextEncoder {
 public:
  explicit PieceEncoder(bool has_bos = true, bool default_bos = false) : has_bos_(has_bos), default_bos_(default_bos) {}
  std::vector<int32_t> encode(const std::string& text) const override {
    std::vector<int32_t> out;
    size_t i = 0;
    auto is_ws = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
    while (i < text.size()) {
      size_t b = i;
      if (text[i] == ' ' && i + 1 < text.size() && !is_ws(text[i + 1])) ++i;
      if (is_ws(text[i])) {
        ++i;
      } else {
        while (i < text.size() && !is_ws(text[i])) ++i;
      }
      out.push_back(id(text.substr(b, i - b)));
    }
    return out;
  }
  int32_t bos_id() const override { return has_bos_ ? 1 : -1; }
  int32_t eos_id() const override { return 2; }
  bool default_add_bos() const override { return default_bos_; }
  int32_t id(const std::string& piece) const {
    auto it = ids_.find(piece);
    if (it != ids_.end()) return it->second;
    int32_t v = static_cast<int32_t>(10 + pieces_.size());
    ids_[piece] = v;
    pieces_.push_back(piece);
    return v;
  }
  std::vector<std::string> decode(const std::vector<int32_t>& ids) const {
    std::vector<std::string> out;
    for (int32_t t : ids)
      out.push_back(t == 1 ? "<bos>" : t == 2 ? "<eos>" : pieces_.at(static_cast<size_t>(t - 10)));
    return out;
  }

 private:
  bool has_bos_, default_bos_;
  mutable std::map<std::string, int32_t> ids_;
  mutable std::vector<std::string> pieces_;
};

// log p(next | previous token) from a fixed table of probabilities (rows sum to 1).
class BigramModel : public LoglikelihoodModel {
 public:
  BigramModel(std::vector<std::vector<double>> probs, int64_t max_len) : p_(std::move(probs)), max_len_(max_len) {}
  int64_t max_length() const override { return max_len_; }
  std::vector<TokenScore> score(const std::vector<ScoreRow>& rows) override {
    std::vector<TokenScore> out;
    for (const auto& r : rows) {
      seen_inputs.push_back(r.input);
      TokenScore s;
      const size_t start = r.input.size() - r.targets.size();
      for (size_t k = 0; k < r.targets.size(); ++k) {
        const auto& row = p_.at(static_cast<size_t>(r.input[start + k]));
        s.logprob += std::log(row.at(static_cast<size_t>(r.targets[k])));
        size_t best = 0;
        for (size_t v = 1; v < row.size(); ++v)
          if (row[v] > row[best]) best = v;
        s.greedy = s.greedy && static_cast<int32_t>(best) == r.targets[k];
      }
      out.push_back(s);
    }
    return out;
  }
  std::vector<std::vector<int32_t>> seen_inputs;

 private:
  std::vector<std::vector<double>> p_;
  int64_t max_len_;
};

// A model whose prediction depends on the whole history (a running state), so that scoring
// continuations on a shared prefix differs in code path from independent rows but must agree.
class HistoryModel : public LoglikelihoodModel {
 public:
  HistoryModel(int32_t vocab, int64_t max_len) : vocab_(vocab), max_len_(max_len) {}
  int64_t max_length() const override { return max_len_; }

  struct State {
    int64_t sum = 0, count = 0;
    int32_t last = 0;
  };
  static State push(State s, int32_t tok) {
    s.sum += tok;
    s.count += 1;
    s.last = tok;
    return s;
  }
  // log-softmax of logits[v] = sin(0.37 v (1 + sum mod 7)) + 0.5 [v == (last + count) mod V]
  void logprobs(const State& s, std::vector<double>& lp) const {
    lp.resize(static_cast<size_t>(vocab_));
    double mx = -1e300;
    for (int32_t v = 0; v < vocab_; ++v) {
      double x = std::sin(0.37 * v * (1 + s.sum % 7)) + (v == (s.last + s.count) % vocab_ ? 0.5 : 0.0);
      lp[static_cast<size_t>(v)] = x;
      mx = std::max(mx, x);
    }
    double z = 0;
    for (double x : lp) z += std::exp(x - mx);
    for (double& x : lp) x = x - mx - std::log(z);
  }
  TokenScore score_from(State s, const std::vector<int32_t>& targets) {
    TokenScore out;
    std::vector<double> lp;
    for (int32_t t : targets) {
      logprobs(s, lp);
      const int32_t tv = t % vocab_;  // ids beyond the vocabulary wrap around
      out.logprob += lp[static_cast<size_t>(tv)];
      size_t best = 0;
      for (size_t v = 1; v < lp.size(); ++v)
        if (lp[v] > lp[best]) best = v;
      out.greedy = out.greedy && static_cast<int32_t>(best) == tv;
      s = push(s, t);
      ++tokens_processed;
    }
    return out;
  }
  std::vector<TokenScore> score(const std::vector<ScoreRow>& rows) override {
    std::vector<TokenScore> out;
    for (const auto& r : rows) {
      State s;
      const size_t start = r.input.size() - r.targets.size();
      for (size_t k = 0; k <= start; ++k) {
        s = push(s, r.input[k]);
        if (k < start) ++tokens_processed;
      }
      out.push_back(score_from(s, r.targets));
    }
    return out;
  }
  std::vector<std::vector<TokenScore>> score_shared(const std::vector<SharedGroup>& groups) override {
    ++shared_calls;
    std::vector<std::vector<TokenScore>> out;
    for (const auto& g : groups) {
      State s;
      for (int32_t t : g.prefix) s = push(s, t);
      tokens_processed += static_cast<int64_t>(g.prefix.size()) - 1;
      std::vector<TokenScore> res;
      for (const auto& c : g.continuations) res.push_back(score_from(s, c));
      out.push_back(res);
    }
    return out;
  }
  int64_t tokens_processed = 0;
  int64_t shared_calls = 0;

 private:
  int32_t vocab_;
  int64_t max_len_;
};

}  // namespace mf::eval::testing
