#include "eval/evaluate.h"

#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <set>

#include "util/error.h"
#include "util/log.h"

namespace mf::eval {

int64_t apply_limit(int64_t n, double limit) {
  if (limit < 0) return n;
  if (limit < 1.0) return std::min<int64_t>(n, static_cast<int64_t>(std::ceil(static_cast<double>(n) * limit)));
  return std::min<int64_t>(n, static_cast<int64_t>(limit));
}

namespace {

struct TaskRun {
  std::shared_ptr<TaskDef> task;  // the registry's definition, metrics possibly extended
  std::vector<Instance> instances;
  int64_t original = 0;
  // Token requests of this task start at `first` in the pooled list; `owner[k]` = (instance, request).
  size_t first = 0;
  std::vector<std::pair<size_t, size_t>> owner;
};

}  // namespace

EvalReport evaluate(const TaskRegistry& registry, const std::vector<std::string>& task_names,
                    const TextEncoder& encoder, LoglikelihoodModel& model, const EvalOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  EvalReport report;

  // Leaf tasks in request order, without duplicates.
  std::vector<std::string> leaves;
  std::set<std::string> seen;
  for (const auto& n : task_names)
    for (const auto& leaf : registry.expand(n))
      if (seen.insert(leaf).second) leaves.push_back(leaf);

  RequestTokenizer tok(encoder, options.bos);
  const int64_t max_len = model.max_length();
  std::vector<TaskRun> runs;
  std::vector<TokenRequest> pooled;
  for (const auto& name : leaves) {
    TaskRun run;
    run.task = std::make_shared<TaskDef>(*registry.find_task(name));
    if (options.acc_bytes) {
      bool has_norm = false, has_bytes = false;
      for (const auto& m : run.task->metrics) {
        has_norm = has_norm || m.name == "acc_norm";
        has_bytes = has_bytes || m.name == "acc_bytes";
      }
      if (has_norm && !has_bytes) run.task->metrics.push_back({"acc_bytes", "mean", true});
    }
    const std::string path = resolve_data_file(*run.task, options.data_dir);
    report.data_files[name] = path;
    std::vector<Doc> docs = load_task_docs(*run.task, path);
    run.original = static_cast<int64_t>(docs.size());
    docs.resize(static_cast<size_t>(apply_limit(run.original, options.limit)));
    if (docs.empty()) fail(path + ": no documents for task '" + name + "'");
    run.instances = build_instances(*run.task, docs);
    run.first = pooled.size();
    for (size_t i = 0; i < run.instances.size(); ++i) {
      const Instance& inst = run.instances[i];
      for (size_t r = 0; r < inst.requests.size(); ++r) {
        if (run.task->output_type == OutputType::LoglikelihoodRolling) {
          // Rolling documents are encoded without BOS; the prefix token conditions the first window.
          std::vector<int32_t> ids = encoder.encode(inst.requests[r].continuation);
          for (auto& w : rolling_windows(ids, tok.prefix_token(), max_len)) {
            pooled.push_back(std::move(w));
            run.owner.emplace_back(i, r);
          }
        } else {
          pooled.push_back(tok.encode_request(inst.requests[r]));
          run.owner.emplace_back(i, r);
        }
      }
    }
    runs.push_back(std::move(run));
  }

  EngineOptions eopt = options.engine;
  std::vector<TokenScore> scores = run_requests(model, pooled, eopt, &report.stats);

  std::map<std::string, TaskResult> by_name;
  for (auto& run : runs) {
    std::vector<std::vector<TokenScore>> per(run.instances.size());
    for (size_t i = 0; i < run.instances.size(); ++i) per[i].assign(run.instances[i].requests.size(), TokenScore{0.0, true});
    for (size_t k = 0; k < run.owner.size(); ++k) {
      auto [i, r] = run.owner[k];
      const TokenScore& s = scores[run.first + k];
      per[i][r].logprob += s.logprob;
      per[i][r].greedy = per[i][r].greedy && s.greedy;
    }
    TaskResult tr;
    tr.name = run.task->name;
    tr.alias = run.task->name;
    tr.version = run.task->version;
    tr.samples = static_cast<int64_t>(run.instances.size());
    tr.original_samples = run.original;
    tr.metrics = aggregate_metrics(compute_metric_items(*run.task, run.instances, per), options.bootstrap_iters);
    by_name[tr.name] = tr;
  }

  // Emit rows: each requested name, groups recursively (aggregated bottom-up), aliases indented as
  // lm-eval prints them (" - humanities", "  - formal_logic").
  auto row_alias = [](const std::string& alias, int depth) {
    return depth == 0 ? alias : std::string(static_cast<size_t>(depth), ' ') + "- " + alias;
  };
  std::set<std::string> emitted;
  std::function<const TaskResult*(const std::string&, int)> emit = [&](const std::string& name,
                                                                      int depth) -> const TaskResult* {
    const GroupDef* g = registry.find_group(name);
    if (!g) {
      if (!emitted.insert(name).second) return &by_name.at(name);
      TaskResult tr = by_name.at(name);
      const TaskDef* t = registry.find_task(name);
      tr.alias = row_alias(t->alias.empty() ? name : t->alias, depth);
      report.results.push_back(tr);
      return &by_name.at(name);
    }
    size_t slot = report.results.size();
    report.results.emplace_back();  // the group row precedes its children; filled in below
    std::vector<const TaskResult*> kids;
    for (const auto& c : g->children) kids.push_back(emit(c, depth + 1));
    TaskResult gr = aggregate_group(*g, kids);
    by_name[name] = gr;
    gr.alias = row_alias(g->alias.empty() ? name : g->alias, depth);
    report.results[slot] = gr;
    report.groups.push_back(name);
    report.group_subtasks[name] = g->children;
    return &by_name.at(name);
  };
  for (const auto& n : task_names) emit(n, 0);

  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace mf::eval
