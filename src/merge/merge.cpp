#include "merge/merge.h"

#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <regex>

#include "io/checkpoint.h"
#include "merge/hclust.h"
#include "merge/kmeans.h"
#include "merge/oprune.h"
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

// One layer's grouping: output expert i = Σ_j weights[i][j] · expert members[i][j].
struct LayerPlan {
  std::vector<std::vector<int64_t>> members;  // ascending original indices
  std::vector<std::vector<double>> weights;   // sum to 1
  std::vector<int64_t> representative;        // the member whose router row a merged expert keeps
  std::vector<double> heights;                // hc-smoe: the dendrogram's merge heights
  json extra = json::object();                // method-specific report fields
};

std::vector<double> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

bool is_pruning(const std::string& method) {
  return method == "f-prune" || method == "s-prune" || method == "o-prune" || method == "reap";
}

// The r largest scores (ties: the lower index), in index order.
std::vector<int64_t> top_r(const std::vector<double>& score, int64_t r) {
  std::vector<int64_t> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
  order.resize(static_cast<size_t>(r));
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<int64_t> pruned_set(const LayerCalibration& c, const MergeOptions& o, const ModelConfig& cfg,
                                json& extra) {
  if (o.method == "f-prune") return top_r(to_vector(c.frequency), o.experts);
  if (o.method == "s-prune") return top_r(to_vector(c.soft_score), o.experts);
  if (o.method == "reap") return top_r(to_vector(c.reap), o.experts);
  merge::OPruneInput in;
  in.tokens = c.logits.size(0);
  in.experts = c.logits.size(1);
  in.k = cfg.num_experts_per_tok;
  in.renormalize = cfg.norm_topk_prob;
  const at::Tensor logits = c.logits.contiguous(), gram = c.gram.contiguous();
  in.logits = logits.data_ptr<float>();
  in.gram = gram.data_ptr<double>();
  const merge::OPruneResult res = merge::o_prune(in, o.experts, o.max_subsets, o.seed + static_cast<uint64_t>(c.layer));
  extra = {{"subsets", res.subsets}, {"exhaustive", res.exhaustive}, {"squared_error", res.loss}};
  return res.kept;
}

LayerPlan plan_layer(const LayerCalibration& c, const MergeOptions& o, const ModelConfig& cfg) {
  const int64_t E = c.mean_output.size(0), d = c.mean_output.size(1), r = o.experts;
  const std::vector<double> freq = to_vector(c.frequency);
  LayerPlan p;
  if (is_pruning(o.method)) {
    for (int64_t j : pruned_set(c, o, cfg, p.extra)) {
      p.members.push_back({j});
      p.weights.push_back({1.0});
      p.representative.push_back(j);
    }
    return p;
  }
  const std::vector<double> X = to_vector(c.mean_output);
  std::vector<int64_t> labels;
  if (o.method == "kmeans") {
    merge::KMeansOptions ko;
    ko.seed = o.seed;
    const merge::KMeansResult km = merge::kmeans(X, E, d, r, ko);
    labels = km.labels;
    p.representative = km.dominant;
  } else {
    const merge::Dendrogram tree = merge::linkage(X, E, d, merge::parse_linkage(o.linkage));
    p.heights = tree.heights;
    labels = merge::cut_tree(tree, E, r);
    p.representative = merge::representatives(X, E, d, labels);
  }
  p.members = merge::cluster_members(labels);
  for (const auto& m : p.members) {
    double total = 0;
    for (int64_t j : m) total += freq[j];
    std::vector<double> w;
    // freq: f_j / Σ f; a cluster nobody selected is averaged (the reference makes it a zero expert).
    for (int64_t j : m)
      w.push_back(o.merge == "freq" && total > 0 ? freq[j] / total : 1.0 / static_cast<double>(m.size()));
    p.weights.push_back(w);
  }
  return p;
}

// Σ_j w_j · t_j in fp32, in the dtype of the stored tensors; one member: the stored tensor itself.
at::Tensor combine(const Checkpoint& ck, const std::vector<std::string>& names, const std::vector<double>& w) {
  const at::Tensor first = ck.get(names.front());
  if (names.size() == 1) return first;
  at::Tensor sum = first.to(at::kFloat) * w[0];  // the first member is read once
  for (size_t i = 1; i < names.size(); ++i) sum.add_(ck.get(names[i], at::kFloat), w[i]);
  return sum.to(first.scalar_type());
}

at::Tensor router_rows(const at::Tensor& gate, const LayerPlan& p, const std::string& mode) {
  std::vector<at::Tensor> rows;
  for (size_t i = 0; i < p.members.size(); ++i) {
    if (p.members[i].size() == 1 || mode == "dominant") {
      rows.push_back(gate[p.representative[i]]);
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
    emit(m, i, combine(ck, names, p.weights[i]));
  }
}

// The stock layout with r experts: expert tensors renumbered 0..r-1, routers with r rows.
void stock_checkpoint(const Checkpoint& ck, const ModelConfig& cfg, const std::map<int64_t, LayerPlan>& plans,
                      const MergeOptions& o, json& config, std::vector<std::pair<std::string, at::Tensor>>& tensors) {
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
  config[cfg.model_type == "mixtral" ? "num_local_experts" : "num_experts"] = o.experts;
  config["num_experts_per_tok"] = std::min(cfg.num_experts_per_tok, o.experts);
}

// The exact N -> r layout (docs/merge.md): a moeforge-family checkpoint over the Mixtral model's
// Mistral base whose MoE layers keep the original N-row router and map each original expert to
// its merged expert (router.type merged), so a token's weight on a merged expert is the sum of
// its selected members' weights, as in the paper.
void exact_checkpoint(const Checkpoint& ck, const ModelConfig& cfg, const std::map<int64_t, LayerPlan>& plans,
                      const MergeOptions& o, json& config, std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  static const std::map<std::string, std::string> projection{{"w1", "gate_proj"}, {"w3", "up_proj"}, {"w2", "down_proj"}};
  for (const std::string& name : ck.names()) {
    std::smatch m;
    if (std::regex_match(name, m, router_name())) {
      tensors.emplace_back(cat("model.layers.", m[1].str(), ".mlp.router.weight"), ck.get(name));
    } else if (std::regex_match(name, m, expert_name())) {
      for_each_output_expert(ck, plans, name, [&](const std::smatch& mm, size_t i, at::Tensor t) {
        const std::string rest = mm[4].str(), proj = rest.substr(0, rest.find('.'));
        tensors.emplace_back(cat("model.layers.", mm[2].str(), ".mlp.experts.", i, ".", projection.at(proj),
                                 rest.substr(proj.size())),
                             std::move(t));
      });
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
    sizes.push_back(std::vector<int64_t>(p.members.size(), cfg.moe_intermediate_size));
    layers.push_back(layer);
  }
  config = ck.config();
  for (const char* key : {"num_local_experts", "router_aux_loss_coef", "router_jitter_noise", "output_router_logits"})
    config.erase(key);
  config["model_type"] = "moeforge";
  config["architectures"] = {"MoeforgeForCausalLM"};
  config["base_model_type"] = "mistral";
  config["moe_layers"] = layers;
  config["num_experts"] = o.experts;
  config["num_experts_per_tok"] = cfg.num_experts_per_tok;
  config["expert_sizes"] = sizes;
  config["router"] = {{"type", "merged"},         {"score", "softmax"},     {"selection", "top_k"},
                      {"gate", "renorm"},         {"aux_loss", "none"},     {"num_source_experts", cfg.num_experts},
                      {"expert_maps", maps}};
  config["moe_provenance"] = {{"merge_method", o.method}, {"source_model_type", cfg.model_type}};
}

void validate(const MergeOptions& o, const ModelConfig& cfg) {
  static const std::vector<std::string> methods{"hc-smoe", "kmeans", "o-prune", "f-prune", "s-prune", "reap"};
  if (std::find(methods.begin(), methods.end(), o.method) == methods.end())
    fail("--method: unknown method '" + o.method + "' (hc-smoe | kmeans | o-prune | f-prune | s-prune | reap)");
  if (o.merge != "freq" && o.merge != "average") fail("--merge: '" + o.merge + "' is not freq or average");
  if (o.router != "dominant" && o.router != "weighted") fail("--router: '" + o.router + "' is not dominant or weighted");
  if (o.output != "stock" && o.output != "exact") fail("--output: '" + o.output + "' is not stock or exact");
  merge::parse_linkage(o.linkage);
  if (!cfg.is_moe()) fail_file(cfg.origin, "not an MoE model (model_type " + cfg.model_type + "): nothing to merge");
  if (cfg.model_type != "mixtral" && cfg.model_type != "qwen2_moe" && cfg.model_type != "olmoe")
    fail_file(cfg.origin, "merge reads Mixtral, Qwen2-MoE and OLMoE checkpoints, not model_type " + cfg.model_type);
  if (o.experts < 1) fail(cat("--experts must be at least 1, not ", o.experts));
  if (o.experts > cfg.num_experts)
    fail_file(cfg.origin, cat("--experts ", o.experts, " is more than the model's ", cfg.num_experts, " experts per layer"));
  if (o.output == "exact") {
    if (is_pruning(o.method)) fail("--output exact: pruning is already exact in the stock layout (drop --output)");
    if (cfg.model_type != "mixtral")
      fail_file(cfg.origin, "--output exact writes merged Mixtral models only (the moeforge family has no shared expert "
                            "or QK-norm yet); use the stock output");
    if (o.experts < cfg.num_experts_per_tok)
      fail(cat("--output exact needs --experts >= the model's top-k (", cfg.num_experts_per_tok, ")"));
  }
}

}  // namespace

json run_merge(const std::string& model_dir, const MergeOptions& o, const std::string& out_dir) {
  const Checkpoint ck = Checkpoint::open(model_dir);
  const ModelConfig cfg = parse_model_config(ck.config(), ck.config_path());
  validate(o, cfg);
  check_model_output_dir(out_dir, o.overwrite, {model_dir});
  if (o.experts == cfg.num_experts) log_warn("--experts equals the model's expert count: the output is the model unchanged");

  std::shared_ptr<Model> model = Model::load(model_dir, {at::kFloat, at::kCPU});
  const std::unique_ptr<Tokenizer> tok = Tokenizer::load(model_dir);
  MergeCalibOptions co = o.calib;
  co.gram = o.method == "o-prune";
  const MergeCalibration calib = calibrate_merge(*model, *tok, co);
  std::map<int64_t, LayerPlan> plans;
  for (const LayerCalibration& c : calib.layers) plans[c.layer] = plan_layer(c, o, cfg);

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

  // The merged layers against the original ones on the kept calibration inputs.
  std::shared_ptr<Model> merged = Model::load(out_dir, {at::kFloat, at::kCPU});
  model->eval();
  merged->eval();
  at::NoGradGuard no_grad;
  json layers = json::array();
  double error_sum = 0;
  for (const LayerCalibration& c : calib.layers) {
    const LayerPlan& p = plans.at(c.layer);
    const at::Tensor y = model->ffn(c.layer)->forward(c.inputs, FfnContext{});
    const at::Tensor y2 = merged->ffn(c.layer)->forward(c.inputs, FfnContext{});
    const double err = ((y - y2).norm() / y.norm().clamp_min(1e-30)).item<double>();
    error_sum += err;
    json l = {{"layer", c.layer},
              {"clusters", p.members},
              {"weights", p.weights},
              {"router_row_of", p.representative},
              {"frequency", to_vector(c.frequency)},
              {"soft_score", to_vector(c.soft_score)},
              {"reap", to_vector(c.reap)},
              {"output_error", err}};
    if (!p.heights.empty()) l["merge_heights"] = p.heights;
    if (!p.extra.empty()) l["o_prune"] = p.extra;
    layers.push_back(l);
  }
  json report = {{"model", model_dir},
                 {"method", o.method},
                 {"experts_before", cfg.num_experts},
                 {"experts_after", o.experts},
                 {"top_k", config["num_experts_per_tok"]},
                 {"calibration", {{"file", o.calib.file}, {"blocks", calib.blocks}, {"seq_len", calib.seq_len},
                                  {"tokens", calib.tokens}, {"error_tokens", calib.layers.front().inputs.size(0)}}},
                 {"mean_output_error", error_sum / static_cast<double>(calib.layers.size())},
                 {"layers", layers}};
  if (o.method == "o-prune") report["max_subsets"] = o.max_subsets;
  if (o.method == "hc-smoe" || o.method == "kmeans") {
    if (o.method == "hc-smoe") report["linkage"] = o.linkage;
    if (o.method == "kmeans") report["seed"] = o.seed;
    report["merge"] = o.merge;
    report["router"] = o.router;
  }
  write_json_file(path_join(out_dir, "merge_report.json"), report);
  return report;
}

}  // namespace mf
