#include "tokenizer/added_tokens.h"

#include <unicode/uchar.h>

#include "tokenizer/normalizer.h"
#include "tokenizer/unicode.h"

namespace mf {
namespace {

// Rust char::is_alphanumeric || '_' (HF's "word character" for single_word).
bool is_word_char(uint32_t cp) {
  if (cp == '_') return true;
  if (u_hasBinaryProperty(UChar32(cp), UCHAR_ALPHABETIC)) return true;
  int8_t t = u_charType(UChar32(cp));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

uint32_t last_code_point(const std::string& s, size_t end, size_t* begin_out = nullptr) {
  size_t b = end;
  while (b > 0 && (static_cast<unsigned char>(s[b - 1]) & 0xC0) == 0x80) --b;
  if (b > 0) --b;
  size_t i = b;
  uint32_t cp = unicode::next_code_point(s, i);
  if (begin_out) *begin_out = b;
  return cp;
}

bool is_space(uint32_t cp) { return u_isUWhiteSpace(UChar32(cp)); }

}  // namespace

void AddedVocabulary::Trie::add(const std::string& s, int32_t token) {
  if (s.empty()) return;
  if (nodes.empty()) nodes.emplace_back();
  int32_t n = 0;
  for (unsigned char c : s) {
    auto it = nodes[n].next.find(c);
    if (it == nodes[n].next.end()) {
      nodes.emplace_back();
      int32_t k = int32_t(nodes.size() - 1);
      nodes[n].next.emplace(c, k);
      n = k;
    } else {
      n = it->second;
    }
  }
  if (nodes[n].token < 0) nodes[n].token = token;
  first_byte[static_cast<unsigned char>(s[0])] = true;
}

void AddedVocabulary::init(std::vector<AddedToken> tokens, const Normalizer* normalizer) {
  tokens_ = std::move(tokens);
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const auto& t = tokens_[i];
    by_id_[t.id] = i;
    by_content_.emplace(t.content, i);
    if (t.normalized && normalizer)
      tries_[1].add(normalizer->normalize(t.content), int32_t(i));
    else if (t.normalized)
      tries_[1].add(t.content, int32_t(i));
    else
      tries_[0].add(t.content, int32_t(i));
  }
}

const AddedToken* AddedVocabulary::by_id(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::by_content(const std::string& content) const {
  auto it = by_content_.find(content);
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

void AddedVocabulary::split(std::vector<Segment>& segs, bool normalized_kind) const {
  const Trie& trie = tries_[normalized_kind ? 1 : 0];
  if (trie.nodes.size() <= 1) return;
  std::vector<Segment> out;
  out.reserve(segs.size() + 4);
  for (const auto& s : segs) {
    if (s.id >= 0) out.push_back(s);
    else split_one(s, trie, out);
  }
  segs.swap(out);
}

void AddedVocabulary::split_one(const Segment& seg, const Trie& trie, std::vector<Segment>& out) const {
  const std::string& s = seg.text;
  size_t start_offset = 0;  // end of the last emitted token
  size_t pos = 0;
  auto emit_raw = [&](size_t b, size_t e) {
    if (e > b) out.push_back({s.substr(b, e - b), -1, seg.at_start && b == 0});
  };
  while (pos < s.size()) {
    if (!trie.first_byte[static_cast<unsigned char>(s[pos])]) {
      ++pos;
      continue;
    }
    // Longest token starting at pos.
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t k = pos; k < s.size(); ++k) {
      auto it = trie.nodes[node].next.find(static_cast<unsigned char>(s[k]));
      if (it == trie.nodes[node].next.end()) break;
      node = it->second;
      if (trie.nodes[node].token >= 0) {
        best = trie.nodes[node].token;
        best_end = k + 1;
      }
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedToken& t = tokens_[best];
    size_t start = pos, stop = best_end;
    pos = best_end;  // matches never overlap, a rejected one included (aho-corasick iteration)
    if (t.single_word) {
      bool start_ok = start == 0 || !is_word_char(last_code_point(s, start));
      size_t i = stop;
      bool stop_ok = stop == s.size() || !is_word_char(unicode::next_code_point(s, i));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) {
      size_t b = start;
      while (b > start_offset) {
        size_t cb;
        uint32_t cp = last_code_point(s, b, &cb);
        if (!is_space(cp)) break;
        b = cb;
      }
      start = b;
    }
    if (t.rstrip) {
      size_t e = stop;
      while (e < s.size()) {
        size_t i = e;
        uint32_t cp = unicode::next_code_point(s, i);
        if (!is_space(cp)) break;
        e = i;
      }
      stop = e;
      pos = stop;
    }
    emit_raw(start_offset, start);
    out.push_back({s.substr(start, stop - start), t.id, false});
    start_offset = stop;
  }
  emit_raw(start_offset, s.size());
}

}  // namespace mf
