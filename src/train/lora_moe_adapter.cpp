#include "train/lora_moe_adapter.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/model.h"
#include "moe/config.h"
#include "moe/routers/graph_router.h"
#include "train/peft.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf {

namespace {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Runs f, giving an mf::Error from code that does not know the file the form "<path>: <message>".
template <typename F>
auto naming(const std::string& path, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    fail_file(path, e.what());
  }
}

std::string block_prefix(const Model& model, int64_t layer) {
  return cat("model.layers.", layer, ".", model.config().ffn_module_name(), ".");
}

// The block's tensors that belong to the adapter: LoRA factors and the router's parameters and
// buffers. The frozen base projections (gate_proj.weight, ...) stay in the base checkpoint.
NamedTensors adapter_tensors(LoraMoeFFN& block) {
  NamedTensors out;
  auto ours = [](const std::string& n) { return starts_with(n, "experts.") || starts_with(n, "router."); };
  for (const auto& p : block.named_parameters(true))
    if (ours(p.key())) out.emplace_back(p.key(), p.value());
  for (const auto& b : block.named_buffers(true))
    if (ours(b.key())) out.emplace_back(b.key(), b.value());
  return out;
}

bool is_edges(const std::string& name) { return ends_with(name, "router.edges"); }

bool is_float_type(StDType t) {
  return t == StDType::F32 || t == StDType::F16 || t == StDType::BF16 || t == StDType::F64;
}

std::vector<std::shared_ptr<LoraMoeFFN>> lora_moe_blocks(Model& model, const std::string& origin) {
  std::vector<std::shared_ptr<LoraMoeFFN>> v;
  for (int64_t l = 0; l < model.config().num_layers; ++l) {
    auto block = std::dynamic_pointer_cast<LoraMoeFFN>(model.ffn(l));
    if (!block)
      fail_file(origin, cat("layer ", l, "'s FFN is a ", model.ffn(l)->name(),
                            ", not a LoRA-MoE block (convert_to_lora_moe first)"));
    v.push_back(std::move(block));
  }
  return v;
}

// An existing output is replaced only when it is empty or one of these adapters: a user's other
// files would be deleted with it.
void check_output_dir(const std::string& dir) {
  if (!path_exists(dir)) return;
  if (!is_directory(dir)) fail_file(dir, "exists and is not a directory (not overwritten)");
  const std::vector<std::string> entries = list_dir(dir);
  if (entries.empty()) return;
  const std::set<std::string> known = {kLoraMoeConfigFile, kLoraMoeWeightsFile, kPeftConfigFile, kPeftWeightsFile};
  bool ours = std::all_of(entries.begin(), entries.end(), [&](const std::string& e) { return known.count(e) > 0; });
  const std::string cpath = path_join(dir, kLoraMoeConfigFile);
  if (ours && path_exists(cpath)) {
    try {
      const json j = read_json_file(cpath);
      const auto it = j.is_object() ? j.find("format") : j.end();
      ours = j.is_object() && it != j.end() && it->is_string() && it->get<std::string>() == kLoraMoeFormat;
    } catch (const Error&) {
      ours = false;
    }
  } else {
    ours = false;
  }
  if (!ours)
    fail_file(dir, "exists and is not a LoRA-MoE adapter directory (not overwritten; choose another output)");
}

// The blocks are what gets saved; `opt` must describe them, or the recorded options would not
// rebuild the same model.
void check_block_matches(const LoraMoeFFN& b, const LoraMoeOptions& opt, int64_t experts, const std::string& dir) {
  const LoraMoeOptions& h = b.options();
  if (h.routing == opt.routing && h.r == opt.r && h.alpha == opt.alpha && h.targets == opt.targets &&
      h.top_k == opt.top_k && h.top_p == opt.top_p && h.gate == opt.gate && b.num_experts() == experts)
    return;
  fail_file(dir, cat("layer ", b.layer(), "'s block (routing ", h.routing, ", ", b.num_experts(), " experts, r ", h.r,
                     ", alpha ", h.alpha, ", top_k ", h.top_k, ") was not built with the given options (routing ",
                     opt.routing, ", ", experts, " experts, r ", opt.r, ", alpha ", opt.alpha, ", top_k ", opt.top_k,
                     ")"));
}

json config_json(const Model& model, const std::vector<std::shared_ptr<LoraMoeFFN>>& blocks, bool attention,
                 const json& extra) {
  const LoraMoeFFN& first = *blocks.front();
  const LoraMoeOptions& o = first.options();
  const ModelConfig& cfg = model.config();
  json router = json::object();
  router["kind"] = first.router->kind();
  router["jitter"] = o.jitter;
  if (const auto g = first.graph_router()) {
    const moe::GraphRouterOptions& go = g->options();  // the activation actually used: the base FFN's
    router["dim_gcn"] = go.dim_gcn;
    router["gcn_layers"] = go.gcn_layers;
    router["edges_threshold"] = go.edges_threshold;
    router["activation"] = moe::to_string(go.activation);
  } else {
    router["init_std"] = o.router_init_std;
  }
  json loss = json::object();
  loss["aux_coef"] = o.aux_coef;
  loss["z_coef"] = o.z_coef;
  loss["poisson_coef"] = o.poisson_coef;
  loss["normal_coef"] = o.normal_coef;
  loss["reference_compat"] = o.reference_compat;
  json base = json::object();
  base["model_type"] = cfg.model_type;
  base["hidden_size"] = cfg.hidden_size;
  base["intermediate_size"] = cfg.intermediate_size;
  base["num_hidden_layers"] = cfg.num_layers;
  std::vector<int64_t> counts;
  for (const auto& b : blocks) counts.push_back(b->num_experts());

  json j = json::object();
  j["format"] = kLoraMoeFormat;
  j["format_version"] = kLoraMoeFormatVersion;
  j["routing"] = o.routing;
  j["experts_per_layer"] = counts;
  j["top_k"] = o.top_k;
  j["top_p"] = o.top_p;
  j["gate"] = moe::to_string(o.gate);
  j["r"] = o.r;
  j["alpha"] = o.alpha;
  j["dropout"] = o.dropout;
  j["target_modules"] = o.targets;
  j["router"] = router;
  j["loss"] = loss;
  j["capacity"] = o.capacity;
  j["capacity_group"] = o.capacity_group;
  j["base_model"] = base;
  j["attention_lora"] = attention;
  j["metadata"] = extra;
  return j;
}

const json& object_at(const json& j, const char* key, const std::string& path) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_object()) fail_file(path, std::string("missing object '") + key + "'");
  return *it;
}

void check_base(const json& j, const std::string& path, const ModelConfig& cfg) {
  const json& b = object_at(j, "base_model", path);
  const std::string type = json_get<std::string>(b, "model_type", path);
  if (type != cfg.model_type)
    fail_file(path, "the adapter is for a '" + type + "' base model, not '" + cfg.model_type + "'");
  const std::pair<const char*, int64_t> dims[] = {{"hidden_size", cfg.hidden_size},
                                                  {"intermediate_size", cfg.intermediate_size},
                                                  {"num_hidden_layers", cfg.num_layers}};
  for (const auto& [key, have] : dims) {
    const int64_t want = json_get<int64_t>(b, key, path);
    if (want != have)
      fail_file(path, cat("base_model.", key, " is ", want, " but the model's ", key, " is ", have,
                          " (the adapter belongs to another base model)"));
  }
}

LoraMoeOptions options_from_json(const json& j, const std::string& path, int64_t num_layers) {
  const std::string routing = json_get<std::string>(j, "routing", path);
  const auto& known = lora_moe_routings();
  if (std::find(known.begin(), known.end(), routing) == known.end())
    fail_file(path, "unknown routing '" + routing + "' (known: " + join(known, ", ") + ")");
  LoraMoeOptions o = lora_moe_defaults(routing);

  const auto counts = j.find("experts_per_layer");
  if (counts == j.end() || !counts->is_array())
    fail_file(path, "experts_per_layer must be a list of expert counts, one per layer");
  o.layer_experts.clear();
  for (const auto& v : *counts) {
    if (!v.is_number_integer()) fail_file(path, "experts_per_layer must hold integers");
    o.layer_experts.push_back(v.get<int64_t>());
  }
  if (static_cast<int64_t>(o.layer_experts.size()) != num_layers)
    fail_file(path, cat("experts_per_layer has ", o.layer_experts.size(), " entries, expected ", num_layers,
                        " (one per layer)"));
  o.top_k = json_get<int64_t>(j, "top_k", path);
  o.top_p = json_get<double>(j, "top_p", path);
  const std::string gate = json_get<std::string>(j, "gate", path);
  o.gate = naming(path, [&] { return moe::parse_gate_mode(gate); });
  o.r = json_get<int64_t>(j, "r", path);
  o.alpha = json_get<double>(j, "alpha", path);
  o.dropout = json_get<double>(j, "dropout", path);
  const auto targets = j.find("target_modules");
  if (targets == j.end() || !targets->is_array()) fail_file(path, "target_modules must be a list of names");
  o.targets.clear();
  for (const auto& t : *targets) {
    if (!t.is_string()) fail_file(path, "target_modules must hold strings");
    o.targets.push_back(t.get<std::string>());
  }
  o.capacity = json_get_or<int64_t>(j, "capacity", 0, path);
  o.capacity_group = json_get_or<int64_t>(j, "capacity_group", 0, path);

  const json& router = object_at(j, "router", path);
  const std::string kind = json_get<std::string>(router, "kind", path);
  const std::string want_kind = routing == "gmoe" ? "graph" : "linear";
  if (kind != want_kind)
    fail_file(path, "router.kind is '" + kind + "' but routing '" + routing + "' uses a " + want_kind + " router");
  o.jitter = json_get_or<double>(router, "jitter", 0.0, path);
  if (kind == "graph") {
    o.graph.dim_gcn = json_get<int64_t>(router, "dim_gcn", path);
    o.graph.gcn_layers = json_get<int64_t>(router, "gcn_layers", path);
    o.graph.edges_threshold = json_get<double>(router, "edges_threshold", path);
    const std::string act = json_get<std::string>(router, "activation", path);
    o.graph.activation = naming(path, [&] { return moe::parse_act(act); });
  } else {
    o.router_init_std = json_get_or<double>(router, "init_std", o.router_init_std, path);
  }
  const json& loss = object_at(j, "loss", path);
  o.aux_coef = json_get<double>(loss, "aux_coef", path);
  o.z_coef = json_get<double>(loss, "z_coef", path);
  o.poisson_coef = json_get<double>(loss, "poisson_coef", path);
  o.normal_coef = json_get<double>(loss, "normal_coef", path);
  o.reference_compat = json_get_or<bool>(loss, "reference_compat", false, path);
  return naming(path, [&] { return checked_lora_moe_options(o); });
}

// The saved edge list of a layer with E experts: (-1, -1) padding rows dropped, every other pair
// inside [0, E) (the router would refuse it later with a less helpful message).
moe::ExpertEdges checked_edges(const at::Tensor& t, int64_t E, const std::string& path, const std::string& name) {
  const moe::ExpertEdges edges = moe::gmoe_edges_from_tensor(t);
  for (const auto& [i, j] : edges)
    if (i < 0 || i >= E || j < 0 || j >= E)
      fail_file(path, cat("tensor '", name, "' holds the edge (", i, ", ", j, "), outside the layer's ", E,
                          " experts"));
  return edges;
}

void move_file(const std::string& from, const std::string& to) {
  std::error_code ec;
  std::filesystem::rename(from, to, ec);
  if (ec) fail_file(to, "cannot move into place: " + ec.message());
}

// Loading converts the model before it can compare the file with the blocks; on error this puts
// the dense FFNs and the parameters' trainable flags back, so a failed load changes nothing.
class ConversionRollback {
 public:
  explicit ConversionRollback(Model& model) : model_(model) {
    for (int64_t l = 0; l < model.config().num_layers; ++l) ffns_.push_back(model.ffn(l));
    for (const auto& p : model.parameters()) trainable_.push_back(p.requires_grad());
  }
  ~ConversionRollback() {
    if (released_) return;
    try {
      for (size_t l = 0; l < ffns_.size(); ++l) model_.set_ffn(static_cast<int64_t>(l), ffns_[l]);
      auto params = model_.parameters();  // the original modules again: the original order
      for (size_t i = 0; i < params.size() && i < trainable_.size(); ++i) params[i].set_requires_grad(trainable_[i]);
    } catch (...) {  // never throw from a destructor; the load's own error is what the caller sees
    }
  }
  ConversionRollback(const ConversionRollback&) = delete;
  ConversionRollback& operator=(const ConversionRollback&) = delete;
  void release() { released_ = true; }

 private:
  Model& model_;
  std::vector<std::shared_ptr<FfnBlock>> ffns_;
  std::vector<bool> trainable_;
  bool released_ = false;
};

}  // namespace

void save_lora_moe_adapter(const std::string& dir_in, Model& model, const LoraMoeOptions& opt_in,
                           const LoraAdapters* attention, const json& extra_metadata) {
  std::string dir = dir_in;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  // Everything is checked and copied before the output is touched.
  const LoraMoeOptions opt = naming(dir, [&] { return checked_lora_moe_options(opt_in); });
  const auto blocks = lora_moe_blocks(model, dir);
  if (blocks.empty()) fail_file(dir, "the model has no layers");
  const std::vector<int64_t> counts =
      naming(dir, [&] { return lora_moe_layer_experts(opt, model.config().num_layers); });
  for (size_t l = 0; l < blocks.size(); ++l) check_block_matches(*blocks[l], opt, counts[l], dir);
  if (attention && attention->module_names().empty()) fail_file(dir, "the attention LoRA adapts no module");
  check_output_dir(dir);

  NamedTensors tensors;
  {
    at::NoGradGuard ng;
    for (size_t l = 0; l < blocks.size(); ++l) {
      const std::string prefix = block_prefix(model, static_cast<int64_t>(l));
      for (const auto& [name, t] : adapter_tensors(*blocks[l]))
        tensors.emplace_back(prefix + name, is_edges(name) ? t.detach().to(at::kCPU, at::kLong) : t.detach());
    }
  }
  const json config = config_json(model, blocks, attention != nullptr, extra_metadata);
  std::string base_name_or_path;
  if (extra_metadata.is_object()) {
    const auto it = extra_metadata.find("base_model_name_or_path");
    if (it != extra_metadata.end() && it->is_string()) base_name_or_path = it->get<std::string>();
  }

  AtomicDir out(dir);
  if (attention) {
    // peft.h commits a whole directory: let it build one inside ours and move its two files up,
    // so the adapter still appears with our single rename.
    const std::string peft_dir = path_join(out.path(), "peft");
    save_peft_adapter(*attention, peft_dir, base_name_or_path);
    for (const char* f : {kPeftConfigFile, kPeftWeightsFile})
      move_file(path_join(peft_dir, f), path_join(out.path(), f));
    remove_all(peft_dir);
  }
  write_json_file(path_join(out.path(), kLoraMoeConfigFile), config);
  save_safetensors(path_join(out.path(), kLoraMoeWeightsFile), tensors);
  out.commit();
}

LoadedLoraMoe load_lora_moe_adapter(const std::string& dir, Model& model) {
  if (!path_exists(dir)) fail_file(dir, "no such file or directory");
  if (!is_directory(dir))
    fail_file(dir, std::string("not a directory (a LoRA-MoE adapter is a directory holding ") + kLoraMoeConfigFile +
                       " and " + kLoraMoeWeightsFile + ")");
  const std::string cpath = path_join(dir, kLoraMoeConfigFile);
  if (!path_exists(cpath)) fail_file(cpath, "no such file (not a LoRA-MoE adapter directory)");
  const json j = read_json_file(cpath);
  if (!j.is_object()) fail_file(cpath, "expected a JSON object");
  const std::string format = json_get<std::string>(j, "format", cpath);
  if (format != kLoraMoeFormat) fail_file(cpath, "format is '" + format + "', not '" + kLoraMoeFormat + "'");
  const int64_t version = json_get<int64_t>(j, "format_version", cpath);
  if (version < 1 || version > kLoraMoeFormatVersion)
    fail_file(cpath,
              cat("format_version ", version, " is not one this moeforge reads (1 to ", kLoraMoeFormatVersion, ")"));
  check_base(j, cpath, model.config());
  if (model.config().num_layers < 1) fail_file(cpath, "the model has no decoder layers");

  LoadedLoraMoe loaded;
  loaded.options = options_from_json(j, cpath, model.config().num_layers);
  loaded.metadata = j.contains("metadata") ? j.at("metadata") : json::object();
  const std::string wpath = path_join(dir, kLoraMoeWeightsFile);
  if (!path_exists(wpath)) fail_file(wpath, "no such file");
  const auto file = SafetensorsFile::open(wpath);
  const std::string peft_config = path_join(dir, kPeftConfigFile);
  const bool has_attention = path_exists(peft_config);
  if (json_get_or<bool>(j, "attention_lora", false, cpath) && !has_attention)
    fail_file(peft_config, std::string("no such file (") + kLoraMoeConfigFile + " records an attention LoRA)");

  ConversionRollback rollback(model);
  naming(dir, [&] { convert_to_lora_moe(model, loaded.options, 0); });  // values are overwritten below
  const auto blocks = lora_moe_blocks(model, dir);
  if (const auto g = blocks.front()->graph_router(); g && g->options().activation != loaded.options.graph.activation)
    fail_file(cpath, cat("router.activation is ", moe::to_string(loaded.options.graph.activation),
                         " but the base model's FFN activation is ", moe::to_string(g->options().activation)));

  // Every block tensor comes from the file and every file tensor goes to a block; all of it is
  // checked before the first copy.
  struct Slot {
    size_t layer;
    at::Tensor dst;
  };
  std::map<std::string, Slot> wanted;
  for (size_t l = 0; l < blocks.size(); ++l) {
    const std::string prefix = block_prefix(model, static_cast<int64_t>(l));
    for (const auto& [name, t] : adapter_tensors(*blocks[l])) wanted.emplace(prefix + name, Slot{l, t});
  }
  for (const StTensorInfo& info : file->tensors())
    if (!wanted.count(info.name))
      fail_file(wpath, "tensor '" + info.name + "' belongs to no LoRA-MoE block of the model");
  std::map<size_t, moe::ExpertEdges> edges;
  for (const auto& [name, slot] : wanted) {
    const StTensorInfo* info = file->find(name);
    if (!info) fail_file(wpath, "missing tensor '" + name + "'");
    const std::vector<int64_t> shape = slot.dst.sizes().vec();
    if (info->shape != shape)
      fail_file(wpath, "tensor '" + name + "' has shape " + shape_string(info->shape) + " but the block needs " +
                           shape_string(shape));
    const bool edge_list = is_edges(name);
    if (edge_list ? info->dtype != StDType::I64 : !is_float_type(info->dtype))
      fail_file(wpath, "tensor '" + name + "' has dtype " + st_dtype_name(info->dtype) + ", expected " +
                           (edge_list ? "I64" : "a floating-point type"));
    if (edge_list) edges[slot.layer] = checked_edges(file->get(name), blocks[slot.layer]->num_experts(), wpath, name);
  }
  {
    at::NoGradGuard ng;
    for (const auto& [name, slot] : wanted)
      if (!is_edges(name)) slot.dst.copy_(file->get(name));  // onto the block's dtype and device
  }
  // The saved graph, never a new threshold search on the loaded weights.
  for (const auto& [l, list] : edges) blocks[l]->graph_router()->set_edges(list);

  if (has_attention) {
    loaded.attention = load_peft_adapter(model, dir);
    for (const auto& name : loaded.attention->module_names())
      for (size_t l = 0; l < blocks.size(); ++l)
        if (starts_with(name, block_prefix(model, static_cast<int64_t>(l)))) {
          loaded.attention->detach();
          fail_file(path_join(dir, kPeftWeightsFile),
                    "adapts '" + name + "', an FFN projection that the LoRA experts replace");
        }
  }
  rollback.release();
  return loaded;
}

}  // namespace mf
