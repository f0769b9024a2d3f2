// LoRA adapters as Hugging Face PEFT artifacts (src/train/peft.h): save -> load round trips bit
// for bit, the file layout is PEFT's (expected names and config written out literally below),
// bad adapter directories are one-line errors naming the file, and the CLI's --adapter /
// convert --merge-adapter agree with the library.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model/layers.h"
#include "model/model.h"
#include "model/perplexity.h"
#include "tokenizer/tokenizer.h"
#include "train/lora.h"
#include "train/peft.h"
#include "util/fs.h"
#include "util/json.h"
#include "model_fixtures.h"
#include "spm_llama_fixture.h"
#include "test_helpers.h"

using namespace mf;
using mf::testing_fixtures::tiny_model;
using mf::testing_helpers::CliRun;
using mf::testing_helpers::error_of;

namespace {

std::string fresh_dir(const std::string& name) {
  std::string d = ::testing::TempDir() + "/mf_peft_" + name;
  remove_all(d);
  return d;
}

// B starts at zero (the adapted model computes the base function); give it values so the adapter
// changes the output.
void randomize_b(LoraAdapters& a, uint64_t seed, double std) {
  at::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (const auto& l : a.adapters()) l->lora_B.copy_(torch::randn(l->lora_B.sizes()) * std);
}

at::Tensor some_ids(int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(0, vocab, {2, 9}, torch::kLong);
}

at::Tensor logits(Model& m, const at::Tensor& ids) {
  at::NoGradGuard no_grad;
  return m.forward(ids);
}

bool one_line_about(const std::string& msg, const std::string& file) {
  return msg.rfind(file + ": ", 0) == 0 && msg.find('\n') == std::string::npos;
}

}  // namespace

TEST(Peft, SaveLoadRoundTripIsBitIdentical) {
  auto m = tiny_model("llama");
  LoraOptions o;
  o.r = 4;
  o.alpha = 8;
  o.dropout = 0.1;
  o.targets = {"q_proj", "v_proj", "down_proj"};
  o.seed = 3;
  auto ad = std::make_shared<LoraAdapters>(*m, o);
  randomize_b(*ad, 5, 0.2);
  ad->eval();
  const at::Tensor ids = some_ids(64, 7);
  const at::Tensor want = logits(*m, ids);

  const std::string dir = fresh_dir("roundtrip");
  save_peft_adapter(*ad, dir, "org/tiny-llama");
  std::vector<std::string> files = list_dir(dir);
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"adapter_config.json", "adapter_model.safetensors"}));

  PeftLoraConfig c = read_peft_config(dir);
  EXPECT_EQ(c.r, 4);
  EXPECT_EQ(c.alpha, 8.0);
  EXPECT_EQ(c.dropout, 0.1);
  EXPECT_FALSE(c.use_rslora);
  EXPECT_EQ(c.base_model_name_or_path, "org/tiny-llama");
  EXPECT_EQ(c.scale(), 2.0);

  auto m2 = tiny_model("llama");  // same seed: the same base weights
  EXPECT_FALSE(torch::equal(logits(*m2, ids), want));  // B != 0: the adapter matters
  auto ad2 = load_peft_adapter(*m2, dir);
  ASSERT_EQ(ad2->module_names(), ad->module_names());
  EXPECT_EQ(ad2->module_names().size(), 6u);  // 2 layers x {q_proj, v_proj, down_proj}
  EXPECT_EQ(ad2->options().r, 4);
  EXPECT_EQ(ad2->options().alpha, 8.0);
  for (size_t i = 0; i < ad->adapters().size(); ++i) {
    const auto& a = ad->adapters()[i];
    const auto& b = ad2->adapters()[i];
    EXPECT_TRUE(torch::equal(a->lora_A, b->lora_A)) << ad->module_names()[i];
    EXPECT_TRUE(torch::equal(a->lora_B, b->lora_B)) << ad->module_names()[i];
    EXPECT_EQ(b->lora_A.scalar_type(), at::kFloat);
    EXPECT_EQ(a->scale, b->scale);
    EXPECT_EQ(b->dropout, 0.0);  // loaded for inference
  }
  EXPECT_TRUE(torch::equal(logits(*m2, ids), want));

  // rsLoRA: scale alpha / sqrt(r), recorded and read back.
  ad2->detach();
  LoraOptions rs = o;
  rs.use_rslora = true;
  auto ad3 = std::make_shared<LoraAdapters>(*m2, rs);
  EXPECT_DOUBLE_EQ(ad3->adapters()[0]->scale, 4.0);
  const std::string rsdir = fresh_dir("rslora");
  save_peft_adapter(*ad3, rsdir, "");
  ad3->detach();
  auto ad4 = load_peft_adapter(*m2, rsdir);
  EXPECT_TRUE(read_peft_config(rsdir).use_rslora);
  EXPECT_DOUBLE_EQ(ad4->adapters()[0]->scale, 4.0);
  EXPECT_TRUE(read_json_file(rsdir + "/adapter_config.json").at("base_model_name_or_path").is_null());
}

// The layout PEFT's save_pretrained writes for a LlamaForCausalLM with
// LoraConfig(r=2, lora_alpha=16, target_modules=["q_proj", "k_proj"], task_type="CAUSAL_LM"):
// keys of PeftModel.state_dict() with the adapter name "default" removed (get_peft_model_state_dict),
// "base_model.model." in front of the transformers module name.
TEST(Peft, FileLayoutFollowsPeft) {
  auto m = tiny_model("llama");
  LoraOptions o;
  o.r = 2;
  o.alpha = 16;
  o.targets = {"q_proj", "k_proj"};
  LoraAdapters ad(*m, o);
  const std::string dir = fresh_dir("layout");
  save_peft_adapter(ad, dir, "org/tiny-llama");

  // tiny llama: hidden 32, 4 heads of 8, 2 KV heads -> q_proj 32 -> 32, k_proj 32 -> 16.
  const std::map<std::string, std::vector<int64_t>> expected = {
      {"base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight", {2, 32}},
      {"base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight", {16, 2}},
      {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", {2, 32}},
      {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", {32, 2}},
      {"base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight", {2, 32}},
      {"base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight", {16, 2}},
      {"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight", {2, 32}},
      {"base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight", {32, 2}},
  };
  auto f = SafetensorsFile::open(dir + "/adapter_model.safetensors");
  std::map<std::string, std::vector<int64_t>> got;
  for (const auto& t : f->tensors()) {
    got[t.name] = t.shape;
    EXPECT_EQ(t.dtype, StDType::F32) << t.name;
  }
  EXPECT_EQ(got, expected);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(peft_tensor_name("model.layers.0.self_attn.q_proj", true),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");

  const json want = json::parse(R"({
    "alpha_pattern": {},
    "base_model_name_or_path": "org/tiny-llama",
    "bias": "none",
    "fan_in_fan_out": false,
    "inference_mode": true,
    "init_lora_weights": true,
    "layers_pattern": null,
    "layers_to_transform": null,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "modules_to_save": null,
    "peft_type": "LORA",
    "r": 2,
    "rank_pattern": {},
    "revision": null,
    "target_modules": ["k_proj", "q_proj"],
    "task_type": "CAUSAL_LM",
    "use_dora": false,
    "use_rslora": false
  })");
  const json cfg = read_json_file(dir + "/adapter_config.json");
  EXPECT_EQ(cfg, want) << cfg.dump(2);
  EXPECT_TRUE(cfg.at("lora_alpha").is_number_integer());  // PEFT's lora_alpha is an int
  EXPECT_TRUE(cfg.at("r").is_number_integer());
}

// PEFT files seen in the wild sometimes keep the adapter name: "...lora_A.default.weight".
TEST(Peft, DefaultInfixLoads) {
  auto m = tiny_model("llama");
  LoraOptions o;
  o.r = 3;
  o.targets = {"o_proj", "up_proj"};
  LoraAdapters ad(*m, o);
  randomize_b(ad, 9, 0.3);
  const std::string dir = fresh_dir("infix");
  save_peft_adapter(ad, dir, "");
  auto f = SafetensorsFile::open(dir + "/adapter_model.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> renamed;
  for (const auto& t : f->tensors()) {
    std::string n = t.name;
    const size_t pos = n.rfind(".weight");
    renamed.emplace_back(n.substr(0, pos) + ".default.weight", f->get(t.name).clone());
  }
  f.reset();
  EXPECT_NE(renamed[0].first.find(".default.weight"), std::string::npos) << renamed[0].first;
  save_safetensors(dir + "/adapter_model.safetensors", renamed);
  auto m2 = tiny_model("llama");
  auto ad2 = load_peft_adapter(*m2, dir);
  ASSERT_EQ(ad2->module_names(), ad.module_names());
  for (size_t i = 0; i < ad.adapters().size(); ++i) {
    EXPECT_TRUE(torch::equal(ad.adapters()[i]->lora_A, ad2->adapters()[i]->lora_A));
    EXPECT_TRUE(torch::equal(ad.adapters()[i]->lora_B, ad2->adapters()[i]->lora_B));
  }
}

TEST(Peft, ExactModuleListAndMoeExperts) {
  auto m = tiny_model("llama");
  LoraOptions o;
  o.targets = {"no_such_target"};  // ignored: modules wins
  o.modules = {"model.layers.1.mlp.down_proj", "model.layers.0.self_attn.q_proj"};
  {
    LoraAdapters ad(*m, o);
    EXPECT_EQ(ad.module_names(),
              (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"}));
  }
  o.modules = {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.nope"};
  std::string e = error_of([&] { LoraAdapters ad(*m, o); });
  EXPECT_NE(e.find("'model.layers.0.self_attn.nope'"), std::string::npos) << e;
  o.modules = {"model.layers.0.mlp"};
  e = error_of([&] { LoraAdapters ad(*m, o); });
  EXPECT_NE(e.find("not a Linear"), std::string::npos) << e;
  // A failed attach leaves nothing attached.
  o.modules = {"model.layers.0.self_attn.q_proj"};
  EXPECT_EQ(error_of([&] { LoraAdapters ad(*m, o); }), "");

  // Expert projections of each MoE family save under their transformers names and load back.
  struct Case {
    std::string family;
    std::vector<std::string> modules;
  };
  const std::vector<Case> cases = {
      {"mixtral", {"model.layers.0.block_sparse_moe.experts.3.w1", "model.layers.1.block_sparse_moe.experts.0.w2"}},
      {"qwen2_moe", {"model.layers.0.mlp.experts.3.gate_proj", "model.layers.0.mlp.shared_expert.up_proj"}},
      {"olmoe", {"model.layers.1.mlp.experts.2.down_proj"}},
  };
  for (const auto& c : cases) {
    auto mm = tiny_model(c.family);
    LoraOptions eo;
    eo.r = 2;
    eo.modules = c.modules;
    auto ad = std::make_shared<LoraAdapters>(*mm, eo);
    randomize_b(*ad, 4, 0.5);
    ad->eval();
    const at::Tensor ids = some_ids(64, 2);
    const at::Tensor adapted = logits(*mm, ids);
    const std::string dir = fresh_dir("moe_" + c.family);
    save_peft_adapter(*ad, dir, "");
    auto f = SafetensorsFile::open(dir + "/adapter_model.safetensors");
    for (const auto& name : c.modules) {
      EXPECT_TRUE(f->contains("base_model.model." + name + ".lora_A.weight")) << name;
      EXPECT_TRUE(f->contains("base_model.model." + name + ".lora_B.weight")) << name;
    }
    auto m2 = tiny_model(c.family);
    auto ad2 = load_peft_adapter(*m2, dir);
    EXPECT_EQ(ad2->module_names(), ad->module_names()) << c.family;
    EXPECT_TRUE(torch::equal(logits(*m2, ids), adapted)) << c.family;
    // The MoE forward honours expert adapters: merged weights compute the same.
    ad2->merge();
    EXPECT_TRUE(torch::allclose(logits(*m2, ids), adapted, 1e-4, 1e-5)) << c.family;
    EXPECT_FALSE(torch::allclose(logits(*tiny_model(c.family), ids), adapted, 1e-4, 1e-5)) << c.family;
  }
}

TEST(Peft, BadAdapterDirsAreOneLineErrors) {
  auto m = tiny_model("llama");
  LoraOptions o;
  o.r = 2;
  o.targets = {"q_proj"};
  const std::string good = fresh_dir("good");
  {
    LoraAdapters ad(*m, o);
    save_peft_adapter(ad, good, "");
  }
  const json cfg = read_json_file(good + "/adapter_config.json");
  auto copy_with = [&](const std::string& name, const json& config) {
    const std::string d = fresh_dir(name);
    make_dirs(d);
    if (!config.is_null()) write_json_file(d + "/adapter_config.json", config);
    copy_file(good + "/adapter_model.safetensors", d + "/adapter_model.safetensors");
    return d;
  };

  const std::string missing = ::testing::TempDir() + "/mf_peft_no_such_dir";
  std::string e = error_of([&] { load_peft_adapter(*m, missing); });
  EXPECT_TRUE(one_line_about(e, missing)) << e;

  std::string d = copy_with("noconfig", json());
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_config.json")) << e;

  json c = cfg;
  c["use_dora"] = true;
  d = copy_with("dora", c);
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_config.json")) << e;
  EXPECT_NE(e.find("not supported"), std::string::npos) << e;

  c = cfg;
  c["fan_in_fan_out"] = true;
  d = copy_with("fifo", c);
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_config.json")) << e;
  EXPECT_NE(e.find("not supported"), std::string::npos) << e;

  c = cfg;
  c["peft_type"] = "IA3";
  d = copy_with("ia3", c);
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_config.json")) << e;

  // The config says r = 3 but the tensors have r = 2: the first tensor checked is named.
  c = cfg;
  c["r"] = 3;
  d = copy_with("rank", c);
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_model.safetensors")) << e;
  EXPECT_NE(e.find("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"), std::string::npos) << e;
  EXPECT_NE(e.find("shape"), std::string::npos) << e;

  // Wrong shapes, an unknown module, a tensor that is not lora_A / lora_B, a lone lora_A.
  auto with_tensors = [&](const std::string& name, const std::vector<std::pair<std::string, at::Tensor>>& ts) {
    const std::string dd = copy_with(name, cfg);
    save_safetensors(dd + "/adapter_model.safetensors", ts);
    return dd;
  };
  const std::string q = "base_model.model.model.layers.0.self_attn.q_proj";
  d = with_tensors("shape", {{q + ".lora_A.weight", torch::zeros({2, 33})}, {q + ".lora_B.weight", torch::zeros({32, 2})}});
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_model.safetensors")) << e;
  EXPECT_NE(e.find(q + ".lora_A.weight"), std::string::npos) << e;
  d = with_tensors("shapeb", {{q + ".lora_A.weight", torch::zeros({2, 32})}, {q + ".lora_B.weight", torch::zeros({31, 2})}});
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_model.safetensors")) << e;
  EXPECT_NE(e.find(q + ".lora_B.weight"), std::string::npos) << e;
  const std::string nope = "base_model.model.model.layers.7.self_attn.q_proj";
  d = with_tensors("module", {{nope + ".lora_A.weight", torch::zeros({2, 32})}, {nope + ".lora_B.weight", torch::zeros({32, 2})}});
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_model.safetensors")) << e;
  EXPECT_NE(e.find("model.layers.7.self_attn.q_proj"), std::string::npos) << e;
  d = with_tensors("magnitude", {{q + ".lora_A.weight", torch::zeros({2, 32})}, {q + ".lora_B.weight", torch::zeros({32, 2})},
                                 {q + ".lora_magnitude_vector", torch::zeros({32})}});
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_model.safetensors")) << e;
  d = with_tensors("lone", {{q + ".lora_A.weight", torch::zeros({2, 32})}});
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_model.safetensors")) << e;
  const std::string norm = "base_model.model.model.layers.0.input_layernorm";
  d = with_tensors("notlinear", {{norm + ".lora_A.weight", torch::zeros({2, 32})}, {norm + ".lora_B.weight", torch::zeros({32, 2})}});
  e = error_of([&] { load_peft_adapter(*m, d); });
  EXPECT_TRUE(one_line_about(e, d + "/adapter_model.safetensors")) << e;
  EXPECT_NE(e.find("not a Linear"), std::string::npos) << e;

  // None of the failures attached anything; loading twice onto one model is refused.
  auto ok = load_peft_adapter(*m, good);
  e = error_of([&] { load_peft_adapter(*m, good); });
  EXPECT_TRUE(one_line_about(e, good)) << e;
  EXPECT_NE(e.find("already has an adapter"), std::string::npos) << e;
}

// A bf16 model: A and B stay fp32, the low-rank path runs in fp32 and is cast back.
TEST(Peft, LoadsOntoBf16Model) {
  auto m = tiny_model("llama");
  const std::string base = fresh_dir("bf16_base");
  save_checkpoint(base, mf::testing_fixtures::tiny_config_json("llama"), m->hf_tensors());
  LoraOptions o;
  o.r = 4;
  o.targets = {"q_proj", "v_proj", "gate_proj"};
  auto ad = std::make_shared<LoraAdapters>(*m, o);
  randomize_b(*ad, 1, 0.5);
  ad->eval();
  const at::Tensor ids = some_ids(64, 3);
  const at::Tensor want = logits(*m, ids);
  const std::string dir = fresh_dir("bf16_adapter");
  save_peft_adapter(*ad, dir, base);

  auto mb = Model::load(base, {at::kBFloat16, at::kCPU});
  const at::Tensor plain = logits(*mb, ids);
  auto adb = load_peft_adapter(*mb, dir);
  EXPECT_EQ(adb->adapters()[0]->lora_A.scalar_type(), at::kFloat);
  const at::Tensor got = logits(*mb, ids);
  EXPECT_EQ(got.scalar_type(), at::kFloat);
  const double err = (got - want).abs().max().item<double>();
  const double effect = (want - logits(*tiny_model("llama"), ids)).abs().max().item<double>();
  EXPECT_GT(effect, 0.0);
  EXPECT_LT(err, 0.1 * effect + 0.05) << "bf16 error " << err << " vs adapter effect " << effect;
  EXPECT_FALSE(torch::equal(got, plain));
}

// End to end through the CLI on a 2-layer Llama with the Llama-2 SentencePiece tokenizer.
namespace {

CliRun run_cli(const std::string& args) { return mf::testing_helpers::run_moeforge("-q " + args); }

const char* kText =
    "In the beginning God created the heaven and the earth. And the earth was without form, and void; and "
    "darkness was upon the face of the deep. The quick brown fox jumps over the lazy dog.";

struct CliFixture {
  std::string model, adapter, text;
};

const CliFixture& cli_fixture() {
  static CliFixture f = [] {
    CliFixture x;
    x.model = fresh_dir("cli_llama");
    auto m = testing_fixtures::save_tiny_spm_llama(x.model);
    LoraOptions o;
    o.r = 4;
    o.alpha = 8;
    o.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    LoraAdapters ad(*m, o);
    randomize_b(ad, 21, 0.5);
    x.adapter = fresh_dir("cli_adapter");
    save_peft_adapter(ad, x.adapter, x.model);
    x.text = ::testing::TempDir() + "/mf_peft_cli_text.txt";
    write_file_atomic(x.text, kText);
    return x;
  }();
  return f;
}

double cli_perplexity(const std::string& model, const std::string& extra) {
  const auto& f = cli_fixture();
  CliRun r = run_cli("perplexity " + model + " --text " + f.text + " --context 16 --stride 8 --json " + extra);
  EXPECT_EQ(r.code, 0) << r.err;
  if (r.code != 0) return -1;
  return json::parse(r.out).at("perplexity").get<double>();
}

}  // namespace

TEST(PeftCli, PerplexityWithAdapterEqualsLibraryAndMergedModel) {
  const auto& f = cli_fixture();
  const double base = cli_perplexity(f.model, "");
  const double adapted = cli_perplexity(f.model, "--adapter " + f.adapter);
  ASSERT_GT(base, 0);
  ASSERT_GT(adapted, 0);
  EXPECT_GT(std::abs(adapted / base - 1.0), 1e-3) << base << " vs " << adapted;

  // The library on the same model + adapter.
  auto model = Model::load(f.model);
  auto ad = load_peft_adapter(*model, f.adapter);
  auto tok = Tokenizer::load(f.model);
  auto ids32 = tok->encode(kText, true);
  PerplexityResult lib = rolling_perplexity(*model, std::vector<int64_t>(ids32.begin(), ids32.end()), 16, 8);
  EXPECT_NEAR(adapted / lib.perplexity(), 1.0, 1e-6);

  // convert --merge-adapter: the merged model alone gives the adapted perplexity.
  const std::string merged = fresh_dir("cli_merged");
  CliRun r = run_cli("convert " + f.model + " --merge-adapter " + f.adapter + " --out " + merged + " --dtype fp32");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Checkpoint::open(merged).config().at("torch_dtype"), "float32");
  EXPECT_TRUE(path_exists(merged + "/tokenizer.model"));
  const double merged_ppl = cli_perplexity(merged, "");
  EXPECT_NEAR(merged_ppl / adapted, 1.0, 1e-4);

  // The default output dtype of convert is bf16, merged in fp32 first.
  const std::string merged_bf16 = fresh_dir("cli_merged_bf16");
  r = run_cli("convert " + f.model + " --merge-adapter " + f.adapter + " --out " + merged_bf16);
  ASSERT_EQ(r.code, 0) << r.err;
  Checkpoint a = Checkpoint::open(merged), b = Checkpoint::open(merged_bf16);
  for (const auto& name : a.names()) EXPECT_TRUE(torch::equal(a.get(name).to(at::kBFloat16), b.get(name))) << name;
}

TEST(PeftCli, EvalAndGenerateTakeAdapter) {
  const auto& f = cli_fixture();
  const std::string data = fresh_dir("cli_data");
  make_dirs(data + "/wikitext");
  write_file_atomic(data + "/wikitext/test.jsonl", json({{"page", kText}}).dump() + "\n");
  auto eval_ppl = [&](const std::string& extra, const std::string& out) {
    CliRun r = run_cli("eval " + f.model + " --tasks wikitext --data-dir " + data + " --output " + out + " " + extra);
    EXPECT_EQ(r.code, 0) << r.err;
    if (r.code != 0) return -1.0;
    json j = read_json_file(out);
    return j.at("results").at("wikitext").at("word_perplexity,none").get<double>();
  };
  const double base = eval_ppl("", data + "/base.json");
  const double adapted = eval_ppl("--adapter " + f.adapter, data + "/adapted.json");
  ASSERT_GT(base, 0);
  ASSERT_GT(adapted, 0);
  EXPECT_GT(std::abs(adapted / base - 1.0), 1e-3) << base << " vs " << adapted;

  CliRun g = run_cli("generate " + f.model + " --prompt 'The quick brown' --max-new-tokens 4 --temperature 0 "
                     "--dtype float32 --json --adapter " + f.adapter);
  ASSERT_EQ(g.code, 0) << g.err;
  EXPECT_EQ(json::parse(g.out).at("adapter").get<std::string>(), f.adapter);
}

TEST(PeftCli, BadAdapterIsOneLineErrorAndWritesNothing) {
  const auto& f = cli_fixture();
  const std::string missing = ::testing::TempDir() + "/mf_peft_cli_missing";
  CliRun r = run_cli("perplexity " + f.model + " --text " + f.text + " --adapter " + missing);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("error: " + missing + ": ", 0), 0u) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
  const std::string out = fresh_dir("cli_not_written");
  r = run_cli("convert " + f.model + " --merge-adapter " + missing + " --out " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_FALSE(path_exists(out));
}
