// `moeforge info MODEL`: what a checkpoint is — architecture, sizes, experts, parameter counts,
// dtypes and files — as a table or JSON. Reads headers only; no tensor data is touched.
#include <algorithm>
#include <cstdio>
#include <map>

#include "cli/commands.h"
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
      if (cfg.family == Family::moeforge) {
        const MoeforgeRouter& r = cfg.router;
        out["base_model_type"] = family_name(cfg.base_family);
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

}  // namespace

void add_info_command(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand("info", "What a checkpoint is: architecture, sizes, experts, parameters, dtypes, files");
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  cmd->add_option("MODEL", *path, "Hugging Face model directory or .safetensors file")->required();
  cmd->add_flag("--json", *as_json, "print JSON instead of a table");
  cmd->callback([path, as_json]() {
    json d = describe(*path);
    if (*as_json)
      std::printf("%s\n", d.dump(2).c_str());
    else
      print_table(d);
  });
}

}  // namespace mf::cli
