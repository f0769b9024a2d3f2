// `moeforge eval MODEL --tasks ...`: lm-evaluation-harness-compatible zero-shot evaluation.
#include <cstdio>

#include "cli/commands.h"
#include "eval/model_scorer.h"
#include "eval/report.h"
#include "eval/yaml_task.h"
#include "io/checkpoint.h"
#include "util/fs.h"
#include "util/error.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::cli {

namespace {
// sha256 over the weight files' hashes, in shard order: identifies the exact weights evaluated.
std::string model_content_hash(const std::string& dir) {
  Checkpoint ck = Checkpoint::open(dir);
  Sha256 h;
  for (const auto& f : ck.files()) {
    std::string part = base_name(f) + ":" + sha256_file(f) + "\n";
    h.update(part.data(), part.size());
  }
  return h.hex_digest();
}
}  // namespace

void add_eval_command(CLI::App& app, const GlobalOptions&) {
  struct Args {
    std::string model, tasks, data_dir = ".", output, bos = "auto", dtype = "fp32", device = "cpu";
    std::vector<std::string> include;
    double limit = -1;
    int64_t batch_tokens = 4096, max_length = 0, bootstrap_iters = 100000;
    bool independent = false, acc_bytes = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("eval", "Zero-shot evaluation with lm-evaluation-harness semantics");
  cmd->add_option("MODEL", a->model, "Hugging Face model directory (weights + tokenizer)")->required();
  cmd->add_option("--tasks", a->tasks, "comma-separated tasks or groups (arc_easy, piqa, mmlu, ...)")->required();
  cmd->add_option("--data-dir", a->data_dir, "directory holding the task data files (docs/eval.md)")
      ->capture_default_str();
  cmd->add_option("--include", a->include, "YAML file(s) with custom task definitions");
  cmd->add_option("--limit", a->limit, "documents per task (< 1: fraction)");
  cmd->add_option("--batch-tokens", a->batch_tokens, "padded tokens per forward batch")->capture_default_str();
  cmd->add_option("--bos", a->bos, "BOS policy: auto (lm-eval >= 0.4.10), on, off (lm-eval <= 0.4.9)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  cmd->add_option("--max-length", a->max_length, "longest input (default: the model's context)");
  cmd->add_option("--dtype", a->dtype, "fp32 or bf16")->capture_default_str();
  cmd->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--bootstrap-iters", a->bootstrap_iters, "bootstrap iterations for stderr of non-mean metrics")
      ->capture_default_str();
  cmd->add_flag("--acc-bytes", a->acc_bytes, "also report acc_bytes (acc_norm by UTF-8 bytes)");
  cmd->add_flag("--no-share-context", a->independent, "score every choice independently (as lm-eval does)");
  cmd->add_option("--output", a->output, "write the results JSON here");
  cmd->callback([a]() {
    eval::TaskRegistry registry = eval::TaskRegistry::builtin();
    for (const auto& y : a->include)
      for (auto& t : eval::load_yaml_tasks(y)) registry.add_task(std::move(t));
    std::vector<std::string> tasks;
    for (const auto& t : split(a->tasks, ','))
      if (!trim(t).empty()) tasks.push_back(trim(t));
    if (tasks.empty()) throw UsageError("--tasks is empty");
    for (const auto& t : tasks) registry.expand(t);  // unknown names fail before the model loads

    auto tokenizer = Tokenizer::load(a->model);
    LoadOptions lo;
    lo.dtype = parse_dtype(a->dtype);
    lo.device = parse_device(a->device);
    auto model = Model::load(a->model, lo);
    if (tokenizer->vocab_size() > model->config().vocab_size)
      fail_file(a->model, cat("tokenizer has ", tokenizer->vocab_size(), " tokens but the model's vocabulary is ",
                              model->config().vocab_size));
    eval::TokenizerEncoder encoder(*tokenizer);
    eval::TransformerScorer scorer(model, a->max_length);

    eval::EvalOptions opt;
    opt.data_dir = a->data_dir;
    opt.limit = a->limit;
    opt.bos = eval::parse_bos_policy(a->bos);
    opt.engine.batch_tokens = a->batch_tokens;
    opt.engine.share_context = !a->independent;
    opt.bootstrap_iters = a->bootstrap_iters;
    opt.acc_bytes = a->acc_bytes;
    eval::EvalReport report = eval::evaluate(registry, tasks, encoder, scorer, opt);

    std::printf("%s", eval::format_console(report).c_str());
    if (!a->output.empty()) {
      json settings = eval::settings_json(opt, tasks, scorer.max_length());
      settings["model"] = a->model;
      settings["model_sha256"] = model_content_hash(a->model);
      settings["dtype"] = a->dtype;
      write_json_file(a->output, eval::results_json(report, settings));
      log_info("wrote ", a->output);
    }
  });
}

}  // namespace mf::cli
