#include "tokenizer/bpe.h"

#include <cstdio>
#include <functional>
#include <queue>

#include "tokenizer/unicode.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/token_ids.h"
#include "util/error.h"
#include "util/log.h"
#include "util/str.h"

namespace mf {

namespace {
inline uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
}  // namespace

BpeModel::BpeModel(std::unordered_map<std::string, int32_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
                   const std::string& origin)
    : vocab_(std::move(vocab)), opt_(std::move(options)), cache_(new Shard[kShards]) {
  int32_t max_id = -1;
  for (const auto& [tok, id] : vocab_) {
    if (id < 0) fail_file(origin, cat("vocab: negative id ", id, " for token '", tok, "'"));
    if (id > kMaxTokenId) fail_file(origin, cat("vocab: id ", id, " of token '", tok, "' is above the limit of ", kMaxTokenId));
    max_id = std::max(max_id, id);
  }
  id_to_token_.assign(size_t(max_id + 1), std::string());
  has_id_.assign(size_t(max_id + 1), false);
  for (const auto& [tok, id] : vocab_) {
    if (has_id_[id]) fail_file(origin, cat("vocab: id ", id, " used twice ('", id_to_token_[id], "', '", tok, "')"));
    id_to_token_[id] = tok;
    has_id_[id] = true;
  }
  merges_.reserve(merges.size() * 2);
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    int32_t ia = token_to_id(a), ib = token_to_id(b);
    if (ia < 0) fail_file(origin, cat("merge ", r, " ('", a, " ", b, "'): token '", a, "' is not in the vocabulary"));
    if (ib < 0) fail_file(origin, cat("merge ", r, " ('", a, " ", b, "'): token '", b, "' is not in the vocabulary"));
    std::string merged = a + b;
    if (!opt_.continuing_subword_prefix.empty() && starts_with(b, opt_.continuing_subword_prefix))
      merged = a + b.substr(opt_.continuing_subword_prefix.size());
    int32_t im = token_to_id(merged);
    if (im < 0) fail_file(origin, cat("merge ", r, " ('", a, " ", b, "'): merged token '", merged, "' is not in the vocabulary"));
    merges_.emplace(pair_key(ia, ib), std::make_pair(int32_t(r), im));  // first (lowest rank) wins
  }
  if (!opt_.unk_token.empty()) {
    unk_id_ = token_to_id(opt_.unk_token);
    if (unk_id_ < 0) fail_file(origin, cat("unk_token '", opt_.unk_token, "' is not in the vocabulary"));
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    byte_fallback_id_[b] = token_to_id(name);
  }
  if (opt_.continuing_subword_prefix.empty() && opt_.end_of_word_suffix.empty()) {
    char_id_.assign(0x10000, -1);
    for (const auto& [tok, id] : vocab_) {
      if (tok.empty()) continue;
      size_t i = 0;
      uint32_t cp = unicode::next_code_point(tok, i);
      if (i == tok.size() && cp < 0x10000) char_id_[cp] = id;
    }
  }
}

int32_t BpeModel::token_to_id(const std::string& token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || size_t(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::tokenize(const std::string& word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (opt_.ignore_merges) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  Shard& shard = cache_[std::hash<std::string>()(word) % kShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.map.find(word);
    if (it != shard.map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  size_t start = out.size();
  merge_word(word, out);
  if (word.size() < 256) {
    std::lock_guard<std::mutex> lock(shard.mu);
    if (shard.map.size() >= kShardCapacity) shard.map.clear();
    shard.map.emplace(word, std::vector<int32_t>(out.begin() + start, out.end()));
  }
}

void BpeModel::merge_word(const std::string& word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  thread_local std::vector<Symbol> syms;
  syms.clear();
  auto add = [&](int32_t id) {
    int32_t n = int32_t(syms.size());
    syms.push_back({id, n - 1, n + 1, true});
  };

  // 1. One symbol per character (HF merge_word), with byte fallback / unk for unknown ones.
  int32_t pending_unk = 0;  // number of pending unk symbols (fused into one when fuse_unk)
  auto flush_unk = [&]() {
    if (pending_unk > 0) add(unk_id_);
    pending_unk = 0;
  };
  size_t i = 0;
  while (i < word.size()) {
    const size_t begin = i;
    const uint32_t cp = unicode::next_code_point(word, i);
    int32_t id = -1;
    if (!char_id_.empty()) {
      if (cp < 0x10000) id = char_id_[cp];
      else id = token_to_id(word.substr(begin, i - begin));
    } else {
      std::string s = word.substr(begin, i - begin);
      if (begin > 0 && !opt_.continuing_subword_prefix.empty()) s = opt_.continuing_subword_prefix + s;
      if (i == word.size() && !opt_.end_of_word_suffix.empty()) s += opt_.end_of_word_suffix;
      id = token_to_id(s);
    }
    if (id >= 0) {
      flush_unk();
      add(id);
      continue;
    }
    if (opt_.byte_fallback) {
      bool all = true;
      for (size_t k = begin; k < i; ++k) all = all && byte_fallback_id_[static_cast<unsigned char>(word[k])] >= 0;
      if (all) {
        flush_unk();
        for (size_t k = begin; k < i; ++k) add(byte_fallback_id_[static_cast<unsigned char>(word[k])]);
        continue;
      }
    }
    if (unk_id_ >= 0) {
      if (!opt_.fuse_unk) flush_unk();
      pending_unk = 1;
    }
    // no unk token: HF drops the character
  }
  flush_unk();
  if (syms.empty()) return;
  syms.back().next = -1;

  // 2. Merge loop: lowest rank first, then leftmost; stale queue entries are skipped.
  struct Merge {
    int32_t rank, pos, new_id;
    bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  thread_local std::vector<Merge> heap_storage;
  heap_storage.clear();
  std::priority_queue<Merge, std::vector<Merge>, std::greater<Merge>> queue(std::greater<Merge>(),
                                                                              std::move(heap_storage));
  auto lookup = [&](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t>* {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t k = 0; k + 1 < syms.size(); ++k)
    if (auto m = lookup(syms[k].id, syms[k + 1].id)) queue.push({m->first, int32_t(k), m->second});
  while (!queue.empty()) {
    Merge top = queue.top();
    queue.pop();
    Symbol& left = syms[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = syms[left.next];
    auto m = lookup(left.id, right.id);
    if (!m || m->second != top.new_id) continue;  // stale
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = top.pos;
    if (left.prev >= 0)
      if (auto p = lookup(syms[left.prev].id, left.id)) queue.push({p->first, left.prev, p->second});
    if (left.next >= 0)
      if (auto n = lookup(left.id, syms[left.next].id)) queue.push({n->first, top.pos, n->second});
  }
  for (const auto& s : syms)
    if (s.alive) out.push_back(s.id);
}

std::unique_ptr<BpeModel> BpeModel::from_json(const nlohmann::json& m, const std::string& origin) {
  if (!m.contains("vocab") || !m["vocab"].is_object()) fail_file(origin, "model: missing object 'vocab'");
  if (!m.contains("merges") || !m["merges"].is_array()) fail_file(origin, "model: missing array 'merges'");
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(m["vocab"].size() * 2);
  for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
    if (!it.value().is_number_integer()) fail_file(origin, cat("model.vocab: id of '", it.key(), "' is not an integer"));
    const int64_t id = json_integer_saturated(it.value());
    if (id < 0) fail_file(origin, cat("vocab: negative id ", it.value().dump(), " for token '", it.key(), "'"));
    if (id > kMaxTokenId)
      fail_file(origin, cat("model.vocab: id ", it.value().dump(), " of '", it.key(), "' is above the limit of ", kMaxTokenId));
    vocab.emplace(it.key(), static_cast<int32_t>(id));
  }
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(m["merges"].size());
  size_t r = 0;
  for (const auto& e : m["merges"]) {
    if (e.is_string()) {
      // Legacy "a b": split at the first space after position 0 (a token may itself be " ").
      const std::string s = e.get<std::string>();
      size_t sp = s.find(' ', 1);
      if (sp == std::string::npos) fail_file(origin, cat("merge ", r, " ('", s, "') is not of the form 'a b'"));
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
    } else {
      fail_file(origin, cat("merge ", r, " must be a string 'a b' or a pair [\"a\", \"b\"]"));
    }
    ++r;
  }
  using namespace tokjson;
  BpeOptions opt;
  opt.ignore_merges = get_bool(m, "ignore_merges", false, origin);
  opt.byte_fallback = get_bool(m, "byte_fallback", false, origin);
  opt.fuse_unk = get_bool(m, "fuse_unk", false, origin);
  opt.unk_token = get_string(m, "unk_token", "", origin);
  opt.continuing_subword_prefix = get_string(m, "continuing_subword_prefix", "", origin);
  opt.end_of_word_suffix = get_string(m, "end_of_word_suffix", "", origin);
  // Dropout only matters in training; encode() is deterministic as HF's is with dropout off.
  if (m.contains("dropout") && m["dropout"].is_number() && m["dropout"].get<double>() > 0)
    log_warn(origin, ": BPE dropout is ignored (deterministic encoding)");
  return std::make_unique<BpeModel>(std::move(vocab), merges, std::move(opt), origin);
}

}  // namespace mf
