#include "tokenizer/trainer.h"

#include <algorithm>
#include <memory>
#include <queue>
#include <atomic>
#include <cctype>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "tokenizer/pretokenize.h"
#include "tokenizer/regex.h"
#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/str.h"
#include "util/threads.h"

namespace mf {

namespace {

inline uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

const Regex& split_regex() {
  static const Regex re(kLlama3Pattern);
  return re;
}

// Chunk boundaries that no pre-token crosses under the Llama-3 pattern: right after a '\n'
// that is followed by an ASCII letter or digit.
std::vector<size_t> chunk_bounds(const std::string& text, size_t target) {
  std::vector<size_t> bounds{0};
  size_t pos = target;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    while (nl != std::string::npos && nl + 1 < text.size() && !std::isalnum(static_cast<unsigned char>(text[nl + 1])))
      nl = text.find('\n', nl + 1);
    if (nl == std::string::npos || nl + 1 >= text.size()) break;
    bounds.push_back(nl + 1);
    pos = nl + 1 + target;
  }
  bounds.push_back(text.size());
  return bounds;
}

}  // namespace

BpeTrainer::BpeTrainer(BpeTrainerOptions options) : opt_(std::move(options)) {
  if (opt_.vocab_size < 3 + 256) fail(cat("vocab size must be at least 259 (3 specials + 256 bytes), got ", opt_.vocab_size));
}

void BpeTrainer::count_chunk(const std::string& text, size_t begin, size_t end,
                             std::unordered_map<std::string, int64_t>& counts) const {
  std::vector<std::pair<size_t, size_t>> m;
  const std::string chunk = unicode::sanitize_utf8(text.substr(begin, end - begin));
  split_regex().find_all(chunk, m);
  // Isolated split: gaps between matches are pre-tokens too.
  size_t last = 0;
  for (auto [b, e] : m) {
    if (b > last) ++counts[chunk.substr(last, b - last)];
    ++counts[chunk.substr(b, e - b)];
    last = e;
  }
  if (last < chunk.size()) ++counts[chunk.substr(last)];
}

void BpeTrainer::add_text(const std::string& text) {
  if (trained_) fail("BpeTrainer: add_text after train");
  const size_t chunk = 1 << 20;
  auto bounds = chunk_bounds(text, chunk);
  const int n_chunks = int(bounds.size()) - 1;
  int n_threads = opt_.threads > 0 ? opt_.threads : hardware_threads();
  n_threads = std::max(1, std::min(n_threads, n_chunks));
  std::vector<std::unordered_map<std::string, int64_t>> partial(n_threads);
  std::atomic<int> next{0};
  std::exception_ptr error;
  std::mutex error_mu, bar_mu;
  std::unique_ptr<Progress> bar;
  if (opt_.progress && text.size() >= (8u << 20)) bar = std::make_unique<Progress>("counting", int64_t(text.size()), "B");
  auto worker = [&](int t) {
    try {
      for (int c; (c = next.fetch_add(1)) < n_chunks;) {
        count_chunk(text, bounds[c], bounds[c + 1], partial[t]);
        if (bar) {
          std::lock_guard<std::mutex> lock(bar_mu);
          bar->advance(int64_t(bounds[c + 1] - bounds[c]));
        }
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
    }
  };
  if (n_threads == 1) {
    worker(0);
  } else {
    std::vector<std::thread> threads;
    for (int t = 0; t < n_threads; ++t) threads.emplace_back(worker, t);
    for (auto& th : threads) th.join();
  }
  if (bar) bar->finish();
  if (error) std::rethrow_exception(error);
  for (auto& p : partial)
    for (auto& [w, c] : p) counts_[w] += c;
  bytes_ += int64_t(text.size());
}

void BpeTrainer::add_files(const std::vector<std::string>& paths) {
  for (const auto& p : paths) {
    if (!path_exists(p)) fail_file(p, "no such file");
    log_debug("counting ", p);
    add_text(read_file(p));
  }
}

void BpeTrainer::train() {
  if (trained_) fail("BpeTrainer: train called twice");
  trained_ = true;
  // Vocabulary: specials, then the 256 byte symbols in byte order.
  tokens_ = {opt_.bos_token, opt_.eos_token, opt_.pad_token};
  const int32_t byte_base = int32_t(tokens_.size());
  for (int b = 0; b < 256; ++b) tokens_.push_back(unicode::byte_to_piece(static_cast<unsigned char>(b)));

  // Words in sorted order: deterministic whatever the counting threads did.
  word_text_.reserve(counts_.size());
  for (const auto& [w, c] : counts_) word_text_.push_back(w);
  std::sort(word_text_.begin(), word_text_.end());
  std::vector<int64_t> freq(word_text_.size());
  words_.resize(word_text_.size());
  for (size_t i = 0; i < word_text_.size(); ++i) {
    freq[i] = counts_[word_text_[i]];
    for (unsigned char b : word_text_[i]) words_[i].push_back(byte_base + b);
    word_index_.emplace(word_text_[i], int32_t(i));
  }
  counts_.clear();

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;
  for (size_t w = 0; w < words_.size(); ++w) {
    const auto& s = words_[w];
    for (size_t k = 0; k + 1 < s.size(); ++k) {
      uint64_t p = pair_key(s[k], s[k + 1]);
      pair_count[p] += freq[w];
      auto& list = pair_words[p];
      if (list.empty() || list.back() != int32_t(w)) list.push_back(int32_t(w));
    }
  }
  struct Entry {
    int64_t count;
    uint64_t pair;
    // Max-heap on count; ties: the smaller pair (left id, then right id) first.
    bool operator<(const Entry& o) const { return count != o.count ? count < o.count : pair > o.pair; }
  };
  std::priority_queue<Entry> heap;
  for (const auto& [p, c] : pair_count) heap.push({c, p});

  const int64_t target = opt_.vocab_size - int64_t(tokens_.size());
  std::unique_ptr<Progress> bar;
  if (opt_.progress) bar = std::make_unique<Progress>("merges", target, "merge");
  std::vector<int32_t> stamp(words_.size(), -1);
  std::unordered_map<std::string, int32_t> token_ids;
  for (size_t i = 0; i < tokens_.size(); ++i) token_ids.emplace(tokens_[i], int32_t(i));
  std::unordered_set<uint64_t> banned;
  std::vector<uint64_t> touched;
  std::vector<int32_t> merged;
  while (int64_t(merges_.size()) < target && !heap.empty()) {
    Entry top = heap.top();
    heap.pop();
    auto it = pair_count.find(top.pair);
    const int64_t current = it == pair_count.end() ? 0 : it->second;
    if (banned.count(top.pair)) continue;
    if (current != top.count) {  // stale: re-queue with the true count
      if (current > 0) heap.push({current, top.pair});
      continue;
    }
    if (current < opt_.min_frequency) break;
    const int32_t a = int32_t(top.pair >> 32), b = int32_t(top.pair & 0xFFFFFFFFu);
    std::string merged_text = tokens_[a] + tokens_[b];
    if (token_ids.count(merged_text)) {
      // Another pair already made this string ("ab"+"c" vs "a"+"bc"). Never merge this pair:
      // one id per string, and the encoder then agrees with the training words exactly.
      banned.insert(top.pair);
      continue;
    }
    const int32_t new_id = int32_t(tokens_.size());
    const int32_t iter = int32_t(merges_.size());
    token_ids.emplace(merged_text, new_id);
    tokens_.push_back(std::move(merged_text));
    merges_.emplace_back(a, b);
    touched.clear();
    std::vector<int32_t> list;
    list.swap(pair_words[top.pair]);
    pair_words.erase(top.pair);
    for (int32_t w : list) {
      if (stamp[w] == iter) continue;
      stamp[w] = iter;
      auto& s = words_[w];
      bool has = false;
      for (size_t k = 0; k + 1 < s.size() && !has; ++k) has = s[k] == a && s[k + 1] == b;
      if (!has) continue;  // stale entry: the pair left this word in an earlier merge
      const int64_t f = freq[w];
      for (size_t k = 0; k + 1 < s.size(); ++k) pair_count[pair_key(s[k], s[k + 1])] -= f;
      merged.clear();
      for (size_t k = 0; k < s.size();) {
        if (k + 1 < s.size() && s[k] == a && s[k + 1] == b) {
          merged.push_back(new_id);
          k += 2;
        } else {
          merged.push_back(s[k++]);
        }
      }
      s.assign(merged.begin(), merged.end());
      for (size_t k = 0; k + 1 < s.size(); ++k) {
        uint64_t p = pair_key(s[k], s[k + 1]);
        pair_count[p] += f;
        if (s[k] == new_id || s[k + 1] == new_id) {
          auto& pl = pair_words[p];
          if (pl.empty() || pl.back() != w) pl.push_back(w);
          touched.push_back(p);
        }
      }
    }
    pair_count.erase(top.pair);
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t p : touched) heap.push({pair_count[p], p});
    if (bar) bar->advance();
  }
  if (bar) bar->finish();
  if (int64_t(merges_.size()) < target)
    log_warn("tokenizer train: stopped at ", merges_.size(), " merges (vocabulary ", tokens_.size(),
             "): no pair occurs ", opt_.min_frequency, "+ times any more");
}

nlohmann::ordered_json BpeTrainer::tokenizer_json() const {
  using oj = nlohmann::ordered_json;
  if (!trained_) fail("BpeTrainer: tokenizer_json before train");
  oj added = oj::array();
  const std::string specials[3] = {opt_.bos_token, opt_.eos_token, opt_.pad_token};
  for (int i = 0; i < 3; ++i)
    added.push_back(oj{{"id", i}, {"content", specials[i]}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", true}});
  oj vocab = oj::object();
  for (size_t i = 0; i < tokens_.size(); ++i) vocab[tokens_[i]] = int32_t(i);
  oj merges = oj::array();
  for (auto [a, b] : merges_) merges.push_back(tokens_[a] + " " + tokens_[b]);
  oj j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = oj{{"type", "Sequence"},
                          {"pretokenizers",
                           oj::array({oj{{"type", "Split"},
                                         {"pattern", oj{{"Regex", kLlama3Pattern}}},
                                         {"behavior", "Isolated"},
                                         {"invert", false}},
                                      oj{{"type", "ByteLevel"},
                                         {"add_prefix_space", false},
                                         {"trim_offsets", true},
                                         {"use_regex", false}}})}};
  j["post_processor"] = oj{
      {"type", "TemplateProcessing"},
      {"single", oj::array({oj{{"SpecialToken", oj{{"id", opt_.bos_token}, {"type_id", 0}}}},
                            oj{{"Sequence", oj{{"id", "A"}, {"type_id", 0}}}}})},
      {"pair", oj::array({oj{{"SpecialToken", oj{{"id", opt_.bos_token}, {"type_id", 0}}}},
                          oj{{"Sequence", oj{{"id", "A"}, {"type_id", 0}}}},
                          oj{{"SpecialToken", oj{{"id", opt_.bos_token}, {"type_id", 1}}}},
                          oj{{"Sequence", oj{{"id", "B"}, {"type_id", 1}}}}})},
      {"special_tokens",
       oj{{opt_.bos_token, oj{{"id", opt_.bos_token}, {"ids", oj::array({0})}, {"tokens", oj::array({opt_.bos_token})}}}}}};
  j["decoder"] = oj{{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = oj{{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"ignore_merges", false},
                  {"vocab", vocab},
                  {"merges", merges}};
  return j;
}

nlohmann::ordered_json BpeTrainer::tokenizer_config_json() const {
  using oj = nlohmann::ordered_json;
  oj decoder = oj::object();
  const std::string specials[3] = {opt_.bos_token, opt_.eos_token, opt_.pad_token};
  for (int i = 0; i < 3; ++i)
    decoder[std::to_string(i)] = oj{{"content", specials[i]}, {"lstrip", false}, {"normalized", false},
                                    {"rstrip", false}, {"single_word", false}, {"special", true}};
  return oj{{"added_tokens_decoder", decoder},
            {"bos_token", opt_.bos_token},
            {"eos_token", opt_.eos_token},
            {"pad_token", opt_.pad_token},
            {"clean_up_tokenization_spaces", false},
            {"model_input_names", oj::array({"input_ids", "attention_mask"})},
            {"model_max_length", 1000000000},
            {"tokenizer_class", "PreTrainedTokenizerFast"}};
}

void BpeTrainer::save(const std::string& dir) const {
  make_dirs(dir);
  write_file_atomic(path_join(dir, "tokenizer.json"), tokenizer_json().dump(2) + "\n");
  write_file_atomic(path_join(dir, "tokenizer_config.json"), tokenizer_config_json().dump(2) + "\n");
  nlohmann::ordered_json map{{"bos_token", opt_.bos_token}, {"eos_token", opt_.eos_token}, {"pad_token", opt_.pad_token}};
  write_file_atomic(path_join(dir, "special_tokens_map.json"), map.dump(2) + "\n");
}

std::vector<int32_t> BpeTrainer::encode_training_text(const std::string& text) const {
  std::vector<int32_t> out;
  std::vector<std::pair<size_t, size_t>> m;
  const std::string s = unicode::sanitize_utf8(text);
  split_regex().find_all(s, m);
  auto emit = [&](size_t b, size_t e) {
    auto it = word_index_.find(s.substr(b, e - b));
    if (it == word_index_.end()) fail(cat("encode_training_text: pre-token at byte ", b, " was not in the training text"));
    const auto& w = words_[it->second];
    out.insert(out.end(), w.begin(), w.end());
  };
  size_t last = 0;
  for (auto [b, e] : m) {
    if (b > last) emit(last, b);
    emit(b, e);
    last = e;
  }
  if (last < s.size()) emit(last, s.size());
  return out;
}

}  // namespace mf
