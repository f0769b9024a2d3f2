// Multiple-choice SFT data of the LoRA-MoE recipe and mLoRA's evaluation protocol: the mLoRA prompt
// of one real document per task (expected strings written from the spec's / mLoRA's formats, not
// produced by the code), label tokens on models/tiny's tokenizer, loss masks and padded batches,
// splits (the task's own and GMoE's 80/20 cut with Python's seed-42 shuffle), the missing-split
// error, and the protocol's argmax on a fake logits function with decoys it must ignore.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "eval/metrics.h"
#include "eval/mlora_protocol.h"
#include "eval/registry.h"
#include "eval/yaml_task.h"
#include "model/model.h"
#include "test_helpers.h"
#include "tokenizer/tokenizer.h"
#include "train/mc_data.h"
#include "util/fs.h"

using namespace mf;
using mf::testing_helpers::error_of;

namespace {

const std::string kData = std::string(MOEFORGE_TEST_DATA) + "/benchmarks";
const std::string kLayouts = kData + "/layouts";
const std::string kTiny = std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny";

const eval::TaskDef& builtin(const std::string& name) {
  static const eval::TaskRegistry reg = eval::TaskRegistry::builtin();
  const eval::TaskDef* t = reg.find_task(name);
  if (!t) throw std::runtime_error("no built-in task " + name);
  return *t;
}

std::string temp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "mf_mc_data_" + name + "_" + std::to_string(::getpid());
  remove_all(d);
  make_dirs(d);
  return d;
}

void write_text(const std::string& path, const std::string& text) {
  make_dirs(parent_dir(path));
  std::ofstream f(path);
  f << text;
}

// Byte-level encoder: BOS 256 when special tokens are asked for, then the bytes.
McEncodeFn byte_encoder() {
  return [](const std::string& s, bool special) {
    std::vector<int32_t> ids;
    if (special) ids.push_back(256);
    for (unsigned char c : s) ids.push_back(c);
    return ids;
  };
}

const std::vector<std::string> kArcLabels = {"1", "2", "3", "4", "A", "B", "C", "D", "E"};

}  // namespace

TEST(McData, ArcPromptAndNineLabels) {
  auto items = mc_items(builtin("arc_easy"), McSplit::Test, kData);
  ASSERT_EQ(items.size(), 22u);
  EXPECT_EQ(items[0].prompt,
            "Please choose the correct answer to the question: Which statement best explains why photosynthesis is "
            "the foundation of most food webs? (A) Sunlight is the source of energy for nearly all ecosystems. (B) "
            "Most ecosystems are found on land instead of in water. (C) Carbon dioxide is more available than other "
            "gases. (D) The producers in all ecosystems are plants.\nAnswer:");
  EXPECT_EQ(items[0].labels, kArcLabels);
  EXPECT_EQ(items[0].answer, 4);  // "A"
  // A question with numeric choice labels keeps them in the prompt; the label list is the same.
  EXPECT_EQ(items[14].prompt,
            "Please choose the correct answer to the question: All living and nonliving material is composed of "
            "(1) air (2) elements (3) water (4) soil\nAnswer:");
  EXPECT_EQ(items[14].labels, kArcLabels);
  EXPECT_EQ(items[14].answer, 1);  // "2"
}

TEST(McData, BoolqPiqaWinograndePrompts) {
  auto boolq = mc_items(builtin("boolq"), McSplit::Validation, kData);
  ASSERT_EQ(boolq.size(), 20u);
  EXPECT_EQ(boolq[0].prompt,
            "Please answer the following question with true or false: does ethanol take more energy make that "
            "produces?\nAnswer:");
  EXPECT_EQ(boolq[0].labels, (std::vector<std::string>{"true", "false"}));
  EXPECT_EQ(boolq[0].answer, 1);  // answer: false

  auto piqa = mc_items(builtin("piqa"), McSplit::Validation, kData);
  ASSERT_EQ(piqa.size(), 20u);
  EXPECT_EQ(piqa[0].prompt,
            "Below is a common task along with two possible solutions labeled (A) and (B). Please select the "
            "appropriate solution to achieve the task:\nHow do I ready a guinea pig cage for it's new occupants?\n\n"
            "(A) Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you "
            "will also need to supply it with a water bottle and a food dish.\n(B) Provide the guinea pig with a cage "
            "full of a few inches of bedding made of ripped jeans material, you will also need to supply it with a "
            "water bottle and a food dish.\n\nCorrect solution:");
  EXPECT_EQ(piqa[0].labels, (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(piqa[0].answer, 0);

  auto wino = mc_items(builtin("winogrande"), McSplit::Validation, kData);
  ASSERT_EQ(wino.size(), 20u);
  EXPECT_EQ(wino[0].prompt,
            "Please choose the correct answer to fill in the blank to complete the given sentence.\nSentence: Sarah "
            "was a much better surgeon than Maria so _ always got the easier cases.\n(A) Sarah\n(B) Maria\nAnswer:");
  EXPECT_EQ(wino[0].labels, (std::vector<std::string>{"A", "B"}));
  EXPECT_EQ(wino[0].answer, 1);  // answer "2"
}

TEST(McData, ObqaSiqaHellaswagPrompts) {
  auto obqa = mc_items(builtin("openbookqa"), McSplit::Test, kLayouts + "/openbookqa/hf");
  ASSERT_EQ(obqa.size(), 4u);
  EXPECT_EQ(obqa[0].prompt,
            "Please choose the correct answer to the question: The sun is responsible for (A) puppies learning new "
            "tricks (B) children growing up and getting old (C) flowers wilting in a vase (D) plants sprouting, "
            "blooming and wilting\nAnswer:");
  EXPECT_EQ(obqa[0].labels, (std::vector<std::string>{"A", "B", "C", "D"}));
  EXPECT_EQ(obqa[0].answer, 3);

  auto siqa = mc_items(builtin("social_iqa"), McSplit::Validation, kLayouts + "/social_iqa/hf");
  ASSERT_EQ(siqa.size(), 5u);
  EXPECT_EQ(siqa[0].prompt,
            "Please choose the correct answer to the question.\nQuestion: Tracy didn't go home that evening and "
            "resisted Riley's attacks. What does Tracy need to do before this?\n(A) make a new plan\n(B) Go home and "
            "see Riley\n(C) Find somewhere to go\nAnswer:");
  EXPECT_EQ(siqa[0].labels, (std::vector<std::string>{"A", "B", "C"}));
  EXPECT_EQ(siqa[0].answer, 2);  // label "3"

  auto hs = mc_items(builtin("hellaswag"), McSplit::Validation, kLayouts + "/hellaswag/hf");
  ASSERT_EQ(hs.size(), 4u);
  EXPECT_EQ(hs[0].prompt,
            "Please choose the correct ending to complete the given sentence.\nSentence: Roof shingle removal. A man "
            "is sitting on a roof. he\n(A) is using wrap to wrap a pair of skis.\n(B) is ripping level tiles off.\n"
            "(C) is holding a rubik's cube.\n(D) starts pulling up roofing on a roof.\nAnswer:");
  EXPECT_EQ(hs[0].labels, (std::vector<std::string>{"A", "B", "C", "D"}));
  EXPECT_EQ(hs[0].answer, 3);
}

TEST(McData, GenericPromptForYamlTasks) {
  // Multiple-input mode (reference corpus): the question is the shared continuation, the choices the contexts.
  auto tasks = eval::load_yaml_tasks(std::string(MOEFORGE_SOURCE_DIR) + "/tasks/reference-corpus.yaml");
  const eval::TaskDef* wordnet = nullptr;
  for (const auto& t : tasks)
    if (t.name == "wordnet_define") wordnet = &t;
  ASSERT_NE(wordnet, nullptr);
  eval::Doc doc;
  doc.value = eval::json::parse(
      R"({"id": "x", "query": "a domesticated carnivore", "choices": ["dog", "cat", "cow", "pig"], "pos": "noun", "gold": 0})");
  doc.file = "wordnet_define.jsonl";
  doc.line = 1;
  McItem it = mc_item(*wordnet, doc);
  EXPECT_EQ(it.prompt,
            "Please choose the correct answer to the question: a domesticated carnivore. (A) dog (noun): (B) cat "
            "(noun): (C) cow (noun): (D) pig (noun):\nAnswer:");
  EXPECT_EQ(it.labels, (std::vector<std::string>{"A", "B", "C", "D"}));
  EXPECT_EQ(it.answer, 0);
  // Not multiple choice: one line naming the task.
  const eval::TaskDef* ppl = nullptr;
  for (const auto& t : tasks)
    if (t.name == "corpus_ppl_scripture") ppl = &t;
  ASSERT_NE(ppl, nullptr);
  EXPECT_EQ(error_of([&] { mc_items(*ppl, McSplit::Test, kData); }),
            "task 'corpus_ppl_scripture' is not a multiple-choice task (output_type loglikelihood_rolling)");
}

TEST(McData, MissingSplitIsOneLineNamingTheTask) {
  // A YAML task with only a data file has only a test split.
  const std::string yaml = temp_dir("only_test") + "/only_test.yaml";
  write_file_atomic(yaml, "task: only_test\ndata_file: only_test.jsonl\noutput_type: multiple_choice\n"
                          "doc_to_text: q\ndoc_to_choice: choices\ndoc_to_target: gold\n");
  auto tasks = eval::load_yaml_tasks(yaml);
  const std::string e = error_of([&] { mc_items(tasks.front(), McSplit::Train, kData); });
  EXPECT_EQ(e, "task 'only_test' has no train split (it has: test)");
  EXPECT_EQ(error_of([&] { mc_items(builtin("boolq"), McSplit::Test, kData); }),
            "task 'boolq' has no test split (it has: train, validation)");
  // A split the task has, whose file is missing: the file and the task, one line.
  const std::string f = error_of([&] { mc_items(builtin("arc_easy"), McSplit::Train, kData); });
  EXPECT_EQ(f, kData + "/arc_easy/train.jsonl: no such file for task 'arc_easy'");
  for (const auto& m : {e, f}) EXPECT_EQ(m.find('\n'), std::string::npos);
}

// The reference corpus's tasks declare their three splits (scripts/build-corpus.sh writes
// tasks/<task>.{train,validation}.jsonl beside the test file); the fixtures hold 6 / 3 / 2 rows.
TEST(McData, ReferenceCorpusTasksHaveTrainValidationAndTest) {
  const std::string data = std::string(MOEFORGE_TEST_DATA) + "/corpus_tasks";
  for (const auto& t : eval::load_yaml_tasks(std::string(MOEFORGE_SOURCE_DIR) + "/tasks/reference-corpus.yaml")) {
    if (t.name != "wordnet_define" && t.name != "foldoc_define" && t.name != "kjv_cloze") continue;
    EXPECT_EQ(mc_items(t, McSplit::Train, data).size(), 6u) << t.name;
    EXPECT_EQ(mc_items(t, McSplit::Validation, data).size(), 3u) << t.name;
    const auto test = mc_items(t, McSplit::Test, data);
    ASSERT_EQ(test.size(), 2u) << t.name;
    EXPECT_EQ(test[0].labels, (std::vector<std::string>{"A", "B", "C", "D"})) << t.name;
  }
}

TEST(McData, SplitFilesBesideTheTaskFileAndFromDatasetKwargs) {
  const std::string dir = temp_dir("splits");
  // boolq/train.jsonl next to boolq/validation.jsonl: read with the task's loader.
  write_text(dir + "/boolq/train.jsonl",
             "{\"question\": \"is the sky blue\", \"passage\": \"p\", \"answer\": true, \"label\": 1, \"idx\": 0}\n"
             "{\"question\": \"is fire cold\", \"passage\": \"p\", \"answer\": false, \"label\": 0, \"idx\": 1}\n");
  auto train = mc_items(builtin("boolq"), McSplit::Train, dir);
  ASSERT_EQ(train.size(), 2u);
  EXPECT_EQ(train[0].prompt, "Please answer the following question with true or false: is the sky blue?\nAnswer:");
  EXPECT_EQ(train[0].answer, 0);
  EXPECT_EQ(train[1].answer, 1);
  // A YAML task names its split files as lm-eval's json loader takes them.
  write_text(dir + "/toy/test.jsonl", "{\"question\": \"What is 2+2?\", \"choices\": [\"3\", \"4\", \"5\"], \"gold\": 1}\n");
  write_text(dir + "/toy/items_train.jsonl",
             "{\"question\": \"What is 1+1?\", \"choices\": [\"2\", \"3\"], \"gold\": 0}\n"
             "{\"question\": \"What is 3+3?\", \"choices\": [\"5\", \"6\"], \"gold\": 1}\n");
  auto yaml = eval::parse_yaml_tasks(
      "task: toy_mc\n"
      "data_file: toy/test.jsonl\n"
      "training_split: train\n"
      "test_split: test\n"
      "dataset_kwargs: {data_files: {train: toy/items_train.jsonl, test: toy/test.jsonl}}\n"
      "doc_to_text: question\n"
      "doc_to_choice: choices\n"
      "doc_to_target: gold\n",
      "toy.yaml");
  ASSERT_EQ(yaml.size(), 1u);
  auto test = mc_items(yaml[0], McSplit::Test, dir);
  ASSERT_EQ(test.size(), 1u);
  EXPECT_EQ(test[0].prompt, "Please choose the correct answer to the question: What is 2+2? (A) 3 (B) 4 (C) 5\nAnswer:");
  EXPECT_EQ(test[0].labels, (std::vector<std::string>{"A", "B", "C"}));
  EXPECT_EQ(test[0].answer, 1);
  auto yt = mc_items(yaml[0], McSplit::Train, dir);
  ASSERT_EQ(yt.size(), 2u);
  EXPECT_EQ(yt[1].prompt, "Please choose the correct answer to the question: What is 3+3? (A) 5 (B) 6\nAnswer:");
  EXPECT_EQ(yt[1].answer, 1);
  EXPECT_EQ(error_of([&] { mc_items(yaml[0], McSplit::Validation, dir); }),
            "task 'toy_mc' has no validation split (it has: train, test)");
  remove_all(dir);
}

TEST(McData, PythonShuffle) {
  // CPython 3.11: random.seed(42); [random.getrandbits(32) for _ in range(3)] and random.seed(2**40 + 5)
  // (two key words): the stream the shuffle draws from.
  eval::PyRandom r(42);
  EXPECT_EQ(r.next_u32(), 2746317213u);
  EXPECT_EQ(r.next_u32(), 478163327u);
  EXPECT_EQ(r.next_u32(), 107420369u);
  eval::PyRandom big((uint64_t{1} << 40) + 5);
  EXPECT_EQ(big.next_u32(), 2166296868u);
  EXPECT_EQ(big.next_u32(), 2220160828u);
  // random.seed(42); l = list(range(10)); random.shuffle(l)
  EXPECT_EQ(py_shuffled_indices(10, 42), (std::vector<int64_t>{7, 3, 2, 8, 5, 6, 9, 4, 0, 1}));
  EXPECT_EQ(py_shuffled_indices(1, 42), (std::vector<int64_t>{0}));
  EXPECT_TRUE(py_shuffled_indices(0, 42).empty());
}

TEST(McData, GmoeCutIsEightyTwentyAndDeterministic) {
  // random.seed(42); random.shuffle(list(range(20))) = [19, 5, 14, 4, 9, 13, 15, 18, 6, 12, 17, 10, 1, 11, 2, 16, 7, 8, 0, 3]
  IndexSplit s = gmoe_validation_split(20);
  EXPECT_EQ(s.test, (std::vector<int64_t>{19, 5, 14, 4, 9, 13, 15, 18, 6, 12, 17, 10, 1, 11, 2, 16}));
  EXPECT_EQ(s.validation, (std::vector<int64_t>{7, 8, 0, 3}));
  IndexSplit again = gmoe_validation_split(20);
  EXPECT_EQ(again.test, s.test);
  EXPECT_EQ(again.validation, s.validation);
  // BoolQ's 3270 and WinoGrande's 1267 validation rows.
  const std::vector<std::pair<int64_t, size_t>> cases{{3270, 2616}, {1267, 1013}};
  for (const auto& [n, t] : cases) {
    IndexSplit c = gmoe_validation_split(n);
    EXPECT_EQ(c.test.size(), t);
    EXPECT_EQ(c.validation.size(), static_cast<size_t>(n) - t);
    std::vector<int64_t> all = c.test;
    all.insert(all.end(), c.validation.begin(), c.validation.end());
    std::sort(all.begin(), all.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(all[static_cast<size_t>(i)], i);
  }
}

TEST(McData, GmoeForkSplits) {
  for (const char* name : {"boolq", "winogrande"}) {
    const auto& task = builtin(name);
    auto own = mc_items(task, McSplit::Validation, kData);
    auto test = mc_items(task, McSplit::Test, kData, SplitPolicy::GmoeFork);
    auto val = mc_items(task, McSplit::Validation, kData, SplitPolicy::GmoeFork);
    ASSERT_EQ(own.size(), 20u);
    ASSERT_EQ(test.size(), 16u) << name;
    ASSERT_EQ(val.size(), 4u) << name;
    const std::vector<size_t> val_rows{7, 8, 0, 3}, test_rows{19, 5, 14, 4};
    for (size_t i = 0; i < val_rows.size(); ++i) EXPECT_EQ(val[i].prompt, own[val_rows[i]].prompt) << name;
    for (size_t i = 0; i < test_rows.size(); ++i) EXPECT_EQ(test[i].prompt, own[test_rows[i]].prompt) << name;
  }
  // SIQA (and HellaSwag): validation for both; PIQA tests on validation; ARC keeps its own test split.
  const std::string siqa_dir = kLayouts + "/social_iqa/hf";
  auto siqa_own = mc_items(builtin("social_iqa"), McSplit::Validation, siqa_dir);
  auto siqa_test = mc_items(builtin("social_iqa"), McSplit::Test, siqa_dir, SplitPolicy::GmoeFork);
  ASSERT_EQ(siqa_test.size(), siqa_own.size());
  for (size_t i = 0; i < siqa_own.size(); ++i) EXPECT_EQ(siqa_test[i].prompt, siqa_own[i].prompt);
  EXPECT_EQ(mc_items(builtin("piqa"), McSplit::Test, kData, SplitPolicy::GmoeFork).size(), 20u);
  EXPECT_EQ(error_of([&] { mc_items(builtin("piqa"), McSplit::Test, kData); }),
            "task 'piqa' has no test split (it has: train, validation)");
  auto arc = mc_items(builtin("arc_easy"), McSplit::Test, kData, SplitPolicy::GmoeFork);
  EXPECT_EQ(arc.size(), 22u);
}

TEST(McData, LabelTokensOnTinyTokenizer) {
  auto tok = Tokenizer::load(kTiny);
  const std::vector<std::string> labels{"A", "B", "E", "1", "4", "true", "false"};
  auto ids = eval::mlora_label_token_ids(mc_encoder(*tok), labels);
  ASSERT_EQ(ids.size(), labels.size());
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::vector<int32_t> direct = tok->encode(" " + labels[i], false);
    ASSERT_FALSE(direct.empty());
    EXPECT_EQ(ids[i], direct.back()) << labels[i];
  }
  EXPECT_NE(ids[0], ids[1]);
  EXPECT_EQ(mlora_pad_id(*tok), tok->pad_id());
}

TEST(McData, LossMaskCoversExactlyTheAnswerTokens) {
  auto tok = Tokenizer::load(kTiny);
  McItem item = mc_items(builtin("arc_easy"), McSplit::Test, kData)[0];  // answer "A"
  McExample ex = mc_example(item, mc_encoder(*tok));
  const std::vector<int32_t> full = tok->encode(item.prompt + " A", true);
  const std::vector<int32_t> prompt = tok->encode(item.prompt, true);
  ASSERT_EQ(ex.ids.size(), full.size());
  ASSERT_EQ(ex.loss_mask.size(), full.size());
  EXPECT_EQ(ex.ids[0], tok->bos_id());
  ASSERT_LT(prompt.size(), full.size());
  for (size_t i = 0; i < prompt.size(); ++i) ASSERT_EQ(full[i], prompt[i]);  // " A" starts a new pre-token
  for (size_t i = 0; i < full.size(); ++i) {
    EXPECT_EQ(ex.ids[i], full[i]);
    EXPECT_EQ(ex.loss_mask[i], i >= prompt.size() ? 1 : 0) << i;
  }
  McSftOptions compat;
  compat.loss_on_all_tokens = true;
  McExample all = mc_example(item, mc_encoder(*tok), compat);
  EXPECT_EQ(all.ids, ex.ids);
  for (size_t i = 0; i < all.loss_mask.size(); ++i) EXPECT_EQ(all.loss_mask[i], i == 0 ? 0 : 1) << i;
}

TEST(McData, BatchMasksAnswerTokensOrEverythingInCompatMode) {
  const McEncodeFn enc = byte_encoder();
  const int32_t pad = 257;
  // "Q:" + " B": ids 256 'Q' ':' ' ' 'B' (answer tokens at 3, 4); "Longer question?" + " yes": 21 ids, answer at 17..20.
  std::vector<McExample> exs{mc_example({"Q:", {"A", "B"}, 1}, enc), mc_example({"Longer question?", {"yes", "no"}, 0}, enc)};
  ASSERT_EQ(exs[0].ids.size(), 5u);
  ASSERT_EQ(exs[1].ids.size(), 21u);
  DecodedBatch b = mc_batch(exs, pad);
  ASSERT_EQ(b.input_ids.sizes(), (std::vector<int64_t>{2, 20}));
  ASSERT_EQ(b.targets.sizes(), (std::vector<int64_t>{2, 20}));
  ASSERT_TRUE(b.attention.defined());
  auto in = b.input_ids.accessor<int64_t, 2>();
  auto tg = b.targets.accessor<int64_t, 2>();
  auto am = b.attention.accessor<int64_t, 2>();
  for (int64_t t = 0; t < 20; ++t) {
    EXPECT_EQ(in[0][t], t < 5 ? exs[0].ids[static_cast<size_t>(t)] : pad) << t;
    EXPECT_EQ(am[0][t], t < 5 ? 1 : 0) << t;
    EXPECT_EQ(tg[0][t], t == 2 ? ' ' : t == 3 ? 'B' : -100) << t;
    EXPECT_EQ(am[1][t], 1);
    EXPECT_EQ(tg[1][t], t >= 16 ? exs[1].ids[static_cast<size_t>(t + 1)] : -100) << t;
  }
  EXPECT_EQ((b.targets != -100).sum().item<int64_t>(), 6);

  // mLoRA compatibility: every position a target, padding (to a multiple of 8 tokens) included.
  McSftOptions compat;
  compat.loss_on_all_tokens = true;
  std::vector<McExample> all{mc_example({"Q:", {"A", "B"}, 1}, enc, compat),
                             mc_example({"Longer question?", {"yes", "no"}, 0}, enc, compat)};
  DecodedBatch c = mc_batch(all, pad, compat);
  ASSERT_EQ(c.targets.sizes(), (std::vector<int64_t>{2, 23}));
  EXPECT_EQ((c.targets == -100).sum().item<int64_t>(), 0);
  auto ct = c.targets.accessor<int64_t, 2>();
  auto ca = c.attention.accessor<int64_t, 2>();
  for (int64_t t = 0; t < 23; ++t) {
    EXPECT_EQ(ct[0][t], t + 1 < 5 ? all[0].ids[static_cast<size_t>(t + 1)] : pad) << t;
    EXPECT_EQ(ct[1][t], t + 1 < 21 ? all[1].ids[static_cast<size_t>(t + 1)] : pad) << t;
    EXPECT_EQ(ca[1][t], t < 21 ? 1 : 0) << t;
  }
  // The batch feeds masked_lm_loss: uniform logits give log V over every target.
  at::Tensor loss = masked_lm_loss(at::zeros({2, 23, 300}), c.targets);
  EXPECT_NEAR(loss.item<double>(), std::log(300.0), 1e-5);
}

TEST(MloraEval, ArgmaxAtLastPromptPositionOverLabelTokensOnly) {
  const McEncodeFn enc = byte_encoder();
  const int64_t V = 300;
  const std::vector<McItem> items{{"Q0\nAnswer:", {"A", "B", "C"}, 2},
                                  {"Longer question one\nAnswer:", {"A", "B", "C"}, 0},
                                  {"Q2?\nAnswer:", {"yes", "no"}, 1}};
  // What the fake model favours: C (right), B (wrong), no (right). " yes" -> 's', " no" -> 'o'.
  const std::vector<int64_t> favoured{'C', 'B', 'o'}, decoy{'A', 'C', 's'};
  int64_t seen = 0;
  std::vector<int64_t> lengths_seen;
  eval::BatchLogitsFn fn = [&](const at::Tensor& ids, const at::Tensor& lengths) {
    const int64_t B = ids.size(0), T = ids.size(1);
    at::Tensor logits = at::zeros({B, T, V});
    auto la = logits.accessor<float, 3>();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t len = lengths[b].item<int64_t>(), k = seen + b;
      lengths_seen.push_back(len);
      for (int64_t t = 0; t < T; ++t) la[b][t][decoy[static_cast<size_t>(k)]] = 100.0f;  // every other position
      la[b][len - 1][decoy[static_cast<size_t>(k)]] = 0.0f;
      la[b][len - 1][favoured[static_cast<size_t>(k)]] = 5.0f;
      la[b][len - 1]['Z'] = 50.0f;  // not a label token: ignored
    }
    seen += B;
    return logits;
  };
  eval::MloraEvalOptions opt;
  opt.batch_size = 2;  // two forwards; the first pads item 0 behind item 1
  eval::MloraEvalResult r = eval::mlora_evaluate(items, enc, fn, opt);
  EXPECT_EQ(seen, 3);
  EXPECT_EQ(lengths_seen, (std::vector<int64_t>{1 + 10, 1 + 27, 1 + 11}));  // BOS + prompt bytes
  EXPECT_EQ(r.predictions, (std::vector<int64_t>{2, 1, 1}));
  EXPECT_EQ(r.correct, 2);
  EXPECT_EQ(r.total, 3);
  EXPECT_DOUBLE_EQ(r.accuracy(), 2.0 / 3.0);

  // Equal label logits: the first label wins, as torch's argmax.
  eval::MloraEvalResult ties = eval::mlora_evaluate(
      items, enc, [&](const at::Tensor& ids, const at::Tensor&) { return at::zeros({ids.size(0), ids.size(1), V}); }, opt);
  EXPECT_EQ(ties.predictions, (std::vector<int64_t>{0, 0, 0}));
  // A logits function of the wrong shape: one line.
  const std::string e = error_of([&] {
    eval::mlora_evaluate(items, enc, [&](const at::Tensor& ids, const at::Tensor&) {
      return at::zeros({ids.size(0), ids.size(1) + 1, V});
    });
  });
  EXPECT_NE(e.find("expected [B, T, V]"), std::string::npos) << e;
}

TEST(MloraEval, RuntimeModelMatchesTheLogitsFunction) {
  auto tok = Tokenizer::load(kTiny);
  auto model = Model::load(kTiny);
  model->eval();
  auto all = mc_items(builtin("arc_easy"), McSplit::Test, kData);
  std::vector<McItem> items(all.begin(), all.begin() + 6);
  eval::MloraEvalOptions opt;
  opt.batch_size = 4;
  eval::MloraEvalResult direct = eval::mlora_evaluate(*model, *tok, items, opt);
  opt.pad_id = mlora_pad_id(*tok);
  eval::MloraEvalResult via_fn = eval::mlora_evaluate(
      items, mc_encoder(*tok),
      [&](const at::Tensor& ids, const at::Tensor& lengths) {
        torch::NoGradGuard no_grad;
        const at::Tensor mask = (at::arange(ids.size(1), at::kLong).unsqueeze(0) < lengths.unsqueeze(1)).to(at::kLong);
        return model->forward(ids, mask);
      },
      opt);
  EXPECT_EQ(direct.total, 6);
  EXPECT_EQ(direct.predictions, via_fn.predictions);
  EXPECT_EQ(direct.correct, via_fn.correct);
}
