#include "eval/report.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "eval/samples.h"
#include "eval/text.h"
#include "util/fs.h"
#include "util/str.h"

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

nlohmann::ordered_json parse_model_args(const std::string& args) {
  using oj = nlohmann::ordered_json;
  oj out = oj::object();
  for (const auto& arg : split(trim(args), ',')) {
    if (arg.empty()) continue;
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    std::string lower = value;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    bool digits = !value.empty();
    for (char c : value) digits = digits && c >= '0' && c <= '9';
    if (lower == "true") {
      out[key] = true;
    } else if (lower == "false") {
      out[key] = false;
    } else if (digits && value.size() < 19) {
      out[key] = std::stoll(value);
    } else {
      // float(value) for plain decimal numbers; anything else stays a string.
      char* end = nullptr;
      const double d = value.empty() ? 0.0 : std::strtod(value.c_str(), &end);
      const bool numeric = !value.empty() && end == value.c_str() + value.size() &&
                           value.find_first_not_of("0123456789.eE+-") == std::string::npos;
      if (numeric) out[key] = d;
      else out[key] = value;
    }
  }
  return out;
}

std::string sanitize_model_name(const std::string& name) {
  static const std::string kBad = "\"<>:/|\\?*[]";
  std::string out;
  bool in_run = false;
  for (char c : name) {
    if (kBad.find(c) != std::string::npos) {
      if (!in_run) out += "__";
      in_run = true;
    } else {
      out += c;
      in_run = false;
    }
  }
  return out;
}

nlohmann::ordered_json results_json(const EvalReport& report, const nlohmann::json& settings,
                                    const nlohmann::json& tokenizer) {
  using oj = nlohmann::ordered_json;
  using nlohmann::json;
  auto metric_entry = [](const TaskResult& r) {
    oj entry = oj::object();
    entry["alias"] = r.alias;
    for (const auto& m : r.metrics) {
      entry[m.name + ",none"] = m.value;
      entry[m.name + "_stderr,none"] = m.has_stderr ? oj(m.stderr) : oj("N/A");
    }
    return entry;
  };
  const auto setting = [&](const char* key, oj fallback) {
    return settings.is_object() && settings.contains(key) ? oj(settings.at(key)) : fallback;
  };
  const std::string model = settings.is_object() && settings.contains("model") && settings.at("model").is_string()
                                ? settings.at("model").get<std::string>()
                                : "";
  const oj model_args = setting("model_args", model.empty() ? oj("") : oj("pretrained=" + model));
  const oj model_arg_values = model_args.is_string() ? parse_model_args(model_args.get<std::string>()) : oj::object();

  oj j = oj::object();
  j["results"] = oj::object();
  for (const auto& r : report.results) j["results"][r.name] = metric_entry(r);
  if (!report.groups.empty()) {
    // lm-eval writes "groups" only when some group was aggregated.
    j["groups"] = oj::object();
    for (const auto& r : report.results)
      if (r.is_group) j["groups"][r.name] = metric_entry(r);
  }
  j["group_subtasks"] = oj::object();
  for (const auto& [name, children] : report.group_subtasks) j["group_subtasks"][name] = children;
  j["configs"] = oj::object();
  for (const auto& [name, config] : report.configs) {
    oj c = config;
    if (c.contains("metadata") && c["metadata"].is_object())
      for (auto it = model_arg_values.begin(); it != model_arg_values.end(); ++it) c["metadata"][it.key()] = it.value();
    j["configs"][name] = c;
  }
  std::map<std::string, const TaskResult*> sorted;
  for (const auto& r : report.results) sorted[r.name] = &r;
  j["versions"] = oj::object();
  for (const auto& [name, r] : sorted) j["versions"][name] = version_json(r->version, r->is_group);
  j["n-shot"] = oj::object();
  for (const auto& [name, r] : sorted)
    if (!r->is_group) j["n-shot"][name] = 0;
  j["higher_is_better"] = oj::object();
  for (const auto& [name, r] : sorted) {
    oj hib = oj::object();
    for (const auto& m : r->metrics) hib[m.name] = m.higher_is_better;
    j["higher_is_better"][name] = hib;
  }
  j["n-samples"] = oj::object();
  for (const auto& r : report.results)
    if (!r.is_group) j["n-samples"][r.name] = {{"original", r.original_samples}, {"effective", r.samples}};

  // evaluator.simple_evaluate(): results["config"], in lm-eval's key order, then moeforge's settings.
  oj config = oj::object();
  config["model"] = model.empty() ? oj(nullptr) : oj(model);
  config["model_args"] = model_args;
  for (const char* key : {"model_num_parameters", "model_dtype", "model_revision", "model_sha"})
    if (settings.is_object() && settings.contains(key)) config[key] = oj(settings.at(key));
  const oj tokens = setting("batch_tokens", nullptr);
  config["batch_size"] = setting("batch_size", tokens.is_number() ? oj("tokens:" + tokens.dump()) : oj(nullptr));
  config["batch_sizes"] = setting("batch_sizes", oj::array());
  config["device"] = setting("device", nullptr);
  config["use_cache"] = setting("use_cache", nullptr);
  config["limit"] = setting("limit", nullptr);
  config["bootstrap_iters"] = setting("bootstrap_iters", nullptr);
  config["gen_kwargs"] = setting("gen_kwargs", nullptr);
  // lm-eval's default seeds; moeforge draws no random numbers besides the bootstrap's fixed seeds.
  config["random_seed"] = setting("random_seed", 0);
  config["numpy_seed"] = setting("numpy_seed", 1234);
  config["torch_seed"] = setting("torch_seed", 1234);
  config["fewshot_seed"] = setting("fewshot_seed", 1234);
  if (settings.is_object())
    for (auto it = settings.begin(); it != settings.end(); ++it)
      if (!config.contains(it.key())) config[it.key()] = oj(it.value());
  j["config"] = config;
  j["git_hash"] = nullptr;
  j["date"] = report.start_unix;
#ifdef MOEFORGE_VERSION
  const std::string version = MOEFORGE_VERSION;
#else
  const std::string version = "unknown";
#endif
  j["pretty_env_info"] = "moeforge " + version + " (C++ reimplementation of lm-evaluation-harness scoring)";
  j["transformers_version"] = "N/A";
  j["lm_eval_version"] = "N/A";
  j["upper_git_hash"] = nullptr;
  if (tokenizer.is_object()) {
    // add_tokenizer_info()'s keys in its order, then anything else given.
    for (const char* key : {"tokenizer_pad_token", "tokenizer_eos_token", "tokenizer_bos_token", "eot_token_id",
                            "max_length"})
      if (tokenizer.contains(key)) j[key] = oj(tokenizer.at(key));
    for (auto it = tokenizer.begin(); it != tokenizer.end(); ++it)
      if (!j.contains(it.key())) j[it.key()] = oj(it.value());
  }
  // EvaluationTracker: task hashes (only with logged samples), then GeneralConfigTracker's fields.
  j["task_hashes"] = oj::object();
  for (const auto& [name, hash] : report.task_hashes) j["task_hashes"][name] = hash;
  j["model_source"] = "moeforge";
  j["model_name"] = model;
  j["model_name_sanitized"] = sanitize_model_name(model);
  j["system_instruction"] = nullptr;
  j["system_instruction_sha"] = nullptr;
  j["fewshot_as_multiturn"] = false;
  j["chat_template"] = nullptr;
  j["chat_template_sha"] = nullptr;
  j["start_time"] = report.start_unix;
  j["end_time"] = report.start_unix + report.seconds;
  j["total_evaluation_time_seconds"] = py_float_repr(report.seconds);
  // moeforge's additions.
  j["data_files"] = oj::object();
  for (const auto& [name, file] : report.data_files) j["data_files"][name] = file;
  j["engine"] = {{"requests", report.stats.requests},   {"rows", report.stats.rows},
                 {"shared_groups", report.stats.groups}, {"batches", report.stats.batches},
                 {"input_tokens", report.stats.input_tokens}, {"padded_tokens", report.stats.padded_tokens},
                 {"truncated", report.stats.truncated}};
  if (!report.failures.empty()) {
    j["failed_tasks"] = oj::object();
    for (const auto& f : report.failures) j["failed_tasks"][f.task] = f.message;
  }
  return j;
}

std::vector<std::string> write_sample_files(const EvalReport& report, const std::string& dir) {
  std::vector<std::string> written;
  if (report.samples.empty()) return written;
  make_dirs(dir);
  const std::string date_id = lm_eval_date_id(report.start_unix);
  for (const auto& [task, lines] : report.samples) {
    const std::string path = path_join(dir, "samples_" + task + "_" + date_id + ".jsonl");
    AtomicFile f(path);
    for (const auto& line : lines) {
      f.write(line.data(), line.size());
      f.write("\n", 1);
    }
    f.commit();
    written.push_back(path);
  }
  return written;
}

}  // namespace mf::eval
