#include "merge/merge.h"

#include <malloc.h>

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <regex>

#include "io/checkpoint.h"
#include "merge/fixdom.h"
#include "merge/hclust.h"
#include "merge/plan.h"
#include "merge/represent.h"
#include "merge/router_fit.h"
#include "model/model.h"
#include "model/moe_ffn.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/fs_checks.h"
#include "util/log.h"
#include "util/str.h"

namespace mf {

namespace {

using merge::LayerPlan;
using merge::MergePlan;

// Σ_j w_j · t_j in fp32, in the dtype of the stored tensors; one member: the stored tensor itself.
at::Tensor combine(const Checkpoint& ck, const std::vector<std::string>& names, const std::vector<double>& w) {
  const at::Tensor first = ck.get(names.front());
  if (names.size() == 1) return first;
  at::Tensor sum = first.to(at::kFloat) * w[0];  // the first member is read once
  for (size_t i = 1; i < names.size(); ++i) sum.add_(ck.get(names[i], at::kFloat), w[i]);
  return sum.to(first.scalar_type());
}

// The router row of each output expert: a singleton's own row (pruning: the kept row), else the
// representative's (dominant), the merge-weighted mean of the members' rows (weighted) or the
// least-squares fit (fit, merge/router_fit.h).
at::Tensor router_rows(const at::Tensor& gate, const LayerPlan& p, const std::string& mode) {
  std::vector<at::Tensor> rows;
  for (size_t i = 0; i < p.members.size(); ++i) {
    if (p.members[i].size() == 1 || mode == "dominant") {
      rows.push_back(gate[p.representative[i]]);
      continue;
    }
    if (mode == "fit") {
      rows.push_back(p.router_rows[static_cast<int64_t>(i)].to(gate.scalar_type()));
      continue;
    }
    at::Tensor row = at::zeros({gate.size(1)}, at::kFloat);
    for (size_t k = 0; k < p.members[i].size(); ++k) row.add_(gate[p.members[i][k]].to(at::kFloat), p.weights[i][k]);
    rows.push_back(row.to(gate.scalar_type()));
  }
  return at::stack(rows, 0);
}

// Expert tensor names of the three families: group 1 the MoE block, 2 the layer, 3 the expert,
// 4 the rest ("w1.weight", "gate_proj.weight").
const std::regex& expert_name() {
  static const std::regex re(R"(^(model\.layers\.(\d+)\.(?:block_sparse_moe|mlp))\.experts\.(\d+)\.(.+)$)");
  return re;
}
const std::regex& router_name() {
  static const std::regex re(R"(^model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.gate\.weight$)");
  return re;
}

// The axis of an expert tensor that indexes its hidden neurons: the columns of the down projection
// (Mixtral w2, down_proj), the rows of gate and up.
int64_t neuron_dim(const std::string& rest) {
  const std::string proj = rest.substr(0, rest.find('.'));
  return proj == "w2" || proj == "down_proj" ? 1 : 0;
}

// When `name` is expert 0's tensor of a projection: emit(match of `name`, i, tensor) for every
// output expert i of that layer and projection (nothing for the other experts' names).
void for_each_output_expert(const Checkpoint& ck, const std::map<int64_t, LayerPlan>& plans, const std::string& name,
                            const std::function<void(const std::smatch&, size_t, at::Tensor)>& emit) {
  std::smatch m;
  if (!std::regex_match(name, m, expert_name()) || m[3] != "0") return;  // all outputs when expert 0 comes by
  const LayerPlan& p = plans.at(std::stoll(m[2]));
  for (size_t i = 0; i < p.members.size(); ++i) {
    std::vector<std::string> names;
    for (int64_t j : p.members[i]) names.push_back(cat(m[1].str(), ".experts.", j, ".", m[4].str()));
    if (i < p.neuron_maps.size() && !p.neuron_maps[i].empty()) {  // fix-dom, zipit: a mean per neuron map
      std::vector<at::Tensor> members;
      for (const std::string& n : names) members.push_back(ck.get(n));
      const at::ScalarType dtype = members.front().scalar_type();
      emit(m, i,
           merge::fix_dom_combine(members, p.neuron_maps[i], std::vector<double>(members.size(), 1.0),
                                  neuron_dim(m[4].str()))
               .to(dtype));
    } else {
      emit(m, i, combine(ck, names, p.weights[i]));
    }
  }
}

// The stock layout with r experts: expert tensors renumbered 0..r-1, routers with r rows.
void stock_checkpoint(const Checkpoint& ck, const ModelConfig& cfg, const std::map<int64_t, LayerPlan>& plans,
                      const MergeOptions& o, json& config, std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  const int64_t r = static_cast<int64_t>(plans.begin()->second.members.size());
  for (const auto& [layer, p] : plans)
    if (static_cast<int64_t>(p.members.size()) != r)
      fail(cat("the stock output needs the same expert count in every layer (layer ", layer, " has ",
               p.members.size(), ", layer ", plans.begin()->first, " has ", r, ")"));
  for (const std::string& name : ck.names()) {
    std::smatch m;
    if (std::regex_match(name, m, router_name())) {
      tensors.emplace_back(name, router_rows(ck.get(name), plans.at(std::stoll(m[1])), o.router));
    } else if (std::regex_match(name, m, expert_name())) {
      for_each_output_expert(ck, plans, name, [&](const std::smatch& mm, size_t i, at::Tensor t) {
        tensors.emplace_back(cat(mm[1].str(), ".experts.", i, ".", mm[4].str()), std::move(t));
      });
    } else {
      tensors.emplace_back(name, ck.get(name));
    }
  }
  config = ck.config();
  config[cfg.model_type == "mixtral" ? "num_local_experts" : "num_experts"] = r;
  config["num_experts_per_tok"] = std::min(cfg.num_experts_per_tok, r);
}

// The exact N -> r layout (docs/merge.md, docs/format.md): MoE layers that keep the original
// N-row router and map each original expert to its merged expert (router.type merged), so a
// token's weight on a merged expert is the sum of its selected members' weights (the family's
// own: renormalised for Mixtral, the raw softmax probabilities for Qwen2-MoE and OLMoE with
// norm_topk_prob false), as in the paper. Mixtral: a moeforge-family checkpoint over its Mistral
// base (experts renamed gate_proj / up_proj / down_proj, router `mlp.router.weight`). Qwen2-MoE
// and OLMoE: the family itself wrapped as moeforge (base_model_type qwen2_moe / olmoe) — every key
// and tensor stays the family's, the shared expert and its gate and the QK-norm included; the
// router `gate.weight` keeps its N rows and the r experts are renumbered. Layers with fewer output
// experts than the largest layer (m-smoe) are padded to it with width-1 zero experts that no
// original expert maps to, so they are never selected (one num_experts; expert_sizes per layer).
void exact_checkpoint(const Checkpoint& ck, const ModelConfig& cfg, const std::map<int64_t, LayerPlan>& plans,
                      const MergeOptions& o, json& config, std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  static const std::map<std::string, std::string> projection{{"w1", "gate_proj"}, {"w3", "up_proj"}, {"w2", "down_proj"}};
  const bool mixtral = cfg.model_type == "mixtral";
  size_t width = 0;
  for (const auto& [layer, p] : plans) width = std::max(width, p.members.size());
  if (static_cast<int64_t>(width) < cfg.num_experts_per_tok)
    fail(cat("--output exact: the largest layer keeps ", width, " experts, fewer than the model's top-k (",
             cfg.num_experts_per_tok, ")"));
  auto exact_name = [mixtral](const std::smatch& mm, size_t i) {
    if (!mixtral) return cat(mm[1].str(), ".experts.", i, ".", mm[4].str());
    const std::string rest = mm[4].str(), proj = rest.substr(0, rest.find('.'));
    return cat("model.layers.", mm[2].str(), ".mlp.experts.", i, ".", projection.at(proj), rest.substr(proj.size()));
  };
  for (const std::string& name : ck.names()) {
    std::smatch m;
    if (std::regex_match(name, m, router_name())) {
      tensors.emplace_back(mixtral ? cat("model.layers.", m[1].str(), ".mlp.router.weight") : name, ck.get(name));
    } else if (std::regex_match(name, m, expert_name())) {
      for_each_output_expert(ck, plans, name, [&](const std::smatch& mm, size_t i, at::Tensor t) {
        tensors.emplace_back(exact_name(mm, i), std::move(t));
      });
      if (m[3] != "0") continue;
      const at::Tensor like = ck.get(name);
      std::vector<int64_t> shape = like.sizes().vec();
      shape[static_cast<size_t>(neuron_dim(m[4].str()))] = 1;
      for (size_t i = plans.at(std::stoll(m[2])).members.size(); i < width; ++i)
        tensors.emplace_back(exact_name(m, i), at::zeros(shape, like.scalar_type()));
    } else {
      tensors.emplace_back(name, ck.get(name));
    }
  }
  json maps = json::array(), sizes = json::array(), layers = json::array();
  for (const auto& [layer, p] : plans) {
    std::vector<int64_t> map(static_cast<size_t>(cfg.num_experts));
    for (size_t i = 0; i < p.members.size(); ++i)
      for (int64_t j : p.members[i]) map[static_cast<size_t>(j)] = static_cast<int64_t>(i);
    maps.push_back(map);
    std::vector<int64_t> w(p.members.size(), cfg.moe_intermediate_size);
    w.resize(width, 1);
    sizes.push_back(w);
    layers.push_back(layer);
  }
  config = ck.config();
  config["model_type"] = "moeforge";
  config["architectures"] = {"MoeforgeForCausalLM"};
  config["num_experts_per_tok"] = cfg.num_experts_per_tok;
  config["expert_sizes"] = sizes;
  config["moe_provenance"] = {{"merge_method", o.method}, {"source_model_type", cfg.model_type}};
  if (!mixtral) {
    // The family's own keys (num_experts is now r; routing as its norm_topk_prob says).
    config["base_model_type"] = cfg.model_type;
    config["num_experts"] = width;
    config["router"] = {{"type", "merged"}, {"num_source_experts", cfg.num_experts}, {"expert_maps", maps}};
    return;
  }
  for (const char* key : {"num_local_experts", "router_aux_loss_coef", "router_jitter_noise", "output_router_logits"})
    config.erase(key);
  config["base_model_type"] = "mistral";
  config["moe_layers"] = layers;
  config["num_experts"] = width;
  config["router"] = {{"type", "merged"},         {"score", "softmax"},     {"selection", "top_k"},
                      {"gate", "renorm"},         {"aux_loss", "none"},     {"num_source_experts", cfg.num_experts},
                      {"expert_maps", maps}};
}

// --router fit: the merged clusters' router rows, fitted on the kept calibration tokens.
void fit_routers(const Checkpoint& ck, const MergeCalibration& calib, MergePlan& plan) {
  std::map<int64_t, const LayerCalibration*> by_layer;
  for (const LayerCalibration& c : calib.layers) by_layer[c.layer] = &c;
  for (const std::string& name : ck.names()) {
    std::smatch m;
    if (!std::regex_match(name, m, router_name())) continue;
    const int64_t layer = std::stoll(m[1]);
    auto it = plan.layers.find(layer);
    if (it == plan.layers.end() || !by_layer.count(layer)) continue;
    const LayerCalibration& c = *by_layer.at(layer);
    LayerPlan& p = it->second;
    const int64_t S = std::min(c.inputs.size(0), c.logits.size(0));
    const merge::RouterFit f =
        merge::fit_router(ck.get(name), c.inputs.narrow(0, 0, S), c.logits.narrow(0, 0, S), p.members, p.weights);
    p.router_rows = f.rows;
    p.extra["router_fit"] = {{"tokens", f.tokens}, {"residual", f.residual}};
  }
}

// Hands the heap's free pages back to the system. glibc keeps freed blocks of a few MB in the
// heap once its mmap threshold has risen (it does after the calibration's per-expert buffers), so
// without this the released original model would still count in the process's memory.
void release_freed_memory() {
#ifdef __GLIBC__
  ::malloc_trim(0);
#endif
}

// The dtype the original and the merged model run in: --dtype, or with "auto" the checkpoint's
// torch_dtype (bfloat16 stays bfloat16, as the reference runs it; anything else runs in fp32).
at::ScalarType compute_dtype(const std::string& name, const json& config) {
  if (name == "auto") {
    const bool bf16 = config.contains("torch_dtype") && config["torch_dtype"] == "bfloat16";
    return bf16 ? at::kBFloat16 : at::kFloat;
  }
  const at::ScalarType t = parse_dtype(name);
  if (t != at::kFloat && t != at::kBFloat16) fail("--dtype: '" + name + "' is not auto, float32 or bfloat16");
  return t;
}

void validate(const MergeOptions& o, const ModelConfig& cfg) {
  static const std::vector<std::string> methods{"hc-smoe", "kmeans", "m-smoe", "o-prune", "f-prune", "s-prune", "reap"};
  if (std::find(methods.begin(), methods.end(), o.method) == methods.end())
    fail("--method: unknown method '" + o.method + "' (hc-smoe | kmeans | m-smoe | o-prune | f-prune | s-prune | reap)");
  if (o.merge != "freq" && o.merge != "average" && o.merge != "fix-dom" && o.merge != "zipit")
    fail("--merge: '" + o.merge + "' is not freq, average, fix-dom or zipit");
  if (o.router != "dominant" && o.router != "weighted" && o.router != "fit")
    fail("--router: '" + o.router + "' is not dominant, weighted or fit");
  if (o.output != "stock" && o.output != "exact") fail("--output: '" + o.output + "' is not stock or exact");
  merge::parse_linkage(o.linkage);
  if (!o.representation.empty()) {
    merge::parse_representations(o.representation);
    if (merge::is_pruning(o.method))
      fail("--representation: " + o.method + " does not group experts (hc-smoe, kmeans and m-smoe do)");
    if (merge::is_combined_representation(o.representation) && o.method != "kmeans")
      fail("--representation " + o.representation + ": combined representations are for --method kmeans only; " +
           o.method + " takes one of expert-output, router-logits or weights");
  }
  if (!o.allocation.empty()) {
    if (o.allocation != "global" && o.allocation != "uniform")
      fail("--allocation: '" + o.allocation + "' is not global or uniform");
    if (o.method != "m-smoe" && o.method != "hc-smoe" && o.method != "kmeans")
      fail("--allocation: only hc-smoe, kmeans and m-smoe allocate groups per layer, not " + o.method);
  }
  if (o.group_limit < 1) fail(cat("--group-limit must be at least 1, not ", o.group_limit));
  if (o.fit_tokens < 1) fail(cat("--fit-tokens must be at least 1, not ", o.fit_tokens));
  if (!cfg.is_moe()) fail_file(cfg.origin, "not an MoE model (model_type " + cfg.model_type + "): nothing to merge");
  if (cfg.model_type != "mixtral" && cfg.model_type != "qwen2_moe" && cfg.model_type != "olmoe")
    fail_file(cfg.origin, "merge reads Mixtral, Qwen2-MoE and OLMoE checkpoints, not model_type " + cfg.model_type);
  if (o.experts < 1) fail(cat("--experts must be at least 1, not ", o.experts));
  if (o.experts > cfg.num_experts)
    fail_file(cfg.origin, cat("--experts ", o.experts, " is more than the model's ", cfg.num_experts, " experts per layer"));
  if (o.method == "m-smoe") {
    const int64_t least = (cfg.num_experts + o.group_limit - 1) / o.group_limit;
    if (o.allocation == "uniform" && o.experts < least)
      fail(cat("--method m-smoe: ", cfg.num_experts, " experts in groups of at most ", o.group_limit,
               " (--group-limit) need --experts >= ", least));
  }
  // m-smoe's default allocation is global, the clustering methods' uniform (the reference's
  // dynamic_group=False).
  const bool global = o.method == "m-smoe" ? o.allocation != "uniform" : o.allocation == "global";
  if (global && o.output == "stock" && o.experts < cfg.num_experts)
    fail("--method " + o.method + (o.method == "m-smoe" ? "" : " --allocation global") +
         " gives every layer its own expert count (global frequency threshold, spec A.8.1), which a stock config "
         "cannot hold: add --output exact or --allocation uniform");
  if (o.output == "exact") {
    if (merge::is_pruning(o.method)) fail("--output exact: pruning is already exact in the stock layout (drop --output)");
    if (o.experts < cfg.num_experts_per_tok)
      fail(cat("--output exact needs --experts >= the model's top-k (", cfg.num_experts_per_tok, ")"));
  }
}

}  // namespace

json run_merge(const std::string& model_dir, const MergeOptions& o, const std::string& out_dir) {
  const Checkpoint ck = Checkpoint::open(model_dir);
  const ModelConfig cfg = parse_model_config(ck.config(), ck.config_path());
  validate(o, cfg);
  const at::ScalarType dtype = compute_dtype(o.dtype, ck.config());
  check_model_output_dir(out_dir, o.overwrite, {model_dir});
  const bool writer = o.calib.sharding.writer();
  if (writer && o.experts == cfg.num_experts)
    log_warn("--experts equals the model's expert count: the output is the model unchanged");

  std::shared_ptr<Model> model = Model::load(model_dir, {dtype, at::kCPU});
  const std::unique_ptr<Tokenizer> tok = Tokenizer::load(model_dir);
  const bool merging = !merge::is_pruning(o.method);
  const bool fit = merging && o.output == "stock" && o.router == "fit";
  MergeCalibOptions co = o.calib;
  co.gram = o.method == "o-prune";
  if (fit || (merging && (o.merge == "fix-dom" || o.merge == "zipit"))) {
    co.keep_tokens = o.fit_tokens;
    co.logits = true;
  }
  const MergeCalibration calib = calibrate_merge(*model, *tok, co);
  // Data parallel: the calibration pass is the ranks' shared work. Rank 0 plans and writes alone;
  // the others leave now instead of waiting for it in a barrier that has a timeout.
  co.sharding.finish();
  if (!writer) return json();
  MergePlan plan = merge::plan_merge(calib, o, cfg, *model);
  if (fit) fit_routers(ck, calib, plan);
  const std::map<int64_t, LayerPlan>& plans = plan.layers;

  // The original layers' outputs on the error tokens; then the original model goes, so that
  // writing (from the checkpoint files) and the merged model never share memory with it.
  // The first error_tokens calibration inputs of a layer, in the models' dtype.
  auto error_inputs = [&](const LayerCalibration& c) {
    return c.inputs.narrow(0, 0, std::min(o.calib.error_tokens, c.inputs.size(0))).to(dtype);
  };
  std::map<int64_t, at::Tensor> original_outputs;  // layer -> [S, d] fp32
  {
    at::NoGradGuard no_grad;
    model->eval();
    for (const LayerCalibration& c : calib.layers)
      original_outputs[c.layer] = model->ffn(c.layer)->forward(error_inputs(c), FfnContext{}).to(at::kFloat);
  }
  model.reset();
  release_freed_memory();

  json config;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  if (o.output == "exact")
    exact_checkpoint(ck, cfg, plans, o, config, tensors);
  else
    stock_checkpoint(ck, cfg, plans, o, config, tensors);
  SaveOptions save;
  save.copy_aux_from = model_dir;
  save.max_shard_bytes = o.max_shard_bytes;
  save_checkpoint(out_dir, config, tensors, save);
  tensors.clear();
  release_freed_memory();

  // The merged layers against the original ones on the first error_tokens calibration inputs.
  std::shared_ptr<Model> merged = Model::load(out_dir, {dtype, at::kCPU});
  merged->eval();
  at::NoGradGuard no_grad;
  json layers = json::array();
  std::vector<int64_t> counts;
  double error_sum = 0;
  int64_t error_tokens = 0;
  for (const LayerCalibration& c : calib.layers) {
    const LayerPlan& p = plans.at(c.layer);
    const at::Tensor x = error_inputs(c);
    error_tokens = x.size(0);
    const at::Tensor& y = original_outputs.at(c.layer);
    const at::Tensor y2 = merged->ffn(c.layer)->forward(x, FfnContext{}).to(at::kFloat);
    const double err = ((y - y2).norm() / y.norm().clamp_min(1e-30)).item<double>();
    error_sum += err;
    counts.push_back(static_cast<int64_t>(p.members.size()));
    json l = {{"layer", c.layer},
              {"experts", p.members.size()},
              {"clusters", p.members},
              {"weights", p.weights},
              {"router_row_of", p.representative},
              {"frequency", merge::to_vector(c.frequency)},
              {"soft_score", merge::to_vector(c.soft_score)},
              {"reap", merge::to_vector(c.reap)},
              {"output_error", err}};
    if (!p.heights.empty()) l["merge_heights"] = p.heights;
    for (const auto& [key, value] : p.extra.items()) l[key] = value;
    layers.push_back(l);
  }
  json report = {{"model", model_dir},
                 {"method", o.method},
                 {"experts_before", cfg.num_experts},
                 {"experts_after", o.experts},
                 {"experts_per_layer", counts},
                 {"top_k", config["num_experts_per_tok"]},
                 {"output", o.output},
                 {"calibration", {{"file", o.calib.file},
                                  {"dtype", dtype == at::kBFloat16 ? "bfloat16" : "float32"},
                                  {"blocks", calib.blocks},
                                  {"seq_len", calib.seq_len},
                                  {"tokens", calib.tokens},
                                  {"error_tokens", error_tokens}}},
                 {"mean_output_error", error_sum / static_cast<double>(calib.layers.size())},
                 {"layers", layers}};
  if (o.method == "o-prune") report["max_subsets"] = o.max_subsets;
  if (merging) {
    report["representation"] = merge::representation_name(o);
    if (o.method == "hc-smoe") report["linkage"] = o.linkage;
    if (o.method == "kmeans") report["seed"] = o.seed;
    report["merge"] = o.merge;
    report["router"] = o.router;
    if (co.keep_tokens > 0) report["fit_tokens"] = calib.layers.front().inputs.size(0);
    for (const auto& [key, value] : plan.summary.items()) report[key] = value;
  }
  write_json_file(path_join(out_dir, "merge_report.json"), report);
  return report;
}

}  // namespace mf
