// moeforge profile MODEL --data FILE --out DIR : per-domain FFN neuron importance, activation
// statistics, co-activation and document domains (docs/profile.md).
#include <cstdio>

#include "cli/commands.h"
#include "cli/vocab_check.h"
#include "dist/dist.h"
#include "model/model.h"
#include "profile/profile.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs_checks.h"
#include "util/json.h"
#include "util/progress.h"
#include "util/rng.h"

namespace mf::cli {

void add_profile_command(CLI::App& app, const GlobalOptions& globals) {
  struct Opts {
    ProfileOptions p;
    std::string model, dtype = "float32", device = "cpu", output;
    bool json_out = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand(
      "profile", "Per-domain FFN neuron importance (one backward pass per sample), activation statistics, "
                 "co-activation and document domains of a dense model, for `moeforge split`.");
  cmd->add_option("model", o->model, "Hugging Face model directory (tokenizer files included)")->required();
  cmd->add_option("--data", o->p.data_path, "JSONL calibration data: {\"text\"} or {\"prompt\",\"response\"} lines")
      ->required();
  cmd->add_option("--out", o->p.out_dir, "output directory (written atomically)")->required();
  cmd->add_option("--domains", o->p.domains,
                  "k-means domains K (default: the data's 'domain' field when every line has one, else 8)")
      ->check(positive());
  cmd->add_option("--domain-field", o->p.domain_field, "take each document's domain from this JSON field");
  cmd->add_option("--embeddings", o->p.embeddings_path,
                  "document embeddings for k-means (.npy or .safetensors, one row per document); "
                  "default: the model's mean-pooled last hidden state");
  cmd->add_option("--max-docs", o->p.max_docs, "use only the first N documents")->check(non_negative());
  cmd->add_option("--max-tokens", o->p.max_tokens, "stop adding documents at N tokens")->check(non_negative());
  cmd->add_option("--seq-len", o->p.seq_len, "truncate documents to N tokens")->check(positive());
  cmd->add_option("--batch-tokens", o->p.batch_tokens, "padded tokens per forward/backward batch")
      ->check(positive());
  cmd->add_option("--layers", o->p.layers, "python-style 0-based layer range a:b (default: all)");
  cmd->add_flag("--coactivation", o->p.coactivation, "also count neuron co-activations ([F, F] per layer)");
  cmd->add_option("--dtype", o->dtype, "float32 or bfloat16");
  cmd->add_option("--device", o->device, "cpu or cuda[:N]");
  cmd->add_option("--seed", o->p.seed, "seed of the k-means initialisation");
  cmd->add_flag("--json", o->json_out, "print the profile.json record");
  cmd->add_option("--output", o->output, "also write the profile.json record to this file");
  cmd->callback([o]() {
    refuse_non_directory_output(o->p.out_dir);  // before the work: a user's file there is never replaced
    seed_torch(o->p.seed);
    LoadOptions lo{parse_dtype(o->dtype), parse_device(o->device)};
    auto model = Model::load(o->model, lo);
    model->eval();
    auto tok = Tokenizer::load(o->model);
    check_tokenizer_fits_model(*tok, model->config(), o->model);
    o->p.model_path = o->model;
    o->p.dtype = o->dtype;
    // Under torchrun / moeforge launch: the batches are shared out over the ranks and the
    // statistics summed (the profile is one process's up to summation order); rank 0 writes and
    // prints, the other ranks show no progress and write nothing.
    std::shared_ptr<dist::Group> group = dist::init(dist::env_from_torchrun());
    const bool writer = group->rank() == 0;
    if (!writer) Progress::set_enabled(false);
    json info;
    {
      ProfileOptions options = o->p;  // holds the group only as long as the profile runs
      options.sharding = BatchSharding(group);
      info = run_profile(*model, *tok, options);
    }
    dist::shutdown(group);
    if (!writer) return;
    if (!o->output.empty()) write_json_file(o->output, info);
    if (o->json_out) {
      std::printf("%s\n", info.dump(2).c_str());
      return;
    }
    std::printf("profiled %lld documents (%lld scored), %lld tokens, %lld domains (%s) -> %s\n",
                static_cast<long long>(info["documents"].get<int64_t>()),
                static_cast<long long>(info["scored_documents"].get<int64_t>()),
                static_cast<long long>(info["tokens"].get<int64_t>()),
                static_cast<long long>(info["domains"].get<int64_t>()),
                info["domain_source"].get<std::string>().c_str(), o->p.out_dir.c_str());
    std::printf("domain sizes:");
    for (size_t d = 0; d < info["domain_sizes"].size(); ++d)
      std::printf(" %s=%lld", info["domain_names"][d].get<std::string>().c_str(),
                  static_cast<long long>(info["domain_sizes"][d].get<int64_t>()));
    std::printf("\n%6s %16s %14s %12s %12s\n", "layer", "importance_raw", "importance", "mean|a|", "frac a>0");
    for (const auto& l : info["layer_summary"])
      std::printf("%6d %16.6g %14.6g %12.6g %12.4f\n", l["layer"].get<int>(), l["importance_raw_mean"].get<double>(),
                  l["importance_mean"].get<double>(), l["act_abs_mean"].get<double>(), l["act_pos_frac"].get<double>());
    std::printf("%.0f tokens/s in the profiling pass (%.1f s)\n",
                info["timings"]["profile_tokens_per_s"].get<double>(), info["timings"]["profile_s"].get<double>());
  });
  (void)globals;
}

}  // namespace mf::cli
