// Request strings (context, continuation, gold) of the built-in tasks, against strings written by
// hand from lm-eval's templates (shared spec merge_and_eval.md §B.3) for real documents of the
// benchmark files (tests/data/benchmarks) and for hand-written documents in the HF field layouts.
#include <gtest/gtest.h>

#include "eval/jsonl.h"
#include "eval/registry.h"
#include "eval/requests.h"
#include "eval/tasks/tasks.h"
#include "eval/tasks/wikitext.h"
#include "eval/text.h"
#include "util/error.h"
#include "util/fs.h"
#include "test_helpers.h"

using namespace mf;
using mf::testing_helpers::error_of;
using namespace mf::eval;

namespace {

const std::string kData = std::string(MOEFORGE_TEST_DATA) + "/benchmarks";

const TaskRegistry& reg() {
  static TaskRegistry r = TaskRegistry::builtin();
  return r;
}

std::vector<Instance> file_instances(const std::string& task, const std::string& dir = kData) {
  const TaskDef* t = reg().find_task(task);
  if (!t) fail("no task " + task);
  return build_instances(*t, load_task_docs(*t, resolve_data_file(*t, dir)));
}

Instance doc_instance(const std::string& task, const std::string& json_line) {
  const TaskDef* t = reg().find_task(task);
  EXPECT_NE(t, nullptr);
  Doc d{json::parse(json_line), "hand.jsonl", 1};
  return build_instance(*t, d, 0);
}

void expect_mc(const Instance& inst, const std::string& ctx, const std::vector<std::string>& conts, int64_t gold) {
  ASSERT_EQ(inst.requests.size(), conts.size());
  for (size_t i = 0; i < conts.size(); ++i) {
    EXPECT_EQ(inst.requests[i].context, ctx) << "choice " << i;
    EXPECT_EQ(inst.requests[i].continuation, conts[i]) << "choice " << i;
  }
  EXPECT_EQ(inst.gold, gold);
}

}  // namespace

TEST(EvalTasks, ArcEasyRealDocuments) {
  auto insts = file_instances("arc_easy");
  ASSERT_EQ(insts.size(), 22u);
  expect_mc(insts[0],
            "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:",
            {" Sunlight is the source of energy for nearly all ecosystems.",
             " Most ecosystems are found on land instead of in water.",
             " Carbon dioxide is more available than other gases.", " The producers in all ecosystems are plants."},
            0);
  // Numeric labels 1..4, answerKey "2".
  expect_mc(insts[14], "Question: All living and nonliving material is composed of\nAnswer:",
            {" air", " elements", " water", " soil"}, 1);
  // 3 and 5 choices.
  expect_mc(insts[20],
            "Question: When a rock is placed in a graduated cylinder containing water, the height of the water "
            "will\nAnswer:",
            {" decrease", " increase", " remain the same"}, 1);
  expect_mc(insts[21], "Question: What gas in the air do we need to breathe in order to live?\nAnswer:",
            {" nitrogen", " oxygen", " carbon dioxide", " hydrogen", " water vapor"}, 1);
  EXPECT_EQ(insts[0].origin, kData + "/arc_easy/test.jsonl:1");
  EXPECT_EQ(insts[0].choices[0], "Sunlight is the source of energy for nearly all ecosystems.");
}

TEST(EvalTasks, ArcChallengeAndOpenBookQAHandDocs) {
  expect_mc(doc_instance("arc_challenge",
                         R"({"id":"x","question":"Which is a gas?","choices":{"text":["ice","steam","wood","iron"],)"
                         R"("label":["A","B","C","D"]},"answerKey":"B"})"),
            "Question: Which is a gas?\nAnswer:", {" ice", " steam", " wood", " iron"}, 1);
  // OpenBookQA: no prefix, answerKey may carry leading spaces (lstrip).
  expect_mc(doc_instance("openbookqa",
                         R"({"id":"7-980","question_stem":"The sun is responsible for",)"
                         R"("choices":{"text":["puppies learning new tricks","children growing up and getting old",)"
                         R"("flowers wilting in a vase","plants sprouting, blooming and wilting"],)"
                         R"("label":["A","B","C","D"]},"answerKey":" D"})"),
            "The sun is responsible for",
            {" puppies learning new tricks", " children growing up and getting old", " flowers wilting in a vase",
             " plants sprouting, blooming and wilting"},
            3);
}

TEST(EvalTasks, PiqaRealDocuments) {
  auto insts = file_instances("piqa");
  ASSERT_EQ(insts.size(), 20u);
  expect_mc(insts[0], "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
            {" Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you "
             "will also need to supply it with a water bottle and a food dish.",
             " Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you "
             "will also need to supply it with a water bottle and a food dish."},
            0);
  // Original trailing and double spaces are kept.
  expect_mc(insts[1], "Question: dresser\nAnswer:",
            {" replace drawer with bobby pin ", " finish, woodgrain with  bobby pin "}, 1);
}

TEST(EvalTasks, SciqRealDocuments) {
  auto insts = file_instances("sciq");
  ASSERT_EQ(insts.size(), 21u);
  expect_mc(insts[2],
            "Figure 29.7 Vertebrata are characterized by the presence of a backbone, such as the one that runs "
            "through the middle of this fish. All vertebrates are in the Craniata clade and have a cranium. "
            "(credit: Ernest V. More; taken at Smithsonian Museum of Natural History, Washington, D."
            "\nQuestion: Vertebrata are characterized by the presence of what?\nAnswer:",
            {" Bones", " Muscles", " Thumbs", " backbone"}, 3);
  // Empty support: the context starts with the newline.
  expect_mc(insts[20], "\nQuestion: In what type of animals may a body cavity be present or absent?\nAnswer:",
            {" vertebrate", " bicellular", " nonvascular", " triploblastic"}, 3);
}

TEST(EvalTasks, WinograndePartialScoring) {
  auto insts = file_instances("winogrande");
  ASSERT_EQ(insts.size(), 20u);
  const Instance& a = insts[0];
  ASSERT_EQ(a.requests.size(), 2u);
  EXPECT_EQ(a.requests[0].context, "Sarah was a much better surgeon than Maria so Sarah");
  EXPECT_EQ(a.requests[1].context, "Sarah was a much better surgeon than Maria so Maria");
  EXPECT_EQ(a.requests[0].continuation, " always got the easier cases.");
  EXPECT_EQ(a.requests[1].continuation, " always got the easier cases.");
  EXPECT_EQ(a.gold, 1);
  const Instance& d = insts[3];
  EXPECT_EQ(d.requests[0].context, "Terry tried to bake the eggplant in the toaster oven but the eggplant");
  EXPECT_EQ(d.requests[1].context, "Terry tried to bake the eggplant in the toaster oven but the toaster");
  EXPECT_EQ(d.requests[0].continuation, " was too big.");
  EXPECT_EQ(d.gold, 0);
}

TEST(EvalTasks, BoolqRealDocuments) {
  auto insts = file_instances("boolq");
  ASSERT_EQ(insts.size(), 20u);
  expect_mc(insts[4],
            "Hydroxyzine preparations require a doctor's prescription. The drug is available in two formulations, "
            "the pamoate and the dihydrochloride or hydrochloride salts. Vistaril, Equipose, Masmoran, and "
            "Paxistil are preparations of the pamoate salt, while Atarax, Alamon, Aterax, Durrax, Tran-Q, "
            "Orgatrax, Quiess, and Tranquizine are of the hydrochloride salt.\nQuestion: is there a difference "
            "between hydroxyzine hcl and hydroxyzine pam?\nAnswer:",
            {" no", " yes"}, 1);
  EXPECT_EQ(insts[0].gold, 0);  // "answer": false
  // google/boolq layout (answer: bool, no label) gives the same gold.
  Instance g = doc_instance("boolq", R"({"question":"is it","passage":"P.","answer":true})");
  expect_mc(g, "P.\nQuestion: is it?\nAnswer:", {" no", " yes"}, 1);
}

TEST(EvalTasks, SocialIqaRteHandDocs) {
  expect_mc(doc_instance("social_iqa",
                         R"({"context":"Tracy didn't go home that evening and resisted Riley's attacks.",)"
                         R"("question":"What does Tracy need to do before this?","answerA":"make a new plan",)"
                         R"("answerB":"Go home and see Riley","answerC":"Find somewhere to go","label":"3"})"),
            "Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do before "
            "this?\nA:",
            {" make a new plan", " Go home and see Riley", " Find somewhere to go"}, 2);
  expect_mc(doc_instance("rte", R"({"sentence1":"No Weapons of Mass Destruction Found in Iraq Yet.",)"
                                R"("sentence2":"Weapons of Mass Destruction Found in Iraq.","label":1,"idx":0})"),
            "No Weapons of Mass Destruction Found in Iraq Yet.\nQuestion: Weapons of Mass Destruction Found in "
            "Iraq. True or False?\nAnswer:",
            {" True", " False"}, 1);
}

TEST(EvalTasks, HellaswagPreprocessing) {
  // ctx_b is capitalised (rest lower-cased), " [title]" becomes ". ", other [..] spans vanish,
  // double spaces collapse.
  Instance i = doc_instance(
      "hellaswag",
      R"({"ind":4,"activity_label":"Removing ice from car","ctx_a":"Then, the man writes over the snow covering )"
      R"(the window of a car, and a woman wearing winter clothes smiles.","ctx_b":"then","ctx":"unused",)"
      R"("endings":[", the man adds wax to the windshield and cuts it.","Scrape it [title] Remove the ice [step] Done.",)"
      R"(" , the man puts on a christmas coat, knitted with netting.",", the man continues  removing the snow on his car."],)"
      R"("label":"3","split":"val","split_type":"indomain","source_id":"activitynet~v_-1IBHYS3L-Y"})");
  expect_mc(i,
            "Removing ice from car: Then, the man writes over the snow covering the window of a car, and a woman "
            "wearing winter clothes smiles. Then",
            {" , the man adds wax to the windshield and cuts it.", " Scrape it. Remove the ice Done.",
             " , the man puts on a christmas coat, knitted with netting.",
             " , the man continues removing the snow on his car."},
            3);
  EXPECT_EQ(hellaswag_preprocess("A [header] B  C"), "A B C");
  EXPECT_EQ(hellaswag_preprocess("Step [title] Do it"), "Step. Do it");
  // Stripping comes first, so a leading " [title]" is removed as a bracket span, not turned into ". ".
  EXPECT_EQ(hellaswag_preprocess(" [title] Remove the ice [step] Scrape it."), " Remove the ice Scrape it.");
}

TEST(EvalTasks, MmluSubjectHeaderAndGroups) {
  Instance i = doc_instance("mmlu_high_school_us_history",
                            R"({"question":"  Who wrote it?\n","subject":"high_school_us_history",)"
                            R"("choices":["Adams","Jefferson","Madison","Hamilton"],"answer":1})");
  expect_mc(i,
            "The following are multiple choice questions (with answers) about high school us history.\n\n"
            "Who wrote it?\nA. Adams\nB. Jefferson\nC. Madison\nD. Hamilton\nAnswer:",
            {" A", " B", " C", " D"}, 1);
  EXPECT_EQ(mmlu_subjects().size(), 57u);
  EXPECT_EQ(reg().expand("mmlu").size(), 57u);
  size_t total = 0;
  for (const char* g : {"mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other"})
    total += reg().expand(g).size();
  EXPECT_EQ(total, 57u);
  EXPECT_EQ(reg().expand("mmlu_humanities").size(), 13u);
  EXPECT_EQ(reg().expand("mmlu_stem").size(), 19u);
}

TEST(EvalTasks, LambadaHandDoc) {
  Instance i = doc_instance("lambada_openai", R"({"text":"he said , \"go to the  store\" and left with Jack"})");
  ASSERT_EQ(i.requests.size(), 1u);
  EXPECT_EQ(i.requests[0].context, "he said , \"go to the  store\" and left with");
  EXPECT_EQ(i.requests[0].continuation, " Jack");
}

TEST(EvalTasks, WikitextPagesAndDetokenizer) {
  auto insts = file_instances("wikitext");
  ASSERT_EQ(insts.size(), 2u);  // "Robert Boulter" and "Du Fu"
  const std::string raw = read_file(kData + "/wikitext2/wiki.test.raw");
  auto pages = wikitext_split_pages(raw);
  ASSERT_EQ(pages.size(), 2u);
  EXPECT_EQ(pages[0].substr(0, 21), " = Robert Boulter = \n");
  EXPECT_EQ(pages[1].substr(0, 12), " = Du Fu = \n");
  EXPECT_EQ(pages[0] + "\n" + pages[1], raw.substr(2));  // the leading " \n" line is dropped
  // Words and bytes are counted on the original page.
  EXPECT_EQ(insts[0].bytes, static_cast<int64_t>(pages[0].size()));
  EXPECT_EQ(insts[0].requests[0].context, "");
  EXPECT_EQ(insts[0].requests[0].continuation.substr(0, 28), " = Robert Boulter =\n\nRobert ");
  // Hand-derived detokenisations.
  EXPECT_EQ(wikitext_detokenize(" = = Career = = \n"), " == Career ==\n");
  EXPECT_EQ(wikitext_detokenize("a guest @-@ starring role , in 2 @,@ 000 @.@ 5 ( film ) \" Teddy 's Story \" ."),
            "a guest-starring role, in 2,000.5 (film) \"Teddy's Story\" .");
  EXPECT_EQ(wikitext_detokenize("the players ' union"), "the players' union");
}

TEST(EvalTasks, WikitextWordCountMatchesRegexSplit) {
  // len(re.split(r"\s+", s)) counts empty pieces at both ends.
  EXPECT_EQ(count_regex_split_ws(" a b \n"), 4);
  EXPECT_EQ(count_regex_split_ws("a  b"), 2);
  EXPECT_EQ(count_regex_split_ws(""), 1);
}

TEST(EvalTasks, MalformedInputErrorsNameFileAndLine) {
  const std::string dir = ::testing::TempDir() + "mf_eval_bad";
  make_dirs(dir + "/arc_easy");
  make_dirs(dir + "/piqa");
  const std::string file = dir + "/arc_easy/test.jsonl";
  const std::string good = R"({"question":"q","choices":{"text":["a","b"],"label":["A","B"]},"answerKey":"A"})";
  auto arc_error = [&](const std::string& second_line) {
    write_file_atomic(file, good + "\n\n" + second_line + "\n");  // blank line 2 is skipped; doc on line 3
    return error_of([&] { file_instances("arc_easy", dir); });
  };
  std::string e = arc_error(R"({"question": "q", "choices": )");
  EXPECT_EQ(e.rfind(file + ":3: invalid JSON", 0), 0u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos);
  EXPECT_EQ(arc_error(R"({"question":"q","answerKey":"A"})"), file + ":3: missing field 'choices'");
  EXPECT_EQ(arc_error(R"({"question":7,"choices":{"text":["a"],"label":["A"]},"answerKey":"A"})"),
            file + ":3: field 'question' must be a string");
  EXPECT_EQ(arc_error(R"({"question":"q","choices":{"text":["a","b"],"label":["A","B"]},"answerKey":"C"})"),
            file + ":3: answerKey 'C' is not one of the choice labels");
  EXPECT_EQ(arc_error(R"([1, 2])"), file + ":3: expected a JSON object");
  const std::string pfile = dir + "/piqa/validation.jsonl";
  write_file_atomic(pfile, R"({"goal":"g","sol1":"a","sol2":"b","label":2})" "\n");
  EXPECT_EQ(error_of([&] { file_instances("piqa", dir); }), pfile + ":1: gold index 2 out of range for 2 choices");
  EXPECT_EQ(error_of([&] { file_instances("boolq", dir); }),
            dir + "/boolq/validation.jsonl: no such file for task 'boolq'");
  EXPECT_EQ(error_of([&] { file_instances("mmlu_anatomy", dir); })
                .rfind(dir + "/mmlu/anatomy/test.jsonl: no such file for task 'mmlu_anatomy'; looked under " + dir +
                           " for: mmlu/anatomy/test.jsonl (HF cais/mmlu JSONL), mmlu/all/test.jsonl (",
                       0),
            0u);
}
