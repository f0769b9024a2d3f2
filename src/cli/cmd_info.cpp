// `moeforge info MODEL`: what a checkpoint is — architecture, sizes, experts, parameter counts,
// dtypes and files — as a table or JSON. Reads headers only; no tensor data is touched.
// A GGUF file (llama.cpp, docs/gguf.md) is described from its metadata and tensor infos.
#include <algorithm>
#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "gguf/gguf_reader.h"
#include "io/checkpoint.h"
#include "model/config.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf::cli {

namespace {

json describe(const std::string& path) {
  Checkpoint ck = Checkpoint::open(path);
  json out;
  out["path"] = path;
  std::map<std::string, std::vector<int64_t>> shapes;
  std::map<std::string, std::string> file_of;
  std::map<std::string, int64_t> dtype_params;
  int64_t stored_params = 0;
  for (const auto& name : ck.names()) {
    const auto& t = ck.info(name);
    shapes[name] = t.shape;
    file_of[name] = ck.file_of(name);
    dtype_params[st_dtype_name(t.dtype)] += t.numel();
    stored_params += t.numel();
  }
  if (!ck.config().is_null()) {
    ModelConfig cfg = parse_model_config(ck.config(), ck.config_path());
    validate_tensors(cfg, shapes, ck.config_path(), file_of);
    json arch = ck.config().value("architectures", json::array());
    out["architecture"] = arch.empty() ? json(cfg.model_type) : arch[0];
    out["model_type"] = cfg.model_type;
    out["layers"] = cfg.num_layers;
    out["hidden_size"] = cfg.hidden_size;
    out["intermediate_size"] = cfg.intermediate_size;
    out["attention_heads"] = cfg.num_heads;
    out["kv_heads"] = cfg.num_kv_heads;
    out["head_dim"] = cfg.head_dim;
    out["vocab_size"] = cfg.vocab_size;
    out["max_position_embeddings"] = cfg.max_position_embeddings;
    out["tie_word_embeddings"] = cfg.tie_word_embeddings;
    if (cfg.is_moe()) {
      json layers = json::array();
      for (int64_t l = 0; l < cfg.num_layers; ++l) {
        if (!cfg.layer_is_moe(l)) continue;
        const std::vector<int64_t> widths = cfg.layer_expert_widths(l);
        json layer = {{"layer", l}, {"experts", cfg.num_experts}, {"top_k", cfg.num_experts_per_tok}};
        if (std::all_of(widths.begin(), widths.end(), [&](int64_t w) { return w == widths[0]; }))
          layer["expert_size"] = widths[0];
        layer["expert_sizes"] = widths;
        if (cfg.shared_expert_intermediate_size > 0) layer["shared_expert_size"] = cfg.shared_expert_intermediate_size;
        layers.push_back(layer);
      }
      out["moe_layers"] = layers;
      // moeforge, or a stock family wrapped with the merged expert map of `merge --output exact`.
      if (cfg.family == Family::moeforge || cfg.router.type == "merged") {
        const MoeforgeRouter& r = cfg.router;
        out["base_model_type"] = family_name(cfg.family == Family::moeforge ? cfg.base_family : cfg.family);
        out["router"] = {{"type", r.type},         {"score", r.score},       {"selection", r.selection},
                         {"gate", r.gate},         {"top_p", r.top_p},       {"dynk_tau", r.dynk_tau},
                         {"aux_loss", r.aux_loss}, {"aux_loss_coef", r.aux_loss_coef}};
      }
    }
    out["parameters"] = {{"total", total_parameters(cfg)}, {"active_per_token", active_parameters_per_token(cfg)}};
    if (cfg.is_moe()) {
      const ActiveParameterRange range = active_parameter_range(cfg);
      out["parameters"]["active_per_token_min"] = range.min;
      out["parameters"]["active_per_token_max"] = range.max;
    }
  } else {
    out["parameters"] = {{"total", stored_params}};
  }
  out["stored_parameters"] = stored_params;
  out["dtypes"] = dtype_params;
  json files = json::array();
  uint64_t bytes = 0;
  for (const auto& f : ck.files()) {
    uint64_t size = file_size(f);
    bytes += size;
    files.push_back({{"file", base_name(f)}, {"bytes", size}});
  }
  out["files"] = files;
  out["file_bytes"] = bytes;
  return out;
}

std::string moe_summary(const json& layers) {
  // Group consecutive layers with the same shape: "8 experts of 1024, top-2 (layers 0-15)".
  std::string out;
  size_t i = 0;
  while (i < layers.size()) {
    size_t j = i;
    auto same = [&](size_t a, size_t b) {
      return layers[a]["experts"] == layers[b]["experts"] && layers[a]["top_k"] == layers[b]["top_k"] &&
             layers[a]["expert_sizes"] == layers[b]["expert_sizes"] &&
             layers[a].value("shared_expert_size", 0) == layers[b].value("shared_expert_size", 0);
    };
    while (j + 1 < layers.size() && same(i, j + 1)) ++j;
    const json& l = layers[i];
    if (!out.empty()) out += "; ";
    std::string sizes;
    if (l.contains("expert_size")) {
      sizes = std::to_string(l["expert_size"].get<int64_t>());
    } else {  // heterogeneous: every width, in expert order
      for (const auto& w : l["expert_sizes"]) sizes += (sizes.empty() ? "" : "/") + std::to_string(w.get<int64_t>());
    }
    out += cat(l["experts"].get<int64_t>(), " experts of ", sizes, ", top-", l["top_k"].get<int64_t>());
    if (l.contains("shared_expert_size")) out += cat(" + shared expert of ", l["shared_expert_size"].get<int64_t>());
    int64_t a = layers[i]["layer"], b = layers[j]["layer"];
    out += a == b ? cat(" (layer ", a, ")") : cat(" (layers ", a, "-", b, ")");
    i = j + 1;
  }
  return out;
}

void print_table(const json& d) {
  std::vector<std::pair<std::string, std::string>> rows;
  rows.push_back({"model", d["path"]});
  if (d.contains("architecture")) {
    rows.push_back({"architecture", cat(d["architecture"].get<std::string>(), " (", d["model_type"].get<std::string>(), ")")});
    rows.push_back({"layers", std::to_string(d["layers"].get<int64_t>())});
    rows.push_back({"hidden size", std::to_string(d["hidden_size"].get<int64_t>())});
    if (!d.contains("moe_layers") || d["moe_layers"].size() < d["layers"].get<size_t>())
      rows.push_back({"FFN width", std::to_string(d["intermediate_size"].get<int64_t>())});
    rows.push_back({"attention", cat(d["attention_heads"].get<int64_t>(), " heads, ", d["kv_heads"].get<int64_t>(),
                                     " KV heads, head dim ", d["head_dim"].get<int64_t>())});
    rows.push_back({"vocabulary", std::to_string(d["vocab_size"].get<int64_t>()) +
                                      (d["tie_word_embeddings"].get<bool>() ? " (tied embeddings)" : "")});
    rows.push_back({"context", std::to_string(d["max_position_embeddings"].get<int64_t>())});
    if (d.contains("moe_layers")) rows.push_back({"experts", moe_summary(d["moe_layers"])});
    if (d.contains("router")) {
      const json& r = d["router"];
      rows.push_back({"router", cat(r["type"].get<std::string>(), ", ", r["score"].get<std::string>(), ", ",
                                    r["selection"].get<std::string>(), ", gate ", r["gate"].get<std::string>(),
                                    " (base ", d["base_model_type"].get<std::string>(), ")")});
    }
  }
  const json& p = d["parameters"];
  std::string params = format_count(p["total"].get<double>()) + " total";
  if (p.contains("active_per_token"))
    params += ", " + format_count(p["active_per_token"].get<double>()) + " active per token";
  if (p.contains("active_per_token_min") && p["active_per_token_min"] != p["active_per_token_max"])
    params += " (min " + format_count(p["active_per_token_min"].get<double>()) + ", max " +
              format_count(p["active_per_token_max"].get<double>()) + ")";
  rows.push_back({"parameters", params});
  std::string dtypes;
  for (auto it = d["dtypes"].begin(); it != d["dtypes"].end(); ++it)
    dtypes += (dtypes.empty() ? "" : ", ") + it.key() + " (" + format_count(it.value().get<double>()) + ")";
  rows.push_back({"dtypes", dtypes});
  for (const auto& f : d["files"])
    rows.push_back({"file", f["file"].get<std::string>() + "  " + format_bytes(f["bytes"].get<double>())});
  if (d["files"].size() > 1) rows.push_back({"total size", format_bytes(d["file_bytes"].get<double>())});
  for (const auto& [k, v] : rows) std::printf("%-13s %s\n", k.c_str(), v.c_str());
}

bool is_gguf_path(const std::string& path) {
  return !is_directory(path) && (ends_with(path, ".gguf") || gguf::has_gguf_magic(path));
}

// Arrays longer than this are summarised in --json (a vocabulary has 10^5 entries).
constexpr size_t kMaxArrayShown = 16;

json describe_gguf(const std::string& path) {
  const gguf::File f = gguf::read_file(path);
  json out;
  out["path"] = path;
  out["format"] = "gguf";
  out["version"] = f.version;
  out["alignment"] = f.alignment;
  out["data_offset"] = f.data_offset;
  out["file_bytes"] = f.file_size;
  json meta = json::object();
  for (const auto& kv : f.kv) {
    if (kv.type == gguf::ValueType::ARRAY && kv.count > kMaxArrayShown) {
      json head = json::array();
      for (size_t i = 0; i < 8; ++i) head.push_back(kv.value[i]);
      meta[kv.key] = {{"type", "array"}, {"element_type", gguf::value_type_name(kv.elem_type)}, {"count", kv.count},
                      {"head", head}};
    } else {
      meta[kv.key] = kv.value;
    }
  }
  out["metadata"] = meta;
  json tensors = json::array();
  std::map<std::string, int64_t> type_params;
  int64_t params = 0;
  for (const auto& t : f.tensors) {
    const char* tn = gguf::type_traits(t.type).name;
    tensors.push_back({{"name", t.name}, {"ne", t.ne}, {"type", tn}, {"offset", t.offset}, {"bytes", t.nbytes}});
    type_params[tn] += t.numel();
    params += t.numel();
  }
  out["tensors"] = tensors;
  out["tensor_types"] = type_params;
  out["parameters"] = params;
  const std::string arch = f.get_string("general.architecture");
  out["architecture"] = arch;
  const json* tokens = nullptr;
  if (const gguf::KeyValue* kv = f.find("tokenizer.ggml.tokens")) tokens = &kv->value;
  out["vocab_size"] = tokens ? static_cast<int64_t>(tokens->size()) : f.get_int(arch + ".vocab_size");
  return out;
}

void print_gguf_table(const json& d) {
  const json& m = d["metadata"];
  const std::string arch = d["architecture"];
  auto num = [&](const std::string& key) -> std::string {
    auto it = m.find(arch + "." + key);
    return it == m.end() ? std::string() : it->dump();
  };
  auto str = [&](const std::string& key) -> std::string {
    auto it = m.find(key);
    return it == m.end() || !it->is_string() ? std::string() : it->get<std::string>();
  };
  std::vector<std::pair<std::string, std::string>> rows;
  rows.push_back({"model", d["path"]});
  rows.push_back({"format", cat("GGUF v", d["version"].get<int64_t>(), ", alignment ", d["alignment"].get<int64_t>())});
  rows.push_back({"architecture", arch.empty() ? "(none)" : arch});
  if (!str("general.name").empty()) rows.push_back({"name", str("general.name")});
  if (!num("block_count").empty()) rows.push_back({"layers", num("block_count")});
  if (!num("embedding_length").empty()) rows.push_back({"hidden size", num("embedding_length")});
  if (!num("feed_forward_length").empty() && num("expert_count").empty())
    rows.push_back({"FFN width", num("feed_forward_length")});
  if (!num("attention.head_count").empty()) {
    std::string att = num("attention.head_count") + " heads";
    if (!num("attention.head_count_kv").empty()) att += ", " + num("attention.head_count_kv") + " KV heads";
    rows.push_back({"attention", att});
  }
  if (!num("expert_count").empty()) {
    std::string width = num("expert_feed_forward_length").empty() ? num("feed_forward_length")
                                                                  : num("expert_feed_forward_length");
    std::string e = num("expert_count") + " experts of " + width + ", top-" + num("expert_used_count");
    if (!num("expert_shared_feed_forward_length").empty())
      e += " + shared expert of " + num("expert_shared_feed_forward_length");
    rows.push_back({"experts", e});
  }
  if (!num("context_length").empty()) rows.push_back({"context", num("context_length")});
  if (d["vocab_size"].get<int64_t>() >= 0) {
    std::string vocab = std::to_string(d["vocab_size"].get<int64_t>());
    if (!str("tokenizer.ggml.model").empty())
      vocab += " (tokenizer " + str("tokenizer.ggml.model") +
               (str("tokenizer.ggml.pre").empty() ? "" : ", pre " + str("tokenizer.ggml.pre")) + ")";
    rows.push_back({"vocabulary", vocab});
  }
  std::string types;
  for (auto it = d["tensor_types"].begin(); it != d["tensor_types"].end(); ++it)
    types += (types.empty() ? "" : ", ") + it.key() + " (" + format_count(it.value().get<double>()) + ")";
  rows.push_back({"tensors", cat(d["tensors"].size(), ": ", types)});
  rows.push_back({"parameters", format_count(d["parameters"].get<double>())});
  rows.push_back({"metadata", cat(m.size(), " keys")});
  rows.push_back({"file size", format_bytes(d["file_bytes"].get<double>())});
  for (const auto& [k, v] : rows) std::printf("%-13s %s\n", k.c_str(), v.c_str());
}

}  // namespace

void add_info_command(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand("info", "What a checkpoint is: architecture, sizes, experts, parameters, dtypes, files");
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  cmd->add_option("MODEL", *path, "Hugging Face model directory, .safetensors file or .gguf file")->required();
  cmd->add_flag("--json", *as_json, "print JSON instead of a table");
  cmd->callback([path, as_json]() {
    const bool gguf_file = is_gguf_path(*path);
    json d = gguf_file ? describe_gguf(*path) : describe(*path);
    if (*as_json)
      std::printf("%s\n", d.dump(2, ' ', false, json::error_handler_t::replace).c_str());
    else if (gguf_file)
      print_gguf_table(d);
    else
      print_table(d);
  });
}

}  // namespace mf::cli
