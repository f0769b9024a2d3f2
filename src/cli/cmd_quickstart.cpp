// `moeforge quickstart`: the whole dense -> MoE pipeline of the HEMoE paper on the bundled tiny
// model, one step after another with the same subcommands a user would type (each is printed
// before it runs): profile -> every split method -> router training -> evaluation, then the
// paper-style table (method x task, average, activated-FFN fraction), dense first.
#include <cstdio>
#include <filesystem>
#include <map>

#include "cli/commands.h"
#include "model/model.h"
#include "model/moe_ffn.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::cli {

namespace {

struct QuickstartArgs {
  std::string model = "models/tiny", data_dir = "data/corpus", tasks_file = "tasks/reference-corpus.yaml";
  std::string out = "runs/quickstart", layers = "1:5", methods = "all";
  int experts = 8, top_k = 4;
  int64_t router_steps = 30, limit = 300, profile_docs = 400;
  bool skip_training = false;
};

const std::vector<std::string> kAllMethods = {"hemoe",  "random-hetero", "random", "moefication", "moefication-coact",
                                              "emoe",   "moebert",       "moebert-multitask"};
const std::vector<std::string> kTasks = {"wordnet_define", "foldoc_define", "kjv_cloze"};

// Runs `moeforge ARGS...` in this process, exactly as typed on the command line.
void run_moeforge(const std::vector<std::string>& args, const GlobalOptions& globals) {
  log_info("$ moeforge ", join(args, " "));
  CLI::App app{"moeforge"};
  app.require_subcommand(1);
  add_all_commands(app, globals);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them reversed
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    fail("quickstart: moeforge " + join(args, " ") + ": " + e.what());
  }
}

// Mean fraction of the FFN neurons a token activates, over every layer of the model (dense
// layers count fully), measured on `texts` with the runtime's MoE telemetry. 1 for a dense model.
double activated_ffn_fraction(const std::string& model_dir, const std::vector<std::string>& texts) {
  auto model = Model::load(model_dir);
  auto tok = Tokenizer::load(model_dir);
  const double layers = static_cast<double>(model->config().num_layers);
  std::map<int, std::pair<double, int64_t>> per_layer;  // layer -> (Σ tokens·fraction, tokens)
  torch::NoGradGuard no_grad;
  for (const auto& t : texts) {
    std::vector<int32_t> ids = tok->encode(t, true);
    if (ids.size() > 256) ids.resize(256);
    model->forward_hidden(at::tensor(ids, at::kInt).to(at::kLong).unsqueeze(0));
    for (const auto& s : model->moe_stats()) {
      per_layer[s.layer].first += s.active_ffn_fraction * static_cast<double>(s.tokens);
      per_layer[s.layer].second += s.tokens;
    }
  }
  double total = layers - static_cast<double>(per_layer.size());
  for (const auto& [layer, acc] : per_layer) total += acc.first / static_cast<double>(std::max<int64_t>(acc.second, 1));
  return total / layers;
}

std::vector<std::string> first_texts(const std::string& jsonl, size_t n) {
  std::vector<std::string> out;
  // Through the checked reader: errors name the file and line, deep nesting and 1e400 included.
  for_each_jsonl_object(jsonl, [&](const json& doc, int64_t line) {
    out.push_back(json_get<std::string>(doc, "text", jsonl + ":" + std::to_string(line)));
    return out.size() < n;
  });
  return out;
}

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

struct Row {
  std::string method;
  std::vector<double> acc, stderr_;
  double average = 0, active = 1;
};

Row read_row(const std::string& method, const std::string& results_file, double active) {
  json r = read_json_file(results_file);
  Row row{method, {}, {}, 0, active};
  for (const auto& t : kTasks) {
    row.acc.push_back(r.at("results").at(t).at("acc,none").get<double>());
    row.stderr_.push_back(r.at("results").at(t).at("acc_stderr,none").get<double>());
    row.average += row.acc.back() / kTasks.size();
  }
  return row;
}

std::string format_table(const std::vector<Row>& rows) {
  std::string s = "| method | " + join(kTasks, " | ") + " | average | FFN active |\n|---|";
  for (size_t i = 0; i < kTasks.size() + 2; ++i) s += "---:|";
  s += "\n";
  for (const auto& r : rows) {
    s += "| " + r.method + " |";
    for (size_t i = 0; i < r.acc.size(); ++i) s += fixed(100 * r.acc[i], 2) + " ± " + fixed(100 * r.stderr_[i], 2) + " |";
    s += " " + fixed(100 * r.average, 2) + " | " + fixed(r.active, 3) + " |\n";
  }
  return s;
}

}  // namespace

void add_quickstart_command(CLI::App& app, const GlobalOptions& globals) {
  auto a = std::make_shared<QuickstartArgs>();
  auto* cmd = app.add_subcommand(
      "quickstart", "Profile, split with every method, train routers and evaluate the bundled tiny model (a table)");
  cmd->add_option("--model", a->model, "dense model directory")->capture_default_str();
  cmd->add_option("--data-dir", a->data_dir, "reference corpus (scripts/build-corpus.sh)")->capture_default_str();
  cmd->add_option("--tasks-file", a->tasks_file, "task YAML with wordnet_define, foldoc_define, kjv_cloze")
      ->capture_default_str();
  cmd->add_option("--out", a->out, "work directory (profile, MoE models, results)")->capture_default_str();
  cmd->add_option("--methods", a->methods, "comma-separated split methods, or all")->capture_default_str();
  cmd->add_option("--experts", a->experts, "experts per layer (N)")->capture_default_str();
  cmd->add_option("--top-k", a->top_k, "experts per token (k)")->capture_default_str();
  cmd->add_option("--layers", a->layers, "layers to convert, python-style a:b")->capture_default_str();
  cmd->add_option("--profile-docs", a->profile_docs, "calibration documents for profile")->capture_default_str();
  cmd->add_option("--router-steps", a->router_steps, "router training steps per method")->capture_default_str();
  cmd->add_option("--limit", a->limit, "evaluate only the first N items per task (0 = all)")->capture_default_str();
  cmd->add_flag("--skip-training", a->skip_training, "evaluate the splits with their initial routers");
  cmd->callback([a, &globals]() {
    for (const auto& [what, path] : {std::pair<const char*, std::string>{"model", a->model},
                                     {"corpus", a->data_dir + "/validation.jsonl"},
                                     {"task file", a->tasks_file}})
      if (!path_exists(path))
        fail_file(path, std::string("missing ") + what + " (run from the repository root; the corpus comes from "
                                                          "scripts/build-corpus.sh)");
    std::vector<std::string> methods = a->methods == "all" ? kAllMethods : split(a->methods, ',');
    make_dirs(a->out);
    const std::string profile = path_join(a->out, "profile");
    const std::string N = std::to_string(a->experts), K = std::to_string(a->top_k);
    auto eval = [&](const std::string& model, const std::string& out_json) {
      std::vector<std::string> args = {"eval",       model,        "--include", a->tasks_file, "--data-dir",
                                       a->data_dir, "--tasks",     join(kTasks, ","),          "--output", out_json};
      if (a->limit > 0) args.insert(args.end(), {"--limit", std::to_string(a->limit)});
      run_moeforge(args, globals);
    };
    const std::vector<std::string> texts = first_texts(a->data_dir + "/validation.jsonl", 32);
    // HEMoE's router recipe (routers + LoRA r=8 on q,k,v,o, experts frozen, balance loss 5e-4) on
    // the corpus itself, shortened to --router-steps with a higher peak lr so it moves in minutes.
    const std::string router_config = path_join(a->out, "router-config.json");
    write_json_file(router_config,
                    {{"training",
                      {{"seq_len", 256}, {"batch_size", 8}, {"max_steps", a->router_steps}, {"lr", 2e-3},
                       {"min_lr", 2e-4}, {"save_every", 0}, {"eval_every", 0}, {"eval_batches", 2},
                       {"train_data", std::filesystem::absolute(a->data_dir + "/train.jsonl").string()},
                       {"validation_data", std::filesystem::absolute(a->data_dir + "/validation.jsonl").string()}}},
                     {"lora", {{"enabled", true}}}});

    std::vector<Row> rows;
    eval(a->model, path_join(a->out, "dense-eval.json"));
    rows.push_back(read_row("dense", path_join(a->out, "dense-eval.json"), 1.0));

    if (!path_exists(path_join(profile, "profile.json")))
      run_moeforge({"profile", a->model, "--data", a->data_dir + "/validation.jsonl", "--out", profile, "--max-docs",
                    std::to_string(a->profile_docs), "--seq-len", "256", "--coactivation"},
                   globals);
    for (const auto& method : methods) {
      const std::string dir = path_join(a->out, method);
      std::vector<std::string> split_args = {"split",    a->model, "--method", method,   "--experts", N, "--top-k",
                                             K,          "--layers", a->layers, "--profile", profile, "--out",
                                             path_join(dir, "moe")};
      if (method == "hemoe") split_args.insert(split_args.end(), {"--export-partition", path_join(dir, "partition")});
      if (method == "random-hetero")
        split_args.insert(split_args.end(), {"--sizes-from", path_join(path_join(a->out, "hemoe"), "partition")});
      run_moeforge(split_args, globals);
      std::string model = path_join(dir, "moe");
      if (!a->skip_training) {
        run_moeforge({"train", model, "--recipe", "router", "--config", router_config, "--output",
                      path_join(dir, "router-run")},
                     globals);
        model = path_join(path_join(dir, "router-run"), "final");
      }
      eval(model, path_join(dir, "eval.json"));
      rows.push_back(read_row(method, path_join(dir, "eval.json"), activated_ffn_fraction(model, texts)));
    }

    const std::string table = format_table(rows);
    std::printf("\n%s", table.c_str());
    json out = json::array();
    for (const auto& r : rows) {
      json tasks = json::object();
      for (size_t i = 0; i < kTasks.size(); ++i) tasks[kTasks[i]] = {{"acc", r.acc[i]}, {"acc_stderr", r.stderr_[i]}};
      out.push_back({{"method", r.method}, {"tasks", tasks}, {"average", r.average}, {"ffn_active", r.active}});
    }
    write_json_file(path_join(a->out, "quickstart.json"),
                    {{"model", a->model}, {"experts", a->experts}, {"top_k", a->top_k}, {"layers", a->layers},
                     {"router_steps", a->skip_training ? 0 : a->router_steps}, {"rows", out}});
    write_file_atomic(path_join(a->out, "quickstart.md"), table);
    log_info("wrote ", path_join(a->out, "quickstart.md"), " and quickstart.json");
  });
}

}  // namespace mf::cli
