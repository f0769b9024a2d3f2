// tokenizer.ggml.* metadata of the GGUF export, from the files moeforge tokenizes with:
//   - byte-level BPE (tokenizer.json with a ByteLevel pre-tokenizer, or GPT-2 vocab.json +
//     merges.txt): tokenizer.ggml.model "gpt2", the pre-tokenizer llama.cpp implements for the
//     tokenizer's split regex (Llama-3 "llama-bpe", Qwen2 "qwen2", GPT-2 "gpt-2"), tokens, token
//     types, merges;
//   - SentencePiece (tokenizer.model, or a Llama-2-style tokenizer.json with byte fallback):
//     tokenizer.ggml.model "llama", pre "default", pieces, scores, types;
// plus the special token ids, add_bos/add_eos as moeforge's encoder applies them, and the chat
// template. What llama.cpp would tokenize differently is refused, naming the file.
#include <cstring>
#include <map>

#include "gguf/export_internal.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::gguf {

namespace {

// Split regexes of tokenizer.json files and the llama.cpp pre-tokenizer that implements each.
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string pre_for_regex(const std::string& re) {
  if (re == kLlama3Pattern) return "llama-bpe";
  if (re == kQwen2Pattern) return "qwen2";
  if (re == kGpt2Pattern) return "gpt-2";
  return "";
}

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<float> scores;  // SentencePiece only
  std::vector<std::string> merges;
  std::string model, pre;
  int32_t unk = -1;
  bool add_space_prefix = true;
  bool has_space_prefix_key = false;
};

// Pads / checks the token list against the model's embedding rows.
void fit_to_vocab_size(Vocab& v, int64_t n, const std::string& origin, float pad_score) {
  if (static_cast<int64_t>(v.tokens.size()) > n)
    fail_file(origin, cat("the tokenizer has ", v.tokens.size(), " tokens but the model's vocab_size is ", n,
                          " (the GGUF token list must match the embedding rows)"));
  for (int64_t i = static_cast<int64_t>(v.tokens.size()); i < n; ++i) {
    v.tokens.push_back("[PAD" + std::to_string(i) + "]");
    v.types.push_back(kUnused);
    if (!v.scores.empty() || pad_score != 0) v.scores.push_back(pad_score);
  }
}

// llama.cpp's convert treats "<|...|>" added tokens as control tokens even when not marked special.
bool looks_special(const std::string& t) {
  return (starts_with(t, "<|") && ends_with(t, "|>")) || t == "<pad>" || t == "<mask>";
}

void set_token(Vocab& v, int64_t id, const std::string& text, int32_t type, const std::string& origin) {
  if (id < 0) fail_file(origin, cat("token '", text, "' has a negative id"));
  if (static_cast<size_t>(id) >= v.tokens.size()) {
    v.tokens.resize(static_cast<size_t>(id) + 1);
    v.types.resize(static_cast<size_t>(id) + 1, kUnused);
  }
  v.tokens[static_cast<size_t>(id)] = text;
  v.types[static_cast<size_t>(id)] = type;
}

void fill_holes(Vocab& v) {
  for (size_t i = 0; i < v.tokens.size(); ++i)
    if (v.types[i] == kUnused && v.tokens[i].empty()) v.tokens[i] = "[PAD" + std::to_string(i) + "]";
}

// The merges of a tokenizer.json BPE model as llama.cpp stores them ("a b"; a space inside a
// part is written as U+0120, as convert_hf_to_gguf does for the ["a", "b"] form).
std::vector<std::string> merges_of(const json& model, const std::string& origin) {
  std::vector<std::string> out;
  const json& m = model.value("merges", json::array());
  for (const auto& x : m) {
    if (x.is_string()) {
      out.push_back(x.get<std::string>());
    } else if (x.is_array() && x.size() == 2 && x[0].is_string() && x[1].is_string()) {
      auto enc = [](std::string s) {
        std::string r;
        for (char ch : s) r += ch == ' ' ? std::string("\xC4\xA0") : std::string(1, ch);
        return r;
      };
      out.push_back(enc(x[0].get<std::string>()) + " " + enc(x[1].get<std::string>()));
    } else {
      fail_file(origin, "model.merges has an entry that is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  return out;
}

// The split regex a byte-level pre-tokenizer applies, or "" if it is not one llama.cpp has.
std::string byte_level_regex(const json& pre, const std::string& origin, bool& byte_level) {
  byte_level = false;
  if (!pre.is_object()) return "";
  const std::string type = pre.value("type", "");
  if (type == "ByteLevel") {
    byte_level = true;
    if (pre.value("add_prefix_space", false))
      fail_file(origin, "pre_tokenizer ByteLevel with add_prefix_space: true has no llama.cpp equivalent");
    return pre.value("use_regex", true) ? kGpt2Pattern : "";
  }
  if (type != "Sequence") return "";
  const json& seq = pre.value("pretokenizers", json::array());
  std::string regex;
  for (const auto& p : seq) {
    const std::string t = p.value("type", "");
    if (t == "Split" && regex.empty() && p.contains("pattern") && p["pattern"].contains("Regex") &&
        p.value("behavior", "") == "Isolated" && !p.value("invert", false)) {
      regex = p["pattern"]["Regex"].get<std::string>();
    } else if (t == "ByteLevel") {
      byte_level = true;
      if (p.value("add_prefix_space", false))
        fail_file(origin, "pre_tokenizer ByteLevel with add_prefix_space: true has no llama.cpp equivalent");
      if (p.value("use_regex", true)) {
        if (!regex.empty()) return "";  // two regexes in a row: not a llama.cpp pre-tokenizer
        regex = kGpt2Pattern;
      }
    } else {
      return "";
    }
  }
  return regex;
}

// SentencePiece tokenizer.model (protobuf ModelProto): pieces (field 1: piece 1, score 2, type 3)
// and normalizer_spec (field 3: add_dummy_prefix 3).
struct ProtoReader {
  const std::string& b;
  size_t pos, end;
  const std::string& origin;
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= end) fail_file(origin, "truncated protobuf (not a SentencePiece model?)");
      const uint8_t c = static_cast<uint8_t>(b[pos++]);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
    }
    fail_file(origin, "bad protobuf varint (not a SentencePiece model?)");
  }
  // Returns the field number and wire type; `len` is set for length-delimited fields.
  void skip(uint32_t wire) {
    uint64_t n = 0;
    if (wire == 0) { varint(); return; }
    if (wire == 1) n = 8;
    else if (wire == 5) n = 4;
    else if (wire == 2) n = varint();
    else fail_file(origin, "unsupported protobuf wire type (not a SentencePiece model?)");
    if (n > end - pos) fail_file(origin, "truncated protobuf (not a SentencePiece model?)");
    pos += static_cast<size_t>(n);
  }
};

void read_spm_model(const std::string& path, Vocab& v) {
  const std::string b = read_file(path);
  ProtoReader r{b, 0, b.size(), path};
  while (r.pos < r.end) {
    const uint64_t key = r.varint();
    const uint32_t field = static_cast<uint32_t>(key >> 3), wire = static_cast<uint32_t>(key & 7);
    if ((field != 1 && field != 3) || wire != 2) {
      r.skip(wire);
      continue;
    }
    const uint64_t len = r.varint();
    if (len > r.end - r.pos) fail_file(path, "truncated protobuf (not a SentencePiece model?)");
    ProtoReader m{b, r.pos, r.pos + static_cast<size_t>(len), path};
    r.pos += static_cast<size_t>(len);
    std::string piece;
    float score = 0;
    int32_t type = kNormal;
    bool add_dummy_prefix = true;
    while (m.pos < m.end) {
      const uint64_t k = m.varint();
      const uint32_t f = static_cast<uint32_t>(k >> 3), w = static_cast<uint32_t>(k & 7);
      if (field == 1 && f == 1 && w == 2) {
        const uint64_t n = m.varint();
        if (n > m.end - m.pos) fail_file(path, "truncated protobuf piece");
        piece = b.substr(m.pos, static_cast<size_t>(n));
        m.pos += static_cast<size_t>(n);
      } else if (field == 1 && f == 2 && w == 5) {
        if (m.end - m.pos < 4) fail_file(path, "truncated protobuf score");
        std::memcpy(&score, b.data() + m.pos, 4);
        m.pos += 4;
      } else if (field == 1 && f == 3 && w == 0) {
        type = static_cast<int32_t>(m.varint());
      } else if (field == 3 && f == 3 && w == 0) {
        add_dummy_prefix = m.varint() != 0;
      } else {
        m.skip(w);
      }
    }
    if (field == 3) {
      v.add_space_prefix = add_dummy_prefix;
      v.has_space_prefix_key = true;
      continue;
    }
    if (type < kNormal || type > kByte) fail_file(path, cat("piece '", piece, "' has unknown type ", type));
    v.tokens.push_back(piece);
    v.scores.push_back(score);
    v.types.push_back(type);
    if (type == kUnknown && v.unk < 0) v.unk = static_cast<int32_t>(v.tokens.size() - 1);
  }
  if (v.tokens.empty()) fail_file(path, "no pieces (not a SentencePiece model?)");
  v.model = "llama";
  v.pre = "default";
}

// tokenizer_config.json's added_tokens_decoder over a SentencePiece vocabulary (as convert does).
void apply_added_tokens_decoder(const std::string& dir, Vocab& v) {
  const std::string p = path_join(dir, "tokenizer_config.json");
  if (!path_exists(p)) return;
  const json cfg = read_json_file(p);
  if (!cfg.is_object() || !cfg.contains("added_tokens_decoder") || !cfg["added_tokens_decoder"].is_object()) return;
  for (auto it = cfg["added_tokens_decoder"].begin(); it != cfg["added_tokens_decoder"].end(); ++it) {
    if (!it.value().is_object() || !it.value().contains("content") || !it.value()["content"].is_string()) continue;
    int64_t id = -1;
    try {
      id = std::stoll(it.key());
    } catch (const std::exception&) {
      fail_file(p, "added_tokens_decoder key '" + it.key() + "' is not an id");
    }
    const std::string content = it.value()["content"].get<std::string>();
    const bool special = it.value().value("special", false) || looks_special(content);
    set_token(v, id, content, special ? kControl : kUserDefined, p);
    if (v.scores.size() < v.tokens.size()) v.scores.resize(v.tokens.size(), -1000.0f);
    v.scores[static_cast<size_t>(id)] = -1000.0f;
  }
  fill_holes(v);
}

// A tokenizer.json whose model is BPE.
void read_tokenizer_json(const std::string& dir, const std::string& path, Vocab& v) {
  const json j = read_json_file(path);
  const json& model = j.value("model", json::object());
  const std::string mtype = model.value("type", "BPE");
  if (mtype != "BPE")
    fail_file(path, "model type " + mtype + " has no GGUF export here (byte-level BPE and SentencePiece are supported)");
  bool byte_level = false;
  const std::string regex = byte_level_regex(j.value("pre_tokenizer", json()), path, byte_level);
  const bool byte_fallback = model.value("byte_fallback", false);
  const std::string spm_path = path_join(dir, "tokenizer.model");
  if (!byte_level && byte_fallback && path_exists(spm_path)) {  // Llama-2 style: the .model has the scores
    read_spm_model(spm_path, v);
    apply_added_tokens_decoder(dir, v);
    return;
  }
  const json vocab = model.value("vocab", json::object());
  if (!vocab.is_object()) fail_file(path, "model.vocab must be an object of token -> id");
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) fail_file(path, "model.vocab: the id of '" + it.key() + "' is not an integer");
    set_token(v, it.value().get<int64_t>(), it.key(), kNormal, path);
  }
  for (const auto& t : j.value("added_tokens", json::array())) {
    if (!t.is_object() || !t.contains("content") || !t["content"].is_string() || !t.contains("id") ||
        !t["id"].is_number_integer())
      fail_file(path, "an added_tokens entry lacks a string content or an integer id");
    const std::string content = t["content"].get<std::string>();
    const bool special = t.value("special", false) || looks_special(content);
    set_token(v, t.value("id", int64_t(-1)), content, special ? kControl : kUserDefined, path);
  }
  fill_holes(v);
  const std::string unk = model.value("unk_token", json()).is_string() ? model["unk_token"].get<std::string>() : "";
  if (byte_level) {
    v.model = "gpt2";
    v.pre = pre_for_regex(regex);
    if (v.pre.empty())
      fail_file(path, "the pre-tokenizer's split regex " + (regex.empty() ? std::string("(none)") : json(regex).dump()) +
                          " is none of llama.cpp's (Llama-3 \"llama-bpe\", Qwen2 \"qwen2\", GPT-2 \"gpt-2\"): llama.cpp "
                          "would split text differently");
    v.merges = merges_of(model, path);
    return;
  }
  if (!byte_fallback)
    fail_file(path, "a BPE tokenizer without ByteLevel or byte_fallback has no llama.cpp equivalent");
  // Llama-2-style BPE without tokenizer.model: SentencePiece pieces whose scores order the merges
  // as the BPE ranks do (a merged piece scores -rank of the first merge producing it).
  v.model = "llama";
  v.pre = "default";
  v.scores.assign(v.tokens.size(), 0.0f);
  std::map<std::string, int64_t> id_of;
  for (size_t i = 0; i < v.tokens.size(); ++i) id_of[v.tokens[i]] = static_cast<int64_t>(i);
  const std::vector<std::string> merges = merges_of(model, path);
  std::vector<bool> scored(v.tokens.size(), false);
  for (size_t r = 0; r < merges.size(); ++r) {
    const size_t sp = merges[r].find(' ', 1);
    if (sp == std::string::npos) continue;
    auto it = id_of.find(merges[r].substr(0, sp) + merges[r].substr(sp + 1));
    if (it != id_of.end() && !scored[static_cast<size_t>(it->second)]) {
      v.scores[static_cast<size_t>(it->second)] = -static_cast<float>(r + 1);
      scored[static_cast<size_t>(it->second)] = true;
    }
  }
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    const std::string& t = v.tokens[i];
    if (v.types[i] == kNormal && t.size() == 6 && starts_with(t, "<0x") && t[5] == '>') v.types[i] = kByte;
    if (!unk.empty() && t == unk) {
      v.types[i] = kUnknown;
      v.unk = static_cast<int32_t>(i);
    }
    if (v.types[i] == kControl || v.types[i] == kUserDefined) v.scores[i] = -1000.0f;
  }
}

}  // namespace

void add_tokenizer_metadata(Writer& w, const std::string& dir, const ModelConfig& cfg) {
  const std::string tj = path_join(dir, "tokenizer.json"), vj = path_join(dir, "vocab.json"),
                    mt = path_join(dir, "merges.txt"), sp = path_join(dir, "tokenizer.model");
  Vocab v;
  std::string origin;
  if (path_exists(tj)) {
    origin = tj;
    read_tokenizer_json(dir, tj, v);
  } else if (path_exists(vj) && path_exists(mt)) {
    origin = vj;
    const json vocab = read_json_file(vj);
    if (!vocab.is_object()) fail_file(vj, "expected a JSON object of token -> id");
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      if (!it.value().is_number_integer()) fail_file(vj, "the id of '" + it.key() + "' is not an integer");
      set_token(v, it.value().get<int64_t>(), it.key(), kNormal, vj);
    }
    fill_holes(v);
    for (const std::string& line : split(read_file(mt), '\n')) {
      const std::string l = trim(line);
      if (l.empty() || starts_with(l, "#version")) continue;
      const std::vector<std::string> parts = split(l, ' ');
      if (parts.size() != 2) fail_file(mt, "a merge line is not \"a b\": " + l);
      v.merges.push_back(parts[0] + " " + parts[1]);
    }
    v.model = "gpt2";
    v.pre = "gpt-2";
  } else if (path_exists(sp)) {
    origin = sp;
    read_spm_model(sp, v);
    apply_added_tokens_decoder(dir, v);
  } else {
    fail_file(dir, "no tokenizer.json, vocab.json + merges.txt or tokenizer.model: a GGUF needs the tokenizer");
  }
  fit_to_vocab_size(v, cfg.vocab_size, origin, v.model == "llama" ? -1000.0f : 0.0f);

  // Special ids and what encode(add_special_tokens) adds, from moeforge's own tokenizer.
  auto tok = Tokenizer::load(dir);
  const std::vector<int32_t> plain = tok->encode("a", false), with = tok->encode("a", true);
  const bool add_bos = tok->bos_id() >= 0 && with.size() > plain.size() && with.front() == tok->bos_id();
  const bool add_eos = tok->eos_id() >= 0 && with.size() > plain.size() && with.back() == tok->eos_id();

  w.add_string("tokenizer.ggml.model", v.model);
  w.add_string("tokenizer.ggml.pre", v.pre);
  w.add_string_array("tokenizer.ggml.tokens", v.tokens);
  if (v.model == "llama") w.add_f32_array("tokenizer.ggml.scores", v.scores);
  w.add_i32_array("tokenizer.ggml.token_type", v.types);
  if (!v.merges.empty()) w.add_string_array("tokenizer.ggml.merges", v.merges);
  const auto id_key = [&](const char* key, int32_t id) {
    if (id >= 0 && id < cfg.vocab_size) w.add_u32(key, static_cast<uint32_t>(id));
  };
  id_key("tokenizer.ggml.bos_token_id", tok->bos_id());
  id_key("tokenizer.ggml.eos_token_id", tok->eos_id());
  id_key("tokenizer.ggml.unknown_token_id", v.unk);
  id_key("tokenizer.ggml.padding_token_id", tok->pad_id());
  w.add_bool("tokenizer.ggml.add_bos_token", add_bos);
  w.add_bool("tokenizer.ggml.add_eos_token", add_eos);
  if (v.model == "llama" && v.has_space_prefix_key) w.add_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
  const std::string tc = path_join(dir, "tokenizer_config.json");
  if (path_exists(tc)) {
    const json cfg_json = read_json_file(tc);
    if (cfg_json.is_object() && cfg_json.contains("chat_template") && cfg_json["chat_template"].is_string() &&
        !cfg_json["chat_template"].get<std::string>().empty())
      w.add_string("tokenizer.chat_template", cfg_json["chat_template"].get<std::string>());
  }
  log_info("GGUF tokenizer: ", v.model, " (pre ", v.pre, "), ", v.tokens.size(), " tokens, ", v.merges.size(),
           " merges, from ", base_name(origin));
}

}  // namespace mf::gguf
