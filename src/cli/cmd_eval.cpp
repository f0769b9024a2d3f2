// `moeforge eval MODEL --tasks ...`: lm-evaluation-harness-compatible zero-shot evaluation.
#include <cstdio>
#include <set>

#include "cli/commands.h"
#include "cli/vocab_check.h"
#include "dist/dist.h"
#include "dist/expert_parallel.h"
#include "eval/model_scorer.h"
#include "eval/report.h"
#include "eval/yaml_task.h"
#include "io/checkpoint.h"
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
}  // namespace

void add_eval_command(CLI::App& app, const GlobalOptions&) {
  struct Args {
    std::string model, tasks, data_dir = ".", output, bos = "auto", dtype = "fp32", device = "cpu", adapter,
        log_samples;
    std::vector<std::string> include;
    double limit = -1;
    int64_t batch_tokens = 4096, max_length = 0, bootstrap_iters = 100000;
    bool independent = false, acc_bytes = false, expert_parallel = false;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("eval", "Zero-shot evaluation with lm-evaluation-harness semantics");
  cmd->footer(
      "Task data: local files under --data-dir, in the Hugging Face field layout (docs/eval.md lists the file of\n"
      "each task) or as distributed: OpenAI's lambada_test.jsonl, MMLU's test/<subject>_test.csv and CSV\n"
      "exports, GLUE's RTE/dev.tsv, the original OpenBookQA, Social IQa and HellaSwag releases, llama.cpp's\n"
      "hellaswag_val_full.txt (docs/eval.md, 'Other layouts read directly'). A missing file's error lists\n"
      "every file and layout looked for. To turn other downloads (a `datasets` JSON export) into them:\n"
      "  python3 scripts/hf-to-moeforge.py TASK INPUT... --data-dir DIR    (python3 scripts/hf-to-moeforge.py --help)\n"
      "A task whose data is missing or malformed is reported (error: <file>: <what>) and skipped; the other\n"
      "tasks are scored and written, and the exit status is 1.");
  cmd->add_option("MODEL", a->model, "Hugging Face model directory (weights + tokenizer)")->required();
  cmd->add_option("--tasks", a->tasks, "comma-separated tasks or groups (arc_easy, piqa, mmlu, ...)")->required();
  cmd->add_option("--data-dir", a->data_dir, "directory holding the task data files (docs/eval.md)")
      ->capture_default_str();
  cmd->add_option("--include", a->include, "YAML file(s) with custom task definitions");
  cmd->add_option("--limit", a->limit, "documents per task (< 1: fraction)")->check(non_negative());
  cmd->add_option("--batch-tokens", a->batch_tokens, "padded tokens per forward batch")
      ->capture_default_str()
      ->check(positive());
  cmd->add_option("--bos", a->bos, "BOS policy: auto (lm-eval >= 0.4.10), on, off (lm-eval <= 0.4.9)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "on", "off"}));
  cmd->add_option("--max-length", a->max_length, "longest input (default: the model's context)")->check(positive());
  cmd->add_option("--adapter", a->adapter,
                  "PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) applied to MODEL");
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
                  "write lm-eval's per-sample records to DIR/samples_<task>_<date>.jsonl, one file per task");
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
    // Attached for the whole run (the adapters detach when `adapter` goes out of scope).
    std::shared_ptr<LoraAdapters> adapter;
    if (!a->adapter.empty()) adapter = load_peft_adapter(*model, a->adapter);
    check_tokenizer_fits_model(*tokenizer, model->config(), a->model);
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
    opt.log_samples = !a->log_samples.empty();
    // Under torchrun / moeforge launch: the scoring batches are shared out over the ranks (the
    // scores, hence the results, are those of one process); rank 0 writes.
    std::shared_ptr<dist::Group> group = dist::init(dist::env_from_torchrun());
    const bool writer = group->rank() == 0;
    if (a->expert_parallel && !model->config().is_moe())
      throw UsageError("--expert-parallel needs an MoE model (" + a->model + " has no MoE layers)");
    if (group->active()) {
      opt.engine.rank = group->rank();
      opt.engine.world_size = group->world_size();
      opt.engine.all_gather = [group](const std::string& mine) { return group->all_gather_strings(mine); };
      opt.engine.progress = opt.engine.progress && writer;
      if (a->expert_parallel) {
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
    if (writer && !a->output.empty()) {
      json settings = eval::settings_json(opt, tasks, scorer.max_length());
      // lm-eval's HF model_args for the same run.
      std::string model_args = "pretrained=" + a->model + ",dtype=" + hf_dtype_name(a->dtype) + ",device=" + a->device;
      if (!a->adapter.empty()) model_args += ",peft=" + a->adapter;
      if (a->max_length > 0) model_args += ",max_length=" + std::to_string(a->max_length);
      if (a->bos == "on") model_args += ",add_bos_token=True";
      if (a->bos == "off") model_args += ",add_bos_token=False";
      settings["model"] = a->model;
      settings["model_args"] = model_args;
      settings["model_dtype"] = "torch." + hf_dtype_name(a->dtype);
      settings["device"] = a->device;
      settings["model_sha256"] = model_content_hash(a->model);
      settings["dtype"] = a->dtype;
      if (adapter) {
        settings["adapter"] = a->adapter;
        settings["adapter_sha256"] = sha256_file(path_join(a->adapter, kPeftWeightsFile));
      }
      const auto results = eval::results_json(report, settings, tokenizer_info(*tokenizer, scorer.max_length()));
      write_file_atomic(a->output, results.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n");
      log_info("wrote ", a->output);
    }
    if (writer && opt.log_samples) {
      const auto files = eval::write_sample_files(report, a->log_samples);
      log_info("wrote ", files.size(), " sample file(s) to ", a->log_samples);
    }
    if (!report.failures.empty()) {
      // One line per failed task (identical reasons once, e.g. a file shared by several tasks); the
      // last one goes through main() so that the exit status is 1.
      std::vector<std::string> lines;
      std::set<std::string> seen;
      for (const auto& f : report.failures)
        if (seen.insert(f.message).second) lines.push_back(f.message);
      for (size_t i = 0; i + 1 < lines.size(); ++i) std::fprintf(stderr, "error: %s\n", lines[i].c_str());
      std::fflush(stderr);
      fail(lines.back());
    }
  });
}

}  // namespace mf::cli
