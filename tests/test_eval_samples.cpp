// --log-samples: lm-eval-shaped per-sample JSONL files. Every reported metric (acc, acc_norm,
// perplexity, word/byte perplexity, bits_per_byte and their standard errors) is recomputed from the
// files alone and compared with the report; hashes are checked against values computed by CPython.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "eval/evaluate.h"
#include "eval/report.h"
#include "eval/samples.h"
#include "eval/text.h"
#include "eval_fakes.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/str.h"

using namespace mf;
using namespace mf::eval;
using oj = nlohmann::ordered_json;

namespace {

const std::string kBench = std::string(MOEFORGE_TEST_DATA) + "/benchmarks";

// The hand-written HellaSwag document of test_eval_tasks.cpp (HF Rowan/hellaswag layout).
const char* kHellaswagDoc =
    R"({"ind":4,"activity_label":"Removing ice from car","ctx_a":"Then, the man writes over the snow covering )"
    R"(the window of a car, and a woman wearing winter clothes smiles.","ctx_b":"then","ctx":"unused",)"
    R"("endings":[", the man adds wax to the windshield and cuts it.","Scrape it [title] Remove the ice [step] Done.",)"
    R"(" , the man puts on a christmas coat, knitted with netting.",", the man continues  removing the snow on his car."],)"
    R"("label":"3","split":"val","split_type":"indomain","source_id":"activitynet~v_-1IBHYS3L-Y"})";

std::string data_dir() {
  const std::string dir = ::testing::TempDir() + "mf_eval_samples_data";
  for (const char* f : {"arc_easy/test.jsonl", "piqa/validation.jsonl", "sciq/test.jsonl",
                        "winogrande/validation.jsonl", "boolq/validation.jsonl", "wikitext2/wiki.test.raw"}) {
    make_dirs(parent_dir(dir + "/" + f));
    copy_file(kBench + "/" + f, dir + "/" + f);
  }
  make_dirs(dir + "/hellaswag");
  write_file_atomic(dir + "/hellaswag/validation.jsonl", std::string(kHellaswagDoc) + "\n");
  make_dirs(dir + "/lambada_openai");
  write_file_atomic(dir + "/lambada_openai/test.jsonl",
                    "{\"text\": \"he said , \\\"go to the  store\\\" and left with Jack\"}\n"
                    "{\"text\": \"the cat sat on the mat\"}\n"
                    "{\"text\": \"a b c d e f g\"}\n");
  return dir;
}

double from_repr(const oj& s) { return std::stod(s.get<std::string>()); }

// numpy.argmax: the first maximum.
int64_t first_max(const std::vector<double>& v) {
  size_t best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[best]) best = i;
  return static_cast<int64_t>(best);
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double stderr_of_mean(const std::vector<double>& v) {
  const double m = mean(v);
  double ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  return std::sqrt(ss / static_cast<double>(v.size() - 1)) / std::sqrt(static_cast<double>(v.size()));
}

std::vector<oj> read_lines(const std::string& path) {
  std::vector<oj> out;
  for (const auto& line : split(read_file(path), '\n'))
    if (!line.empty()) out.push_back(oj::parse(line));
  return out;
}

void expect_metric(const TaskResult& r, const std::string& name, double value, double se, bool has_se) {
  const MetricResult* m = r.find(name);
  ASSERT_NE(m, nullptr) << r.name << " " << name;
  EXPECT_NEAR(m->value, value, 1e-12 * std::max(1.0, std::fabs(value))) << r.name << " " << name;
  EXPECT_EQ(m->has_stderr, has_se) << r.name << " " << name;
  if (has_se) EXPECT_NEAR(m->stderr, se, 1e-12 * std::max(1.0, std::fabs(se))) << r.name << " " << name;
}

}  // namespace

TEST(EvalSamples, EveryMetricRecomputedFromTheLogFiles) {
  const std::string dir = data_dir();
  const std::string out = ::testing::TempDir() + "mf_eval_samples_out";
  remove_all(out);
  TaskRegistry reg = TaskRegistry::builtin();
  mf::eval::testing::PieceEncoder enc;
  mf::eval::testing::HistoryModel model(512, 256);
  EvalOptions opt;
  opt.data_dir = dir;
  opt.engine.progress = false;
  opt.bootstrap_iters = 2000;
  opt.log_samples = true;
  const std::vector<std::string> tasks = {"arc_easy", "piqa",      "sciq",           "winogrande",
                                          "boolq",    "hellaswag", "lambada_openai", "wikitext"};
  EvalReport rep = evaluate(reg, tasks, enc, model, opt);
  ASSERT_TRUE(rep.failures.empty()) << rep.failures[0].message;
  const auto written = write_sample_files(rep, out);
  ASSERT_EQ(written.size(), tasks.size());
  const auto names = list_dir(out);
  ASSERT_EQ(names.size(), tasks.size());

  for (const TaskResult& r : rep.results) {
    // lm-eval's file name: samples_<task>_<date_id>.jsonl (its tools take the task between the first
    // and the last '_').
    std::string file;
    for (const auto& n : names)
      if (starts_with(n, "samples_" + r.name + "_") && ends_with(n, ".jsonl") &&
          n.substr(8, n.rfind('_') - 8) == r.name)
        file = out + "/" + n;
    ASSERT_FALSE(file.empty()) << r.name;
    const std::vector<oj> lines = read_lines(file);
    ASSERT_EQ(static_cast<int64_t>(lines.size()), r.samples) << r.name;
    const TaskDef& task = *reg.find_task(r.name);

    std::vector<double> acc, acc_norm, lls, greedy, words, bytes;
    std::string hashes;
    for (size_t d = 0; d < lines.size(); ++d) {
      const oj& s = lines[d];
      std::vector<std::string> keys;
      for (auto it = s.begin(); it != s.end(); ++it) keys.push_back(it.key());
      ASSERT_GE(keys.size(), 11u);
      EXPECT_EQ(std::vector<std::string>(keys.begin(), keys.begin() + 11),
                (std::vector<std::string>{"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter",
                                          "metrics", "doc_hash", "prompt_hash", "target_hash"}));
      EXPECT_EQ(s.at("doc_id"), static_cast<int64_t>(d));
      EXPECT_EQ(s.at("filter"), "none");
      const oj& args = s.at("arguments");
      const oj& filtered = s.at("filtered_resps");
      ASSERT_EQ(args.size(), filtered.size());
      ASSERT_EQ(s.at("resps").size(), filtered.size());
      // The hashes as lm-eval computes them, from the record itself.
      EXPECT_EQ(s.at("doc_hash"), sha256_hex(py_json_dumps(s.at("doc"), 2)));
      EXPECT_EQ(s.at("prompt_hash"), sha256_hex(args.at("gen_args_0").at("arg_0").get<std::string>()));
      EXPECT_EQ(s.at("target_hash"), sha256_hex(s.at("target").get<std::string>()));
      hashes += s.at("doc_hash").get<std::string>() + s.at("prompt_hash").get<std::string>() +
                s.at("target_hash").get<std::string>();
      std::vector<std::string> metric_names;
      for (const auto& m : s.at("metrics")) metric_names.push_back(m.get<std::string>());

      if (task.output_type == OutputType::MultipleChoice) {
        std::vector<double> l, norm;
        for (size_t k = 0; k < filtered.size(); ++k) {
          const oj& pair = filtered.at(k);
          ASSERT_EQ(pair.size(), 2u);
          EXPECT_EQ(s.at("resps").at(k), oj::array({pair}));
          EXPECT_TRUE(pair.at(1) == "True" || pair.at(1) == "False");
          const std::string cont = args.at("gen_args_" + std::to_string(k)).at("arg_1").get<std::string>();
          ASSERT_EQ(cont.substr(0, 1), " ");  // target_delimiter + choice
          l.push_back(from_repr(pair.at(0)));
          norm.push_back(l.back() / static_cast<double>(utf8_length(cont.substr(1))));
        }
        // The gold index: doc_to_target (logged as target), or for WinoGrande's multiple-input mode
        // doc_to_text = {"1": 0, "2": 1}[answer], read from the logged doc.
        const int64_t gold = r.name == "winogrande" ? (s.at("doc").at("answer") == "1" ? 0 : 1)
                                                    : std::stoll(s.at("target").get<std::string>());
        const double a = first_max(l) == gold ? 1.0 : 0.0;
        EXPECT_EQ(s.at("acc"), a) << r.name << " doc " << d;
        acc.push_back(s.at("acc").get<double>());
        if (task.metrics.size() > 1) {
          EXPECT_EQ(metric_names, (std::vector<std::string>{"acc", "acc_norm"}));
          EXPECT_EQ(s.at("acc_norm"), first_max(norm) == gold ? 1.0 : 0.0) << r.name << " doc " << d;
          acc_norm.push_back(s.at("acc_norm").get<double>());
        } else {
          EXPECT_EQ(metric_names, (std::vector<std::string>{"acc"}));
        }
      } else if (task.output_type == OutputType::Loglikelihood) {
        EXPECT_EQ(metric_names, (std::vector<std::string>{"perplexity", "acc"}));
        const oj& pair = filtered.at(0);
        EXPECT_EQ(s.at("perplexity").get<double>(), from_repr(pair.at(0)));
        EXPECT_TRUE(s.at("acc").is_number_integer());  // lm-eval: int(is_greedy)
        EXPECT_EQ(s.at("acc").get<int64_t>(), pair.at(1) == "True" ? 1 : 0);
        lls.push_back(from_repr(pair.at(0)));
        greedy.push_back(s.at("acc").get<double>());
      } else {
        EXPECT_EQ(metric_names, (std::vector<std::string>{"word_perplexity", "byte_perplexity", "bits_per_byte"}));
        const double ll = from_repr(filtered.at(0));
        const std::string page = s.at("doc").at("page").get<std::string>();
        EXPECT_EQ(s.at("word_perplexity"), oj::array({ll, count_regex_split_ws(page)}));
        EXPECT_EQ(s.at("byte_perplexity"), oj::array({ll, static_cast<int64_t>(page.size())}));
        EXPECT_EQ(s.at("bits_per_byte"), oj::array({ll, static_cast<int64_t>(page.size())}));
        EXPECT_EQ(args.at("gen_args_0").size(), 1u);  // (doc_to_target(doc),)
        lls.push_back(ll);
        words.push_back(static_cast<double>(count_regex_split_ws(page)));
        bytes.push_back(static_cast<double>(page.size()));
      }
    }
    EXPECT_EQ(rep.task_hashes.at(r.name), sha256_hex(hashes)) << r.name;

    // The report's numbers from the files' values alone.
    const bool se = lines.size() > 1;
    if (task.output_type == OutputType::MultipleChoice) {
      expect_metric(r, "acc", mean(acc), se ? stderr_of_mean(acc) : 0, se);
      if (!acc_norm.empty()) expect_metric(r, "acc_norm", mean(acc_norm), se ? stderr_of_mean(acc_norm) : 0, se);
    } else if (task.output_type == OutputType::Loglikelihood) {
      expect_metric(r, "perplexity", std::exp(-mean(lls)), bootstrap_stderr_perplexity(lls, 2000), se);
      expect_metric(r, "acc", mean(greedy), stderr_of_mean(greedy), se);
    } else {
      double sll = 0, sw = 0, sb = 0;
      for (size_t i = 0; i < lls.size(); ++i) sll += lls[i], sw += words[i], sb += bytes[i];
      expect_metric(r, "word_perplexity", std::exp(-sll / sw), 0, false);
      expect_metric(r, "byte_perplexity", std::exp(-sll / sb), 0, false);
      expect_metric(r, "bits_per_byte", -sll / sb / std::log(2.0), 0, false);
    }
  }
}

TEST(EvalSamples, HashesMatchCPython) {
  // sha256 of json.dumps(doc, indent=2, ensure_ascii=False) / the prompt / str(target), computed with
  // CPython 3.11 for the first ARC-Easy test document and the HellaSwag document (after lm-eval's
  // process_docs, which appends query, choices and gold to the dataset's columns).
  const std::string dir = data_dir();
  TaskRegistry reg = TaskRegistry::builtin();
  mf::eval::testing::PieceEncoder enc;
  mf::eval::testing::HistoryModel model(512, 256);
  EvalOptions opt;
  opt.data_dir = dir;
  opt.engine.progress = false;
  opt.log_samples = true;
  opt.limit = 1;
  EvalReport rep = evaluate(reg, {"arc_easy", "hellaswag"}, enc, model, opt);
  ASSERT_TRUE(rep.failures.empty());
  const oj arc = oj::parse(rep.samples.at("arc_easy").at(0));
  EXPECT_EQ(arc.at("doc").begin().key(), "id");  // the file's key order
  EXPECT_EQ(arc.at("target"), "0");
  EXPECT_EQ(arc.at("doc_hash"), "b91fe1a8fdc40a80b9364f6256ac729d010ba076b02e75a362c2cf7ad3303bdf");
  EXPECT_EQ(arc.at("prompt_hash"), "f804da9f5e214341d08d56228bb255177a0e5740f82e61b45887fcb5dc5c08ce");
  EXPECT_EQ(arc.at("target_hash"), "5feceb66ffc86f38d952786c6d696c79c2dbc239dd4e91b46729d73a27fb57e9");
  const oj hs = oj::parse(rep.samples.at("hellaswag").at(0));
  std::vector<std::string> keys;
  for (auto it = hs.at("doc").begin(); it != hs.at("doc").end(); ++it) keys.push_back(it.key());
  ASSERT_EQ(keys.size(), 13u);
  EXPECT_EQ(std::vector<std::string>(keys.end() - 3, keys.end()), (std::vector<std::string>{"query", "choices", "gold"}));
  EXPECT_EQ(hs.at("target"), "3");
  EXPECT_EQ(hs.at("doc_hash"), "99fc1d94ff0c405064714d0a9c311eb379ebdb503b10d6ce16270560e0cfbd1f");
  EXPECT_EQ(hs.at("prompt_hash"), "e7943924f92fbac0061f347ee90d84f7c6b246966d134c008ed80aaa94fb7fb2");
  EXPECT_EQ(hs.at("target_hash"), "4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce");
}
