// The evaluator's interfaces (engine.h, requests.h) on top of the real runtime and tokenizer.
#pragma once
#include <memory>

#include "eval/engine.h"
#include "eval/requests.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace mf::eval {

class TokenizerEncoder : public TextEncoder {
 public:
  explicit TokenizerEncoder(const Tokenizer& tok) : tok_(tok) {}
  std::vector<int32_t> encode(const std::string& text) const override { return tok_.encode(text, false); }
  int32_t bos_id() const override { return tok_.bos_id(); }
  int32_t eos_id() const override { return tok_.eos_id(); }
  bool default_add_bos() const override;

 private:
  const Tokenizer& tok_;
};

// Scores rows with one batched forward; shared groups run their prefix once (batched across
// groups, left-padded), read every continuation's first token from the prefix's last position,
// and feed only the remaining continuation tokens on top of the cached prefix. The vocabulary
// projection runs only at the positions that are scored.
class TransformerScorer : public LoglikelihoodModel {
 public:
  // max_length <= 0: the model's max_position_embeddings.
  TransformerScorer(std::shared_ptr<Model> model, int64_t max_length = 0);
  int64_t max_length() const override { return max_length_; }
  std::vector<TokenScore> score(const std::vector<ScoreRow>& rows) override;
  std::vector<std::vector<TokenScore>> score_shared(const std::vector<SharedGroup>& groups) override;

 private:
  std::shared_ptr<Model> model_;
  int64_t max_length_;
};

}  // namespace mf::eval
