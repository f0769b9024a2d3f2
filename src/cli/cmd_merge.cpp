// `moeforge merge MODEL --method hc-smoe --experts r --calib FILE --out DIR`: fewer experts per
// MoE layer without retraining (merge/merge.h, docs/merge.md).
#include <iomanip>
#include <iostream>

#include "cli/commands.h"
#include "merge/merge.h"
#include "util/str.h"

namespace mf::cli {

void add_merge_command(CLI::App& app, const GlobalOptions&) {
  struct Args {
    std::string model, out, json_path, shard_size = "5GB";
    MergeOptions o;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("merge", "Merge or prune the experts of a Mixtral / Qwen2-MoE / OLMoE model (HC-SMoE and baselines)");
  cmd->add_option("MODEL", a->model, "MoE model directory")->required();
  cmd->add_option("--method", a->o.method, "hc-smoe | kmeans | o-prune | f-prune | s-prune | reap")->capture_default_str();
  cmd->add_option("--experts", a->o.experts, "experts per layer after merging (r)")->required()->check(positive());
  cmd->add_option("--calib", a->o.calib.file, "calibration JSONL ({\"text\": ...} per line)")->required();
  cmd->add_option("--out", a->out, "output model directory")->required();
  cmd->add_option("--linkage", a->o.linkage, "hc-smoe clustering: average | single | complete | ward")->capture_default_str();
  cmd->add_option("--merge", a->o.merge, "hc-smoe weights: freq (usage frequency) | average")->capture_default_str();
  cmd->add_option("--router", a->o.router, "router row of a merged expert: dominant | weighted")->capture_default_str();
  cmd->add_option("--seed", a->o.seed, "kmeans: k-means++ draws; o-prune: the subset sample")->capture_default_str();
  cmd->add_option("--output", a->o.output, "stock (r-row router, any family) | exact (original router + expert map; Mixtral)")
      ->capture_default_str();
  cmd->add_option("--max-subsets", a->o.max_subsets, "o-prune: exhaustive up to this many subsets, else a sample of this many")
      ->capture_default_str()->check(positive());
  cmd->add_option("--seq-len", a->o.calib.seq_len, "calibration block length (default min(2048, max positions))")
      ->check(positive());
  cmd->add_option("--blocks", a->o.calib.blocks, "calibration blocks")->capture_default_str()->check(positive());
  cmd->add_option("--shard-size", a->shard_size, "maximum shard size, e.g. 5GB, 500MB")->capture_default_str();
  cmd->add_flag("--overwrite", a->o.overwrite, "replace --out if it exists and is not empty");
  cmd->add_option("--json", a->json_path, "also write merge_report.json's content to FILE");
  cmd->callback([a]() {
    a->o.max_shard_bytes = parse_size(a->shard_size);
    const json report = run_merge(a->model, a->o, a->out);
    if (!a->json_path.empty()) write_json_file(a->json_path, report);
    std::cout << "wrote " << a->out << ": " << a->o.method << ", " << report["experts_before"].get<int64_t>() << " -> "
              << a->o.experts << " experts per layer in " << report["layers"].size()
              << " layers; relative output error on the calibration tokens (mean over layers) "
              << std::setprecision(4) << report["mean_output_error"].get<double>() << "\n";
  });
}

}  // namespace mf::cli
