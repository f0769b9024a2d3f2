// `moeforge convert MODEL --out DIR [--dtype bf16] [--shard-size 5GB]`: rewrite a checkpoint in
// another dtype and/or shard size (transformers' `model.to(dtype).save_pretrained(out,
// max_shard_size=...)`). The model is loaded and validated like every other command does, so a
// broken input is refused before anything is written; tokenizer files travel along.
//
// `--merge-adapter DIR` folds a PEFT LoRA adapter (train/peft.h) into the weights first
// (PEFT's merge_and_unload): the model is loaded in fp32, W += scale * B A is computed in fp32,
// and the result is written in --dtype like any other conversion.
#include "cli/commands.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "train/peft.h"
#include "util/error.h"
#include "util/fs_checks.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::cli {

void add_convert_command(CLI::App& app, const GlobalOptions&) {
  struct Args {
    std::string model, out, dtype = "bf16", shard_size = "5GB", adapter;
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("convert", "Rewrite a model directory in another dtype or shard size");
  cmd->add_option("MODEL", a->model, "Hugging Face model directory")->required();
  cmd->add_option("--out", a->out, "output model directory")->required();
  cmd->add_option("--dtype", a->dtype, "bf16, fp16 or fp32")->capture_default_str();
  cmd->add_option("--shard-size", a->shard_size, "maximum shard size, e.g. 5GB, 500MB")->capture_default_str();
  cmd->add_option("--merge-adapter", a->adapter,
                  "PEFT LoRA adapter directory to merge into the weights (in fp32) before writing");
  cmd->callback([a]() {
    refuse_non_directory_output(a->out);  // before the work: a user's file there is never replaced
    const at::ScalarType dtype = parse_dtype(a->dtype);
    SaveOptions options;
    options.max_shard_bytes = parse_size(a->shard_size);
    options.copy_aux_from = a->model;
    // Merging happens in fp32; the tensors are rounded to --dtype once, when written.
    const bool merge = !a->adapter.empty();
    auto model = Model::load(a->model, {merge ? at::kFloat : dtype, at::kCPU});
    if (merge) {
      auto adapter = load_peft_adapter(*model, a->adapter);
      adapter->merge();  // W += scale B A in fp32, then detached: the model alone computes model + adapter
      log_info("merged the LoRA adapter of ", adapter->module_names().size(), " modules from ", a->adapter);
    }
    json config = model->config().raw;
    std::vector<std::pair<std::string, at::Tensor>> tensors = model->hf_tensors();
    if (merge)
      for (auto& nt : tensors)
        if (nt.second.is_floating_point()) nt.second = nt.second.to(dtype);
    set_config_dtype(config, dtype);
    save_checkpoint(a->out, config, tensors, options);
    log_info("wrote ", a->out, " (", config["torch_dtype"].get<std::string>(), ")");
  });
}

}  // namespace mf::cli
