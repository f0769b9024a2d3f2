// Tokenizer::load (format detection), config files, batch encoding, chat templates.
#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/sentencepiece.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"
#include "util/threads.h"

namespace mf {

using nlohmann::json;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  if (!path_exists(path)) fail_file(path, "no such file or directory");
  if (is_directory(path)) {
    const std::string tj = path_join(path, "tokenizer.json");
    const std::string vj = path_join(path, "vocab.json"), mt = path_join(path, "merges.txt");
    const std::string sp = path_join(path, "tokenizer.model");
    if (path_exists(tj)) return HfTokenizer::from_tokenizer_json(tj, path);
    if (path_exists(vj) && path_exists(mt)) return HfTokenizer::from_gpt2_files(vj, mt, path);
    if (path_exists(sp)) return SpmTokenizer::from_file(sp, path);
    fail_file(path, "no tokenizer.json, vocab.json + merges.txt or tokenizer.model in this directory");
  }
  const std::string dir = parent_dir(path);
  const std::string name = base_name(path);
  if (name == "vocab.json" || name == "merges.txt") {
    const std::string vj = path_join(dir, "vocab.json"), mt = path_join(dir, "merges.txt");
    if (!path_exists(vj) || !path_exists(mt)) fail_file(path, "GPT-2 files need both vocab.json and merges.txt");
    return HfTokenizer::from_gpt2_files(vj, mt, dir);
  }
  if (ends_with(name, ".model")) return SpmTokenizer::from_file(path, dir);
  if (ends_with(name, ".json")) return HfTokenizer::from_tokenizer_json(path, dir);
  // Unknown name: sniff the first byte (JSON vs protobuf).
  std::string head = read_file(path).substr(0, 1);
  if (head == "{") return HfTokenizer::from_tokenizer_json(path, dir);
  return SpmTokenizer::from_file(path, dir);
}

namespace {

// A special-token field of tokenizer_config.json: "x" or {"content": "x", ...}; "" if absent.
std::string token_string(const json& cfg, const char* key) {
  if (!cfg.contains(key)) return {};
  const json& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

std::vector<int32_t> id_list(const json& v) {
  std::vector<int32_t> out;
  if (v.is_number_integer()) out.push_back(v.get<int32_t>());
  if (v.is_array())
    for (const auto& x : v)
      if (x.is_number_integer()) out.push_back(x.get<int32_t>());
  return out;
}

}  // namespace

void Tokenizer::load_config_files(const std::string& dir) {
  std::vector<int32_t> extra_eos;
  const std::string cfg_path = path_join(dir, "tokenizer_config.json");
  if (path_exists(cfg_path)) {
    json cfg = read_json_file(cfg_path);
    if (!cfg.is_object()) fail_file(cfg_path, "top level must be an object");
    auto resolve = [&](const char* key, int32_t& dst) {
      std::string s = token_string(cfg, key);
      if (s.empty()) return;
      int32_t id = piece_to_id(s);
      if (id < 0) fail_file(cfg_path, cat(key, " '", s, "' is not in the vocabulary"));
      dst = id;
    };
    resolve("bos_token", bos_id_);
    resolve("eos_token", eos_id_);
    resolve("pad_token", pad_id_);
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) add_bos_token_ = cfg["add_bos_token"].get<bool>();
    if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) add_eos_token_ = cfg["add_eos_token"].get<bool>();
    std::string jinja;
    if (cfg.contains("chat_template")) {
      const json& ct = cfg["chat_template"];
      if (ct.is_string()) {
        jinja = ct.get<std::string>();
      } else if (ct.is_array()) {  // [{"name": "default", "template": "..."}, ...]
        for (const auto& e : ct)
          if (e.is_object() && e.value("name", std::string()) == "default" && e.contains("template") &&
              e["template"].is_string())
            jinja = e["template"].get<std::string>();
      }
    }
    chat_ = detect_chat_template(jinja, token_string(cfg, "bos_token"));
  }
  const std::string gen_path = path_join(dir, "generation_config.json");
  if (path_exists(gen_path)) {
    json gen = read_json_file(gen_path);
    if (gen.is_object() && gen.contains("eos_token_id")) {
      extra_eos = id_list(gen["eos_token_id"]);
      if (eos_id_ < 0 && !extra_eos.empty()) eos_id_ = extra_eos.front();
    }
    if (gen.is_object() && bos_id_ < 0 && gen.contains("bos_token_id") && gen["bos_token_id"].is_number_integer())
      bos_id_ = gen["bos_token_id"].get<int32_t>();
  }
  set_eos_ids_from(extra_eos);
}

void Tokenizer::set_eos_ids_from(const std::vector<int32_t>& extra) {
  std::vector<int32_t> ids = eos_ids_;
  if (eos_id_ >= 0) ids.push_back(eos_id_);
  ids.insert(ids.end(), extra.begin(), extra.end());
  // Chat models end their turn with a format-specific token.
  const char* turn_end = chat_.format == ChatFormat::llama3   ? "<|eot_id|>"
                         : chat_.format == ChatFormat::chatml ? "<|im_end|>"
                                                              : nullptr;
  if (turn_end)
    if (int32_t id = piece_to_id(turn_end); id >= 0) ids.push_back(id);
  std::vector<int32_t> unique;
  for (int32_t id : ids)
    if (std::find(unique.begin(), unique.end(), id) == unique.end()) unique.push_back(id);
  eos_ids_ = unique;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special_tokens) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  const int n_threads = std::max(1, std::min<int>(hardware_threads(), int(texts.size())));
  if (n_threads <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) out[i] = encode(texts[i], add_special_tokens);
    return out;
  }
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto worker = [&]() {
    try {
      for (size_t i; !failed && (i = next.fetch_add(1)) < texts.size();) out[i] = encode(texts[i], add_special_tokens);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < n_threads; ++t) threads.emplace_back(worker);
  for (auto& th : threads) th.join();
  if (error) std::rethrow_exception(error);
  return out;
}

std::string Tokenizer::apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  return render_chat(chat_, messages, add_generation_prompt);
}

}  // namespace mf
