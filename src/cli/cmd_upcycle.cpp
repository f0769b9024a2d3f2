// `moeforge upcycle MODEL --experts N --top-k k --family mixtral --out DIR` or
// `moeforge upcycle --config moe.yml --out DIR` (mergekit-moe YAML): dense FFNs become the
// experts of a Mixtral / Qwen2-MoE / OLMoE / moeforge checkpoint (upcycle/upcycle.h,
// docs/upcycle.md); `--family moeforge --router noisy_topk` is HyperMoE's GPT-2-MoE recipe.
#include <iostream>

#include "cli/commands.h"
#include "upcycle/gate_init.h"
#include "upcycle/upcycle.h"
#include "util/error.h"
#include "util/json.h"
#include "util/str.h"

namespace mf::cli {

namespace {

// "a:b" (half-open, as split's --layers) or "0,2,5".
std::vector<int64_t> parse_layer_list(const std::string& s) {
  std::vector<int64_t> v;
  auto number = [&](const std::string& t) -> int64_t {
    try {
      size_t used = 0;
      const long long x = std::stoll(t, &used);
      if (used == t.size() && x >= 0) return x;
    } catch (const std::exception&) {
    }
    throw UsageError("--layers: '" + s + "' is not a range a:b or a list of layer indices");
  };
  const size_t colon = s.find(':');
  if (colon != std::string::npos) {
    const int64_t a = number(s.substr(0, colon)), b = number(s.substr(colon + 1));
    if (b <= a) throw UsageError("--layers: empty range '" + s + "'");
    for (int64_t l = a; l < b; ++l) v.push_back(l);
    return v;
  }
  for (const auto& part : split(s, ','))
    if (!part.empty()) v.push_back(number(part));
  return v;
}

}  // namespace

void add_upcycle_command(CLI::App& app, const GlobalOptions&) {
  struct Args {
    std::string model, config, out, layers, json_path, shard_size = "5GB";
    int64_t experts = 0, top_k = 2, granularity = 1;
    bool shared = false, overwrite = false;
    double noise = 0.0, residual = 1.0;
    UpcycleConfig c;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("upcycle",
                                 "Make a dense model's FFNs the experts of a Mixtral / Qwen2-MoE / OLMoE / moeforge model");
  cmd->add_option("MODEL", a->model, "dense Llama / Mistral / Qwen2 model directory (or use --config)");
  cmd->add_option("--config", a->config, "mergekit-moe style YAML: base_model, experts with their source_model, ...");
  cmd->add_option("--out", a->out, "output model directory")->required();
  auto* experts = cmd->add_option("--experts", a->experts, "experts per layer (N)")->check(positive());
  auto* top_k = cmd->add_option("--top-k", a->top_k, "experts per token (k)")->capture_default_str()->check(positive());
  auto* family = cmd->add_option("--family", a->c.family, "mixtral | qwen2_moe | olmoe | moeforge")->capture_default_str();
  auto* router = cmd->add_option("--router", a->c.router,
                                 "linear | noisy_topk (Shazeer / HyperMoE noisy top-k gate; --family moeforge only)")
                     ->capture_default_str();
  auto* gran = cmd->add_option("--granularity", a->granularity, "cut each FFN into G slices; experts are f/G wide")
                   ->capture_default_str()->check(positive());
  auto* shared = cmd->add_flag("--shared-expert", a->shared, "add a shared expert, a full copy of the FFN (qwen2_moe)");
  auto* gate = cmd->add_option("--gate-mode", a->c.gate_mode,
                               join(gate_modes(), " | ") + " (prompt modes cheap_embed, hidden need --config)")
                   ->capture_default_str();
  auto* layers = cmd->add_option("--layers", a->layers,
                                 "layers to make sparse: a:b or 0,2,5 (default: all; qwen2_moe and moeforge only)");
  auto* seed = cmd->add_option("--seed", a->c.seed, "seed of the random gate modes and the noise")->capture_default_str();
  auto* noise = cmd->add_option("--noise-scale", a->noise, "std of Gaussian noise added to each routed expert's weights")
                    ->capture_default_str()->check(non_negative());
  auto* residual = cmd->add_option("--residual-scale", a->residual, "multiplies each routed expert's down_proj")
                       ->capture_default_str();
  auto* dtype = cmd->add_option("--dtype", a->c.dtype, "bf16 | fp16 | fp32 (default: the base model's)");
  cmd->add_option("--shard-size", a->shard_size, "maximum shard size, e.g. 5GB, 500MB")->capture_default_str();
  cmd->add_flag("--overwrite", a->overwrite, "replace --out if it exists and is not empty");
  cmd->add_option("--json", a->json_path, "also write the summary as JSON to FILE");
  cmd->callback([a, experts, top_k, family, router, gran, shared, gate, layers, seed, noise, residual, dtype]() {
    UpcycleConfig c;
    if (!a->config.empty()) {
      if (!a->model.empty()) throw UsageError("give either MODEL or --config, not both");
      for (CLI::Option* o : {experts, top_k, family, router, gran, shared, gate, layers, seed, noise, residual, dtype})
        if (o->count() > 0) throw UsageError(o->get_name() + " is set by the --config file; remove it from the command line");
      c = load_upcycle_yaml(a->config);
    } else {
      if (a->model.empty()) throw UsageError("give MODEL (with --experts) or --config");
      if (a->experts == 0) throw UsageError("--experts is required with MODEL");
      c = a->c;
      c.origin = "command line";
      c.base_model = a->model;
      c.top_k = a->top_k;
      c.granularity = a->granularity;
      if (!a->layers.empty()) c.layers = parse_layer_list(a->layers);
      UpcycleExpert e;
      e.source_model = a->model;
      e.noise_scale = a->noise;
      e.residual_scale = a->residual;
      c.experts.assign(static_cast<size_t>(a->experts), e);
      if (a->shared) {
        UpcycleExpert s;
        s.source_model = a->model;
        c.shared_expert = s;
      }
    }
    c.max_shard_bytes = parse_size(a->shard_size);
    UpcycleResult r = run_upcycle(c, a->out, a->overwrite);
    json out = {{"output", a->out},
                {"family", c.family},
                {"router", c.router},
                {"experts", c.experts.size()},
                {"top_k", c.top_k},
                {"granularity", c.granularity},
                {"shared_expert", c.shared_expert.has_value()},
                {"gate_mode", c.gate_mode},
                {"moe_layers", r.moe_layers},
                {"total_parameters", r.total_parameters},
                {"active_parameters", r.active_parameters},
                {"gate_condition_numbers", r.gate_condition_numbers}};
    if (!a->json_path.empty()) write_json_file(a->json_path, out);
    std::cout << "wrote " << a->out << ": " << c.family << " (" << c.router << " router), " << c.experts.size()
              << " experts (top-" << c.top_k
              << (c.shared_expert ? ", shared expert" : "") << ") in " << r.moe_layers << " layers, "
              << r.total_parameters << " parameters, " << r.active_parameters << " active per token\n";
  });
}

}  // namespace mf::cli
