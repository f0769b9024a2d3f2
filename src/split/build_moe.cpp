#include "split/build_moe.h"

#include <chrono>
#include <cmath>
#include <memory>
#include <set>

#include "model/model.h"
#include "moe/routers/registry.h"
#include "split/method_registry.h"
#include "split/profile_data.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/progress.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

namespace {

bool contains(const std::vector<std::string>& v, const std::string& s) {
  for (const auto& x : v)
    if (x == s) return true;
  return false;
}

std::string layer_prefix(int l) { return cat("model.layers.", l, "."); }
std::string dense_ffn_name(int l, const std::string& proj) { return cat(layer_prefix(l), "mlp.", proj, ".weight"); }

int64_t parse_int_strict(const std::string& text, const std::string& spec) {
  std::string t = trim(text);
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(t, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (t.empty() || used != t.size()) throw UsageError(cat("--layers '", spec, "': '", t, "' is not an integer"));
  return v;
}

at::Tensor convert(const at::Tensor& t, const BuildMoeOptions& o) {
  if (o.dtype.empty() || !t.is_floating_point()) return t;
  return t.to(parse_dtype(o.dtype));
}

// Gathered rows of expert e: gate/up [f_e, H] rows, down [H, f_e] columns, in the stored dtype
// (index_select copies values, so the experts hold the dense weights bit for bit).
struct ExpertWeights {
  at::Tensor gate, up, down, neurons;
};
ExpertWeights gather_expert(const at::Tensor& G, const at::Tensor& U, const at::Tensor& D,
                            const std::vector<int32_t>& members) {
  at::Tensor idx32 = at::tensor(std::vector<int32_t>(members.begin(), members.end()), at::kInt);
  at::Tensor idx = idx32.to(at::kLong);
  return {G.index_select(0, idx).contiguous(), U.index_select(0, idx).contiguous(), D.index_select(1, idx).contiguous(),
          idx32};
}

json provenance(const Checkpoint& ck, const SplitPlan& plan, const BuildMoeOptions& o) {
  const SplitOptions& s = o.split;
  json opts = {{"experts", s.num_experts},
               {"top_k", o.top_k},
               {"seed", s.seed},
               {"layers", o.layers.empty() ? ":" : o.layers},
               {"router", plan.router.type},
               {"gate", plan.router.gate}};
  // An import labelled with a method name records that method's knobs too ("imported" has none).
  const SplitMethodEntry* method = split_method_registry().find(plan.method);
  if (method && method->provenance_options) {
    json extra = method->provenance_options(s);
    for (auto it = extra.begin(); it != extra.end(); ++it) opts[it.key()] = *it;
  }
  if (!o.partition_dir.empty()) opts["partition"] = o.partition_dir;
  if (!o.sizes_from.empty()) opts["sizes_from"] = o.sizes_from;
  if (!o.profile_dir.empty()) {
    opts["profile"] = o.profile_dir;
    opts["profile_sha256"] = plan.profile_sha256;
  }
  if (!o.dtype.empty()) opts["dtype"] = o.dtype;
  return {{"split_method", plan.method},
          {"source_model", ck.dir()},
          {"source_sha256", sha256_file(ck.config_path())},
          {"options", opts}};
}

// The rows/columns every converted layer contributes, shared by both output formats.
template <typename Emit>
void for_each_output_tensor(const Checkpoint& ck, const ModelConfig& cfg, const SplitPlan& plan, Emit&& emit_moe_layer,
                            std::vector<std::pair<std::string, at::Tensor>>& out, const BuildMoeOptions& o) {
  std::map<int, const LayerSplit*> moe;
  for (const auto& ls : plan.layers) moe[ls.layer] = &ls;
  std::set<std::string> done;
  for (const auto& spec : expected_tensors(cfg)) {
    done.insert(spec.name);
    int layer = -1;
    std::string proj;
    for (const auto& kv : moe) {
      for (const char* p : {"gate_proj", "up_proj", "down_proj"})
        if (spec.name == dense_ffn_name(kv.first, p)) layer = kv.first, proj = p;
    }
    if (layer >= 0) {
      if (proj == "gate_proj") emit_moe_layer(*moe[layer]);
      continue;
    }
    if (!ck.contains(spec.name)) continue;  // optional (tied lm_head)
    out.emplace_back(spec.name, convert(ck.get(spec.name), o));
  }
  // Anything else the source holds (e.g. rotary inv_freq buffers) is carried over unchanged.
  for (const auto& name : ck.names())
    if (!done.count(name)) out.emplace_back(name, convert(ck.get(name), o));
}

}  // namespace

std::vector<int> parse_layer_range(const std::string& spec, int64_t L) {
  std::string s = trim(spec);
  std::vector<int> out;
  auto norm = [&](int64_t v) { return v < 0 ? v + L : v; };
  if (s.empty() || s == ":") {
    for (int64_t i = 0; i < L; ++i) out.push_back(static_cast<int>(i));
    return out;
  }
  size_t colon = s.find(':');
  if (colon == std::string::npos) {
    int64_t i = norm(parse_int_strict(s, spec));
    if (i < 0 || i >= L) throw UsageError(cat("--layers '", spec, "': the model has ", L, " layers (0..", L - 1, ")"));
    return {static_cast<int>(i)};
  }
  if (s.find(':', colon + 1) != std::string::npos) throw UsageError(cat("--layers '", spec, "': expected a:b"));
  std::string a_text = trim(s.substr(0, colon)), b_text = trim(s.substr(colon + 1));
  int64_t a = a_text.empty() ? 0 : norm(parse_int_strict(a_text, spec));
  int64_t b = b_text.empty() ? L : norm(parse_int_strict(b_text, spec));
  if (a < 0 || a > L || b < 0 || b > L)
    throw UsageError(cat("--layers '", spec, "': outside the model's ", L, " layers (0-based, end exclusive)"));
  if (a >= b) throw UsageError(cat("--layers '", spec, "' selects no layer (0-based, end exclusive)"));
  for (int64_t i = a; i < b; ++i) out.push_back(static_cast<int>(i));
  return out;
}

RouterChoice resolve_router(const BuildMoeOptions& o) {
  static const std::vector<std::string> gates = {"unit", "renorm", "prob", "ones"};
  const auto* entry = o.router.empty() ? nullptr : moe::router_registry().find(o.router);
  if (!o.router.empty() && (!entry || !entry->init))
    throw UsageError(cat("unknown --router '", o.router, "' (", moe::router_registry().known(), ")"));
  if (!o.gate.empty() && !contains(gates, o.gate))
    throw UsageError(cat("unknown --gate '", o.gate, "' (unit, renorm, prob, ones)"));
  if (o.export_format == "mixtral") {
    if (!o.router.empty() && o.router != "linear")
      fail(cat("--export mixtral needs the linear router (Mixtral's gate), not --router ", o.router));
    if (!o.gate.empty() && o.gate != "renorm")
      fail(cat("--export mixtral always renormalises the top-k softmax weights; --gate ", o.gate, " is not expressible"));
    return {"linear", "renorm"};
  }
  RouterChoice r;
  const SplitMethodEntry* method = split_method_registry().find(o.split.method);  // none for "imported"
  r.type = !o.router.empty() ? o.router : method ? method->default_router : "linear";
  // EMoE's avg-k gate has no trained parameters: selected experts weigh 1 without gradient.
  r.gate = !o.gate.empty() ? o.gate : (r.type == "avgk" ? "ones" : "unit");
  return r;
}

void check_splittable(const ModelConfig& cfg) {
  const bool dense_llama = cfg.family == Family::llama || cfg.family == Family::mistral || cfg.family == Family::qwen2;
  if (!dense_llama || cfg.is_moe())
    fail_file(cfg.origin, cat("split needs a dense llama, mistral or qwen2 checkpoint (gated SwiGLU FFN); model_type ",
                              cfg.model_type, " is not supported"));
  if (cfg.mlp_bias) fail_file(cfg.origin, "split does not support FFN biases (mlp_bias: true)");
}

SplitPlan plan_split(const Checkpoint& ck, const ModelConfig& cfg, const BuildMoeOptions& o) {
  check_splittable(cfg);
  if (o.export_format != "moeforge" && o.export_format != "mixtral")
    throw UsageError(cat("unknown --export '", o.export_format, "' (mixtral)"));
  const SplitOptions& so = o.split;
  const int N = so.num_experts;
  const int64_t F = cfg.intermediate_size;
  const bool importing = !o.partition_dir.empty();
  SplitPlan plan;
  plan.method = so.method;
  if (plan.method.empty()) {
    if (!importing) throw UsageError("--method is required (or --partition DIR to import part files)");
    plan.method = "imported";
  } else if (!split_method_registry().contains(plan.method)) {
    fail(unknown_split_method_message(plan.method));
  }
  // Null only for "imported"; every use below is under !importing, where the method is known.
  const SplitMethodEntry* method = split_method_registry().find(plan.method);
  if (N < 1) throw UsageError("--experts must be at least 1");
  if (N > F) fail(cat("--experts ", N, " exceeds the FFN width ", F, " of ", cfg.origin));
  if (o.top_k < 1 || o.top_k > N) throw UsageError(cat("--top-k must be in 1..", N, " (got ", o.top_k, ")"));
  plan.router = resolve_router(o);
  std::vector<int> layers = parse_layer_range(o.layers, cfg.num_layers);
  if (o.export_format == "mixtral") {
    if (static_cast<int64_t>(layers.size()) != cfg.num_layers)
      fail(cat("--export mixtral needs every layer converted (Mixtral has no dense layers); --layers selects ",
               layers.size(), " of ", cfg.num_layers));
    if (cfg.family != Family::llama && cfg.family != Family::mistral)
      fail(cat("--export mixtral needs a llama or mistral base (Mixtral has no attention biases); the model is ",
               cfg.model_type));
    if (cfg.attention_bias || cfg.attention_out_bias)
      fail("--export mixtral: the model has attention biases, which Mixtral cannot hold");
  }
  if (!importing) {
    if (method->equal_division && F % N != 0)
      fail(cat("method ", plan.method, " makes experts of exactly F/N neurons: --experts ", N,
               " does not divide the FFN width ", F));
    if (method->check) method->check(so, F);
    if (method->sizes_from_part_files && o.sizes_from.empty())
      throw UsageError(cat("method ", plan.method, " needs --sizes-from DIR (part files whose expert sizes it copies)"));
    if (!method->profile_stat.empty() && o.profile_dir.empty())
      throw UsageError(cat("method ", plan.method, " needs --profile DIR (run moeforge profile)"));
  }
  std::unique_ptr<SplitProfile> prof;
  if (!o.profile_dir.empty() && !importing) {
    prof = std::make_unique<SplitProfile>(SplitProfile::open(o.profile_dir));
    plan.profile_sha256 = prof->sha256();
  }
  // What each layer needs from the profile, checked for all layers before the long part starts.
  const std::string prof_what = importing ? "" : method->profile_stat;
  for (int l : layers) {
    if (!prof_what.empty() && !prof->has(l, prof_what))
      fail_file(prof->safetensors_path(), cat("no tensor ", SplitProfile::tensor_name(l, prof_what), " (method ",
                                              plan.method, " needs ", prof_what, "; run moeforge profile)"));
    std::string need;
    if (importing) need = path_join(o.partition_dir, part_file_name(l, N));
    else if (method->sizes_from_part_files) need = path_join(o.sizes_from, part_file_name(l, N));
    if (!need.empty() && !path_exists(need))
      fail_file(need, cat("no such file (", importing ? "--partition" : "--sizes-from",
                          " needs one {layer}.part.{N} file per converted layer)"));
  }

  std::unique_ptr<Progress> bar;
  if (o.progress) bar = std::make_unique<Progress>("split", static_cast<int64_t>(layers.size()), "layer");
  for (int l : layers) {
    auto t0 = std::chrono::steady_clock::now();
    LayerSplit ls;
    ls.layer = l;
    if (importing) {
      ls.partition = read_part_file(path_join(o.partition_dir, part_file_name(l, N)), N, F);
      ls.report.cover = validate(ls.partition);
    } else {
      SplitInputs in;
      in.num_neurons = F;
      if (method->needs_gate_rows) in.gate_rows = ck.get(dense_ffn_name(l, "gate_proj"), at::kFloat);
      // The statistic decides the field: co-activation is [F, F], importances are [F, D].
      if (prof_what == "coactivation") in.coactivation = prof->get(l, prof_what, plan.method, F, F);
      else if (!prof_what.empty()) in.domain_scores = prof->get(l, prof_what, plan.method, F);
      if (method->sizes_from_part_files)
        in.target_sizes = read_part_file(path_join(o.sizes_from, part_file_name(l, N)), N, F).sizes();
      try {
        ls.partition = split_layer(in, so, &ls.report);
      } catch (const Error& e) {
        fail(cat("layer ", l, ": ", e.what()));
      }
    }
    for (int j = 0; j < N; ++j)
      if (ls.partition.experts[j].empty())
        fail(cat("layer ", l, ": expert ", j, " is empty (every expert needs at least one neuron)"));
    if (importing && !ls.report.cover.is_partition())
      ls.report.warnings.push_back(cat("imported partition is not a true partition (", ls.report.cover.dropped,
                                       " neurons dropped, ", ls.report.cover.shared, " shared)"));
    if (!o.export_partition_dir.empty()) {
      make_dirs(o.export_partition_dir);
      write_part_file(path_join(o.export_partition_dir, part_file_name(l, N)), ls.partition);
    }
    ls.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    plan.layers.push_back(std::move(ls));
    if (bar) {
      bar->set_postfix(cat("layer ", l));
      bar->advance();
    }
  }
  if (bar) bar->finish();
  // One warning per kind, not one per layer.
  std::set<std::string> warned;
  for (const auto& ls : plan.layers)
    for (const auto& w : ls.report.warnings)
      if (warned.insert(w).second) log_warn(w);
  return plan;
}

std::vector<std::pair<std::string, at::Tensor>> router_tensors(const std::string& prefix, const std::string& type,
                                                               const Partition& p, const at::Tensor& gate_rows,
                                                               uint64_t seed, int layer) {
  const moe::RouterEntry& entry = moe::router_registry().at(type);
  if (!entry.init) fail(cat("router '", type, "' cannot be initialised by a split"));
  moe::RouterSpec spec;
  spec.num_experts = p.num_experts();
  spec.dim = gate_rows.defined() ? gate_rows.size(1) : 0;
  moe::RouterInit init;
  init.seed = seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(layer + 1));
  if (gate_rows.defined())
    for (const auto& ex : p.experts)
      init.keys.push_back(gate_rows.index_select(0, at::tensor(std::vector<int64_t>(ex.begin(), ex.end()), at::kLong)));
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& [name, t] : entry.init(spec, init)) out.emplace_back(prefix + "router." + name, t);
  return out;
}

MoeCheckpointData moeforge_checkpoint(const Checkpoint& ck, const ModelConfig& cfg, const SplitPlan& plan,
                                      const BuildMoeOptions& o) {
  MoeCheckpointData data;
  json c = ck.config();
  c["model_type"] = "moeforge";
  c["architectures"] = {"MoeforgeForCausalLM"};
  c["base_model_type"] = cfg.model_type;
  c["intermediate_size"] = cfg.intermediate_size;
  json moe_layers = json::array(), sizes = json::array();
  for (const auto& ls : plan.layers) {
    moe_layers.push_back(ls.layer);
    sizes.push_back(ls.partition.sizes());
  }
  c["moe_layers"] = moe_layers;
  c["num_experts"] = o.split.num_experts;
  c["num_experts_per_tok"] = o.top_k;
  c["expert_sizes"] = sizes;
  json router = {{"type", plan.router.type}, {"gate", plan.router.gate}};
  if (plan.router.type == "avgk") router["aux_loss"] = "none";  // nothing to balance by gradient
  c["router"] = router;
  if (!o.dtype.empty()) set_config_dtype(c, parse_dtype(o.dtype));
  c["moe_provenance"] = provenance(ck, plan, o);
  data.config = c;

  auto emit = [&](const LayerSplit& ls) {
    const int l = ls.layer;
    const std::string mlp = layer_prefix(l) + "mlp.";
    at::Tensor G = ck.get(dense_ffn_name(l, "gate_proj")), U = ck.get(dense_ffn_name(l, "up_proj")),
               D = ck.get(dense_ffn_name(l, "down_proj"));
    at::Tensor rows = plan.router.type == "avgk" ? at::Tensor() : G.to(at::kFloat);
    if (plan.router.type != "avgk") {
      for (auto& t : router_tensors(mlp, plan.router.type, ls.partition, rows, o.split.seed, l))
        data.tensors.push_back(std::move(t));
    }
    for (int e = 0; e < ls.partition.num_experts(); ++e) {
      ExpertWeights w = gather_expert(G, U, D, ls.partition.experts[e]);
      const std::string ep = cat(mlp, "experts.", e, ".");
      data.tensors.emplace_back(ep + "gate_proj.weight", convert(w.gate, o));
      data.tensors.emplace_back(ep + "up_proj.weight", convert(w.up, o));
      data.tensors.emplace_back(ep + "down_proj.weight", convert(w.down, o));
      data.tensors.emplace_back(ep + "neurons", w.neurons);
    }
  };
  for_each_output_tensor(ck, cfg, plan, emit, data.tensors, o);
  return data;
}

MoeCheckpointData mixtral_checkpoint(const Checkpoint& ck, const ModelConfig& cfg, const SplitPlan& plan,
                                     const BuildMoeOptions& o) {
  if (static_cast<int64_t>(plan.layers.size()) != cfg.num_layers)
    fail(cat("--export mixtral needs every layer converted; ", plan.layers.size(), " of ", cfg.num_layers, " are"));
  if (plan.router.type != "linear" || plan.router.gate != "renorm")
    fail("--export mixtral needs the linear router with renormalised top-k weights");
  const int64_t width = plan.layers.at(0).partition.sizes().at(0);
  for (const auto& ls : plan.layers)
    for (int64_t s : ls.partition.sizes())
      if (s != width)
        fail(cat("--export mixtral needs experts of equal width; layer ", ls.layer, " has sizes ",
                 json(ls.partition.sizes()).dump(), " (use the moeforge format)"));
  MoeCheckpointData data;
  json c = ck.config();
  c["model_type"] = "mixtral";
  c["architectures"] = {"MixtralForCausalLM"};
  c["num_local_experts"] = o.split.num_experts;
  c["num_experts_per_tok"] = o.top_k;
  c["intermediate_size"] = width;
  // Mixtral's defaults differ from Llama's: write every value the base config implied.
  c["hidden_act"] = cfg.hidden_act;
  c["rms_norm_eps"] = cfg.norm_eps;
  c["rope_theta"] = cfg.rope_theta;
  c["num_key_value_heads"] = cfg.num_kv_heads;
  c["max_position_embeddings"] = cfg.max_position_embeddings;
  c["tie_word_embeddings"] = cfg.tie_word_embeddings;
  if (!ck.config().contains("sliding_window"))
    c["sliding_window"] = cfg.family == Family::mistral ? json(4096) : json(nullptr);
  c["router_aux_loss_coef"] = 0.001;
  c.erase("attention_bias");
  c.erase("mlp_bias");
  if (!o.dtype.empty()) set_config_dtype(c, parse_dtype(o.dtype));
  c["moe_provenance"] = provenance(ck, plan, o);
  data.config = c;

  auto emit = [&](const LayerSplit& ls) {
    const int l = ls.layer;
    const std::string moe = layer_prefix(l) + "block_sparse_moe.";
    at::Tensor G = ck.get(dense_ffn_name(l, "gate_proj")), U = ck.get(dense_ffn_name(l, "up_proj")),
               D = ck.get(dense_ffn_name(l, "down_proj"));
    auto r = router_tensors("", "linear", ls.partition, G, o.split.seed, l);
    // Stock checkpoints keep the gate in the model dtype.
    data.tensors.emplace_back(moe + "gate.weight", convert(r.at(0).second.to(G.scalar_type()), o));
    for (int e = 0; e < ls.partition.num_experts(); ++e) {
      ExpertWeights w = gather_expert(G, U, D, ls.partition.experts[e]);
      const std::string ep = cat(moe, "experts.", e, ".");
      data.tensors.emplace_back(ep + "w1.weight", convert(w.gate, o));
      data.tensors.emplace_back(ep + "w3.weight", convert(w.up, o));
      data.tensors.emplace_back(ep + "w2.weight", convert(w.down, o));
    }
  };
  for_each_output_tensor(ck, cfg, plan, emit, data.tensors, o);
  return data;
}

json split_plan_json(const SplitPlan& plan) {
  json layers = json::array();
  for (const auto& ls : plan.layers) {
    const CoverStats& cs = ls.report.cover;
    json j = {{"layer", ls.layer},
              {"sizes", ls.partition.sizes()},
              {"min_size", cs.min_size},
              {"max_size", cs.max_size},
              {"dropped", cs.dropped},
              {"shared", cs.shared},
              {"is_partition", cs.is_partition()},
              {"seconds", ls.seconds},
              {"warnings", ls.report.warnings}};
    if (ls.report.has_placement) {
      const PlacementReport& p = ls.report.placement;
      j["hemoe"] = {{"objective", p.best.objective}, {"upper_bound", p.upper_bound}, {"gap", p.gap},
                    {"lp_bound", p.lp_bound},        {"solver", p.solver},           {"solver_seconds", p.seconds},
                    {"proven_optimal", p.proven_optimal}};
    }
    layers.push_back(j);
  }
  return {{"method", plan.method}, {"router", {{"type", plan.router.type}, {"gate", plan.router.gate}}}, {"layers", layers}};
}

json build_moe(const std::string& model_dir, const std::string& out_dir, const BuildMoeOptions& o, SplitPlan* plan_out) {
  Checkpoint ck = Checkpoint::open(model_dir);
  if (ck.config_path().empty()) fail_file(model_dir, "split needs a model directory with config.json");
  ModelConfig cfg = parse_model_config(ck.config(), ck.config_path());
  check_splittable(cfg);
  std::map<std::string, std::vector<int64_t>> present;
  std::map<std::string, std::string> file_of;
  for (const auto& n : ck.names()) {
    present[n] = ck.info(n).shape;
    file_of[n] = ck.file_of(n);
  }
  validate_tensors(cfg, present, ck.config_path(), file_of);
  if (!o.dtype.empty()) parse_dtype(o.dtype);  // reject a bad name before the long part
  SplitPlan plan = plan_split(ck, cfg, o);
  if (!out_dir.empty()) {
    MoeCheckpointData data = o.export_format == "mixtral" ? mixtral_checkpoint(ck, cfg, plan, o)
                                                          : moeforge_checkpoint(ck, cfg, plan, o);
    SaveOptions so;
    so.copy_aux_from = model_dir;
    save_checkpoint(out_dir, data.config, data.tensors, so);
  }
  json rep = split_plan_json(plan);
  rep["experts"] = o.split.num_experts;
  rep["top_k"] = o.top_k;
  rep["source_model"] = model_dir;
  rep["out"] = out_dir;
  rep["format"] = o.export_format;
  if (!o.export_partition_dir.empty()) rep["partition_out"] = o.export_partition_dir;
  if (plan_out) *plan_out = std::move(plan);
  return rep;
}

}  // namespace mf
