// `moeforge merge MODEL --method hc-smoe --experts r --calib FILE --out DIR`: fewer experts per
// MoE layer without retraining (merge/merge.h, docs/merge.md).
#include <algorithm>
#include <iomanip>
#include <iostream>

#include "cli/commands.h"
#include "dist/dist.h"
#include "merge/merge.h"
#include "util/progress.h"
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
  cmd->add_option("--method", a->o.method, "hc-smoe | kmeans | m-smoe | o-prune | f-prune | s-prune | reap")
      ->capture_default_str();
  cmd->add_option("--experts", a->o.experts,
                  "experts per layer after merging (r; with --allocation global: on average over layers)")
      ->required()->check(positive());
  cmd->add_option("--calib", a->o.calib.file, "calibration JSONL ({\"text\": ...} per line)")->required();
  cmd->add_option("--out", a->out, "output model directory")->required();
  cmd->add_option("--representation", a->o.representation,
                  "what experts are grouped by (hc-smoe, kmeans, m-smoe): expert-output (mean output over the calibration "
                  "tokens; hc-smoe/kmeans default) | router-logits (router-logit columns; m-smoe default) | weights "
                  "(flattened expert weights); kmeans also a+b or a+b+c of these, e.g. router-logits+expert-output "
                  "(each one's standardised centre distances averaged; k-means++ starts from the first)");
  cmd->add_option("--linkage", a->o.linkage, "hc-smoe clustering: average | single | complete | ward")->capture_default_str();
  cmd->add_option("--merge", a->o.merge,
                  "how a group becomes one expert: freq (usage-frequency-weighted mean) | average | fix-dom (neurons "
                  "aligned to the dominant expert by activation correlation, then averaged) | zipit (all members' "
                  "neurons merged greedily, most correlated pair first, within and across experts, down to one "
                  "expert's width)")
      ->capture_default_str();
  cmd->add_option("--router", a->o.router,
                  "stock output, router row of a merged expert: dominant | weighted | fit (least squares to the "
                  "cluster's summed routing mass on the calibration tokens)")
      ->capture_default_str();
  cmd->add_option("--allocation", a->o.allocation,
                  "hc-smoe, kmeans, m-smoe: global (groups per layer from one global frequency threshold, M-SMoE's; "
                  "m-smoe's default; needs --output exact) | uniform (r in every layer; hc-smoe's and kmeans' default)");
  cmd->add_option("--group-limit", a->o.group_limit, "m-smoe: at most this many experts per group")
      ->capture_default_str()->check(positive());
  cmd->add_option("--fit-tokens", a->o.fit_tokens,
                  "--router fit / --merge fix-dom, zipit: calibration tokens whose MoE inputs are kept per layer "
                  "(memory: tokens x hidden x 4 bytes per layer)")
      ->capture_default_str()->check(positive());
  cmd->add_option("--seed", a->o.seed, "kmeans: k-means++ draws; o-prune: the subset sample")->capture_default_str();
  cmd->add_option("--output", a->o.output,
                  "stock (r-row router) | exact (original router + expert map, the paper's routing; merging methods; "
                  "Mixtral: moeforge family, Qwen2-MoE / OLMoE: their own family wrapped as moeforge)")
      ->capture_default_str();
  cmd->add_option("--max-subsets", a->o.max_subsets, "o-prune: exhaustive up to this many subsets, else a sample of this many")
      ->capture_default_str()->check(positive());
  cmd->add_option("--seq-len", a->o.calib.seq_len, "calibration block length (default min(2048, max positions))")
      ->check(positive());
  cmd->add_option("--dtype", a->o.dtype,
                  "compute dtype: auto (the checkpoint's torch_dtype: bfloat16 stays bfloat16, else float32) | "
                  "float32 | bfloat16")
      ->capture_default_str();
  cmd->add_option("--blocks", a->o.calib.blocks, "calibration blocks")->capture_default_str()->check(positive());
  cmd->add_option("--shard-size", a->shard_size, "maximum shard size, e.g. 5GB, 500MB")->capture_default_str();
  cmd->add_flag("--overwrite", a->o.overwrite, "replace --out if it exists and is not empty");
  cmd->add_option("--json", a->json_path, "also write merge_report.json's content to FILE");
  cmd->callback([a]() {
    a->o.max_shard_bytes = parse_size(a->shard_size);
    // Under torchrun / moeforge launch: the calibration blocks are shared out over the ranks and
    // the statistics summed (one process's up to summation order); rank 0 plans, writes and
    // prints, the other ranks show no progress and write nothing.
    std::shared_ptr<dist::Group> group = dist::init(dist::env_from_torchrun());
    const bool writer = group->rank() == 0;
    if (!writer) Progress::set_enabled(false);
    json report;
    {
      MergeOptions options = a->o;  // holds the group only as long as the merge runs
      options.calib.sharding = BatchSharding(group);
      report = run_merge(a->model, options, a->out);
    }
    dist::shutdown(group);
    if (!writer) return;
    if (!a->json_path.empty()) write_json_file(a->json_path, report);
    const auto counts = report["experts_per_layer"].get<std::vector<int64_t>>();
    const bool uniform = std::all_of(counts.begin(), counts.end(), [&](int64_t c) { return c == counts.front(); });
    std::vector<std::string> shown;
    for (int64_t c : counts) shown.push_back(std::to_string(c));
    std::cout << "wrote " << a->out << ": " << a->o.method << ", " << report["experts_before"].get<int64_t>() << " -> "
              << (uniform ? std::to_string(counts.front()) : "[" + join(shown, ", ") + "]") << " experts per layer in "
              << report["layers"].size()
              << " layers; relative output error on the calibration tokens (mean over layers) "
              << std::setprecision(4) << report["mean_output_error"].get<double>() << "\n";
  });
}

}  // namespace mf::cli
