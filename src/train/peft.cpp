#include "train/peft.h"

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors.h"
#include "model/config.h"
#include "model/layers.h"
#include "model/model.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf {

namespace {

const std::string kPrefix = "base_model.model.";

// "base_model.model.X.lora_A.weight" / "X.lora_A.default.weight" (also without the prefix, as
// transformers' own PEFT integration accepts) -> X and which of A / B. False for anything else.
bool parse_peft_tensor_name(const std::string& name, std::string& module, bool& is_a) {
  std::string s = starts_with(name, kPrefix) ? name.substr(kPrefix.size()) : name;
  static const std::pair<const char*, bool> kSuffixes[] = {{".lora_A.weight", true},
                                                           {".lora_B.weight", false},
                                                           {".lora_A.default.weight", true},
                                                           {".lora_B.default.weight", false}};
  for (const auto& [suffix, a] : kSuffixes) {
    const std::string suf = suffix;
    if (s.size() > suf.size() && ends_with(s, suf)) {
      module = s.substr(0, s.size() - suf.size());
      is_a = a;
      return true;
    }
  }
  return false;
}

bool is_float_type(StDType t) {
  return t == StDType::F32 || t == StDType::F16 || t == StDType::BF16 || t == StDType::F64;
}

// A key that must be absent, null, false, or empty (an empty object / list) in adapter_config.json.
void refuse_if_set(const json& j, const std::string& key, const std::string& path, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  const bool set = it->is_boolean() ? it->get<bool>() : (it->is_object() || it->is_array()) ? !it->empty() : true;
  if (set) fail_file(path, key + ": " + what + " is not supported");
}

}  // namespace

std::string peft_tensor_name(const std::string& module, bool a) {
  return kPrefix + module + (a ? ".lora_A.weight" : ".lora_B.weight");
}

double PeftLoraConfig::scale() const {
  const double rr = static_cast<double>(r);
  return use_rslora ? alpha / std::sqrt(rr) : alpha / rr;
}

json peft_adapter_config(const LoraAdapters& adapters, const std::string& base_model_name_or_path) {
  const LoraOptions& o = adapters.options();
  // PEFT stores target_modules as given to LoraConfig (a set, written as a list); the usual form is
  // the modules' last name components, which is what these adapters were attached by.
  std::set<std::string> targets;
  for (const auto& n : adapters.module_names()) {
    const size_t dot = n.rfind('.');
    targets.insert(dot == std::string::npos ? n : n.substr(dot + 1));
  }
  json j = json::object();  // std::map-backed: keys come out sorted, as PEFT's json.dumps(sort_keys=True)
  j["alpha_pattern"] = json::object();
  j["base_model_name_or_path"] = base_model_name_or_path.empty() ? json(nullptr) : json(base_model_name_or_path);
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layers_pattern"] = nullptr;
  j["layers_to_transform"] = nullptr;
  // LoraConfig.lora_alpha is an int in PEFT; keep integral values integral in the JSON.
  if (o.alpha == std::floor(o.alpha) && std::fabs(o.alpha) < 9.0e15)
    j["lora_alpha"] = static_cast<int64_t>(o.alpha);
  else
    j["lora_alpha"] = o.alpha;
  j["lora_dropout"] = o.dropout;
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["r"] = o.r;
  j["rank_pattern"] = json::object();
  j["revision"] = nullptr;
  j["target_modules"] = std::vector<std::string>(targets.begin(), targets.end());
  j["task_type"] = "CAUSAL_LM";
  j["use_dora"] = false;
  j["use_rslora"] = o.use_rslora;
  return j;
}

void save_peft_adapter(const LoraAdapters& adapters, const std::string& dir, const std::string& base_model_name_or_path) {
  const auto& names = adapters.module_names();
  const auto& list = adapters.adapters();
  if (names.empty()) fail_file(dir, "no adapters to save");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  tensors.reserve(2 * names.size());
  {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < names.size(); ++i) {
      at::Tensor a = list[i]->lora_A.detach().to(at::kCPU, at::kFloat).contiguous();
      at::Tensor b = list[i]->lora_B.detach().to(at::kCPU, at::kFloat).contiguous();
      if (a.dim() != 2 || b.dim() != 2 || a.size(0) != adapters.options().r || b.size(1) != a.size(0))
        fail_file(dir, "adapter of '" + names[i] + "' has lora_A " + shape_string(a.sizes().vec()) + " and lora_B " +
                           shape_string(b.sizes().vec()) + ", not [r, in] and [out, r] with r = " +
                           std::to_string(adapters.options().r));
      tensors.emplace_back(peft_tensor_name(names[i], true), a);
      tensors.emplace_back(peft_tensor_name(names[i], false), b);
    }
  }
  AtomicDir out(dir);
  write_json_file(path_join(out.path(), kPeftConfigFile), peft_adapter_config(adapters, base_model_name_or_path));
  save_safetensors(path_join(out.path(), kPeftWeightsFile), tensors);
  out.commit();
}

PeftLoraConfig read_peft_config(const std::string& dir) {
  if (!path_exists(dir)) fail_file(dir, "no such file or directory");
  if (!is_directory(dir))
    fail_file(dir, "not a directory (a PEFT adapter is a directory holding adapter_config.json and "
                   "adapter_model.safetensors)");
  const std::string path = path_join(dir, kPeftConfigFile);
  if (!path_exists(path)) fail_file(path, "no such file (not a PEFT adapter directory)");
  const json j = read_json_file(path);
  if (!j.is_object()) fail_file(path, "expected a JSON object");
  const std::string type = json_get<std::string>(j, "peft_type", path);
  if (type != "LORA") fail_file(path, "peft_type is '" + type + "': only LORA adapters are supported");
  PeftLoraConfig c;
  c.r = json_get_or<int64_t>(j, "r", 8, path);  // LoraConfig's defaults: r 8, lora_alpha 8
  c.alpha = json_get_or<double>(j, "lora_alpha", 8.0, path);
  c.dropout = json_get_or<double>(j, "lora_dropout", 0.0, path);
  c.use_rslora = json_get_or<bool>(j, "use_rslora", false, path);
  c.base_model_name_or_path = json_get_or<std::string>(j, "base_model_name_or_path", "", path);
  if (c.r <= 0) fail_file(path, "r must be positive");
  if (!std::isfinite(c.alpha)) fail_file(path, "lora_alpha must be a finite number");
  refuse_if_set(j, "use_dora", path, "DoRA (weight-decomposed LoRA)");
  refuse_if_set(j, "fan_in_fan_out", path, "fan_in_fan_out (Conv1D-layout weights)");
  refuse_if_set(j, "lora_bias", path, "a bias on lora_B");
  refuse_if_set(j, "modules_to_save", path, "fully trained extra modules (modules_to_save)");
  refuse_if_set(j, "rank_pattern", path, "a per-module rank (rank_pattern)");
  refuse_if_set(j, "alpha_pattern", path, "a per-module alpha (alpha_pattern)");
  refuse_if_set(j, "layer_replication", path, "layer_replication");
  const std::string bias = json_get_or<std::string>(j, "bias", "none", path);
  if (bias != "none") fail_file(path, "bias: '" + bias + "' (trained biases) is not supported, only \"none\"");
  return c;
}

std::shared_ptr<LoraAdapters> load_peft_adapter(Model& model, const std::string& dir) {
  const PeftLoraConfig cfg = read_peft_config(dir);
  const std::string wpath = path_join(dir, kPeftWeightsFile);
  if (!path_exists(wpath)) {
    const std::string bin = path_join(dir, "adapter_model.bin");
    if (path_exists(bin))
      fail_file(bin, "pickled weights are not supported; save the adapter with safetensors "
                     "(save_pretrained(..., safe_serialization=True), the default)");
    fail_file(wpath, "no such file");
  }
  auto file = SafetensorsFile::open(wpath);

  // Module name -> (lora_A tensor name, lora_B tensor name).
  std::map<std::string, std::pair<std::string, std::string>> found;
  for (const auto& t : file->tensors()) {
    std::string module;
    bool is_a = false;
    if (!parse_peft_tensor_name(t.name, module, is_a))
      fail_file(wpath, "tensor '" + t.name +
                           "' is not a LoRA weight (expected base_model.model.<module>.lora_A.weight / .lora_B.weight; "
                           "DoRA, embedding adapters and modules_to_save are not supported)");
    if (!is_float_type(t.dtype))
      fail_file(wpath, "tensor '" + t.name + "' has dtype " + st_dtype_name(t.dtype) + ", not a floating-point type");
    std::string& slot = is_a ? found[module].first : found[module].second;
    if (!slot.empty()) fail_file(wpath, "tensors '" + slot + "' and '" + t.name + "' are the same weight");
    slot = t.name;
  }
  if (found.empty()) fail_file(wpath, "holds no LoRA weights");

  std::map<std::string, std::shared_ptr<torch::nn::Module>> all;
  for (const auto& item : model.named_modules("", /*include_self=*/false)) all.emplace(item.key(), item.value());
  LoraOptions opt;
  opt.r = cfg.r;
  opt.alpha = cfg.alpha;
  opt.use_rslora = cfg.use_rslora;
  opt.dropout = 0.0;  // inference
  for (const auto& [module, names] : found) {
    const auto& [a_name, b_name] = names;
    if (a_name.empty()) fail_file(wpath, "tensor '" + b_name + "' has no lora_A partner");
    if (b_name.empty()) fail_file(wpath, "tensor '" + a_name + "' has no lora_B partner");
    auto it = all.find(module);
    if (it == all.end()) fail_file(wpath, "tensor '" + a_name + "': the model has no module '" + module + "'");
    auto lin = std::dynamic_pointer_cast<Linear>(it->second);
    if (!lin)
      fail_file(wpath, "tensor '" + a_name + "': module '" + module + "' is a " + it->second->name() +
                           ", not a Linear (LoRA attaches to Linear modules only)");
    const int64_t out = lin->weight.size(0), in = lin->weight.size(1);
    const std::vector<int64_t> want_a = {cfg.r, in}, want_b = {out, cfg.r};
    const auto& ia = *file->find(a_name);
    const auto& ib = *file->find(b_name);
    if (ia.shape != want_a)
      fail_file(wpath, "tensor '" + a_name + "' has shape " + shape_string(ia.shape) + " but module '" + module +
                           "' (in " + std::to_string(in) + ") with r = " + std::to_string(cfg.r) + " needs " +
                           shape_string(want_a));
    if (ib.shape != want_b)
      fail_file(wpath, "tensor '" + b_name + "' has shape " + shape_string(ib.shape) + " but module '" + module +
                           "' (out " + std::to_string(out) + ") with r = " + std::to_string(cfg.r) + " needs " +
                           shape_string(want_b));
    opt.modules.push_back(module);
  }

  std::shared_ptr<LoraAdapters> adapters;
  try {
    adapters = std::make_shared<LoraAdapters>(model, opt);
  } catch (const Error& e) {
    fail_file(dir, e.what());  // e.g. "lora: module '...' already has an adapter"
  }
  {
    at::NoGradGuard no_grad;
    const auto& names = adapters->module_names();
    for (size_t i = 0; i < names.size(); ++i) {
      const auto& [a_name, b_name] = found.at(names[i]);
      const auto& a = adapters->adapters()[i];
      a->lora_A.copy_(file->get(a_name, at::kFloat));  // copy_: onto the adapter's device, fp32
      a->lora_B.copy_(file->get(b_name, at::kFloat));
    }
  }
  adapters->eval();
  return adapters;
}

}  // namespace mf
