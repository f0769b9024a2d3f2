// `moeforge init --config config.json --out DIR`: a randomly initialised checkpoint of any
// supported architecture, in Hugging Face layout (like transformers' from_config + save_pretrained).
#include "cli/commands.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "model/size_limits.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::cli {

void add_init_command(CLI::App& app, const GlobalOptions&) {
  struct Args {
    std::string config, out, dtype = "bf16", tokenizer, shard_size = "5GB";
    uint64_t seed = 0;
    double std = 0.02;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("init", "Write a randomly initialised checkpoint from a config.json");
  cmd->add_option("--config", a->config, "config.json of any supported architecture")->required();
  cmd->add_option("--out", a->out, "output model directory")->required();
  cmd->add_option("--dtype", a->dtype, "bf16, fp16 or fp32 (the stored weights)")->capture_default_str();
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  cmd->add_option("--init-std", a->std, "standard deviation of weights")->capture_default_str();
  cmd->add_option("--tokenizer", a->tokenizer, "directory whose tokenizer files are copied along");
  cmd->add_option("--shard-size", a->shard_size, "maximum shard size, e.g. 5GB, 500MB")->capture_default_str();
  cmd->callback([a]() {
    ModelConfig cfg = read_model_config(a->config);
    at::ScalarType dtype = parse_dtype(a->dtype);
    // The weights are made in fp32 and then converted: both copies live for a moment.
    check_model_fits_memory(cfg, dtype == at::kFloat ? 4.0 : 4.0 + static_cast<double>(c10::elementSize(dtype)),
                            "to initialise");
    SaveOptions options;
    options.max_shard_bytes = parse_size(a->shard_size);
    options.copy_aux_from = a->tokenizer;
    if (!a->tokenizer.empty() && !is_directory(a->tokenizer)) fail_file(a->tokenizer, "not a directory");
    auto model = Model::create(cfg);
    model->init_random(a->seed, a->std);
    model->to(dtype);
    save_checkpoint(a->out, cfg.raw, model->hf_tensors(), options);
    log_info("wrote ", a->out, " (", format_count(static_cast<double>(total_parameters(cfg))), " parameters, ",
             a->dtype, ")");
  });
}

}  // namespace mf::cli
