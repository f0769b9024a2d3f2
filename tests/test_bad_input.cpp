// Bad input and user mistakes (issue 22): JSON nested absurdly deep or holding numbers out of range,
// safetensors headers with very many entries, FIFOs where model files belong, outputs pointed at
// a user's file, model sizes that would exhaust memory before any check (class 4) and errors that
// did not name their file (class 5). Each is refused with one line naming the file, without
// crashing, hanging or touching a pre-existing file.
#include "bad_input_util.h"

using namespace mf::bad_input;

// ---- JSON: depth limit and number overflow ----

TEST(BadInput, JsonNestedDeeperThanLimitNamesTheFile) {
  const std::string path = fresh_dir("json_deep") + "/config.json";
  // An unused key nested 300k levels deep used to crash (recursive copy of the value).
  write_file_atomic(path, "{\"model_type\": \"llama\", \"unused\": " + nested(300000) + "}");
  const std::string msg = error_of([&] { read_json_file(path); });
  EXPECT_EQ(msg, path + ": invalid JSON: nested deeper than 1000 levels");
  EXPECT_EQ(error_of([&] { parse_json(nested(1001), "x.json"); }), "x.json: invalid JSON: nested deeper than 1000 levels");
}

TEST(BadInput, JsonAtTheDepthLimitAndBracketsInStringsAreAccepted) {
  EXPECT_EQ(parse_json(nested(1000), "x.json").size(), 1u);
  // Brackets inside strings do not count, escaped quotes do not end a string ...
  const std::string brackets(300000, '[');
  json j = parse_json("{\"s\": \"\\\"" + brackets + "\", \"t\": [1]}", "x.json");
  EXPECT_EQ(j.at("s").get<std::string>().size(), brackets.size() + 1);
  // ... and an escaped backslash does not swallow the closing quote.
  EXPECT_EQ(error_of([&] { parse_json("{\"s\": \"\\\\\", \"t\": " + nested(1001) + "}", "x.json"); }),
            "x.json: invalid JSON: nested deeper than 1000 levels");
}

TEST(BadInput, JsonNumberOverflowNamesTheFile) {
  const std::string path = fresh_dir("json_overflow") + "/config.json";
  for (const std::string number : {"1e400", "-1e400"}) {
    write_file_atomic(path, "{\"hidden_size\": " + number + "}");
    const std::string msg = error_of([&] { read_json_file(path); });
    EXPECT_EQ(msg.rfind(path + ": invalid JSON: ", 0), 0u) << msg;
    EXPECT_NE(msg.find("number overflow"), std::string::npos) << msg;
    EXPECT_NE(msg.find(number), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(BadInput, JsonlDeepLineAndOverflowNameFileAndLine) {
  const std::string dir = fresh_dir("jsonl");
  const std::string deep = dir + "/deep.jsonl", big = dir + "/big.jsonl";
  write_file_atomic(deep, "{\"text\": \"ok\"}\n{\"text\": " + nested(300000) + "}\n");
  write_file_atomic(big, "{\"text\": \"ok\"}\n\n{\"text\": \"x\", \"score\": 1e400}\n");
  auto each = [](const std::string& path) { for_each_jsonl_object(path, [](const json&, int64_t) { return true; }); };
  EXPECT_EQ(error_of([&] { each(deep); }), deep + ":2: invalid JSON: nested deeper than 1000 levels");
  EXPECT_EQ(error_of([&] { eval::load_jsonl(deep); }), deep + ":2: invalid JSON: nested deeper than 1000 levels");
  const std::string msg = error_of([&] { each(big); });
  EXPECT_EQ(msg.rfind(big + ":3: invalid JSON: ", 0), 0u) << msg;
  EXPECT_NE(msg.find("number overflow"), std::string::npos) << msg;
  EXPECT_EQ(error_of([&] { eval::load_jsonl(big); }), msg);
}

// ---- safetensors headers: depth, overflow, linear-time validation ----

TEST(BadInput, SafetensorsHeaderNestingAndOverflowAreRefused) {
  std::vector<StTensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  EXPECT_EQ(error_of([&] {
              parse_safetensors_header("{\"a\": " + nested(300000) + "}", 0, "deep.safetensors", tensors, metadata);
            }),
            "deep.safetensors: header nests deeper than 64 levels");
  const std::string msg = error_of([&] {
    parse_safetensors_header(R"({"a":{"dtype":"U8","shape":[1e400],"data_offsets":[0,1]}})", 1, "big.safetensors",
                             tensors, metadata);
  });
  EXPECT_EQ(msg.rfind("big.safetensors: header is not valid JSON: ", 0), 0u) << msg;
  EXPECT_NE(msg.find("number overflow"), std::string::npos) << msg;
  // The same through a file: the message names it.
  const std::string path = fresh_dir("st_deep") + "/model.safetensors";
  write_file_atomic(path, safetensors_bytes("{\"a\": " + nested(300000) + "}", ""));
  EXPECT_EQ(error_of([&] { SafetensorsFile::open(path); }), path + ": header nests deeper than 64 levels");
}

TEST(BadInput, SafetensorsHeaderWith100kTensorsOpensInLinearTime) {
  // 100k entries (about 7 MB of header) took more than a minute when the duplicate-name check
  // went through nlohmann's callback parser (quadratic). The bound below is loose on purpose:
  // it catches a quadratic regression, not a slow machine.
  const size_t n = 100000;
  const std::string path = fresh_dir("st_many") + "/model.safetensors";
  write_file_atomic(path, safetensors_bytes(many_tensors_header(n), std::string(n, '\x07')));
  const auto start = std::chrono::steady_clock::now();
  auto st = SafetensorsFile::open(path);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 30.0);
  ASSERT_EQ(st->tensors().size(), n);
  const StTensorInfo* last = st->find("t099999");
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(last->begin, n - 1);
  EXPECT_EQ(st->raw(*last)[0], 7);
}

TEST(BadInput, SafetensorsDuplicateNameAmong100kTensorsIsFound) {
  const size_t n = 100000;
  const std::string path = fresh_dir("st_dup") + "/model.safetensors";
  write_file_atomic(path, safetensors_bytes(many_tensors_header(n, "t000000"), std::string(n, '\0')));
  const std::string msg = error_of([&] { SafetensorsFile::open(path); });
  EXPECT_EQ(msg, path + ": duplicate tensor name 't000000' in header");
}

// ---- FIFOs and other non-regular files where inputs belong ----

TEST(BadInput, FifoInputsAreRefusedWithoutBlocking) {
  const std::string dir = fresh_dir("fifo");
  const std::string fifo = dir + "/model.safetensors";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string refused = fifo + ": not a regular file";
  EXPECT_EQ(error_without_blocking(fifo, [&] { SafetensorsFile::open(fifo); }), refused);
  EXPECT_EQ(error_without_blocking(fifo, [&] { Checkpoint::open(fifo); }), refused);
  EXPECT_EQ(error_without_blocking(fifo, [&] { read_file(fifo); }), refused);
  EXPECT_EQ(error_without_blocking(fifo, [&] { read_json_file(fifo); }), refused);
  EXPECT_EQ(error_without_blocking(fifo, [&] { sha256_file(fifo); }), refused);
  EXPECT_EQ(error_without_blocking(fifo, [&] {
              for_each_jsonl_object(fifo, [](const json&, int64_t) { return true; });
            }),
            refused);
  EXPECT_EQ(error_without_blocking(fifo, [&] { eval::load_jsonl(fifo); }), refused);
  // Directories keep their own message.
  EXPECT_EQ(error_of([&] { read_file(dir); }), dir + ": is a directory, expected a file");
}

TEST(BadInput, CliInfoRefusesFifoModelFilesAndDeepConfig) {
  const std::string tiny = std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny";
  // config.json is a FIFO.
  const std::string a = fresh_dir("cli_fifo_config");
  ASSERT_EQ(::mkfifo((a + "/config.json").c_str(), 0600), 0);
  CliRun r = run_bounded("info " + a);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out, "error: " + a + "/config.json: not a regular file\n");
  // model.safetensors is a FIFO.
  const std::string b = fresh_dir("cli_fifo_weights");
  copy_file(tiny + "/config.json", b + "/config.json");
  ASSERT_EQ(::mkfifo((b + "/model.safetensors").c_str(), 0600), 0);
  r = run_bounded("info " + b);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out, "error: " + b + "/model.safetensors: not a regular file\n");
  // config.json with an unused key nested 300k levels deep.
  const std::string c = fresh_dir("cli_deep_config");
  json cfg = read_json_file(tiny + "/config.json");
  std::string text = cfg.dump();
  text.insert(text.size() - 1, ", \"unused\": " + nested(300000));
  write_file_atomic(c + "/config.json", text);
  copy_file(tiny + "/model.safetensors", c + "/model.safetensors");
  r = run_bounded("info " + c);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out, "error: " + c + "/config.json: invalid JSON: nested deeper than 1000 levels\n");
}

// ---- outputs never replace a user's file ----

TEST(BadInput, OutputDirNeverReplacesAUserFile) {
  const std::string dir = fresh_dir("out_file");
  const std::string f = dir + "/precious";
  write_file_atomic(f, "user data");
  EXPECT_EQ(error_of([&] { AtomicDir out(f); }), f + kNotOverwritten);
  EXPECT_EQ(error_of([&] { AtomicDir out(f + "/"); }), f + kNotOverwritten);
  EXPECT_EQ(read_file(f), "user data");
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"precious"});  // no temporary left behind

  // A file that appears while the output is being written is not replaced at commit either.
  const std::string g = dir + "/later";
  EXPECT_EQ(error_of([&] {
              AtomicDir out(g);
              write_file_atomic(path_join(out.path(), "x"), "new");
              write_file_atomic(g, "user data");
              out.commit();
            }),
            g + kNotOverwritten);
  EXPECT_EQ(read_file(g), "user data");
  EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"later", "precious"}));

  // An earlier output directory is still replaced as a whole.
  const std::string h = dir + "/out";
  make_dirs(h);
  write_file_atomic(h + "/old", "1");
  {
    AtomicDir out(h);
    write_file_atomic(path_join(out.path(), "new"), "2");
    out.commit();
  }
  EXPECT_EQ(list_dir(h), std::vector<std::string>{"new"});
}

TEST(BadInput, CliConvertAndProfileKeepAUserFileAtOut) {
  const std::string tiny = std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny";
  const std::string dir = fresh_dir("cli_out_file");
  const std::string f = dir + "/notes.txt", data = dir + "/data.jsonl";
  write_file_atomic(f, "user data\n");
  write_file_atomic(data, "{\"text\": \"hello world\"}\n");
  CliRun r = run_bounded("convert " + tiny + " --out " + f + " --dtype fp32");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out, "error: " + f + kNotOverwritten + "\n");
  r = run_bounded("profile " + tiny + " --data " + data + " --out " + f);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out, "error: " + f + kNotOverwritten + "\n");
  EXPECT_EQ(read_file(f), "user data\n");
  EXPECT_EQ(list_dir(dir), (std::vector<std::string>{"data.jsonl", "notes.txt"}));
}

// ---- class 4: sizes validated before anything is allocated ----

// ---- a tokenizer regex that backtracks catastrophically ----

TEST(BadInput, CatastrophicTokenizerRegexNamesTheFileQuickly) {
  const std::string dir = fresh_dir("regex_backtracking");
  json tok = read_json_file(std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny/tokenizer.json");
  tok["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(a+)+$"}}}, {"behavior", "Isolated"},
                          {"invert", false}};
  const std::string path = dir + "/tokenizer.json";
  write_file_atomic(path, tok.dump());
  auto tokenizer = Tokenizer::load(path);
  // Matches that end in time still work.
  EXPECT_FALSE(tokenizer->encode("aaaa").empty());
  // 40 'a' then 'b': 2^40 ways to split the run before the match fails; PCRE2's match limit stops it.
  const std::string text = std::string(40, 'a') + "b";
  const std::string msg = path +
                          ": regex '(a+)+$' failed on this input: match limit exceeded (catastrophic backtracking: "
                          "rewrite the pattern)";
  EXPECT_EQ(error_of([&] { tokenizer->encode(text); }), msg);
  write_file_atomic(dir + "/in.txt", text);
  expect_refused(run_bounded("tokenize " + path + " --file " + dir + "/in.txt"), 1, msg);
}

// ---- yaml-cpp 0.7 loops forever on some invalid streams (jbeder/yaml-cpp#1040) ----

TEST(BadInput, TaskYamlThatLoopsYamlCppIsAnErrorNamingTheFile) {
  const std::string dir = fresh_dir("yaml_loop");
  const std::string path = dir + "/task.yaml";
  for (const std::string text : {",", "task: a\n---\n,\n", "# comment\n,"}) {
    write_file_atomic(path, text);
    const std::string err = error_of([&] { eval::load_yaml_tasks(path); });
    EXPECT_TRUE(starts_with(err, path + ": invalid YAML: ")) << err;
    EXPECT_NE(err.find("no document can start here"), std::string::npos) << err;
    expect_refused(run_bounded("eval " + source_model("tiny") + " --include " + path + " --tasks a"), 1,
                   path + ": invalid YAML: ");
  }
  // Empty documents between separators are still fine.
  write_file_atomic(path, "---\n---\ntask: a\ndata_file: d.jsonl\ndoc_to_text: x\ndoc_to_choice: [a, b]\n"
                          "doc_to_target: 0\n---\n");
  EXPECT_EQ(eval::load_yaml_tasks(path).size(), 1u);
}
