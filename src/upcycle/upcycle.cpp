// Building an upcycled checkpoint: the output config.json from the base config, then every
// tensor the output architecture expects, in expected_tensors() order, from the base model
// (attention, norms, embeddings, dense layers), the donors' FFNs (experts) and gate_init.h
// (routers; moeforge's noisy top-k router also has a zero noise matrix).
#include "upcycle/upcycle.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <map>
#include <regex>

#include "io/checkpoint.h"
#include "model/config.h"
#include "model/model.h"
#include "upcycle/gate_init.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/rng.h"
#include "util/fs_checks.h"
#include "util/str.h"

namespace mf {

namespace {

std::vector<int64_t> moe_layer_list(const UpcycleConfig& c, int64_t num_layers) {
  std::vector<int64_t> v = c.layers;
  if (v.empty())
    for (int64_t l = 0; l < num_layers; ++l) v.push_back(l);
  std::sort(v.begin(), v.end());
  return v;
}

// config.json of the output: the base config with the MoE family's keys (merge_and_eval.md §C.3).
json output_config(const UpcycleConfig& c, const ModelConfig& base, const std::vector<int64_t>& moe_layers,
                   at::ScalarType dtype) {
  json j = base.raw;
  for (const char* k : {"attention_bias", "mlp_bias", "pretraining_tp"}) j.erase(k);
  // Written out: the MoE families' defaults differ from Llama's (Mixtral: 8 KV heads, rope_theta
  // 1e6, eps 1e-5), so a key the donor left at its default must not change meaning.
  j["num_key_value_heads"] = base.num_kv_heads;
  j["rope_theta"] = base.rope_theta;
  j["rms_norm_eps"] = base.norm_eps;
  j["max_position_embeddings"] = base.max_position_embeddings;
  j["tie_word_embeddings"] = base.tie_word_embeddings;
  j["hidden_act"] = base.hidden_act;
  j["head_dim"] = base.head_dim;
  const int64_t N = static_cast<int64_t>(c.experts.size());
  const int64_t f = base.intermediate_size, fe = f / c.granularity;
  j["num_experts_per_tok"] = c.top_k;
  if (c.family != "moeforge") j["output_router_logits"] = false;
  if (c.family == "moeforge") {
    // docs/format.md "moeforge MoE models": the base config plus the MoE keys; attention, norms
    // and the dense layers are read as base_model_type's, so its attention_bias stays.
    if (base.raw.contains("attention_bias")) j["attention_bias"] = base.raw["attention_bias"];
    j["model_type"] = "moeforge";
    j["architectures"] = {"MoeforgeForCausalLM"};
    j["base_model_type"] = family_name(base.family);  // llama, mistral or qwen2 (validate_upcycle)
    j["intermediate_size"] = f;
    j["moe_layers"] = moe_layers;
    j["num_experts"] = N;
    json sizes = json::array();  // every expert of every MoE layer is f/G wide
    for (size_t i = 0; i < moe_layers.size(); ++i) sizes.push_back(json(std::vector<int64_t>(static_cast<size_t>(N), fe)));
    j["expert_sizes"] = sizes;
    // Softmax, top-k, renormalised over the selected: with k = 1 the selected expert's weight is 1
    // (HyperMoE's / Shazeer's softmax over the top-k logits), with identical experts the dense FFN.
    json router = {{"type", c.router}, {"score", "softmax"}, {"selection", "top_k"}, {"gate", "renorm"}};
    if (c.router == "noisy_topk") {
      router["aux_loss"] = "shazeer";  // cv²(importance) + cv²(load), load from the noise CDF
      router["aux_loss_coef"] = 0.01;
      router["noise_epsilon"] = 0.01;
      router["load_estimate"] = "shazeer";
    } else {
      router["aux_loss"] = "switch";
      router["aux_loss_coef"] = 0.01;
    }
    j["router"] = router;
  } else if (c.family == "mixtral") {
    j["model_type"] = "mixtral";
    j["architectures"] = {"MixtralForCausalLM"};
    j["num_local_experts"] = N;
    j["intermediate_size"] = fe;
    j["router_aux_loss_coef"] = 0.001;
    j["router_jitter_noise"] = 0.0;
    if (base.sliding_window > 0) j["sliding_window"] = base.sliding_window; else j["sliding_window"] = nullptr;
  } else if (c.family == "qwen2_moe") {
    j["model_type"] = "qwen2_moe";
    j["architectures"] = {"Qwen2MoeForCausalLM"};
    j["num_experts"] = N;
    j["moe_intermediate_size"] = fe;
    j["shared_expert_intermediate_size"] = f;
    j["intermediate_size"] = f;
    j["norm_topk_prob"] = true;
    j["decoder_sparse_step"] = 1;
    json dense = json::array();
    for (int64_t l = 0; l < base.num_layers; ++l)
      if (!std::binary_search(moe_layers.begin(), moe_layers.end(), l)) dense.push_back(l);
    j["mlp_only_layers"] = dense;
    j["router_aux_loss_coef"] = 0.001;
    if (base.family != Family::qwen2) {  // Mistral's window applies to every layer
      j["use_sliding_window"] = base.sliding_window > 0;
      j["sliding_window"] = base.sliding_window > 0 ? json(base.sliding_window) : json(nullptr);
      j["max_window_layers"] = 0;
    }
  } else {
    j["model_type"] = "olmoe";
    j["architectures"] = {"OlmoeForCausalLM"};
    j["num_experts"] = N;
    j["intermediate_size"] = fe;
    j["norm_topk_prob"] = true;
    j["router_aux_loss_coef"] = 0.01;
    j["clip_qkv"] = nullptr;
    j["attention_bias"] = base.attention_bias;
    j.erase("sliding_window");
  }
  set_config_dtype(j, dtype);
  return j;
}

int projection_index(const std::string& name) {  // 0 gate, 1 up, 2 down
  if (name == "w1" || name == "gate_proj") return 0;
  if (name == "w3" || name == "up_proj") return 1;
  if (name == "w2" || name == "down_proj") return 2;
  fail("upcycle: unknown expert projection '" + name + "'");
}

// The FFN weights of the donors, one layer at a time (the output is written in layer order).
class DonorFfns {
 public:
  const at::Tensor& get(const std::string& donor, int64_t layer, int which) {
    if (layer != layer_) {
      cache_.clear();
      layer_ = layer;
    }
    auto& slot = cache_[donor];
    if (slot.empty()) {
      auto it = open_.find(donor);
      if (it == open_.end()) it = open_.emplace(donor, Checkpoint::open(donor)).first;
      const std::string prefix = cat("model.layers.", layer, ".mlp.");
      for (const char* p : {"gate_proj", "up_proj", "down_proj"}) slot.push_back(it->second.get(prefix + p + ".weight", at::kFloat));
    }
    return slot[static_cast<size_t>(which)];
  }

 private:
  int64_t layer_ = -1;
  std::map<std::string, Checkpoint> open_;
  std::map<std::string, std::vector<at::Tensor>> cache_;
};

uint64_t noise_seed(uint64_t seed, int64_t layer, int64_t expert, int which) {
  uint64_t s = seed ^ 0x6e6f697365ull;  // "noise": a stream apart from the routers'
  for (uint64_t v : {static_cast<uint64_t>(layer), static_cast<uint64_t>(expert + 2), static_cast<uint64_t>(which)}) {
    s ^= v * 0x9e3779b97f4a7c15ull;
    s = splitmix64(s);
  }
  return s;
}

// Expert weight `which` of `e` in `layer`: slice `slice` of `slices` of the donor FFN, the down
// projection scaled by `scale`, plus the expert's noise.
at::Tensor expert_weight(DonorFfns& donors, const UpcycleExpert& e, int64_t layer, int which, int64_t slice,
                         int64_t slices, double scale, int64_t expert_id, uint64_t seed) {
  const at::Tensor& w = donors.get(e.source_model, layer, which);
  const int64_t dim = which == 2 ? 1 : 0;
  const int64_t width = w.size(dim) / slices;
  at::Tensor t = w.slice(dim, slice * width, (slice + 1) * width).clone();
  if (which == 2 && scale != 1.0) t.mul_(scale);
  if (e.noise_scale > 0) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(noise_seed(seed, layer, expert_id, which));
    t.add_(at::randn(t.sizes(), gen, at::kFloat) * e.noise_scale);
  }
  return t;
}

}  // namespace

UpcycleResult run_upcycle(const UpcycleConfig& c, const std::string& out_dir, bool overwrite) {
  validate_upcycle(c);
  std::vector<std::string> inputs{c.base_model};
  for (const auto& e : c.experts) inputs.push_back(e.source_model);
  check_model_output_dir(out_dir, overwrite, inputs);

  Checkpoint base_ck = Checkpoint::open(c.base_model);
  const ModelConfig base = parse_model_config(base_ck.config(), base_ck.config_path());
  const at::ScalarType dtype = parse_dtype(c.dtype.empty() ? base.raw.value("torch_dtype", std::string("float32")) : c.dtype);
  const std::vector<int64_t> moe_layers = moe_layer_list(c, base.num_layers);
  const json config = output_config(c, base, moe_layers, dtype);
  const ModelConfig out = parse_model_config(config, "the upcycled config.json");
  if (c.family == "olmoe")
    log_warn("OLMoE normalises q and k (q_norm / k_norm, written as ones), which the donor does not: the upcycled "
             "model's attention differs from the donor's until it is trained");

  const GateRows gates = init_gate_rows(c, moe_layers, base.hidden_size);
  UpcycleResult result;
  result.moe_layers = static_cast<int64_t>(moe_layers.size());
  for (const auto& g : gates.router) {
    result.gate_condition_numbers.push_back(condition_number(g));
    if (is_prompt_gate_mode(c.gate_mode) && result.gate_condition_numbers.back() > 5)
      log_warn("a router built from the prompts has condition number ", result.gate_condition_numbers.back(),
               " (> 5): the prompts may be too similar to separate the experts");
  }
  auto layer_index = [&](int64_t l) {
    return static_cast<size_t>(std::lower_bound(moe_layers.begin(), moe_layers.end(), l) - moe_layers.begin());
  };

  static const std::regex ffn_re(R"(^model\.layers\.(\d+)\.(?:block_sparse_moe|mlp)\.(.+)\.weight$)");
  static const std::regex expert_re(R"(^experts\.(\d+)\.(\w+)$)");
  static const std::regex shared_re(R"(^shared_expert\.(\w+)$)");
  DonorFfns donors;
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const TensorSpec& spec : expected_tensors(out)) {
    at::Tensor t;
    std::smatch m, part;
    if (std::regex_match(spec.name, m, ffn_re) && out.layer_is_moe(std::stoll(m[1]))) {
      const int64_t l = std::stoll(m[1]);
      const std::string rest = m[2];
      if (rest == "gate" || rest == "router") {  // moeforge: mlp.router.weight
        t = gates.router[layer_index(l)];
      } else if (rest == "router.noise") {  // noisy_topk's w_noise: zeros, as the reference initialises it
        t = at::zeros(spec.shape, at::kFloat);
      } else if (rest == "shared_expert_gate") {
        t = gates.shared_gate[layer_index(l)];
      } else if (std::regex_match(rest, part, expert_re)) {
        const int64_t e = std::stoll(part[1]);
        const auto& x = c.experts[static_cast<size_t>(e)];
        t = expert_weight(donors, x, l, projection_index(part[2]), e % c.granularity, c.granularity,
                          static_cast<double>(c.granularity) * x.residual_scale, e, c.seed);
      } else if (std::regex_match(rest, part, shared_re)) {
        t = expert_weight(donors, *c.shared_expert, l, projection_index(part[1]), 0, 1, c.shared_expert->residual_scale,
                          -1, c.seed);
      }
    } else if (base_ck.contains(spec.name)) {
      t = base_ck.get(spec.name, at::kFloat);
    } else if (ends_with(spec.name, "_proj.bias")) {
      t = at::zeros(spec.shape, at::kFloat);  // Qwen2 attention biases a Llama donor lacks
    } else if (ends_with(spec.name, "q_norm.weight") || ends_with(spec.name, "k_norm.weight")) {
      t = at::ones(spec.shape, at::kFloat);  // OLMoE's QK-norm
    } else if (!spec.required) {
      continue;
    }
    if (!t.defined()) fail_file(c.base_model, "no tensor for " + spec.name);
    if (t.sizes() != at::IntArrayRef(spec.shape))
      fail_file(c.base_model, "tensor " + spec.name + " has shape " + shape_string(t.sizes().vec()) + " but the output needs " +
                                  shape_string(spec.shape));
    tensors.emplace_back(spec.name, t.to(dtype).contiguous());
  }
  SaveOptions options;
  options.copy_aux_from = c.base_model;
  options.max_shard_bytes = c.max_shard_bytes;
  save_checkpoint(out_dir, config, tensors, options);
  result.total_parameters = total_parameters(out);
  result.active_parameters = active_parameters_per_token(out);
  return result;
}

}  // namespace mf
