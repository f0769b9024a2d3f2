// Custom tasks from YAML and the template language: YAML versions of built-in tasks must build the
// same requests as the built-ins on real documents; errors name the YAML file.
#include <gtest/gtest.h>

#include <map>

#include "eval/jsonl.h"
#include "eval/registry.h"
#include "eval/requests.h"
#include "eval/template.h"
#include "eval/yaml_task.h"
#include "util/error.h"
#include "util/fs.h"
#include "test_helpers.h"

using namespace mf;
using mf::testing_helpers::error_of;
using namespace mf::eval;

namespace {

const std::string kData = std::string(MOEFORGE_TEST_DATA) + "/benchmarks";

std::vector<Instance> instances_of(const TaskDef& t) {
  return build_instances(t, load_task_docs(t, resolve_data_file(t, kData)));
}

void expect_same_requests(const TaskDef& a, const TaskDef& b) {
  auto x = instances_of(a), y = instances_of(b);
  ASSERT_EQ(x.size(), y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(x[i].requests.size(), y[i].requests.size()) << i;
    for (size_t k = 0; k < x[i].requests.size(); ++k) {
      EXPECT_EQ(x[i].requests[k].context, y[i].requests[k].context) << i;
      EXPECT_EQ(x[i].requests[k].continuation, y[i].requests[k].continuation) << i;
    }
    EXPECT_EQ(x[i].gold, y[i].gold) << i;
    EXPECT_EQ(x[i].choices, y[i].choices) << i;
  }
}

}  // namespace

TEST(EvalTemplate, Expressions) {
  json doc = json::parse(R"({"q":"  Why? ","n":"3","c":{"text":["x","y"],"label":["A","B"]},"k":"B",
                            "t":"the cat sat down","v":[1,2]})");
  EXPECT_EQ(render_template("Q: {{q.strip()}}\nA:", doc), "Q: Why?\nA:");
  EXPECT_EQ(render_template("{{c.text}}", doc), json::parse(R"(["x","y"])"));
  EXPECT_EQ(render_template("{{c.label.index(k)}}", doc), 1);
  EXPECT_EQ(render_template("{{(n|int) - 1}}", doc), 2);
  EXPECT_EQ(render_template("{{t.split(' ')[:-1]|join(' ')}}", doc), "the cat sat");
  EXPECT_EQ(render_template("{{' '+t.split(' ')[-1]}}", doc), " down");
  EXPECT_EQ(render_template("{{[q, k]}}", doc), json::parse(R"(["  Why? ","B"])"));
  EXPECT_EQ(render_template("{{c['text'][0]|upper}}", doc), "X");
  EXPECT_EQ(render_template("{{v|length}} {{v}}", doc), "2 [1, 2]");
  EXPECT_EQ(render_template("{{c.text}}!", doc), "['x', 'y']!");
  EXPECT_EQ(error_of([&] { render_template("{{missing}}", doc); }), "missing field 'missing'");
  EXPECT_NE(error_of([&] { render_template("{{q|nope}}", doc); }).find("unknown filter 'nope'"), std::string::npos);
  EXPECT_NE(error_of([&] { render_template("{{q", doc); }).find("unclosed"), std::string::npos);
}

TEST(EvalYaml, YamlArcAndSciqMatchBuiltins) {
  auto tasks = parse_yaml_tasks(R"(
task: my_arc
data_file: arc_easy/test.jsonl
output_type: multiple_choice
doc_to_text: "Question: {{question}}\nAnswer:"
doc_to_choice: "{{choices.text}}"
doc_to_target: "{{choices.label.index(answerKey)}}"
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
---
task: my_sciq
data_file: sciq/test.jsonl
doc_to_text: "{{support.lstrip()}}\nQuestion: {{question}}\nAnswer:"
doc_to_choice: ["{{distractor1}}", "{{distractor2}}", "{{distractor3}}", "{{correct_answer}}"]
doc_to_target: 3
---
task: my_piqa
data_file: piqa/validation.jsonl
doc_to_text: "Question: {{goal}}\nAnswer:"
doc_to_choice: "{{[sol1, sol2]}}"
doc_to_target: label
)",
                                "inline.yaml");
  ASSERT_EQ(tasks.size(), 3u);
  TaskRegistry builtin = TaskRegistry::builtin();
  expect_same_requests(tasks[0], *builtin.find_task("arc_easy"));
  expect_same_requests(tasks[1], *builtin.find_task("sciq"));
  expect_same_requests(tasks[2], *builtin.find_task("piqa"));
  EXPECT_EQ(tasks[0].metrics.size(), 2u);
  EXPECT_EQ(tasks[1].metrics.size(), 2u);  // multiple_choice default: acc, acc_norm
}

TEST(EvalYaml, LoglikelihoodAndDigitTargets) {
  auto tasks = parse_yaml_tasks(R"(
task: my_lambada
data_file: x.jsonl
output_type: loglikelihood
doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"
doc_to_target: "{{' '+text.split(' ')[-1]}}"
---
task: my_siqa
data_file: x.jsonl
doc_to_text: "Q: {{context}} {{question}}\nA:"
doc_to_choice: "{{[answerA, answerB, answerC]}}"
doc_to_target: "{{ (label|int) - 1 }}"
metric_list: [{metric: acc}]
)",
                                "inline.yaml");
  Doc d{json::parse(R"({"text":"he left with Jack"})"), "x.jsonl", 1};
  Instance i = build_instance(tasks[0], d, 0);
  EXPECT_EQ(i.requests[0].context, "he left with");
  EXPECT_EQ(i.requests[0].continuation, " Jack");
  EXPECT_EQ(tasks[0].metrics[0].name, "perplexity");
  Doc s{json::parse(R"({"context":"C.","question":"Q?","answerA":"a","answerB":"b","answerC":"c","label":"2"})"),
        "x.jsonl", 4};
  Instance j = build_instance(tasks[1], s, 0);
  EXPECT_EQ(j.requests[0].context, "Q: C. Q?\nA:");
  EXPECT_EQ(j.gold, 1);
  Doc bad{json::parse(R"({"context":"C.","question":"Q?","answerA":"a","answerB":"b","answerC":"c","label":"9"})"),
          "x.jsonl", 7};
  EXPECT_EQ(error_of([&] { build_instance(tasks[1], bad, 0); }), "x.jsonl:7: gold index 8 out of range for 3 choices");
  Doc missing{json::parse(R"({"context":"C.","answerA":"a","answerB":"b","answerC":"c","label":"1"})"), "x.jsonl", 2};
  EXPECT_EQ(error_of([&] { build_instance(tasks[1], missing, 0); }), "x.jsonl:2: missing field 'question'");
}

TEST(EvalYaml, ErrorsNameTheFile) {
  const std::string dir = ::testing::TempDir() + "mf_eval_yaml";
  make_dirs(dir);
  const std::string path = dir + "/t.yaml";
  write_file_atomic(path, "task: a\ndoc_to_text: x\n");
  EXPECT_EQ(error_of([&] { load_yaml_tasks(path); }), path + ": task 'a': missing key 'data_file'");
  write_file_atomic(path, "task: a\ndata_file: f\ndoc_to_text: x\ndoc_to_target: 0\n");
  EXPECT_EQ(error_of([&] { load_yaml_tasks(path); }), path + ": task 'a': missing key 'doc_to_choice'");
  write_file_atomic(path, "task: a\ndata_file: f\ndoc_to_text: x\ndoc_to_choice: c\ndoc_to_target: 0\n"
                          "metric_list: [{metric: bleu}]\n");
  EXPECT_NE(error_of([&] { load_yaml_tasks(path); }).find(path + ": task 'a': unknown metric 'bleu'"), std::string::npos);
  write_file_atomic(path, "task: [a\n");
  EXPECT_EQ(error_of([&] { load_yaml_tasks(path); }).rfind(path + ": invalid YAML", 0), 0u);
  write_file_atomic(path, "doc_to_text: x\n");
  EXPECT_EQ(error_of([&] { load_yaml_tasks(path); }), path + ": missing key 'task'");
}

// tasks/reference-corpus.yaml on real corpus items: partial scoring (candidate before the fixed
// definition), cloze continuations, and the per-domain document filter. Expected strings are
// written by hand from the corpus format (docs/corpus.md).
TEST(EvalYaml, ReferenceCorpusTasks) {
  const std::string data = std::string(MOEFORGE_TEST_DATA) + "/corpus_tasks";
  auto tasks = load_yaml_tasks(std::string(MOEFORGE_SOURCE_DIR) + "/tasks/reference-corpus.yaml");
  std::map<std::string, TaskDef> by_name;
  for (auto& t : tasks) by_name[t.name] = t;
  ASSERT_EQ(by_name.size(), 11u);
  auto inst = [&](const std::string& name) {
    const TaskDef& t = by_name.at(name);
    return build_instances(t, load_task_docs(t, resolve_data_file(t, data)));
  };

  auto wn = inst("wordnet_define");
  ASSERT_EQ(wn.size(), 2u);
  EXPECT_EQ(wn[0].gold, 3);
  ASSERT_EQ(wn[0].requests.size(), 4u);
  EXPECT_EQ(wn[0].requests[3].context, "white (adjective):");
  EXPECT_EQ(wn[0].requests[0].context, "halal (adjective):");
  for (const auto& r : wn[0].requests)
    EXPECT_EQ(r.continuation,
              " being of the achromatic color of maximum lightness; having little or no hue owing to reflection of "
              "almost all incident light.");
  EXPECT_EQ(wn[1].requests[1].context, "albescent (adjective):");
  EXPECT_EQ(wn[1].requests[1].continuation, " becoming or shading into white.");

  auto fd = inst("foldoc_define");
  ASSERT_EQ(fd.size(), 2u);
  EXPECT_EQ(fd[1].gold, 0);
  EXPECT_EQ(fd[1].requests[0].context, "TINT");
  EXPECT_EQ(fd[1].requests[3].context, "biff");
  EXPECT_EQ(fd[1].requests[2].continuation, "\n\nInterpreted version of JOVIAL.");
  EXPECT_EQ(fd[0].requests[1].context, "Fast Fourier Transform");

  auto kjv = inst("kjv_cloze");
  ASSERT_EQ(kjv.size(), 2u);
  EXPECT_EQ(kjv[0].gold, 0);
  EXPECT_EQ(kjv[0].requests[0].context,
            "Then all Israel gathered themselves to David unto Hebron, saying, Behold, we are thy bone and thy");
  EXPECT_EQ(kjv[0].requests[0].continuation, " flesh");
  EXPECT_EQ(kjv[0].requests[3].continuation, " iniquity");

  auto humor = inst("corpus_ppl_humor");
  ASSERT_EQ(humor.size(), 2u);
  EXPECT_EQ(humor[0].requests[0].continuation, "Q:\tWhy was Stonehenge abandoned?\nA:\tIt wasn't IBM compatible.");
  EXPECT_EQ(inst("corpus_ppl_scripture").size(), 2u);
  EXPECT_EQ(inst("corpus_ppl_code").size(), 0u);

  auto bad = parse_yaml_tasks("task: t\ndata_file: test.jsonl\ndoc_filter: {nofield: x}\n"
                              "output_type: loglikelihood_rolling\ndoc_to_target: text\n",
                              "bad.yaml");
  EXPECT_EQ(error_of([&] { load_task_docs(bad[0], data + "/test.jsonl"); }),
            data + "/test.jsonl:1: missing field 'nofield' (named by doc_filter)");
  EXPECT_NE(error_of([&] {
              parse_yaml_tasks("task: t\ndata_file: x\ndoc_filter: [a]\noutput_type: loglikelihood_rolling\n"
                               "doc_to_target: text\n",
                               "bad.yaml");
            }).find("'doc_filter' must be a mapping"),
            std::string::npos);
}
