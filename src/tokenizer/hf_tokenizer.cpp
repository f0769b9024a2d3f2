#include "tokenizer/hf_tokenizer.h"

#include <algorithm>

#include "tokenizer/json_fields.h"
#include "tokenizer/token_ids.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"

namespace mf {

using nlohmann::json;

std::unique_ptr<HfTokenizer> HfTokenizer::from_tokenizer_json(const std::string& path, const std::string& config_dir) {
  json j = read_json_file(path);
  return from_json(j, path, config_dir);
}

std::unique_ptr<HfTokenizer> HfTokenizer::from_json(const json& j, const std::string& origin,
                                                    const std::string& config_dir) {
  std::unique_ptr<HfTokenizer> t(new HfTokenizer());
  t->kind_ = "tokenizer.json";
  t->origin_ = origin;
  try {
    if (!j.is_object()) fail_file(origin, "not a tokenizer.json (top level is not an object)");
    if (!j.contains("model") || !j["model"].is_object()) fail_file(origin, "missing object 'model'");
    const json& m = j["model"];
    std::string type = tokjson::get_string(m, "type", "", origin);
    if (type.empty()) {
      // Old files omit the type; a BPE model is recognised by its merges.
      if (m.contains("merges")) type = "BPE";
      else fail_file(origin, "model has no 'type'");
    }
    if (type != "BPE") fail_file(origin, cat("unknown or unsupported model type '", type, "' (supported: BPE)"));
    t->model_ = BpeModel::from_json(m, origin);
    t->normalizer_ = make_normalizer(j.value("normalizer", json()), origin);
    t->pre_tokenizer_ = make_pre_tokenizer(j.value("pre_tokenizer", json()), origin);
    t->post_ = make_post_processor(j.value("post_processor", json()), origin);
    t->decoder_ = make_decoder(j.value("decoder", json()), origin);
    std::vector<AddedToken> added;
    if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
      if (!j["added_tokens"].is_array()) fail_file(origin, "'added_tokens' must be an array");
      for (const auto& a : j["added_tokens"]) {
        if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
            !a["content"].is_string())
          fail_file(origin, "added_tokens: every entry needs an integer 'id' and a string 'content'");
        AddedToken at;
        const int64_t id = json_integer_saturated(a["id"]);
        at.content = a["content"].get<std::string>();
        if (id > kMaxTokenId)
          fail_file(origin, cat("added token '", at.content, "' has id ", a["id"].dump(), ", above the limit of ", kMaxTokenId));
        at.id = id < 0 ? -1 : static_cast<int32_t>(id);
        at.special = tokjson::get_bool(a, "special", false, origin);
        at.single_word = tokjson::get_bool(a, "single_word", false, origin);
        at.lstrip = tokjson::get_bool(a, "lstrip", false, origin);
        at.rstrip = tokjson::get_bool(a, "rstrip", false, origin);
        at.normalized = tokjson::get_bool(a, "normalized", !at.special, origin);
        if (at.id < 0) fail_file(origin, cat("added token '", at.content, "' has a negative id"));
        added.push_back(std::move(at));
      }
    }
    t->added_.init(std::move(added), t->normalizer_.get());
  } catch (const json::exception& e) {
    fail_file(origin, cat("malformed tokenizer.json: ", e.what()));
  }
  t->finish_setup(config_dir);
  return t;
}

std::unique_ptr<HfTokenizer> HfTokenizer::from_gpt2_files(const std::string& vocab_path, const std::string& merges_path,
                                                          const std::string& config_dir) {
  json vj = read_json_file(vocab_path);
  if (!vj.is_object()) fail_file(vocab_path, "vocab.json must be an object {token: id}");
  std::unordered_map<std::string, int32_t> vocab;
  for (auto it = vj.begin(); it != vj.end(); ++it) {
    if (!it.value().is_number_integer()) fail_file(vocab_path, cat("id of '", it.key(), "' is not an integer"));
    const int64_t id = json_integer_saturated(it.value());
    if (id < 0) fail_file(vocab_path, cat("vocab: negative id ", it.value().dump(), " for token '", it.key(), "'"));
    if (id > kMaxTokenId)
      fail_file(vocab_path, cat("id ", it.value().dump(), " of '", it.key(), "' is above the limit of ", kMaxTokenId));
    vocab.emplace(it.key(), static_cast<int32_t>(id));
  }
  std::vector<std::pair<std::string, std::string>> merges;
  const std::string text = read_file(merges_path);
  size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || starts_with(line, "#version")) continue;
    size_t sp = line.find(' ', 1);
    if (sp == std::string::npos) fail_file(merges_path, cat("line ", line_no, ": expected 'a b'"));
    merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
  }
  std::unique_ptr<HfTokenizer> t(new HfTokenizer());
  t->kind_ = "gpt2-vocab-merges";
  t->origin_ = vocab_path;
  t->model_ = std::make_unique<BpeModel>(std::move(vocab), merges, BpeOptions{}, vocab_path + " + " + merges_path);
  // What transformers' GPT-2 converter builds: ByteLevel without prefix space, GPT-2 regex,
  // ByteLevel decoder, <|endoftext|> as the special (bos = eos = unk) token.
  t->pre_tokenizer_ = make_byte_level_pre_tokenizer(false, true);
  t->decoder_ = make_byte_level_decoder();
  std::vector<AddedToken> added;
  const std::string eot = "<|endoftext|>";
  if (int32_t id = t->model_->token_to_id(eot); id >= 0) {
    AddedToken at;
    at.id = id;
    at.content = eot;
    at.special = true;
    added.push_back(at);
  }
  // tokenizer_config.json may declare more added tokens.
  if (!config_dir.empty() && path_exists(path_join(config_dir, "tokenizer_config.json"))) {
    const std::string cfg_path = path_join(config_dir, "tokenizer_config.json");
    json cfg = read_json_file(cfg_path);
    if (cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object()) {
      for (auto it = cfg["added_tokens_decoder"].begin(); it != cfg["added_tokens_decoder"].end(); ++it) {
        const json& a = it.value();
        AddedToken at;
        try {
          at.id = std::stoi(it.key());
        } catch (...) {
          fail_file(cfg_path, cat("added_tokens_decoder: key '", it.key(), "' is not an id"));
        }
        if (at.id < 0 || at.id > kMaxTokenId)
          fail_file(cfg_path, cat("added_tokens_decoder: id ", it.key(), " is outside 0..", kMaxTokenId));
        at.content = tokjson::get_string(a, "content", "", cfg_path);
        if (at.content.empty() || at.content == eot) continue;
        at.special = tokjson::get_bool(a, "special", false, cfg_path);
        at.single_word = tokjson::get_bool(a, "single_word", false, cfg_path);
        at.lstrip = tokjson::get_bool(a, "lstrip", false, cfg_path);
        at.rstrip = tokjson::get_bool(a, "rstrip", false, cfg_path);
        at.normalized = tokjson::get_bool(a, "normalized", !at.special, cfg_path);
        added.push_back(at);
      }
    }
  }
  t->added_.init(std::move(added), nullptr);
  t->finish_setup(config_dir);
  if (t->bos_id_ < 0) t->bos_id_ = t->model_->token_to_id(eot);
  if (t->eos_id_ < 0) t->eos_id_ = t->model_->token_to_id(eot);
  t->set_eos_ids_from({});
  return t;
}

void HfTokenizer::finish_setup(const std::string& config_dir) {
  if (!config_dir.empty()) load_config_files(config_dir);
  const bool template_adds = post_ && post_->adds_tokens();
  if (!template_adds && (add_bos_token_ == 1 || add_eos_token_ == 1)) {
    std::vector<int32_t> pre, suf;
    if (add_bos_token_ == 1 && bos_id_ >= 0) pre.push_back(bos_id_);
    if (add_eos_token_ == 1 && eos_id_ >= 0) suf.push_back(eos_id_);
    post_ = make_affix_processor(pre, suf);
  }
  if (post_) {
    auto pre = post_->prefix(), suf = post_->suffix();
    if (bos_id_ < 0 && !pre.empty()) bos_id_ = pre.front();
    if (eos_id_ < 0 && !suf.empty()) eos_id_ = suf.back();
  }
  set_eos_ids_from({});
}

// A user's regex can still fail on some input (PCRE2's match limit: catastrophic backtracking), so
// encoding errors name the tokenizer file.
std::vector<int32_t> HfTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  try {
    return encode_unchecked(text, add_special_tokens);
  } catch (const Error& e) {
    fail_file(origin_, e.what());
  }
}

std::vector<int32_t> HfTokenizer::encode_unchecked(const std::string& text, bool add_special_tokens) const {
  std::vector<Segment> segs;
  segs.push_back({unicode::sanitize_utf8(text), -1, true});
  added_.split(segs, false);
  if (normalizer_)
    for (auto& s : segs)
      if (s.id < 0) s.text = normalizer_->normalize(s.text);
  if (added_.has_normalized()) added_.split(segs, true);

  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<Piece> pieces;
  for (auto& s : segs) {
    if (s.id >= 0) {
      ids.push_back(s.id);
      continue;
    }
    if (s.text.empty()) continue;
    pieces.clear();
    pieces.push_back({std::move(s.text), s.at_start});
    if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
    for (const auto& p : pieces) model_->tokenize(p.text, ids);
  }
  if (add_special_tokens && post_) post_->process(ids);
  return ids;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (const AddedToken* a = added_.by_id(id)) {
      if (skip_special_tokens && a->special) continue;
      tokens.push_back(a->content);
    } else if (const std::string* t = model_->id_to_token(id)) {
      tokens.push_back(*t);
    }
  }
  if (!decoder_) return join(tokens, " ");
  decoder_->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

std::string HfTokenizer::id_to_piece(int32_t id) const {
  if (const AddedToken* a = added_.by_id(id)) return a->content;
  const std::string* t = model_->id_to_token(id);
  return t ? *t : std::string();
}

int32_t HfTokenizer::piece_to_id(const std::string& piece) const {
  if (const AddedToken* a = added_.by_content(piece)) return a->id;
  return model_->token_to_id(piece);
}

int64_t HfTokenizer::vocab_size() const {
  int64_t n = model_->size();
  for (const auto& a : added_.tokens()) n = std::max<int64_t>(n, int64_t(a.id) + 1);
  return n;
}

bool HfTokenizer::is_special(int32_t id) const {
  const AddedToken* a = added_.by_id(id);
  return a && a->special;
}

}  // namespace mf
