// `moeforge convert MODEL --out DIR [--dtype bf16] [--shard-size 5GB]`: rewrite a checkpoint in
// another dtype and/or shard size (transformers' `model.to(dtype).save_pretrained(out,
// max_shard_size=...)`). The model is loaded and validated like every other command does, so a
// broken input is refused before anything is written; tokenizer files travel along.
//
// `--merge-adapter DIR` folds a PEFT LoRA adapter (train/peft.h) into the weights first
// (PEFT's merge_and_unload): the model is loaded in fp32, W += scale * B A is computed in fp32,
// and the result is written in --dtype like any other conversion.
//
// `--to gguf --outtype f32|f16|bf16|q8_0 --out FILE.gguf` writes llama.cpp's GGUF instead
// (src/gguf/export.h, docs/gguf.md): tensors are read one at a time from the checkpoint (or from
// the adapter-merged model) and streamed into a temporary file renamed into place at the end.
#include <map>

#include "cli/commands.h"
#include "gguf/export.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "train/peft.h"
#include "util/error.h"
#include "util/fs_checks.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::cli {

namespace {

void convert_to_gguf(const std::string& model_dir, const std::string& adapter_dir, const std::string& out,
                     gguf::OutType outtype) {
  gguf::check_gguf_output_path(out, {model_dir, adapter_dir});  // before the work
  if (!adapter_dir.empty()) {
    // The adapter is merged in fp32 (as for --to hf); the merged weights are then exported.
    auto model = Model::load(model_dir, {at::kFloat, at::kCPU});
    gguf::check_exportable(model->config());
    auto adapter = load_peft_adapter(*model, adapter_dir);
    adapter->merge();
    auto tensors = std::make_shared<std::map<std::string, at::Tensor>>();
    for (auto& nt : model->hf_tensors()) (*tensors)[nt.first] = nt.second;
    auto get = [tensors](const std::string& name) {
      auto it = tensors->find(name);
      if (it == tensors->end()) fail("internal: the merged model has no tensor " + name);
      return it->second;
    };
    auto r = gguf::export_gguf(model_dir, model->config(), get, out, outtype);
    log_info("wrote ", out, " (", r.architecture, ", ", gguf::outtype_name(outtype), ", adapter merged, ",
             r.tensors, " tensors, ", format_bytes(static_cast<double>(r.bytes)), ")");
    return;
  }
  Checkpoint ck = Checkpoint::open(model_dir);
  if (ck.config().is_null()) fail_file(model_dir, "a GGUF export needs a model directory with config.json");
  const ModelConfig cfg = parse_model_config(ck.config(), ck.config_path());
  gguf::check_exportable(cfg);  // refusals before any tensor is looked at
  std::map<std::string, std::vector<int64_t>> shapes;
  std::map<std::string, std::string> file_of;
  auto stored = std::make_shared<std::map<std::string, std::string>>();  // canonical -> stored name
  for (const auto& name : ck.names()) {
    shapes[name] = ck.info(name).shape;
    file_of[name] = ck.file_of(name);
    if (!is_ignorable_tensor(cfg, name)) (*stored)[canonical_tensor_name(cfg, name)] = name;
  }
  validate_tensors(cfg, shapes, ck.config_path(), file_of);
  auto shared = std::make_shared<Checkpoint>(std::move(ck));
  auto get = [shared, stored](const std::string& name) {
    auto it = stored->find(name);
    if (it == stored->end()) fail("internal: the checkpoint has no tensor " + name);
    return shared->get(it->second);
  };
  auto r = gguf::export_gguf(model_dir, cfg, get, out, outtype);
  log_info("wrote ", out, " (", r.architecture, ", ", gguf::outtype_name(outtype), ", ", r.tensors, " tensors, ",
           r.metadata_keys, " metadata keys, ", format_bytes(static_cast<double>(r.bytes)), ")");
}

}  // namespace

void add_convert_command(CLI::App& app, const GlobalOptions&) {
  struct Args {
    std::string model, out, dtype = "bf16", shard_size = "5GB", adapter, to = "hf", outtype = "bf16";
  };
  auto a = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("convert", "Rewrite a model directory in another dtype or shard size, or as GGUF");
  cmd->add_option("MODEL", a->model, "Hugging Face model directory")->required();
  cmd->add_option("--out", a->out, "output model directory (--to gguf: the .gguf file)")->required();
  cmd->add_option("--to", a->to, "output format: hf (a model directory) or gguf (llama.cpp, docs/gguf.md)")
      ->check(CLI::IsMember({"hf", "gguf"}))
      ->capture_default_str();
  cmd->add_option("--outtype", a->outtype, "--to gguf: f32, f16, bf16 or q8_0 (norms, biases, routers stay f32)")
      ->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "bf16, fp16 or fp32")->capture_default_str();
  cmd->add_option("--shard-size", a->shard_size, "maximum shard size, e.g. 5GB, 500MB")->capture_default_str();
  cmd->add_option("--merge-adapter", a->adapter,
                  "PEFT LoRA adapter directory to merge into the weights (in fp32) before writing");
  cmd->callback([a, cmd]() {
    if (a->to == "gguf") {
      if (cmd->count("--dtype")) throw UsageError("--dtype is for --to hf; use --outtype with --to gguf");
      if (cmd->count("--shard-size")) throw UsageError("--shard-size is for --to hf (a GGUF is one file)");
      convert_to_gguf(a->model, a->adapter, a->out, gguf::parse_outtype(a->outtype));
      return;
    }
    if (cmd->count("--outtype")) throw UsageError("--outtype needs --to gguf (use --dtype for a model directory)");
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
