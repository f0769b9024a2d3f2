// `moeforge convert MODEL --out DIR [--dtype bf16] [--shard-size 5GB]`: rewrite a checkpoint in
// another dtype and/or shard size (transformers' `model.to(dtype).save_pretrained(out,
// max_shard_size=...)`). The model is loaded and validated like every other command does, so a
// broken input is refused before anything is written; tokenizer files travel along.
#include "cli/commands.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "util/error.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::cli {

void add_convert_command(CLI::App& app, const GlobalOptions&) {
  struct Args {
    std::string model, out, dtype = "bf16", shard_size = "5GB";
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("convert", "Rewrite a model directory in another dtype or shard size");
  cmd->add_option("MODEL", a->model, "Hugging Face model directory")->required();
  cmd->add_option("--out", a->out, "output model directory")->required();
  cmd->add_option("--dtype", a->dtype, "bf16, fp16 or fp32")->capture_default_str();
  cmd->add_option("--shard-size", a->shard_size, "maximum shard size, e.g. 5GB, 500MB")->capture_default_str();
  cmd->callback([a]() {
    const at::ScalarType dtype = parse_dtype(a->dtype);
    SaveOptions options;
    options.max_shard_bytes = parse_size(a->shard_size);
    options.copy_aux_from = a->model;
    auto model = Model::load(a->model, {dtype, at::kCPU});
    json config = model->config().raw;
    set_config_dtype(config, dtype);
    save_checkpoint(a->out, config, model->hf_tensors(), options);
    log_info("wrote ", a->out, " (", config["torch_dtype"].get<std::string>(), ")");
  });
}

}  // namespace mf::cli
