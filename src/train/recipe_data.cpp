// Reading and encoding the router recipe's data (recipe_data.h).
#include "train/recipe_data.h"

#include <algorithm>
#include <map>

#include "util/error.h"
#include "util/json.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/str.h"

namespace mf {

namespace {

struct JsonlExample {
  std::string text, prompt, response, domain = "default";
  bool sft = false;
};

std::vector<JsonlExample> read_examples(const std::string& path) {
  std::vector<JsonlExample> out;
  for_each_jsonl_object(path, [&](const json& j, int64_t line_no) {
    auto where = [&](const std::string& what) { fail(cat(path, ":", line_no, ": ", what)); };
    JsonlExample ex;
    auto str = [&](const char* key, std::string& dst) {
      auto it = j.find(key);
      if (it == j.end() || it->is_null()) return false;
      if (!it->is_string()) where(cat("key '", key, "' must be a string"));
      dst = it->get<std::string>();
      return true;
    };
    const bool has_prompt = str("prompt", ex.prompt), has_response = str("response", ex.response);
    if (has_prompt != has_response) where("an SFT line needs both 'prompt' and 'response'");
    ex.sft = has_prompt;
    if (!ex.sft && !str("text", ex.text)) where("expected key 'text' or keys 'prompt' and 'response'");
    std::string domain;
    if (str("domain", domain)) {
      if (domain.empty()) where("key 'domain' must be a non-empty string");
      ex.domain = domain;
    }
    out.push_back(std::move(ex));
    return true;
  });
  return out;
}

// One row of seq_len + 1 tokens (encoding of recipe_data.h); false when it has no target.
bool make_row(const JsonlExample& ex, const RecipeTokenizer& tok, int64_t seq_len, std::vector<int32_t>& rows) {
  std::vector<int32_t> row;
  if (ex.sft) {
    for (int32_t id : tok.encode(ex.prompt, true)) row.push_back(-1 - id);
    for (int32_t id : tok.encode(ex.response, false)) row.push_back(id);
  } else {
    row = tok.encode(ex.text, true);
  }
  row.push_back(tok.eos_id);
  row.resize(static_cast<size_t>(seq_len + 1), kPadToken);
  bool any_target = false;
  for (size_t i = 1; i < row.size(); ++i) any_target |= row[i] >= 0;
  if (any_target) rows.insert(rows.end(), row.begin(), row.end());
  return any_target;
}

int32_t max_id(const std::vector<int32_t>& tokens) {
  int32_t m = -1;
  for (int32_t v : tokens) {
    if (v == kPadToken) continue;
    m = std::max(m, v >= 0 ? v : -1 - v);
  }
  return m;
}

}  // namespace

DecodedBatch decode_rows(const at::Tensor& windows) {
  const int64_t T = windows.size(1) - 1;
  at::Tensor w = windows.to(at::kLong);
  at::Tensor pad = w == static_cast<int64_t>(kPadToken);
  at::Tensor ids = at::where(w >= 0, w, -w - 1).masked_fill(pad, 0);
  DecodedBatch d;
  d.input_ids = ids.slice(1, 0, T).contiguous();
  if (pad.slice(1, 0, T).any().item<bool>()) d.attention = at::logical_not(pad.slice(1, 0, T)).to(at::kLong);
  at::Tensor tw = w.slice(1, 1, T + 1);
  d.targets = at::where(tw >= 0, tw, at::full_like(tw, -100)).contiguous();
  return d;
}

at::Tensor masked_lm_loss(const at::Tensor& logits, const at::Tensor& targets, double targets_per_rank) {
  at::Tensor flat = logits.reshape({-1, logits.size(-1)}).to(at::kFloat);
  at::Tensor t = targets.reshape({-1});
  if (!(t != -100).any().item<bool>()) return flat.sum() * 0.0;
  if (targets_per_rank > 0)
    return at::cross_entropy_loss(flat, t, {}, at::Reduction::Sum, -100) / targets_per_rank;
  return at::cross_entropy_loss(flat, t, {}, at::Reduction::Mean, -100);
}

RecipeData load_recipe_data(const RouterRecipeConfig& config, const RecipeTokenizer& tok, int64_t vocab) {
  RecipeData d;
  std::vector<JsonlExample> train;
  for (const auto& f : config.train_files)
    for (auto& e : read_examples(f)) train.push_back(std::move(e));
  if (train.empty()) fail_file(config.train_files.front(), "no examples");
  for (const auto& e : train) d.sft |= e.sft;
  const bool rows = d.sft || !config.packing;
  auto check_vocab = [&](const std::vector<int32_t>& tokens, const std::string& what) {
    const int32_t m = max_id(tokens);
    if (m >= vocab) fail(cat(what, ": token id ", m, " outside the model vocabulary of ", vocab));
  };
  auto build = [&](const std::vector<JsonlExample>& exs, const std::string& what) {
    if (rows) {
      std::vector<int32_t> flat;
      Progress bar("tokenize " + what, static_cast<int64_t>(exs.size()), "ex");
      for (const auto& e : exs) {
        if (!make_row(e, tok, config.seq_len, flat)) ++d.dropped;
        bar.advance(1);
      }
      bar.finish();
      check_vocab(flat, what);
      return PackedSequences::from_rows(std::move(flat), config.seq_len);
    }
    std::vector<std::string> texts;
    for (const auto& e : exs) texts.push_back(e.text);
    auto encode = [&](const std::vector<std::string>& ts) {
      std::vector<std::vector<int32_t>> out;
      for (const auto& t : ts) out.push_back(tok.encode(t, true));
      return out;
    };
    std::vector<int32_t> stream = build_token_stream(texts, encode, tok.eos_id, "tokenize " + what);
    check_vocab(stream, what);
    return PackedSequences(std::move(stream), config.seq_len);
  };
  d.train = build(train, "train");
  if (d.train.size() == 0) fail_file(config.train_files.front(), "no training sequence (every example lacks a target within seq_len)");
  std::map<std::string, std::vector<JsonlExample>> by_domain;
  for (const auto& f : config.validation_files)
    for (auto& e : read_examples(f)) by_domain[e.domain].push_back(std::move(e));
  for (auto& [domain, exs] : by_domain) {
    PackedSequences p = build(exs, "validation " + domain);
    if (p.size() == 0) {
      log_warn("validation domain '", domain, "' has no complete sequence; not evaluated");
      continue;
    }
    d.validation.emplace_back(domain, std::move(p));
  }
  if (d.dropped > 0) log_warn(d.dropped, " examples have no target token within seq_len ", config.seq_len, "; skipped");
  return d;
}

}  // namespace mf
