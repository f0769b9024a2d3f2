#include "upcycle/gate_init.h"

#include <cmath>
#include <limits>
#include <map>

#include "io/checkpoint.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/rng.h"
#include "util/str.h"

namespace mf {

namespace {

at::Generator layer_generator(uint64_t seed, int64_t layer) {
  uint64_t state = seed ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(layer + 1));
  return at::make_generator<at::CPUGeneratorImpl>(splitmix64(state));
}

at::Tensor l2_normalised(const at::Tensor& v) {
  const double n = v.norm().item<double>();
  return n > 0 ? v / n : v;
}

// The experts whose rows a gate matrix has: routed ones, then the shared one.
std::vector<const UpcycleExpert*> gated_experts(const UpcycleConfig& c) {
  std::vector<const UpcycleExpert*> v;
  for (const auto& e : c.experts) v.push_back(&e);
  if (c.shared_expert) v.push_back(&*c.shared_expert);
  return v;
}

// cheap_embed: one [H] vector per gated expert, shared by every layer.
std::vector<at::Tensor> cheap_embed_rows(const UpcycleConfig& c, int64_t hidden) {
  auto tok = Tokenizer::load(c.base_model);
  const at::Tensor embed = Checkpoint::open(c.base_model).get("model.embed_tokens.weight", at::kFloat);
  std::vector<at::Tensor> rows;
  for (const UpcycleExpert* e : gated_experts(c)) {
    at::Tensor sum = at::zeros({hidden}, at::kFloat);
    for (const auto& p : e->positive_prompts)
      for (int32_t id : tok->encode(p, false)) sum += embed[id];
    rows.push_back(l2_normalised(sum));
  }
  return rows;
}

// hidden: [layers][gated expert] vectors from forward passes of the base model.
std::vector<std::vector<at::Tensor>> hidden_rows(const UpcycleConfig& c, const std::vector<int64_t>& layers) {
  auto tok = Tokenizer::load(c.base_model);
  auto model = Model::load(c.base_model, {at::kFloat, at::kCPU});
  model->eval();
  at::NoGradGuard no_grad;
  const int64_t L = model->config().num_layers;
  // Residual-stream input of every layer at the last token of `prompt`: [L, H].
  auto layer_inputs = [&](const std::string& prompt) {
    std::vector<int32_t> ids = tok->encode(prompt, true);
    if (tok->bos_id() >= 0 && (ids.empty() || ids.front() != tok->bos_id())) ids.insert(ids.begin(), tok->bos_id());
    if (ids.empty()) fail_file(c.origin, "prompt \"" + prompt + "\" has no tokens");
    std::vector<int64_t> ids64(ids.begin(), ids.end());
    at::Tensor input = at::tensor(ids64, at::kLong).unsqueeze(0);
    std::vector<at::Tensor> out(static_cast<size_t>(L));
    out[0] = model->named_parameters()["model.embed_tokens.weight"][ids64.back()].to(at::kFloat);
    const int hook = model->hooks().add(HookPoint::block_output, [&](HookEvent& ev) {
      if (ev.layer + 1 < L) out[static_cast<size_t>(ev.layer + 1)] = ev.tensor[-1].to(at::kFloat).clone();
    });
    model->forward_hidden(input);
    model->hooks().remove(hook);
    return at::stack(out);
  };
  auto mean_over = [&](const std::vector<std::string>& prompts) {
    at::Tensor sum = at::zeros({L, model->config().hidden_size}, at::kFloat);
    for (const auto& p : prompts) sum += layer_inputs(p);
    return prompts.empty() ? sum : sum / static_cast<double>(prompts.size());
  };
  std::vector<std::vector<at::Tensor>> rows(layers.size());
  for (const UpcycleExpert* e : gated_experts(c)) {
    at::Tensor v = mean_over(e->positive_prompts) - mean_over(e->negative_prompts);
    for (size_t i = 0; i < layers.size(); ++i) rows[i].push_back(l2_normalised(v[layers[i]]));
  }
  return rows;
}

}  // namespace

bool is_prompt_gate_mode(const std::string& mode) { return mode == "cheap_embed" || mode == "hidden"; }

const std::vector<std::string>& gate_modes() {
  static const std::vector<std::string> modes = {"random", "uniform_random", "cheap_embed", "hidden", "zeros"};
  return modes;
}

double condition_number(const at::Tensor& rows) {
  at::Tensor s = at::linalg_svdvals(rows.to(at::kDouble));
  const double lo = s.min().item<double>(), hi = s.max().item<double>();
  return lo > 0 ? hi / lo : std::numeric_limits<double>::infinity();
}

GateRows init_gate_rows(const UpcycleConfig& c, const std::vector<int64_t>& moe_layers, int64_t hidden) {
  const int64_t E = static_cast<int64_t>(c.experts.size());
  const int64_t rows_per_layer = E + (c.shared_expert ? 1 : 0);
  std::vector<std::vector<at::Tensor>> per_layer(moe_layers.size());
  if (c.gate_mode == "random" || c.gate_mode == "uniform_random") {
    const double bound = 1.0 / std::sqrt(static_cast<double>(hidden));
    for (size_t i = 0; i < moe_layers.size(); ++i) {
      at::Generator gen = layer_generator(c.seed, moe_layers[i]);
      at::Tensor m = c.gate_mode == "random" ? at::randn({rows_per_layer, hidden}, gen, at::kFloat)
                                             : at::empty({rows_per_layer, hidden}, at::kFloat).uniform_(-bound, bound, gen);
      per_layer[i] = m.unbind(0);
    }
  } else if (c.gate_mode == "zeros") {
    for (auto& layer : per_layer) layer = at::zeros({rows_per_layer, hidden}, at::kFloat).unbind(0);
  } else if (c.gate_mode == "cheap_embed") {
    std::vector<at::Tensor> rows = cheap_embed_rows(c, hidden);
    for (auto& layer : per_layer) layer = rows;
  } else if (c.gate_mode == "hidden") {
    per_layer = hidden_rows(c, moe_layers);
  } else {
    fail_file(c.origin, "unknown gate_mode '" + c.gate_mode + "' (supported: " + join(gate_modes(), ", ") + ")");
  }
  GateRows out;
  for (auto& rows : per_layer) {
    out.router.push_back(at::stack(std::vector<at::Tensor>(rows.begin(), rows.begin() + E)).contiguous());
    if (c.shared_expert) out.shared_gate.push_back(rows.back().unsqueeze(0).contiguous());
  }
  return out;
}

}  // namespace mf
