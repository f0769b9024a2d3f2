#include "eval/report.h"

#include <algorithm>
#include <cstdio>

#include "eval/text.h"

namespace mf::eval {

std::string format_4f(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

namespace {

std::string format_version(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Python str.center(): the extra space goes right unless both the margin and the width are odd.
std::string center(const std::string& s, int64_t width) {
  int64_t len = utf8_length(s);
  if (len >= width) return s;
  int64_t marg = width - len;
  int64_t left = marg / 2 + (marg & width & 1);
  return std::string(static_cast<size_t>(left), ' ') + s + std::string(static_cast<size_t>(marg - left), ' ');
}

std::string pad(const std::string& s, int64_t width, bool right) {
  int64_t len = utf8_length(s);
  if (len >= width) return s;
  std::string sp(static_cast<size_t>(width - len), ' ');
  return right ? sp + s : s + sp;
}

}  // namespace

std::string format_table(const EvalReport& report, bool groups_only) {
  const std::vector<std::string> headers = {groups_only ? "Groups" : "Tasks", "Version", "Filter", "n-shot",
                                            "Metric", "", "Value", "", "Stderr"};
  // Right-aligned (numeric) columns, as pytablewriter detects them.
  const std::vector<bool> right = {false, true, false, true, false, false, true, false, true};
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : report.results) {
    if (groups_only && !r.is_group) continue;
    std::vector<MetricResult> ms = r.metrics;
    std::sort(ms.begin(), ms.end(), [](const MetricResult& a, const MetricResult& b) { return a.name < b.name; });
    std::string name = r.alias, version = format_version(r.version);
    const std::string nshot = r.is_group ? "" : "0";
    for (const auto& m : ms) {
      rows.push_back({name, version, "none", nshot, m.name, m.higher_is_better ? "\xe2\x86\x91" : "\xe2\x86\x93",
                      format_4f(m.value), "\xc2\xb1", m.has_stderr ? format_4f(m.stderr) : "   N/A"});
      name.clear();
      version.clear();
    }
  }
  std::vector<int64_t> width(headers.size(), 3);
  for (size_t c = 0; c < headers.size(); ++c) {
    width[c] = std::max<int64_t>(width[c], utf8_length(headers[c]));
    for (const auto& row : rows) width[c] = std::max<int64_t>(width[c], utf8_length(row[c]));
  }
  std::string out = "|";
  for (size_t c = 0; c < headers.size(); ++c) out += center(headers[c], width[c]) + "|";
  out += "\n|";
  for (size_t c = 0; c < headers.size(); ++c)
    out += (right[c] ? std::string(static_cast<size_t>(width[c] - 1), '-') + ":" : std::string(static_cast<size_t>(width[c]), '-')) + "|";
  out += "\n";
  for (const auto& row : rows) {
    out += "|";
    for (size_t c = 0; c < headers.size(); ++c) out += pad(row[c], width[c], right[c]) + "|";
    out += "\n";
  }
  return out;
}

std::string format_console(const EvalReport& report) {
  std::string out = format_table(report, false);
  if (!report.groups.empty()) out += "\n" + format_table(report, true);
  return out;
}

nlohmann::json settings_json(const EvalOptions& options, const std::vector<std::string>& tasks, int64_t max_length) {
  nlohmann::json j;
  j["tasks"] = tasks;
  j["data_dir"] = options.data_dir;
  j["limit"] = options.limit < 0 ? nlohmann::json(nullptr) : nlohmann::json(options.limit);
  j["num_fewshot"] = 0;
  j["bos"] = bos_policy_name(options.bos);
  j["batch_tokens"] = options.engine.batch_tokens;
  j["max_batch_rows"] = options.engine.max_batch_rows;
  j["share_context"] = options.engine.share_context;
  j["bootstrap_iters"] = options.bootstrap_iters;
  j["acc_bytes"] = options.acc_bytes;
  j["max_length"] = max_length;
  return j;
}

nlohmann::json results_json(const EvalReport& report, const nlohmann::json& settings) {
  using nlohmann::json;
  json j;
  j["results"] = json::object();
  j["groups"] = json::object();
  j["versions"] = json::object();
  j["n-shot"] = json::object();
  j["higher_is_better"] = json::object();
  j["n-samples"] = json::object();
  for (const auto& r : report.results) {
    json entry;
    entry["alias"] = r.alias;
    for (const auto& m : r.metrics) {
      entry[m.name + ",none"] = m.value;
      entry[m.name + "_stderr,none"] = m.has_stderr ? json(m.stderr) : json("N/A");
    }
    entry["samples"] = r.samples;
    j["results"][r.name] = entry;
    if (r.is_group) j["groups"][r.name] = entry;
    j["versions"][r.name] = r.version;
    j["n-shot"][r.name] = 0;
    json hib = json::object();
    for (const auto& m : r.metrics) hib[m.name] = m.higher_is_better;
    j["higher_is_better"][r.name] = hib;
    if (!r.is_group) j["n-samples"][r.name] = {{"original", r.original_samples}, {"effective", r.samples}};
  }
  j["group_subtasks"] = report.group_subtasks;
  j["data_files"] = report.data_files;
  j["config"] = settings;
  j["engine"] = {{"requests", report.stats.requests},   {"rows", report.stats.rows},
                 {"shared_groups", report.stats.groups}, {"batches", report.stats.batches},
                 {"input_tokens", report.stats.input_tokens}, {"padded_tokens", report.stats.padded_tokens},
                 {"truncated", report.stats.truncated}};
  j["total_evaluation_time_seconds"] = report.seconds;
  return j;
}

}  // namespace mf::eval
