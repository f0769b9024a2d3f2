// Metric math, stderr and groups against hand-computed values; lm-eval's bootstrap against CPython;
// the console table and the results JSON layout.
#include <gtest/gtest.h>

#include <cmath>

#include "eval/metrics.h"
#include "eval/report.h"
#include "eval/requests.h"
#include "eval/tasks/tasks.h"

using namespace mf;
using namespace mf::eval;

namespace {
TaskDef mc_task(std::vector<MetricSpec> metrics) {
  TaskDef t;
  t.name = "t";
  t.output_type = OutputType::MultipleChoice;
  t.metrics = std::move(metrics);
  return t;
}
Instance mc_instance(std::vector<std::string> choices, int64_t gold) {
  Instance i;
  for (const auto& c : choices) i.requests.push_back({"ctx", " " + c});
  i.choices = std::move(choices);
  i.gold = gold;
  return i;
}
}  // namespace

TEST(EvalMetrics, AccAccNormAccBytes) {
  TaskDef t = mc_task({metric_acc(), metric_acc_norm(), {"acc_bytes", "mean", true}});
  // Doc 1: lls -2 ("a", 1 char) vs -4 ("bbbb", 4 chars): acc picks 0, acc_norm picks 1 (-2 < -1).
  // Doc 2: "é" is 1 character but 2 bytes: per char -1.5 vs -1.0 -> 1; per byte -0.75 vs -1.0 -> 0.
  std::vector<Instance> insts = {mc_instance({"a", "bbbb"}, 1), mc_instance({"\xc3\xa9", "ab"}, 0)};
  std::vector<std::vector<TokenScore>> scores = {{{-2.0, true}, {-4.0, false}}, {{-1.5, true}, {-2.0, false}}};
  auto items = compute_metric_items(t, insts, scores);
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].values, (std::vector<double>{0.0, 1.0}));  // acc
  EXPECT_EQ(items[1].values, (std::vector<double>{1.0, 0.0}));  // acc_norm
  EXPECT_EQ(items[2].values, (std::vector<double>{1.0, 1.0}));  // acc_bytes
}

TEST(EvalMetrics, ArgmaxTiesTakeTheFirst) {
  EXPECT_EQ(np_argmax({-1.0, -0.5, -0.5}), 1);
  EXPECT_EQ(np_argmax({-3.0}), 0);
}

TEST(EvalMetrics, StringTargetMatchingTwoChoicesTakesTheFirst) {
  // lm-eval: gold = choices.index(target). Choices ["yes", "yes", "no"], target "yes" -> gold 0.
  TaskDef t = mc_task({metric_acc()});
  t.doc_to_text = [](const json&) { return TextOrIndex::of(std::string("Q?")); };
  t.doc_to_choice = [](const json&) { return std::vector<std::string>{"yes", "yes", "no"}; };
  t.doc_to_target = [](const json&) { return TextOrIndex::of(std::string("yes")); };
  Instance inst = build_instance(t, Doc{json::object(), "hand.jsonl", 1}, 0);
  EXPECT_EQ(inst.gold, 0);
  EXPECT_EQ(inst.target, "yes");
  // The two "yes" continuations score the same (-1.0) and beat "no" (-2.0): numpy's argmax takes
  // choice 0, the gold, so acc is 1.0 (taking the last match, gold 1, gave 0.0).
  auto items = compute_metric_items(t, {inst}, {{{-1.0, true}, {-1.0, true}, {-2.0, false}}});
  EXPECT_EQ(items[0].values, (std::vector<double>{1.0}));
}

TEST(EvalMetrics, MeanAndStderrHandComputed) {
  // [1,0,1,1]: mean 0.75, sample variance (3 x 0.0625 + 0.5625) / 3 = 0.25, stderr 0.5 / 2.
  std::vector<double> v{1, 0, 1, 1};
  EXPECT_DOUBLE_EQ(agg_mean(v), 0.75);
  EXPECT_DOUBLE_EQ(sample_stddev(v), 0.5);
  EXPECT_DOUBLE_EQ(mean_stderr(v), 0.25);
  std::vector<MetricItems> items = {{metric_acc(), v, {}}};
  auto r = aggregate_metrics(items, 100000);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_DOUBLE_EQ(r[0].value, 0.75);
  EXPECT_TRUE(r[0].has_stderr);
  EXPECT_DOUBLE_EQ(r[0].stderr, 0.25);
  // One document or bootstrap_iters = 0: stderr is N/A.
  EXPECT_FALSE(aggregate_metrics({{metric_acc(), {1.0}, {}}}, 100000)[0].has_stderr);
  EXPECT_FALSE(aggregate_metrics(items, 0)[0].has_stderr);
}

TEST(EvalMetrics, PerplexityFamilyHandComputed) {
  EXPECT_DOUBLE_EQ(agg_perplexity({-1.0, -2.0, -3.0}), std::exp(2.0));
  EXPECT_DOUBLE_EQ(agg_weighted_perplexity({-10.0, -20.0}, {5.0, 10.0}), std::exp(2.0));
  EXPECT_DOUBLE_EQ(agg_weighted_perplexity({-10.0, -20.0}, {20.0, 40.0}), std::exp(0.5));
  EXPECT_DOUBLE_EQ(agg_bits_per_byte({-10.0, -20.0}, {20.0, 40.0}), 0.5 / std::log(2.0));
  // Rolling items: per-document (ll, words) and (ll, bytes).
  TaskDef t;
  t.name = "w";
  t.output_type = OutputType::LoglikelihoodRolling;
  t.metrics = {{"word_perplexity", "weighted_perplexity", false},
               {"byte_perplexity", "weighted_perplexity", false},
               {"bits_per_byte", "bits_per_byte", false}};
  Instance a, b;
  a.requests = {{"", "x"}};
  b.requests = {{"", "y"}};
  a.words = 5, a.bytes = 20, b.words = 10, b.bytes = 40;
  auto items = compute_metric_items(t, {a, b}, {{{-10.0, false}}, {{-20.0, false}}});
  auto r = aggregate_metrics(items, 100000);
  EXPECT_DOUBLE_EQ(r[0].value, std::exp(2.0));
  EXPECT_DOUBLE_EQ(r[1].value, std::exp(0.5));
  EXPECT_DOUBLE_EQ(r[2].value, 0.5 / std::log(2.0));
  EXPECT_FALSE(r[0].has_stderr);  // lm-eval: no stderr for these
}

TEST(EvalMetrics, PythonRandomMatchesCPython) {
  // random.Random(seed).random() values printed by CPython 3.11.
  PyRandom r0(0);
  EXPECT_EQ(r0.random(), 0.8444218515250481);
  EXPECT_EQ(r0.random(), 0.7579544029403025);
  PyRandom r1(1);
  EXPECT_EQ(r1.random(), 0.13436424411240122);
  PyRandom r42(42);
  EXPECT_EQ(r42.random(), 0.6394267984578837);
  EXPECT_EQ(r42.random(), 0.025010755222666936);
  PyRandom big((uint64_t{1} << 40) + 5);  // a two-word seed key
  EXPECT_EQ(big.random(), 0.5043802970418443);
}

TEST(EvalMetrics, BootstrapStderrMatchesLmEvalUnderCPython) {
  // lm-eval bootstrap_stderr(perplexity, xs, iters) run with CPython 3.11 (chunks of min(1000, iters),
  // chunk i resampled with random.Random(i).choices(xs, k=len(xs))).
  std::vector<double> xs{-1.25, -0.5, -3.0, -2.2, -0.01, -4.5, -1.0};
  EXPECT_NEAR(bootstrap_stderr_perplexity(xs, 2000), 4.298913040170296, 1e-12);
  EXPECT_NEAR(bootstrap_stderr_perplexity(xs, 500), 4.306104131658032, 1e-12);
}

TEST(EvalMetrics, GroupSizeWeightedAndPooledStderr) {
  EXPECT_DOUBLE_EQ(weighted_group_value({0.5, 0.8}, {10, 30}, true), (0.5 * 10 + 0.8 * 30) / 40);
  EXPECT_DOUBLE_EQ(weighted_group_value({0.5, 0.8}, {10, 30}, false), 0.65);
  // sqrt( [ (10-1) 10 0.1^2 + (30-1) 30 0.2^2 ] / (40 - 2) / 40 ) = sqrt(35.7 / 38 / 40)
  EXPECT_DOUBLE_EQ(pooled_sample_stderr({0.1, 0.2}, {10, 30}), std::sqrt(35.7 / 38.0 / 40.0));
  TaskResult a, b;
  a.name = "a", a.samples = 10, a.metrics = {{"acc", 0.5, true, 0.1, true}, {"acc_norm", 0.4, true, 0.1, true}};
  b.name = "b", b.samples = 30, b.metrics = {{"acc", 0.8, true, 0.2, true}};
  GroupDef g{"g", "", {"a", "b"}, true, 2.0};
  TaskResult r = aggregate_group(g, {&a, &b});
  EXPECT_TRUE(r.is_group);
  EXPECT_EQ(r.samples, 40);
  ASSERT_EQ(r.metrics.size(), 1u);  // acc_norm is not in every child
  EXPECT_DOUBLE_EQ(r.metrics[0].value, 0.725);
  EXPECT_DOUBLE_EQ(r.metrics[0].stderr, std::sqrt(35.7 / 38.0 / 40.0));
}

TEST(EvalMetrics, NestedGroupPoolsItsLeafTasksNotItsSubgroups) {
  // lm-eval >= 0.4.4 (the version docs/eval.md follows): mmlu pools its 57 subjects. Two categories
  // with two subjects each; sizes n, stderrs se:
  //   a: 10, 0.1   b: 30, 0.2   (category x)      c: 20, 0.15   d: 5, 0.3   (category y)
  // leaves: sqrt( [9*10*0.01 + 29*30*0.04 + 19*20*0.0225 + 4*5*0.09] / (65 - 4) / 65 )
  //       = sqrt( (0.9 + 34.8 + 8.55 + 1.8) / 61 / 65 ) = sqrt(46.05 / 61 / 65)
  TaskResult a, b, c, d;
  a.name = "a", a.samples = 10, a.metrics = {{"acc", 0.5, true, 0.1, true}};
  b.name = "b", b.samples = 30, b.metrics = {{"acc", 0.8, true, 0.2, true}};
  c.name = "c", c.samples = 20, c.metrics = {{"acc", 0.6, true, 0.15, true}};
  d.name = "d", d.samples = 5, d.metrics = {{"acc", 0.2, true, 0.3, true}};
  GroupDef top{"top", "", {"x", "y"}, true, 2.0};
  TaskResult r = aggregate_group(top, {&a, &b, &c, &d});
  ASSERT_EQ(r.metrics.size(), 1u);
  EXPECT_EQ(r.samples, 65);
  // value: (0.5*10 + 0.8*30 + 0.6*20 + 0.2*5) / 65 = 42 / 65 (the same through the categories)
  EXPECT_DOUBLE_EQ(r.metrics[0].value, 42.0 / 65.0);
  EXPECT_NEAR(r.metrics[0].stderr, std::sqrt(46.05 / 61.0 / 65.0), 1e-12);  // 0.107768843277...
  // lm-eval 0.4.3 pooled the two categories instead; that number differs.
  GroupDef gx{"x", "", {"a", "b"}, true, 2.0}, gy{"y", "", {"c", "d"}, true, 2.0};
  TaskResult x = aggregate_group(gx, {&a, &b}), y = aggregate_group(gy, {&c, &d});
  TaskResult by_category = aggregate_group(top, {&x, &y});
  EXPECT_DOUBLE_EQ(by_category.metrics[0].value, 42.0 / 65.0);
  EXPECT_GT(std::fabs(by_category.metrics[0].stderr - r.metrics[0].stderr), 5e-5);  // 0.107632 vs 0.107769
}

TEST(EvalReport, ConsoleTableLikeLmEval) {
  EvalReport rep;
  TaskResult t;
  t.name = t.alias = "arc_easy";
  t.version = 1.0;
  t.samples = t.original_samples = 2376;
  t.metrics = {{"acc_norm", 0.7, true, 0.013, true}, {"acc", 0.75, true, 0.0123, true}};
  rep.results.push_back(t);
  const std::string expected =
      "| Tasks  |Version|Filter|n-shot| Metric |   |Value |   |Stderr|\n"
      "|--------|------:|------|-----:|--------|---|-----:|---|-----:|\n"
      "|arc_easy|      1|none  |     0|acc     |\xe2\x86\x91  |0.7500|\xc2\xb1  |0.0123|\n"
      "|        |       |none  |     0|acc_norm|\xe2\x86\x91  |0.7000|\xc2\xb1  |0.0130|\n";
  EXPECT_EQ(format_table(rep, false), expected);
}

TEST(EvalReport, ResultsJsonKeys) {
  EvalReport rep;
  TaskResult t;
  t.name = t.alias = "lambada_openai";
  t.samples = 10;
  t.original_samples = 5153;
  t.metrics = {{"perplexity", 3.5, true, 0.25, false}, {"acc", 0.6, false, 0.0, true}};
  rep.results.push_back(t);
  auto j = results_json(rep, {{"model", "m"}, {"model_sha256", "abc"}});
  EXPECT_FALSE(j["results"]["lambada_openai"].contains("samples"));  // lm-eval >= 0.4.2: in n-samples
  EXPECT_FALSE(j.contains("groups"));                                 // no group was run
  EXPECT_TRUE(j["total_evaluation_time_seconds"].is_string());
  EXPECT_EQ(j["results"]["lambada_openai"]["perplexity,none"], 3.5);
  EXPECT_EQ(j["results"]["lambada_openai"]["perplexity_stderr,none"], 0.25);
  EXPECT_EQ(j["results"]["lambada_openai"]["acc_stderr,none"], "N/A");
  EXPECT_EQ(j["higher_is_better"]["lambada_openai"]["perplexity"], false);
  EXPECT_EQ(j["n-samples"]["lambada_openai"]["original"], 5153);
  EXPECT_EQ(j["n-samples"]["lambada_openai"]["effective"], 10);
  EXPECT_EQ(j["n-shot"]["lambada_openai"], 0);
  EXPECT_EQ(j["config"]["model_sha256"], "abc");
}

TEST(EvalReport, SettingsJson) {
  EvalOptions o;
  o.data_dir = "d";
  o.bos = BosPolicy::Off;
  auto j = settings_json(o, {"arc_easy"}, 2048);
  EXPECT_EQ(j["bos"], "off");
  EXPECT_TRUE(j["limit"].is_null());
  EXPECT_EQ(j["max_length"], 2048);
  EXPECT_EQ(j["tasks"][0], "arc_easy");
  EXPECT_EQ(j["num_fewshot"], 0);
}
