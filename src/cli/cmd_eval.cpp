// `moeforge eval MODEL --tasks ...`: zero-shot evaluation with lm-evaluation-harness semantics
// (--protocol lm-eval, the default) or mLoRA's multiple-choice protocol (--protocol mlora), of the
// model alone or with a PEFT LoRA or a LoRA-MoE adapter (--adapter).
#include <chrono>
#include <cstdio>
#include <set>

#include "cli/commands.h"
#include "cli/vocab_check.h"
#include "dist/dist.h"
#include "dist/expert_parallel.h"
#include "eval/metrics.h"
#include "eval/mlora_protocol.h"
#include "eval/model_scorer.h"
#include "eval/report.h"
#include "eval/samples.h"
#include "eval/yaml_task.h"
#include "io/checkpoint.h"
#include "train/lora_moe_adapter.h"
#include "train/mc_data.h"
#include "train/peft.h"
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

// The dtype names lm-eval's HF model_args use.
std::string hf_dtype_name(const std::string& dtype) {
  if (dtype == "fp32" || dtype == "float32") return "float32";
  if (dtype == "bf16" || dtype == "bfloat16") return "bfloat16";
  if (dtype == "fp16" || dtype == "float16") return "float16";
  return dtype;
}

// lm-eval's add_tokenizer_info(): [token, str(id)] for pad / eos / bos, eot_token_id, max_length.
json tokenizer_info(const Tokenizer& tok, int64_t max_length) {
  auto token = [&](int32_t id) {
    if (id < 0) return json::array({nullptr, "None"});
    json piece = nullptr;
    try {
      piece = tok.id_to_piece(id);
    } catch (const std::exception&) {
      // an id outside the vocabulary: the id alone
    }
    return json::array({piece, std::to_string(id)});
  };
  json j;
  j["tokenizer_pad_token"] = token(tok.pad_id());
  j["tokenizer_eos_token"] = token(tok.eos_id());
  j["tokenizer_bos_token"] = token(tok.bos_id());
  j["eot_token_id"] = tok.eos_id() < 0 ? json(nullptr) : json(tok.eos_id());
  j["max_length"] = max_length;
  return j;
}

struct EvalArgs {
  std::string model, tasks, data_dir = ".", output, bos = "auto", dtype = "fp32", device = "cpu", adapter,
      log_samples, protocol = "lm-eval", split = "test", split_policy = "task";
  std::vector<std::string> include;
  double limit = -1;
  int64_t batch_tokens = 4096, max_length = 0, bootstrap_iters = 100000, batch_size = 16;
  bool independent = false, acc_bytes = false, expert_parallel = false;
};

// A directory holding lora_moe_config.json is a LoRA-MoE adapter; any other --adapter is PEFT's.
bool is_lora_moe_adapter(const std::string& dir) { return path_exists(path_join(dir, kLoraMoeConfigFile)); }

// The adapter applied to the model, attached for the whole run (a PEFT adapter detaches when
// `peft` goes out of scope; so does a LoRA-MoE adapter's attention LoRA).
struct AppliedAdapter {
  std::string format;  // "peft" or kLoraMoeFormat; empty: no adapter
  std::shared_ptr<LoraAdapters> peft;
  LoadedLoraMoe lora_moe;
};

AppliedAdapter apply_adapter(Model& model, const std::string& dir) {
  AppliedAdapter a;
  if (dir.empty()) return a;
  if (is_lora_moe_adapter(dir)) {
    // Converts the dense FFNs into LoRA-MoE blocks (any dtype: the LoRA math runs in fp32 over the
    // base weights) and loads the PEFT attention LoRA when the directory has one.
    a.lora_moe = load_lora_moe_adapter(dir, model);
    a.format = kLoraMoeFormat;
  } else {
    a.peft = load_peft_adapter(model, dir);
    a.format = "peft";
  }
  return a;
}

// The model and adapter keys of the results' "config", for either protocol.
void add_model_settings(json& settings, const EvalArgs& a, const AppliedAdapter& adapter) {
  // lm-eval's HF model_args for the same run (a LoRA-MoE adapter has no lm-eval equivalent).
  std::string model_args = "pretrained=" + a.model + ",dtype=" + hf_dtype_name(a.dtype) + ",device=" + a.device;
  if (adapter.format == "peft") model_args += ",peft=" + a.adapter;
  if (a.max_length > 0) model_args += ",max_length=" + std::to_string(a.max_length);
  if (a.bos == "on") model_args += ",add_bos_token=True";
  if (a.bos == "off") model_args += ",add_bos_token=False";
  settings["model"] = a.model;
  settings["model_args"] = model_args;
  settings["model_dtype"] = "torch." + hf_dtype_name(a.dtype);
  settings["device"] = a.device;
  settings["model_sha256"] = model_content_hash(a.model);
  settings["dtype"] = a.dtype;
  if (adapter.format.empty()) return;
  settings["adapter"] = a.adapter;
  settings["adapter_format"] = adapter.format;
  if (adapter.format == "peft") {
    settings["adapter_sha256"] = sha256_file(path_join(a.adapter, kPeftWeightsFile));
  } else {
    settings["adapter_sha256"] = sha256_file(path_join(a.adapter, kLoraMoeWeightsFile));
    settings["adapter_routing"] = adapter.lora_moe.options.routing;
    if (adapter.lora_moe.attention)
      settings["adapter_attention_sha256"] = sha256_file(path_join(a.adapter, kPeftWeightsFile));
  }
}

// One line per failed task (identical reasons once, e.g. a file shared by several tasks); the last
// one goes through main() so that the exit status is 1.
void report_failures(const std::vector<eval::TaskFailure>& failures) {
  if (failures.empty()) return;
  std::vector<std::string> lines;
  std::set<std::string> seen;
  for (const auto& f : failures)
    if (seen.insert(f.message).second) lines.push_back(f.message);
  for (size_t i = 0; i + 1 < lines.size(); ++i) std::fprintf(stderr, "error: %s\n", lines[i].c_str());
  std::fflush(stderr);
  fail(lines.back());
}

std::string dump_json(const nlohmann::ordered_json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// Every leaf task below the requested names, once each, in request order.
std::vector<std::string> leaf_tasks(const eval::TaskRegistry& registry, const std::vector<std::string>& names) {
  std::vector<std::string> leaves;
  std::set<std::string> seen;
  for (const auto& n : names)
    for (const auto& t : registry.expand(n))
      if (seen.insert(t).second) leaves.push_back(t);
  return leaves;
}

// --protocol lm-eval: per-choice log-likelihoods, lm-eval's metrics and results file.
void run_lm_eval(const EvalArgs& a, const eval::TaskRegistry& registry, const std::vector<std::string>& tasks,
                 const std::shared_ptr<Model>& model, const Tokenizer& tokenizer, const AppliedAdapter& adapter) {
  eval::TokenizerEncoder encoder(tokenizer);
  eval::TransformerScorer scorer(model, a.max_length);

  eval::EvalOptions opt;
  opt.data_dir = a.data_dir;
  opt.limit = a.limit;
  opt.bos = eval::parse_bos_policy(a.bos);
  opt.engine.batch_tokens = a.batch_tokens;
  opt.engine.share_context = !a.independent;
  opt.bootstrap_iters = a.bootstrap_iters;
  opt.acc_bytes = a.acc_bytes;
  opt.log_samples = !a.log_samples.empty();
  // Under torchrun / moeforge launch: the scoring batches are shared out over the ranks (the
  // scores, hence the results, are those of one process); rank 0 writes.
  std::shared_ptr<dist::Group> group = dist::init(dist::env_from_torchrun());
  const bool writer = group->rank() == 0;
  if (a.expert_parallel && !model->config().is_moe())
    throw UsageError("--expert-parallel needs an MoE model (" + a.model + " has no MoE layers)");
  if (group->active()) {
    opt.engine.rank = group->rank();
    opt.engine.world_size = group->world_size();
    opt.engine.all_gather = [group](const std::string& mine) { return group->all_gather_strings(mine); };
    opt.engine.progress = opt.engine.progress && writer;
    if (a.expert_parallel) {
      dist::distribute_model_experts(*model, group);
      opt.engine.idle_forward = [model]() {
        at::NoGradGuard no_grad;
        model->forward_hidden(at::zeros({1, 1}, at::kLong).to(model->device()));
      };
    }
  }
  eval::EvalReport report = eval::evaluate(registry, tasks, encoder, scorer, opt);
  dist::shutdown(group);

  if (writer && !report.results.empty()) std::printf("%s", eval::format_console(report).c_str());
  if (writer && !a.output.empty()) {
    json settings = eval::settings_json(opt, tasks, scorer.max_length());
    add_model_settings(settings, a, adapter);
    const auto results = eval::results_json(report, settings, tokenizer_info(tokenizer, scorer.max_length()));
    write_file_atomic(a.output, dump_json(results, 2) + "\n");
    log_info("wrote ", a.output);
  }
  if (writer && opt.log_samples) {
    const auto files = eval::write_sample_files(report, a.log_samples);
    log_info("wrote ", files.size(), " sample file(s) to ", a.log_samples);
  }
  report_failures(report.failures);
}

// One task scored with mLoRA's protocol.
struct MloraTaskRun {
  std::string task;
  std::vector<McItem> items;  // the evaluated ones (after --limit)
  int64_t original = 0;       // items in the split
  eval::MloraEvalResult result;
};

// --protocol mlora: mLoRA / GMoE's accuracy (the label token's logit after the prompt, argmax) on
// every requested multiple-choice task, from its --split under --split-policy.
void run_mlora(const EvalArgs& a, const eval::TaskRegistry& registry, const std::vector<std::string>& tasks,
               const std::vector<std::string>& leaves, Model& model, const Tokenizer& tokenizer,
               const AppliedAdapter& adapter) {
  const double start = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  const McSplit split = parse_mc_split(a.split);
  const SplitPolicy policy = a.split_policy == "gmoe" ? SplitPolicy::GmoeFork : SplitPolicy::TaskSplits;
  eval::MloraEvalOptions options;
  options.batch_size = a.batch_size;
  options.max_seq_len = a.max_length;

  std::vector<MloraTaskRun> runs;
  std::vector<eval::TaskFailure> failures;
  for (const auto& name : leaves) {
    const eval::TaskDef& task = *registry.find_task(name);
    try {
      MloraTaskRun run;
      run.task = name;
      run.items = mc_items(task, split, a.data_dir, policy);
      run.original = static_cast<int64_t>(run.items.size());
      run.items.resize(static_cast<size_t>(eval::apply_limit(run.original, a.limit)));
      if (run.items.empty()) fail(cat("task '", name, "': no documents to evaluate in its ", a.split, " split"));
      log_info(name, ": ", run.items.size(), " of ", run.original, " ", a.split, " items (mLoRA protocol)");
      run.result = eval::mlora_evaluate(model, tokenizer, run.items, options);
      runs.push_back(std::move(run));
    } catch (const UsageError&) {
      throw;
    } catch (const Error& e) {
      failures.push_back({name, one_line(e.what())});
    }
  }

  // The console table and the results: acc with lm-eval's stderr of a mean, sqrt(acc (1 - acc) / (n - 1)).
  eval::EvalReport table;
  nlohmann::ordered_json results = nlohmann::ordered_json::object(), n_samples = nlohmann::ordered_json::object();
  for (const auto& run : runs) {
    std::vector<double> correct;
    for (size_t i = 0; i < run.items.size(); ++i)
      correct.push_back(run.result.predictions[i] == run.items[i].answer ? 1.0 : 0.0);
    eval::MetricResult acc;
    acc.name = "acc";
    acc.value = run.result.accuracy();
    acc.has_stderr = correct.size() > 1;
    acc.stderr = acc.has_stderr ? eval::mean_stderr(correct) : 0.0;
    eval::TaskResult r;
    r.name = run.task;
    r.alias = run.task;
    r.version = registry.find_task(run.task)->version;
    r.samples = static_cast<int64_t>(run.items.size());
    r.original_samples = run.original;
    r.metrics = {acc};
    table.results.push_back(r);
    nlohmann::ordered_json entry;
    entry["alias"] = run.task;
    entry["acc,none"] = acc.value;
    entry["acc_stderr,none"] = acc.has_stderr ? nlohmann::ordered_json(acc.stderr) : nlohmann::ordered_json("N/A");
    results[run.task] = entry;
    n_samples[run.task] = {{"original", run.original}, {"effective", r.samples}};
  }
  if (!table.results.empty()) {
    std::printf("mLoRA protocol, %s split (%s splits)\n", a.split.c_str(), a.split_policy.c_str());
    std::printf("%s", eval::format_console(table).c_str());
  }

  if (!a.output.empty()) {
    json settings;
    settings["tasks"] = tasks;
    settings["data_dir"] = a.data_dir;
    settings["limit"] = a.limit < 0 ? json(nullptr) : json(a.limit);
    settings["num_fewshot"] = 0;
    settings["batch_size"] = a.batch_size;
    settings["max_seq_len"] = a.max_length;
    add_model_settings(settings, a, adapter);
    nlohmann::ordered_json j;
    j["results"] = results;
    j["protocol"] = "mlora";
    j["split"] = a.split;
    j["split_policy"] = a.split_policy;
    j["n-samples"] = n_samples;
    j["config"] = nlohmann::ordered_json(settings);
    if (!failures.empty()) {
      nlohmann::ordered_json failed = nlohmann::ordered_json::object();
      for (const auto& f : failures) failed[f.task] = f.message;
      j["failed_tasks"] = failed;
    }
    write_file_atomic(a.output, dump_json(j, 2) + "\n");
    log_info("wrote ", a.output);
  }
  if (!a.log_samples.empty() && !runs.empty()) {
    // One JSONL file per task: the item, its label list, the answer's and the prediction's index.
    make_dirs(a.log_samples);
    const std::string date_id = eval::lm_eval_date_id(start);
    for (const auto& run : runs) {
      std::string text;
      for (size_t i = 0; i < run.items.size(); ++i) {
        const McItem& it = run.items[i];
        nlohmann::ordered_json line;
        line["doc_id"] = static_cast<int64_t>(i);
        line["prompt"] = it.prompt;
        line["labels"] = it.labels;
        line["answer"] = it.answer;
        line["prediction"] = run.result.predictions[i];
        line["correct"] = run.result.predictions[i] == it.answer;
        text += dump_json(line, -1) + "\n";
      }
      write_file_atomic(path_join(a.log_samples, "mlora_" + run.task + "_" + date_id + ".jsonl"), text);
    }
    log_info("wrote ", runs.size(), " sample file(s) to ", a.log_samples);
  }
  report_failures(failures);
}
}  // namespace

void add_eval_command(CLI::App& app, const GlobalOptions&) {
  auto a = std::make_shared<EvalArgs>();
  auto* cmd = app.add_subcommand("eval", "Zero-shot evaluation with lm-evaluation-harness semantics (or mLoRA's)");
  cmd->footer(
      "Task data: local files under --data-dir, in the Hugging Face field layout (docs/eval.md lists the file of\n"
      "each task) or as distributed: OpenAI's lambada_test.jsonl, MMLU's test/<subject>_test.csv and CSV\n"
      "exports, GLUE's RTE/dev.tsv, the original OpenBookQA, Social IQa and HellaSwag releases, llama.cpp's\n"
      "hellaswag_val_full.txt (docs/eval.md, 'Other layouts read directly'). A missing file's error lists\n"
      "every file and layout looked for. To turn other downloads (a `datasets` JSON export) into them:\n"
      "  python3 scripts/hf-to-moeforge.py TASK INPUT... --data-dir DIR    (python3 scripts/hf-to-moeforge.py --help)\n"
      "A task whose data is missing or malformed is reported (error: <file>: <what>) and skipped; the other\n"
      "tasks are scored and written, and the exit status is 1.\n"
      "--protocol mlora: mLoRA / GMoE's multiple-choice accuracy (the logits after the prompt restricted to the\n"
      "label tokens, argmax) on the --split of each task; not comparable with lm-eval's acc (docs/lora-moe.md).");
  cmd->add_option("MODEL", a->model, "Hugging Face model directory (weights + tokenizer)")->required();
  cmd->add_option("--tasks", a->tasks, "comma-separated tasks or groups (arc_easy, piqa, mmlu, ...)")->required();
  cmd->add_option("--data-dir", a->data_dir, "directory holding the task data files (docs/eval.md)")
      ->capture_default_str();
  cmd->add_option("--include", a->include, "YAML file(s) with custom task definitions");
  cmd->add_option("--protocol", a->protocol,
                  "lm-eval (per-choice log-likelihoods) or mlora (label-token logits after the prompt, "
                  "multiple-choice tasks only)")
      ->capture_default_str()
      ->check(CLI::IsMember({"lm-eval", "mlora"}));
  cmd->add_option("--limit", a->limit, "documents per task (< 1: fraction)")->check(non_negative());
  cmd->add_option("--batch-tokens", a->batch_tokens, "padded tokens per forward batch (lm-eval protocol)")
      ->capture_default_str()
      ->check(positive());
  cmd->add_option("--batch-size", a->batch_size, "items per forward batch (mlora protocol)")
      ->capture_default_str()
      ->check(positive());
  cmd->add_option("--split", a->split, "split scored by the mlora protocol: test, validation or train")
      ->capture_default_str()
      ->check(CLI::IsMember({"test", "validation", "train"}));
  cmd->add_option("--split-policy", a->split_policy,
                  "mlora protocol: task (each task's own split files) or gmoe (GMoE's splits: BoolQ and "
                  "WinoGrande cut validation 80/20, ...; docs/lora-moe.md)")
      ->capture_default_str()
      ->check(CLI::IsMember({"task", "gmoe"}));
  cmd->add_option("--bos", a->bos, "BOS policy: auto (lm-eval >= 0.4.10), on, off (lm-eval <= 0.4.9)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  cmd->add_option("--max-length", a->max_length,
                  "longest input (default: the model's context; mlora: prompts cut to this many tokens)")
      ->check(positive());
  cmd->add_option("--adapter", a->adapter,
                  "adapter directory applied to MODEL: PEFT LoRA (adapter_config.json + adapter_model.safetensors) "
                  "or LoRA-MoE (lora_moe_config.json + lora_moe_model.safetensors)");
  cmd->add_option("--dtype", a->dtype, "fp32 or bf16")->capture_default_str();
  cmd->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--bootstrap-iters", a->bootstrap_iters, "bootstrap iterations for stderr of non-mean metrics")
      ->capture_default_str();
  cmd->add_flag("--acc-bytes", a->acc_bytes, "also report acc_bytes (acc_norm by UTF-8 bytes)");
  cmd->add_flag("--no-share-context", a->independent, "score every choice independently (as lm-eval does)");
  cmd->add_option("--output", a->output, "write the results JSON here (lm-eval's results file layout)");
  cmd->add_flag("--expert-parallel", a->expert_parallel,
                "under torchrun / moeforge launch: spread each MoE layer's experts over the ranks (all-to-all of "
                "routed tokens; docs/distributed.md)");
  cmd->add_option("--log-samples", a->log_samples,
                  "write per-sample records to DIR, one file per task (lm-eval: samples_<task>_<date>.jsonl; "
                  "mlora: mlora_<task>_<date>.jsonl)");
  cmd->callback([a, cmd]() {
    const bool mlora = a->protocol == "mlora";
    // An option of the other protocol would be ignored without a word: refused instead.
    const std::vector<const char*> lm_eval_only = {"--batch-tokens", "--bos",  "--bootstrap-iters", "--acc-bytes",
                                                   "--no-share-context", "--expert-parallel"};
    const std::vector<const char*> mlora_only = {"--batch-size", "--split", "--split-policy"};
    for (const char* o : mlora ? lm_eval_only : mlora_only)
      if (cmd->count(o) > 0)
        throw UsageError(std::string(o) + " applies to --protocol " + (mlora ? "lm-eval" : "mlora") + " only");
    if (mlora && dist::env_from_torchrun().active()) throw UsageError("--protocol mlora runs in one process");
    if (a->expert_parallel && !a->adapter.empty() && is_lora_moe_adapter(a->adapter))
      throw UsageError("--expert-parallel does not apply to a LoRA-MoE adapter (its FFN blocks are not MoE layers)");

    eval::TaskRegistry registry = eval::TaskRegistry::builtin();
    for (const auto& y : a->include)
      for (auto& t : eval::load_yaml_tasks(y)) registry.add_task(std::move(t));
    std::vector<std::string> tasks;
    for (const auto& t : split(a->tasks, ','))
      if (!trim(t).empty()) tasks.push_back(trim(t));
    if (tasks.empty()) throw UsageError("--tasks is empty");
    // Unknown names (and, for mlora, tasks it cannot score) fail before the model loads.
    const std::vector<std::string> leaves = leaf_tasks(registry, tasks);
    if (mlora)
      for (const auto& name : leaves)
        if (registry.find_task(name)->output_type != eval::OutputType::MultipleChoice)
          fail("task '" + name + "': the mlora protocol scores multiple-choice tasks only (its output_type is " +
               eval::output_type_name(registry.find_task(name)->output_type) + ")");

    auto tokenizer = Tokenizer::load(a->model);
    LoadOptions lo;
    lo.dtype = parse_dtype(a->dtype);
    lo.device = parse_device(a->device);
    auto model = Model::load(a->model, lo);
    const AppliedAdapter adapter = apply_adapter(*model, a->adapter);  // attached for the whole run
    check_tokenizer_fits_model(*tokenizer, model->config(), a->model);
    if (mlora)
      run_mlora(*a, registry, tasks, leaves, *model, *tokenizer, adapter);
    else
      run_lm_eval(*a, registry, tasks, model, *tokenizer, adapter);
  });
}

}  // namespace mf::cli
