// `moeforge split MODEL --method M --experts N --top-k k --out OUT`: dense llama / mistral /
// qwen2 checkpoint -> MoE checkpoint (moeforge format, or stock Mixtral with --export mixtral)
// by partitioning every selected layer's FFN neurons into experts. docs/split.md, "Command".
#include <algorithm>
#include <cstdio>

#include "cli/commands.h"
#include "moe/routers/registry.h"
#include "split/build_moe.h"
#include "split/method_registry.h"
#include "util/error.h"
#include "util/json.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::cli {

namespace {

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

void print_table(const json& rep) {
  bool hemoe = false;
  for (const auto& l : rep["layers"]) hemoe = hemoe || l.contains("hemoe");
  std::printf("%-6s %-18s %7s %7s %8s %7s", "layer", "method", "min", "max", "dropped", "shared");
  if (hemoe) std::printf(" %12s %12s %7s %9s", "objective", "bound", "gap", "solver_s");
  std::printf(" %8s\n", "time_s");
  const std::string method = rep["method"].get<std::string>();
  for (const auto& l : rep["layers"]) {
    std::printf("%-6d %-18s %7lld %7lld %8lld %7lld", l["layer"].get<int>(), method.c_str(),
                static_cast<long long>(l["min_size"].get<int64_t>()), static_cast<long long>(l["max_size"].get<int64_t>()),
                static_cast<long long>(l["dropped"].get<int64_t>()), static_cast<long long>(l["shared"].get<int64_t>()));
    if (hemoe) {
      if (l.contains("hemoe")) {
        const json& h = l["hemoe"];
        std::printf(" %12s %12s %6s%% %9s", fixed(h["objective"].get<double>(), 4).c_str(),
                    fixed(h["upper_bound"].get<double>(), 4).c_str(), fixed(100 * h["gap"].get<double>(), 1).c_str(),
                    fixed(h["solver_seconds"].get<double>(), 2).c_str());
      } else {
        std::printf(" %12s %12s %7s %9s", "-", "-", "-", "-");
      }
    }
    std::printf(" %8s\n", fixed(l["seconds"].get<double>(), 2).c_str());
  }
  std::fflush(stdout);
}

// Help texts from the method registry, so a method added there shows up here unchanged.
std::string method_help() {
  const auto& reg = split_method_registry();
  std::vector<std::string> names = split_method_names();
  size_t width = 0;
  for (const auto& n : names) width = std::max(width, n.size());
  std::string s = "split method:";
  for (const auto& n : names) s += "\n  " + n + std::string(width + 2 - n.size(), ' ') + reg.at(n).description;
  return s;
}

// "a, b" = the methods for which `pred` holds.
template <class Pred>
std::string methods_where(Pred pred) {
  std::vector<std::string> out;
  for (const auto& n : split_method_names())
    if (pred(split_method_registry().at(n))) out.push_back(n);
  return join(out, ", ");
}

}  // namespace

void add_split_command(CLI::App& app, const GlobalOptions& globals) {
  struct Args {
    std::string model, out, json_path, export_format;
    BuildMoeOptions o;
  };
  auto a = std::make_shared<Args>();
  BuildMoeOptions& o = a->o;
  auto* cmd = app.add_subcommand("split", "Split a dense model's FFNs into experts and write an MoE checkpoint");
  cmd->add_option("model", a->model, "dense llama / mistral / qwen2 model directory")->required();
  cmd->add_option("--method", o.split.method, method_help())->capture_default_str();
  cmd->add_option("--experts", o.split.num_experts, "experts per layer (N)")->required();
  cmd->add_option("--top-k", o.top_k, "experts per token (k)")->required();
  cmd->add_option("--layers", o.layers, "0-based half-open range a:b (python slice; default: all layers)");
  cmd->add_option("--profile", o.profile_dir,
                  "output of moeforge profile (" + methods_where([](const SplitMethodEntry& e) { return !e.profile_stat.empty(); }) +
                      ")");
  cmd->add_option("--partition", o.partition_dir, "import {layer}.part.{N} files from DIR instead of splitting");
  cmd->add_option("--sizes-from", o.sizes_from,
                  methods_where([](const SplitMethodEntry& e) { return e.sizes_from_part_files; }) +
                      ": copy per-layer expert sizes from these part files");
  cmd->add_option("--out", a->out, "output model directory");
  const std::string avgk = methods_where([](const SplitMethodEntry& e) { return e.default_router == "avgk"; });
  cmd->add_option("--router", o.router,
                  "an entry of the router table: " + moe::router_registry().known() + " (default: " + (avgk.empty() ? "" : "avgk for " + avgk + ", else ") + "linear)");
  cmd->add_option("--gate", o.gate, "unit | renorm | prob | ones (default: ones for avgk, else unit)");
  cmd->add_option("--export", a->export_format, "write a stock checkpoint of this architecture instead: mixtral")
      ->check(CLI::IsMember({"mixtral"}));
  cmd->add_option("--export-partition", o.export_partition_dir, "also write {layer}.part.{N} files to DIR");
  cmd->add_option("--seed", o.split.seed, "seed of every random step")->capture_default_str();
  cmd->add_option("--modules", o.split.modules, "hemoe: modules per layer (M)")->capture_default_str();
  cmd->add_option("--size-ratio", o.split.size_ratio, "hemoe: max/min expert size ratio (R)")->capture_default_str();
  cmd->add_option("--coherence", o.split.coherence, "hemoe: experts per domain factor (l)")->capture_default_str();
  cmd->add_option("--solver", o.split.solver, "hemoe placement solver: fast | cbc")
      ->capture_default_str()
      ->check(CLI::IsMember({"fast", "cbc"}));
  cmd->add_option("--time-limit", o.split.time_limit_s, "hemoe: solver time limit per layer, seconds")
      ->capture_default_str();
  cmd->add_option("--kmeans-iter", o.split.kmeans_max_iter, "balanced k-means iteration cap")->capture_default_str();
  cmd->add_option("--moebert-shared", o.split.moebert_shared, "moebert: shared neurons (default F/N/2)");
  cmd->add_option("--moebert-width", o.split.moebert_expert_size, "moebert*: expert width (default F/N)");
  cmd->add_option("--dtype", o.dtype, "convert floating tensors to bf16 | fp16 | fp32 (default: keep)");
  cmd->add_option("--json", a->json_path, "also write the per-layer report as JSON to FILE");
  cmd->callback([a, &globals]() {
    if (a->out.empty() && a->o.export_partition_dir.empty())
      throw UsageError("split needs --out DIR (or --export-partition DIR)");
    a->o.export_format = a->export_format.empty() ? "moeforge" : a->export_format;
    a->o.progress = !globals.quiet;
    json rep = build_moe(a->model, a->out, a->o);
    print_table(rep);
    if (!a->json_path.empty()) write_json_file(a->json_path, rep);
    if (!a->out.empty()) log_info("wrote ", a->out, " (", a->o.export_format, ")");
  });
}

}  // namespace mf::cli
