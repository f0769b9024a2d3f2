#include "eval/evaluate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <set>

#include "eval/samples.h"
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
  std::vector<Doc> docs;
  std::vector<Instance> instances;
  int64_t original = 0;
  std::vector<TokenRequest> requests;  // this task's token requests until they join the pool
  // Token requests of this task start at `first` in the pooled list; `owner[k]` = (instance, request).
  size_t first = 0;
  std::vector<std::pair<size_t, size_t>> owner;
};

// Everything that depends on the task's own data: the file, its documents, their requests.
void prepare_task(TaskRun& run, const EvalOptions& options, const TextEncoder& encoder, const RequestTokenizer& tok,
                  int64_t max_len, std::string& data_file) {
  const TaskDef& task = *run.task;
  const TaskData data = find_task_data(task, options.data_dir);
  data_file = data.path;
  run.docs = load_task_data(task, data);
  run.original = static_cast<int64_t>(run.docs.size());
  run.docs.resize(static_cast<size_t>(apply_limit(run.original, options.limit)));
  if (run.docs.empty()) fail_file(data_file, "no documents for task '" + task.name + "'");
  run.instances = build_instances(task, run.docs);
  for (size_t i = 0; i < run.instances.size(); ++i) {
    const Instance& inst = run.instances[i];
    for (size_t r = 0; r < inst.requests.size(); ++r) {
      if (task.output_type == OutputType::LoglikelihoodRolling) {
        // Rolling documents are encoded without BOS; the prefix token conditions the first window.
        std::vector<int32_t> ids = encoder.encode(inst.requests[r].continuation);
        for (auto& w : rolling_windows(ids, tok.prefix_token(), max_len)) {
          run.requests.push_back(std::move(w));
          run.owner.emplace_back(i, r);
        }
      } else {
        TokenRequest tr = tok.encode_request(inst.requests[r]);
        if (static_cast<int64_t>(tr.continuation.size()) > max_len)
          fail(inst.origin + ": a continuation of " + std::to_string(tr.continuation.size()) +
               " tokens is longer than the model's maximum length " + std::to_string(max_len));
        run.requests.push_back(std::move(tr));
        run.owner.emplace_back(i, r);
      }
    }
  }
}

template <typename Fn>
bool record_failure(std::vector<TaskFailure>& failures, const std::string& task, Fn&& fn) {
  try {
    fn();
    return false;
  } catch (const Error& e) {
    failures.push_back({task, one_line(e.what())});
  } catch (const nlohmann::json::exception& e) {
    failures.push_back({task, one_line(e.what())});
  }
  return true;
}

}  // namespace

EvalReport evaluate(const TaskRegistry& registry, const std::vector<std::string>& task_names,
                    const TextEncoder& encoder, LoglikelihoodModel& model, const EvalOptions& options) {
  auto t0 = std::chrono::steady_clock::now();
  EvalReport report;
  report.start_unix =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

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
      if (has_norm && !has_bytes) {
        run.task->metrics.push_back({"acc_bytes", "mean", true});
        auto& ml = run.task->lm_config;
        if (ml.is_object() && ml.contains("metric_list") && ml["metric_list"].is_array())
          ml["metric_list"].push_back(
              nlohmann::ordered_json{{"metric", "acc_bytes"}, {"aggregation", "mean"}, {"higher_is_better", true}});
      }
    }
    std::string path;
    if (record_failure(report.failures, name, [&] { prepare_task(run, options, encoder, tok, max_len, path); }))
      continue;  // the other tasks are still scored
    report.data_files[name] = path;
    run.first = pooled.size();
    for (auto& r : run.requests) pooled.push_back(std::move(r));
    run.requests.clear();
    runs.push_back(std::move(run));
  }
  if (!report.failures.empty())
    log_info(runs.size(), " of ", leaves.size(), " tasks ready; ", report.failures.size(),
             " failed (reported at the end)");

  EngineOptions eopt = options.engine;
  std::vector<TokenScore> scores = run_requests(model, pooled, eopt, &report.stats);

  std::map<std::string, TaskResult> by_name;
  for (auto& run : runs) {
    const std::string& name = run.task->name;
    std::vector<std::vector<TokenScore>> per(run.instances.size());
    for (size_t i = 0; i < run.instances.size(); ++i) per[i].assign(run.instances[i].requests.size(), TokenScore{0.0, true});
    for (size_t k = 0; k < run.owner.size(); ++k) {
      auto [i, r] = run.owner[k];
      const TokenScore& s = scores[run.first + k];
      per[i][r].logprob += s.logprob;
      per[i][r].greedy = per[i][r].greedy && s.greedy;
    }
    TaskResult tr;
    tr.name = name;
    tr.alias = name;
    tr.version = run.task->version;
    tr.samples = static_cast<int64_t>(run.instances.size());
    tr.original_samples = run.original;
    const bool failed = record_failure(report.failures, name, [&] {
      std::vector<MetricItems> items = compute_metric_items(*run.task, run.instances, per);
      tr.metrics = aggregate_metrics(items, options.bootstrap_iters);
      if (options.log_samples) {
        std::string hash;
        report.samples[name] = sample_lines(*run.task, run.docs, run.instances, per, items, &hash);
        report.task_hashes[name] = hash;
      }
    });
    if (failed) {
      report.data_files.erase(name);
      report.samples.erase(name);
      report.task_hashes.erase(name);
      continue;
    }
    by_name[name] = tr;
    report.configs[name] = task_config_json(*run.task);
  }
  // Failures in task order.
  std::map<std::string, size_t> position;
  for (size_t i = 0; i < leaves.size(); ++i) position[leaves[i]] = i;
  std::stable_sort(report.failures.begin(), report.failures.end(),
                   [&](const TaskFailure& a, const TaskFailure& b) { return position[a.task] < position[b.task]; });
  std::set<std::string> failed;
  for (const auto& f : report.failures) failed.insert(f.task);

  // Emit rows: each requested name, groups recursively, aliases indented as lm-eval prints them
  // (" - humanities", "  - formal_logic"). A group is aggregated over all tasks below it (lm-eval
  // >= 0.4.4), and only when none of them failed.
  auto row_alias = [](const std::string& alias, int depth) {
    return depth == 0 ? alias : std::string(static_cast<size_t>(depth), ' ') + "- " + alias;
  };
  std::set<std::string> emitted;
  std::function<void(const std::string&, int)> emit = [&](const std::string& name, int depth) {
    const GroupDef* g = registry.find_group(name);
    if (!emitted.insert(name).second) return;
    if (!g) {
      if (failed.count(name)) return;
      TaskResult tr = by_name.at(name);
      const TaskDef* t = registry.find_task(name);
      tr.alias = row_alias(t->alias.empty() ? name : t->alias, depth);
      report.results.push_back(tr);
      return;
    }
    const std::vector<std::string> below = registry.expand(name);
    std::vector<std::string> missing;
    for (const auto& leaf : below)
      if (failed.count(leaf)) missing.push_back(leaf);
    if (!missing.empty()) {
      log_warn("group '", name, "' not aggregated: ", missing.size(), " of its ", below.size(), " tasks failed");
      for (const auto& c : g->children) emit(c, depth + 1);
      return;
    }
    size_t slot = report.results.size();
    report.results.emplace_back();  // the group row precedes its children; filled in below
    for (const auto& c : g->children) emit(c, depth + 1);
    std::vector<const TaskResult*> leaf_results;
    for (const auto& leaf : below) leaf_results.push_back(&by_name.at(leaf));
    TaskResult gr = aggregate_group(*g, leaf_results);
    gr.alias = row_alias(g->alias.empty() ? name : g->alias, depth);
    report.results[slot] = gr;
    report.groups.push_back(name);
  };
  for (const auto& n : task_names) emit(n, 0);

  // lm-eval's group_subtasks: solo tasks map to [], groups to their children, depth first, reversed.
  std::set<std::string> listed;
  std::function<void(const std::string&)> walk = [&](const std::string& name) {
    const GroupDef* g = registry.find_group(name);
    if (!g) return;
    if (listed.insert(name).second) report.group_subtasks.push_back({name, g->children});
    for (const auto& c : g->children) walk(c);
  };
  for (const auto& n : task_names) {
    if (registry.find_group(n)) walk(n);
    else if (listed.insert(n).second) report.group_subtasks.push_back({n, {}});
  }
  std::reverse(report.group_subtasks.begin(), report.group_subtasks.end());

  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

}  // namespace mf::eval
