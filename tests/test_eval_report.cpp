// The results JSON against lm-eval's: a results file as lm-eval 0.4.x writes it (reconstructed from
// lm-eval v0.4.11's evaluator.simple_evaluate / evaluator_utils / EvaluationTracker and the task
// YAMLs, see docs/eval.md "Outputs"), checked key by key including "configs"; the Python-compatible
// JSON writer and float repr the sample hashes need.
#include <gtest/gtest.h>

#include <cstddef>
#include <set>

#include "eval/evaluate.h"
#include "eval/report.h"
#include "eval/samples.h"
#include "eval_fakes.h"
#include "util/fs.h"

using namespace mf;
using namespace mf::eval;
using oj = nlohmann::ordered_json;

namespace {

// `lm_eval --model hf --model_args pretrained=m,dtype=float32 --tasks arc_easy,boolq --limit 100
//  --output_path out` (lm-eval 0.4.11, HF model): the file EvaluationTracker.save_results_aggregated
// writes, with the numbers of the report built below. Values that depend on the machine or the time
// (date, env info, token strings, times) are placeholders; their types are what is checked.
const char* kLmEvalResults = R"JSON({
  "results": {
    "arc_easy": {"alias": "arc_easy", "acc,none": 0.75, "acc_stderr,none": 0.04351941398892446,
                 "acc_norm,none": 0.7, "acc_norm_stderr,none": 0.046056618647183825},
    "boolq": {"alias": "boolq", "acc,none": 0.6, "acc_stderr,none": 0.049236596391733084}
  },
  "group_subtasks": {"boolq": [], "arc_easy": []},
  "configs": {
    "arc_easy": {
      "task": "arc_easy", "tag": ["ai2_arc"], "dataset_path": "allenai/ai2_arc", "dataset_name": "ARC-Easy",
      "training_split": "train", "validation_split": "validation", "test_split": "test",
      "doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_target": "{{choices.label.index(answerKey)}}",
      "unsafe_code": false, "doc_to_choice": "{{choices.text}}", "description": "", "target_delimiter": " ",
      "fewshot_delimiter": "\n\n", "num_fewshot": 0,
      "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": true},
                      {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": true}],
      "output_type": "multiple_choice", "repeats": 1, "should_decontaminate": true,
      "doc_to_decontamination_query": "Question: {{question}}\nAnswer:",
      "metadata": {"version": 1.0, "pretrained": "m", "dtype": "float32"}
    },
    "boolq": {
      "task": "boolq", "tag": ["super-glue-lm-eval-v1"], "dataset_path": "aps/super_glue", "dataset_name": "boolq",
      "training_split": "train", "validation_split": "validation",
      "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:", "doc_to_target": "label",
      "unsafe_code": false, "doc_to_choice": ["no", "yes"], "description": "", "target_delimiter": " ",
      "fewshot_delimiter": "\n\n", "num_fewshot": 0, "metric_list": [{"metric": "acc"}],
      "output_type": "multiple_choice", "repeats": 1, "should_decontaminate": true,
      "doc_to_decontamination_query": "passage",
      "metadata": {"version": 2.0, "pretrained": "m", "dtype": "float32"}
    }
  },
  "versions": {"arc_easy": 1.0, "boolq": 2.0},
  "n-shot": {"arc_easy": 0, "boolq": 0},
  "higher_is_better": {"arc_easy": {"acc": true, "acc_norm": true}, "boolq": {"acc": true}},
  "n-samples": {"arc_easy": {"original": 2376, "effective": 100}, "boolq": {"original": 3270, "effective": 100}},
  "config": {
    "model": "hf", "model_args": "pretrained=m,dtype=float32", "model_num_parameters": 8391936,
    "model_dtype": "torch.float32", "model_revision": "main", "model_sha": "", "batch_size": 1,
    "batch_sizes": [], "device": "cpu", "use_cache": null, "limit": 100.0, "bootstrap_iters": 100000,
    "gen_kwargs": null, "random_seed": 0, "numpy_seed": 1234, "torch_seed": 1234, "fewshot_seed": 1234
  },
  "git_hash": "4e7e0d4", "date": 1717171717.5, "pretty_env_info": "PyTorch version: 2.4.0 ...",
  "transformers_version": "4.44.2", "lm_eval_version": "0.4.11", "upper_git_hash": null,
  "tokenizer_pad_token": ["<|end_of_text|>", "1"], "tokenizer_eos_token": ["<|end_of_text|>", "1"],
  "tokenizer_bos_token": ["<|begin_of_text|>", "0"], "eot_token_id": 1, "max_length": 512,
  "task_hashes": {}, "model_source": "hf", "model_name": "m", "model_name_sanitized": "m",
  "system_instruction": null, "system_instruction_sha": null, "fewshot_as_multiturn": false,
  "chat_template": null, "chat_template_sha": null, "start_time": 12.5, "end_time": 99.25,
  "total_evaluation_time_seconds": "86.75"
})JSON";

// Keys whose value depends on the machine, the time or the backend: only the JSON type is compared
// (null is accepted where lm-eval writes None when the value is unknown).
const std::set<std::string> kTypeOnly = {
    "/config/model", "/config/batch_size", "/config/device", "/config/limit", "/config/model_dtype",
    "/git_hash", "/date", "/pretty_env_info", "/transformers_version", "/lm_eval_version", "/upper_git_hash",
    "/tokenizer_pad_token", "/tokenizer_eos_token", "/tokenizer_bos_token", "/eot_token_id", "/max_length",
    "/model_source", "/start_time", "/end_time", "/total_evaluation_time_seconds"};
// HFLM.get_model_info() keys: lm-eval writes them only for models that report them (not for vllm,
// gguf or API models), moeforge does not.
const std::set<std::string> kMayBeAbsent = {"/config/model_num_parameters", "/config/model_revision",
                                            "/config/model_sha"};

void compare(const oj& want, const oj& got, const std::string& path, std::vector<std::string>& problems) {
  if (kTypeOnly.count(path)) {
    // batch_size: lm-eval writes an int or a string ("auto", "8"); moeforge "tokens:<budget>".
    const bool scalar_ok = path == "/config/batch_size" && got.is_primitive();
    const bool same_kind = (want.is_number() && got.is_number()) || (want.is_string() && got.is_string()) ||
                           want.type() == got.type() || got.is_null() || scalar_ok;
    if (!same_kind) problems.push_back(path + ": type " + got.type_name() + ", lm-eval " + want.type_name());
    return;
  }
  if (want.is_object()) {
    if (!got.is_object()) {
      problems.push_back(path + ": not an object");
      return;
    }
    for (auto it = want.begin(); it != want.end(); ++it) {
      const std::string p = path + "/" + it.key();
      if (!got.contains(it.key())) {
        if (!kMayBeAbsent.count(p)) problems.push_back(p + ": missing");
        continue;
      }
      compare(it.value(), got.at(it.key()), p, problems);
    }
    return;
  }
  if (want.is_array()) {
    if (!got.is_array() || got.size() != want.size()) {
      problems.push_back(path + ": array differs: " + got.dump());
      return;
    }
    for (size_t i = 0; i < want.size(); ++i) compare(want[i], got[i], path + "/" + std::to_string(i), problems);
    return;
  }
  if (want.is_number() && got.is_number()) {
    if (want.get<double>() != got.get<double>()) problems.push_back(path + ": " + got.dump() + " != " + want.dump());
    return;
  }
  if (want != got) problems.push_back(path + ": " + got.dump() + " != " + want.dump());
}

EvalReport two_task_report() {
  TaskRegistry reg = TaskRegistry::builtin();
  EvalReport rep;
  TaskResult arc, boolq;
  arc.name = arc.alias = "arc_easy";
  arc.version = 1.0;
  arc.samples = 100;
  arc.original_samples = 2376;
  arc.metrics = {{"acc", 0.75, true, 0.04351941398892446, true}, {"acc_norm", 0.7, true, 0.046056618647183825, true}};
  boolq.name = boolq.alias = "boolq";
  boolq.version = 2.0;
  boolq.samples = 100;
  boolq.original_samples = 3270;
  boolq.metrics = {{"acc", 0.6, true, 0.049236596391733084, true}};
  rep.results = {arc, boolq};
  rep.group_subtasks = {{"boolq", {}}, {"arc_easy", {}}};
  rep.configs["arc_easy"] = task_config_json(*reg.find_task("arc_easy"));
  rep.configs["boolq"] = task_config_json(*reg.find_task("boolq"));
  rep.start_unix = 1717171717.5;
  rep.seconds = 86.75;
  return rep;
}

}  // namespace

TEST(EvalReportJson, MatchesAnLmEvalResultsFileKeyByKey) {
  EvalOptions opt;
  opt.limit = 100;
  json settings = settings_json(opt, {"arc_easy", "boolq"}, 512);
  settings["model"] = "m";
  settings["model_args"] = "pretrained=m,dtype=float32";
  settings["model_dtype"] = "torch.float32";
  settings["device"] = "cpu";
  json tok = {{"tokenizer_pad_token", {"<|pad|>", "2"}},
              {"tokenizer_eos_token", {"<|end_of_text|>", "1"}},
              {"tokenizer_bos_token", {"<|begin_of_text|>", "0"}},
              {"eot_token_id", 1},
              {"max_length", 512}};
  const oj got = results_json(two_task_report(), settings, tok);
  const oj want = oj::parse(kLmEvalResults);
  std::vector<std::string> problems;
  compare(want, got, "", problems);
  for (const auto& p : problems) ADD_FAILURE() << p;
  // lm-eval writes "groups" only when a group was aggregated, and no "samples" inside results entries.
  EXPECT_FALSE(got.contains("groups"));
  for (auto it = got.at("results").begin(); it != got.at("results").end(); ++it)
    EXPECT_FALSE(it.value().contains("samples")) << it.key();
  // The same top-level order as lm-eval (moeforge's additions come last).
  std::vector<std::string> order;
  for (auto it = got.begin(); it != got.end(); ++it) order.push_back(it.key());
  std::vector<std::string> lm_order;
  for (auto it = want.begin(); it != want.end(); ++it) lm_order.push_back(it.key());
  ASSERT_GE(order.size(), lm_order.size());
  EXPECT_EQ(std::vector<std::string>(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(lm_order.size())),
            lm_order);
  EXPECT_EQ(got.at("total_evaluation_time_seconds"), "86.75");  // Python str(float)
  EXPECT_EQ(got.at("config").at("batch_size"), "tokens:4096");  // moeforge batches by tokens
  EXPECT_EQ(got.at("config").at("bos"), "auto");                // moeforge's settings follow the seeds
  // configs keep TaskConfig's field order.
  std::vector<std::string> cfg_keys;
  for (auto it = got["configs"]["arc_easy"].begin(); it != got["configs"]["arc_easy"].end(); ++it)
    cfg_keys.push_back(it.key());
  std::vector<std::string> lm_cfg_keys;
  for (auto it = want["configs"]["arc_easy"].begin(); it != want["configs"]["arc_easy"].end(); ++it)
    lm_cfg_keys.push_back(it.key());
  EXPECT_EQ(cfg_keys, lm_cfg_keys);
}

TEST(EvalReportJson, GroupsAsLmEvalWritesThem) {
  // Two MMLU subjects under a two-level group: "groups" appears, group versions are integers (the
  // mmlu YAMLs say `version: 2`), group_subtasks lists the groups depth first, reversed.
  const std::string dir = ::testing::TempDir() + "mf_eval_report_groups";
  make_dirs(dir + "/mmlu/all");
  std::string rows;
  for (int i = 0; i < 4; ++i)
    rows += R"({"question":"q)" + std::to_string(i) + R"(","subject":")" + (i < 2 ? "anatomy" : "astronomy") +
            R"(","choices":["a","b","c","d"],"answer":)" + std::to_string(i % 4) + "}\n";
  write_file_atomic(dir + "/mmlu/all/test.jsonl", rows);
  TaskRegistry reg = TaskRegistry::builtin();
  reg.add_group({"mini", "", {"mmlu_anatomy", "mmlu_astronomy"}, true, 2.0});
  reg.add_group({"top", "", {"mini"}, true, 2.0});
  mf::eval::testing::PieceEncoder enc;
  mf::eval::testing::HistoryModel m(512, 256);
  EvalOptions opt;
  opt.data_dir = dir;
  opt.engine.progress = false;
  const oj j = results_json(evaluate(reg, {"top"}, enc, m, opt), json::object());
  ASSERT_TRUE(j.contains("groups"));
  EXPECT_TRUE(j.at("groups").contains("top"));
  ASSERT_TRUE(j.at("groups").contains("mini"));
  EXPECT_EQ(j.at("groups").at("mini").at("alias"), " - mini");
  EXPECT_TRUE(j.at("versions").at("top").is_number_integer());
  EXPECT_TRUE(j.at("versions").at("mmlu_anatomy").is_number_float());
  EXPECT_FALSE(j.at("n-shot").contains("top"));     // n-shot: tasks only
  EXPECT_FALSE(j.at("n-samples").contains("top"));  // n-samples: tasks only
  EXPECT_EQ(j.at("higher_is_better").at("top"), (oj{{"acc", true}}));
  std::vector<std::string> keys;
  for (auto it = j.at("group_subtasks").begin(); it != j.at("group_subtasks").end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"mini", "top"}));
  EXPECT_EQ(j.at("group_subtasks").at("mini"), (oj::array({"mmlu_anatomy", "mmlu_astronomy"})));
  // configs: leaf tasks only, sorted; the mmlu subject's alias, tag, description and fewshot_config.
  ASSERT_EQ(j.at("configs").size(), 2u);
  const oj& c = j.at("configs").at("mmlu_anatomy");
  EXPECT_EQ(c.at("task_alias"), "anatomy");
  EXPECT_EQ(c.at("tag"), "mmlu_stem_tasks");
  EXPECT_EQ(c.at("dataset_name"), "anatomy");
  EXPECT_EQ(c.at("description"), "The following are multiple choice questions (with answers) about anatomy.\n\n");
  EXPECT_EQ(c.at("fewshot_config"), (oj{{"sampler", "first_n"}}));
  EXPECT_EQ(c.at("metadata"), (oj{{"version", 1.0}}));
}

TEST(EvalReportJson, ModelArgsAndNames) {
  EXPECT_EQ(parse_model_args("pretrained=/a/b,dtype=float32,add_bos_token=True,max_length=512,x=0.5").dump(),
            R"({"pretrained":"/a/b","dtype":"float32","add_bos_token":true,"max_length":512,"x":0.5})");
  EXPECT_EQ(parse_model_args("").size(), 0u);
  EXPECT_EQ(sanitize_model_name("models/tiny"), "models__tiny");
  EXPECT_EQ(sanitize_model_name("a:/|b"), "a__b");
}

TEST(EvalPyJson, FloatReprMatchesCPython) {
  // repr() printed by CPython 3.11.
  const std::vector<std::pair<double, std::string>> cases = {
      {0.0, "0.0"},       {-0.0, "-0.0"},       {1.0, "1.0"},
      {0.1, "0.1"},       {1e-4, "0.0001"},     {1e-5, "1e-05"},
      {1.5e-7, "1.5e-07"}, {123456789.125, "123456789.125"}, {1e15, "1000000000000000.0"},
      {1e16, "1e+16"},    {1.2345678901234567e16, "1.2345678901234568e+16"},
      {-3.4567890167236328, "-3.456789016723633"}, {2.5e-300, "2.5e-300"},
      {1.7976931348623157e308, "1.7976931348623157e+308"}, {5e-324, "5e-324"}, {100.0, "100.0"}};
  for (const auto& [v, s] : cases) EXPECT_EQ(py_float_repr(v), s);
}

TEST(EvalPyJson, DumpsMatchesCPython) {
  // json.dumps(v, ensure_ascii=False) and json.dumps(v, indent=2, ensure_ascii=False), CPython 3.11.
  oj v = oj::parse(R"({"a":[1,2.5,{"b":null,"c":true}],"d":"x\ny\"\\\t\u0001\u00e9","e":[],"f":{}})");
  EXPECT_EQ(py_json_dumps(v), "{\"a\": [1, 2.5, {\"b\": null, \"c\": true}], \"d\": \"x\\ny\\\"\\\\\\t\\u0001\xc3\xa9\", "
                              "\"e\": [], \"f\": {}}");
  EXPECT_EQ(py_json_dumps(v, 2),
            "{\n  \"a\": [\n    1,\n    2.5,\n    {\n      \"b\": null,\n      \"c\": true\n    }\n  ],\n"
            "  \"d\": \"x\\ny\\\"\\\\\\t\\u0001\xc3\xa9\",\n  \"e\": [],\n  \"f\": {}\n}");
}
