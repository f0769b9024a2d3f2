// Bad input, sizes and numbers: configs implying absurd sizes or more than the checkpoint or the
// machine holds, tokenizers beyond the vocabulary, out-of-range ids and numbers, unsupported
// dtypes, too little training data — each a one-line error naming the file, before allocating.
#include "bad_input_util.h"

using namespace mf::bad_input;

TEST(BadInput, ConfigSizesBeyondTheLimitsNameTheKey) {
  using testing_fixtures::tiny_config_json;
  const std::string o = "x/config.json";
  auto parse_error = [&](const std::string& family, const std::function<void(json&)>& edit) {
    json j = tiny_config_json(family);
    edit(j);
    return error_of([&] { parse_model_config(j, o); });
  };
  EXPECT_EQ(parse_error("llama", [](json& j) { j["num_hidden_layers"] = 1e9; }),
            o + ": key 'num_hidden_layers' is 1000000000, above the limit of 100000");
  // Qwen2-MoE's parser used to visit every layer (mlp_only_layers) before any bound.
  EXPECT_EQ(parse_error("qwen2_moe", [](json& j) { j["num_hidden_layers"] = 1e9; }),
            o + ": key 'num_hidden_layers' is 1000000000, above the limit of 100000");
  EXPECT_EQ(parse_error("gpt2", [](json& j) { j["n_layer"] = 1e9; }),
            o + ": key 'n_layer' is 1000000000, above the limit of 100000");
  EXPECT_EQ(parse_error("mixtral", [](json& j) { j["num_local_experts"] = 1e9; }),
            o + ": key 'num_local_experts' is 1000000000, above the limit of 100000");
  EXPECT_EQ(parse_error("olmoe", [](json& j) { j["num_experts"] = 1e7; }),
            o + ": key 'num_experts' is 10000000, above the limit of 100000");
  EXPECT_EQ(parse_error("llama", [](json& j) { j["hidden_size"] = 1e12; }),
            o + ": key 'hidden_size' is 1000000000000, above the limit of 2147483647");
  EXPECT_EQ(parse_error("llama", [](json& j) { j["vocab_size"] = 1e12; }),
            o + ": key 'vocab_size' is 1000000000000, above the limit of 2147483647");
  EXPECT_EQ(parse_error("qwen2_moe", [](json& j) { j["moe_intermediate_size"] = int64_t{1} << 40; }),
            o + ": key 'moe_intermediate_size' is 1099511627776, above the limit of 2147483647");
  // Each size within bounds, their product not: the tensor count and the parameter count.
  EXPECT_EQ(parse_error("mixtral",
                        [](json& j) {
                          j["num_hidden_layers"] = 100000;
                          j["num_local_experts"] = 100;
                        }),
            o + ": implies 30700003 tensors (num_hidden_layers 100000, num_local_experts 100), above the limit of 1000000");
  const std::string big = parse_error("llama", [](json& j) { j["hidden_size"] = int64_t{1} << 30; });
  EXPECT_EQ(big.rfind(o + ": implies ", 0), 0u) << big;
  EXPECT_NE(big.find(" parameters, above the limit of 10.00T"), std::string::npos) << big;
  // moeforge: every expert width.
  json m = tiny_config_json("llama");
  m["model_type"] = "moeforge";
  m["base_model_type"] = "llama";
  m["num_experts"] = 3;
  m["num_experts_per_tok"] = 1;
  m["moe_layers"] = json::array({1});
  m["expert_sizes"] = json::array({json::array({10, int64_t{1} << 31, 18})});
  m["router"] = json{{"type", "linear"}};
  EXPECT_EQ(error_of([&] { parse_model_config(m, o); }),
            o + ": key 'expert_sizes[0][1]' is 2147483648, above the limit of 2147483647");
}

TEST(BadInput, ImpliedModelSizeMatchesTheTensorList) {
  using testing_fixtures::tiny_config_json;
  auto check = [](const json& j, const std::string& what) {
    const ModelConfig c = parse_model_config(j, what);
    const std::vector<TensorSpec> specs = expected_tensors(c);
    double required = 0;
    for (const auto& s : specs) required += s.required ? 1 : 0;
    const ImpliedModelSize size = implied_model_size(c);
    EXPECT_EQ(size.tensors, static_cast<double>(specs.size())) << what;
    EXPECT_EQ(size.required_tensors, required) << what;
    EXPECT_EQ(size.parameters, static_cast<double>(total_parameters(c))) << what;
  };
  for (const auto& family : testing_fixtures::tiny_families()) check(tiny_config_json(family), family);
  json j = tiny_config_json("llama");
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  check(j, "llama with biases");
  j = tiny_config_json("gpt2");
  j["tie_word_embeddings"] = false;
  check(j, "gpt2 untied");
  j = tiny_config_json("qwen2_moe");  // MoE on layers 1 and 3 by the step, 3 dense by mlp_only_layers
  j["num_hidden_layers"] = 4;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = json::array({3, 3, 7});
  check(j, "qwen2_moe step 2");
  for (const std::string router : {"linear", "mlp", "avgk"}) {
    j = tiny_config_json("llama");
    j["model_type"] = "moeforge";
    j["base_model_type"] = "llama";
    j["num_experts"] = 3;
    j["num_experts_per_tok"] = 1;
    j["moe_layers"] = json::array({1});
    j["expert_sizes"] = json::array({json::array({10, 20, 18})});
    j["router"] = json{{"type", router}};
    check(j, "moeforge " + router);
  }
}

TEST(BadInput, ConfigFarBeyondTheCheckpointNamesConfigJson) {
  using testing_fixtures::tiny_config_json;
  std::map<std::string, std::vector<int64_t>> present;
  for (const auto& s : expected_tensors(testing_fixtures::tiny_config("llama"))) present[s.name] = s.shape;
  json j = tiny_config_json("llama");
  j["num_hidden_layers"] = 50000;
  const ModelConfig big = parse_model_config(j, "big/config.json");
  EXPECT_EQ(error_of([&] { validate_tensors(big, present, "big"); }),
            "big/config.json: implies 387.20M parameters in 450003 tensors, far more than the checkpoint holds "
            "(19.62K parameters in 21 tensors)");
  // A small difference keeps the message that names the tensor.
  j["num_hidden_layers"] = 3;
  const ModelConfig three = parse_model_config(j, "three/config.json");
  EXPECT_EQ(error_of([&] { validate_tensors(three, present, "m"); }),
            "m: missing tensor model.layers.2.self_attn.q_proj.weight");
}

TEST(BadInput, CliInfoAndConvertRefuseAbsurdLayerAndExpertCounts) {
  for (const auto& [model, key] : std::vector<std::pair<std::string, std::string>>{
           {"tiny", "num_hidden_layers"}, {"tiny-mixtral", "num_local_experts"}}) {
    const std::string d = model_copy(model, "cli_" + key, [&key = key](json& c) { c[key] = 1e9; });
    const auto before = snapshot(d);
    const std::string msg = d + "/config.json: key '" + key + "' is 1000000000, above the limit of 100000";
    expect_refused(run_bounded("info " + d), 1, msg);
    const std::string out = fresh_dir("cli_" + key + "_out") + "/converted";
    expect_refused(run_bounded("convert " + d + " --out " + out), 1, msg);
    EXPECT_FALSE(path_exists(out));
    EXPECT_EQ(snapshot(d), before);
  }
}

TEST(BadInput, CliInfoRefusesAConfigFarBeyondItsCheckpoint) {
  // Within every limit, but 50000 layers over a 6-layer file.
  const std::string d = model_copy("tiny", "cli_far", [](json& c) { c["num_hidden_layers"] = 50000; });
  const auto before = snapshot(d);
  expect_refused(run_bounded("info " + d), 1, d + "/config.json: implies ", "far more than the checkpoint holds");
  EXPECT_EQ(snapshot(d), before);
}

TEST(BadInput, CliInitRefusesAbsurdSizes) {
  const std::string dir = fresh_dir("cli_init_sizes");
  struct Case {
    std::string family;
    std::string key;
    double value;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"tiny", "num_hidden_layers", 1e9, "key 'num_hidden_layers' is 1000000000, above the limit of 100000"},
      {"tiny-mixtral", "num_local_experts", 1e7, "key 'num_local_experts' is 10000000, above the limit of 100000"},
      {"tiny", "hidden_size", 1e12, "key 'hidden_size' is 1000000000000, above the limit of 2147483647"},
      {"tiny", "vocab_size", 1e12, "key 'vocab_size' is 1000000000000, above the limit of 2147483647"}};
  for (const auto& c : cases) {
    json cfg = read_json_file(source_model(c.family) + "/config.json");
    cfg[c.key] = c.value;
    const std::string path = dir + "/" + c.key + ".json", out = dir + "/out_" + c.key;
    write_json_file(path, cfg);
    const std::string text = read_file(path);
    expect_refused(run_bounded("init --config " + path + " --out " + out), 1, path + ": " + c.message);
    EXPECT_FALSE(path_exists(out)) << c.key;
    EXPECT_EQ(read_file(path), text);
  }
}

TEST(BadInput, CliInitRefusesAModelBeyondTheMemoryBudget) {
  const std::string dir = fresh_dir("cli_init_budget");
  json cfg = read_json_file(source_model("tiny") + "/config.json");
  // 132.65M parameters: 6 bytes each to initialise in bf16 (fp32 first, then converted).
  cfg["hidden_size"] = 1024;
  cfg["intermediate_size"] = 4096;
  cfg["num_hidden_layers"] = 4;
  cfg["vocab_size"] = 32000;
  cfg["tie_word_embeddings"] = false;
  const std::string path = dir + "/config.json", out = dir + "/out";
  write_json_file(path, cfg);
  expect_refused(run_bounded("init --config " + path + " --out " + out, "MOEFORGE_MAX_MEMORY=64MiB"), 1,
                 path + ": the model would need 759.05 MiB (132.65M parameters x 6 bytes to initialise), more than "
                        "the 64.00 MiB MOEFORGE_MAX_MEMORY allows");
  EXPECT_FALSE(path_exists(out));
  // A model within the budget is written.
  json small = testing_fixtures::tiny_config_json("llama");
  write_json_file(path, small);
  const CliRun r = run_bounded("init --config " + path + " --out " + out, "MOEFORGE_MAX_MEMORY=64MiB");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(path_exists(out + "/model.safetensors"));
  // A budget that is not a size is one line too.
  expect_refused(run_bounded("init --config " + path + " --out " + dir + "/out2", "MOEFORGE_MAX_MEMORY=lots"), 1,
                 "MOEFORGE_MAX_MEMORY: invalid size 'lots'");
}

TEST(BadInput, CliTrainRefusesAbsurdSizesAndModelsBeyondTheMemoryBudget) {
  const std::string dir = fresh_dir("cli_train_sizes");
  const std::string data = dir + "/train.jsonl", out = dir + "/run", path = dir + "/pretrain.json";
  write_file_atomic(data, "{\"text\": \"hello world\"}\n");
  write_pretrain_config(path, llama_section(1000000000000, 2, 8192), data, out);
  expect_refused(run_bounded("train --recipe pretrain --config " + path), 1,
                 path + ": key 'hidden_size' is 1000000000000, above the limit of 2147483647");
  write_pretrain_config(path, llama_section(64, 2, 1000000000000), data, out);
  expect_refused(run_bounded("train --recipe pretrain --config " + path), 1,
                 path + ": key 'vocab_size' is 1000000000000, above the limit of 2147483647");
  // 13.64M parameters x 16 bytes (fp32 weights, gradients, two AdamW moments) > 64 MiB.
  write_pretrain_config(path, llama_section(512, 2, 8192), data, out);
  expect_refused(run_bounded("train --recipe pretrain --config " + path, "MOEFORGE_MAX_MEMORY=64MiB"), 1,
                 path + ": the model would need ", "more than the 64.00 MiB MOEFORGE_MAX_MEMORY allows");
  EXPECT_FALSE(path_exists(out));
  EXPECT_EQ(read_file(data), "{\"text\": \"hello world\"}\n");
}

// ---- class 5: one line naming the file ----

namespace {
// models/tiny with one added token beyond the model's 8192 ids.
std::string tiny_with_large_tokenizer(const std::string& name) {
  const std::string d = model_copy("tiny", name);
  json tok = read_json_file(d + "/tokenizer.json");
  tok["added_tokens"].push_back({{"id", 9000},
                                 {"content", "<big>"},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", false}});
  write_json_file(d + "/tokenizer.json", tok);
  return d;
}
std::string too_large_tokenizer(const std::string& d) {
  return d + "/tokenizer.json: 9001 token ids, more than the 8192 of the model's vocabulary (vocab_size in " + d +
         "/config.json)";
}
}  // namespace

TEST(BadInput, PerplexityAndGenerateRefuseATokenizerLargerThanTheVocabulary) {
  const std::string d = tiny_with_large_tokenizer("tok_ppl");
  write_file_atomic(d + "/text.txt", "hello <big> world <big> again\n");
  const auto before = snapshot(d);
  expect_refused(run_bounded("perplexity " + d + " --text " + d + "/text.txt"), 1, too_large_tokenizer(d));
  expect_refused(run_bounded("generate " + d + " --prompt 'hi <big>' --max-new-tokens 1"), 1, too_large_tokenizer(d));
  EXPECT_EQ(snapshot(d), before);
}

TEST(BadInput, ProfileAndEvalRefuseATokenizerLargerThanTheVocabulary) {
  const std::string d = tiny_with_large_tokenizer("tok_profile");
  write_file_atomic(d + "/data.jsonl", "{\"text\": \"hello <big> world\"}\n");
  write_file_atomic(d + "/task.yaml",
                    "task: tiny_task\ndata_file: " + d +
                        "/task.jsonl\ndoc_to_text: \"{{q}}\"\ndoc_to_choice: [\"a\", \"b\"]\ndoc_to_target: 0\n");
  write_file_atomic(d + "/task.jsonl", "{\"q\": \"<big>\"}\n");
  const auto before = snapshot(d);
  const std::string out = fresh_dir("tok_profile_out") + "/profile";
  expect_refused(run_bounded("profile " + d + " --data " + d + "/data.jsonl --out " + out), 1, too_large_tokenizer(d));
  EXPECT_FALSE(path_exists(out));
  expect_refused(run_bounded("eval " + d + " --include " + d + "/task.yaml --tasks tiny_task"), 1,
                 too_large_tokenizer(d));
  EXPECT_EQ(snapshot(d), before);
}

TEST(BadInput, TokenizerIdsAboveTheLimitNameTheFile) {
  const std::string dir = fresh_dir("tok_ids");
  const std::string path = dir + "/tokenizer.json";
  // 2147483647 asked for a table of 2^31 strings; 4294967296 was silently truncated to 0.
  for (const std::string id : {"2147483647", "4294967296", "18446744073709551615", "16777216"}) {
    write_file_atomic(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": " + id + "}, \"merges\": []}}");
    EXPECT_EQ(error_of([&] { Tokenizer::load(path); }),
              path + ": model.vocab: id " + id + " of 'b' is above the limit of 16777215");
  }
  write_file_atomic(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                          "\"added_tokens\": [{\"id\": 2147483647, \"content\": \"<x>\"}]}");
  EXPECT_EQ(error_of([&] { Tokenizer::load(path); }),
            path + ": added token '<x>' has id 2147483647, above the limit of 16777215");
  // GPT-2 vocab.json + merges.txt.
  const std::string gpt2 = fresh_dir("tok_ids_gpt2");
  write_file_atomic(gpt2 + "/vocab.json", "{\"a\": 0, \"b\": 2147483647}");
  write_file_atomic(gpt2 + "/merges.txt", "#version: 0.2\n");
  EXPECT_EQ(error_of([&] { Tokenizer::load(gpt2); }),
            gpt2 + "/vocab.json: id 2147483647 of 'b' is above the limit of 16777215");
  // The same through the command line: one line, not "cannot create std::vector larger than max_size()".
  write_file_atomic(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 2147483647}, \"merges\": []}}");
  expect_refused(run_bounded("tokenize " + path + " --text ab"), 1,
                 path + ": model.vocab: id 2147483647 of 'b' is above the limit of 16777215");
  // Small ids still load.
  write_file_atomic(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []}}");
  EXPECT_EQ(Tokenizer::load(path)->vocab_size(), 2);
}

TEST(BadInput, YamlTaskTargetTooLargeNamesTheFile) {
  const std::string dir = fresh_dir("yaml_target");
  const std::string path = dir + "/task.yaml";
  write_file_atomic(dir + "/d.jsonl", "{\"q\": \"a\"}\n");
  const std::string yaml = "task: big_target\ndata_file: " + dir +
                           "/d.jsonl\ndoc_to_text: \"{{q}}\"\ndoc_to_choice: [\"x\", \"y\"]\n"
                           "doc_to_target: 99999999999999999999\n";
  write_file_atomic(path, yaml);
  const std::string msg =
      path + ": task 'big_target': 'doc_to_target' 99999999999999999999 is too large for a choice index";
  EXPECT_EQ(error_of([&] { eval::load_yaml_tasks(path); }), msg);
  expect_refused(run_bounded("eval " + source_model("tiny") + " --include " + path + " --tasks big_target"), 1, msg);
  EXPECT_EQ(read_file(path), yaml);
}

TEST(BadInput, EvalLimitNanIsAUsageError) {
  expect_refused(run_bounded("eval " + source_model("tiny") + " --tasks arc_easy --limit nan"), 2,
                 "--limit: nan must be >= 0");
}

TEST(BadInput, ShardSizeThatIsNotANumberIsAUsageError) {
  for (const std::string bad : {".", "..", "1.2.3GB", "GB", "", ".GB"}) {
    try {
      parse_size(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const UsageError& e) {
      EXPECT_EQ(std::string(e.what()), "invalid size '" + bad + "' (expected e.g. 5GB, 500MB, 1GiB)");
    }
  }
  EXPECT_THROW(parse_size("99999999999999999999TB"), UsageError);
  EXPECT_EQ(parse_size("1.5GB"), 1500000000ull);
  EXPECT_EQ(parse_size(".5KiB"), 512ull);
  EXPECT_EQ(parse_size("2."), 2ull);
  const std::string out = fresh_dir("shard_size") + "/converted";
  expect_refused(run_bounded("convert " + source_model("tiny") + " --out " + out + " --shard-size ."), 2,
                 "invalid size '.' (expected e.g. 5GB, 500MB, 1GiB)");
  EXPECT_FALSE(path_exists(out));
}

TEST(BadInput, UnsignedSafetensorsDtypeNamesTheFile) {
  const std::string d = model_copy("tiny", "st_u16", nullptr, /*copy_weights=*/true);
  const std::string path = d + "/model.safetensors";
  // The first BF16 tensor becomes U16 (same element size, same header length).
  std::string bytes = read_file(path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  const size_t at = bytes.find("\"BF16\"", 8);
  ASSERT_LT(at, 8 + n);
  bytes.replace(at, 6, "\"U16\" ");
  write_file_atomic(path, bytes);
  std::string name;
  const json header = json::parse(bytes.substr(8, n));
  for (auto it = header.begin(); it != header.end(); ++it)
    if (it.key() != "__metadata__" && it.value().at("dtype") == "U16") name = it.key();
  ASSERT_FALSE(name.empty());
  const std::string msg = path + ": tensor '" + name +
                          "' has dtype U16, which moeforge cannot load (libtorch has no unsigned type wider than U8)";
  EXPECT_EQ(error_of([&] { SafetensorsFile::open(path)->get(name); }), msg);
  const auto before = snapshot(d);
  const std::string out = fresh_dir("st_u16_out") + "/converted";
  expect_refused(run_bounded("convert " + d + " --out " + out), 1, msg);
  EXPECT_FALSE(path_exists(out));
  EXPECT_EQ(snapshot(d), before);
}

TEST(BadInput, TrainingSetSmallerThanOneBatchNamesItsFile) {
  const std::string dir = fresh_dir("train_small");
  const std::string data = dir + "/short.jsonl", out = dir + "/run", path = dir + "/pretrain.json";
  write_file_atomic(data, "{\"text\": \"hi\"}\n");
  write_pretrain_config(path, llama_section(32, 1, 8192), data, out);
  expect_refused(run_bounded("train --recipe pretrain --config " + path), 1, data + ": 1 document of ",
                 "tokens makes 0 training sequences of 17 tokens, fewer than one batch of 2");
  EXPECT_FALSE(path_exists(out));
  EXPECT_EQ(read_file(data), "{\"text\": \"hi\"}\n");
}
