// The data layouts the evaluator accepts besides the HF `datasets` JSONL (docs/eval.md): every
// layout fixture (tests/data/benchmarks/layouts/<task>/<layout>/, real records, provenance in
// tests/data/benchmarks/SOURCES.md) must give the requests (context, continuation, gold, target) and
// the --log-samples documents of the same records written in the canonical HF layout; plus the one
// error line when nothing fits, and the CSV / TSV / list-cell parsing edge cases.
#include <gtest/gtest.h>

#include "eval/csv.h"
#include "eval/registry.h"
#include "eval/requests.h"
#include "eval/tasks/tasks.h"
#include "test_helpers.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

using namespace mf;
using namespace mf::eval;
using mf::testing_helpers::error_of;

namespace {

const std::string kLayouts = std::string(MOEFORGE_TEST_DATA) + "/benchmarks/layouts";

const TaskRegistry& reg() {
  static TaskRegistry r = TaskRegistry::builtin();
  return r;
}

const TaskDef& task(const std::string& name) {
  const TaskDef* t = reg().find_task(name);
  if (!t) fail("no task " + name);
  return *t;
}

struct Loaded {
  TaskData data;
  std::vector<Doc> docs;
  std::vector<Instance> insts;
};

Loaded load(const std::string& name, const std::string& dir) {
  Loaded l;
  l.data = find_task_data(task(name), dir);
  l.docs = load_task_data(task(name), l.data);
  l.insts = build_instances(task(name), l.docs);
  return l;
}

// The document as --log-samples writes it (and hashes it).
std::string logged(const std::string& name, const Doc& d) {
  const TaskDef& t = task(name);
  return (t.log_doc ? t.log_doc(d) : doc_in_file_order(d)).dump();
}

void expect_same_requests(const Loaded& got, const Loaded& want) {
  ASSERT_EQ(got.insts.size(), want.insts.size());
  for (size_t i = 0; i < got.insts.size(); ++i) {
    const Instance& g = got.insts[i];
    const Instance& w = want.insts[i];
    ASSERT_EQ(g.requests.size(), w.requests.size()) << "doc " << i;
    for (size_t r = 0; r < g.requests.size(); ++r) {
      EXPECT_EQ(g.requests[r].context, w.requests[r].context) << "doc " << i << " request " << r;
      EXPECT_EQ(g.requests[r].continuation, w.requests[r].continuation) << "doc " << i << " request " << r;
    }
    EXPECT_EQ(g.gold, w.gold) << "doc " << i;
    EXPECT_EQ(g.target, w.target) << "doc " << i;
    EXPECT_EQ(g.choices, w.choices) << "doc " << i;
  }
}

void expect_same_docs(const std::string& name, const Loaded& got, const Loaded& want) {
  ASSERT_EQ(got.docs.size(), want.docs.size());
  for (size_t i = 0; i < got.docs.size(); ++i)
    EXPECT_EQ(logged(name, got.docs[i]), logged(name, want.docs[i])) << "doc " << i;
}

// Compares a layout with the canonical layout of the same records; `layout` is the index of the
// layout in the task's data_files that must have been found.
void expect_layout(const std::string& name, const std::string& dir, size_t layout, const std::string& canonical,
                   bool same_docs = true) {
  SCOPED_TRACE(name + " " + dir);
  const Loaded want = load(name, kLayouts + "/" + canonical);
  ASSERT_EQ(want.data.layout, 0u);
  ASSERT_FALSE(want.insts.empty());
  const Loaded got = load(name, kLayouts + "/" + dir);
  EXPECT_EQ(got.data.layout, layout) << got.data.path;
  expect_same_requests(got, want);
  if (same_docs) expect_same_docs(name, got, want);
  // The path-only functions pick the same layout.
  const auto docs = load_task_docs(task(name), resolve_data_file(task(name), kLayouts + "/" + dir));
  ASSERT_EQ(docs.size(), got.docs.size());
  for (size_t i = 0; i < docs.size(); ++i) EXPECT_EQ(docs[i].raw, got.docs[i].raw);
}

std::string temp_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "mf_layouts_" + name;
  remove_all(dir);
  make_dirs(dir);
  return dir;
}

}  // namespace

TEST(EvalLayouts, LambadaOpenAIFile) {
  expect_layout("lambada_openai", "lambada_openai/openai", 1, "lambada_openai/hf");
  const Loaded l = load("lambada_openai", kLayouts + "/lambada_openai/openai");
  ASSERT_EQ(l.insts.size(), 4u);
  EXPECT_EQ(l.insts[0].requests[0].continuation, " signs");
  EXPECT_EQ(l.insts[1].requests[0].continuation, " Shane");
  // The same file at the root of --data-dir.
  const std::string dir = temp_dir("lambada");
  copy_file(kLayouts + "/lambada_openai/openai/lambada_openai/lambada_test.jsonl", dir + "/lambada_test.jsonl");
  const Loaded root = load("lambada_openai", dir);
  EXPECT_EQ(root.data.layout, 2u);
  expect_same_requests(root, l);
}

TEST(EvalLayouts, MmluOriginalCsv) {
  for (const char* s : {"mmlu_abstract_algebra", "mmlu_high_school_computer_science"})
    expect_layout(s, "mmlu/hendrycks", 6, "mmlu/hf");
  // Quoted commas, doubled quotes, line breaks and non-ASCII inside quoted fields, as in the file.
  const Loaded l = load("mmlu_high_school_computer_science", kLayouts + "/mmlu/hendrycks");
  ASSERT_EQ(l.insts.size(), 4u);
  EXPECT_EQ(l.insts[3].requests[0].context,
            "The following are multiple choice questions (with answers) about high school computer science.\n\n"
            "What is the output of the statement \"a\" + \"ab\" in Python 3?\nA. Error\nB. aab\nC. ab\nD. a ab\n"
            "Answer:");
  EXPECT_EQ(l.insts[3].gold, 1);
  EXPECT_NE(l.insts[2].requests[0].context.find("display \"odd\" if the positive number num is odd.\n IF ("),
            std::string::npos);
  EXPECT_NE(l.insts[1].requests[0].context.find("\n   \xC2\xB0 The student's gender\n"), std::string::npos);
  const Loaded a = load("mmlu_abstract_algebra", kLayouts + "/mmlu/hendrycks");
  EXPECT_TRUE(ends_with(a.insts[2].requests[0].context, " in Z_5\nA. 0\nB. 1\nC. 0,1\nD. 0,4\nAnswer:"))
      << a.insts[2].requests[0].context;
  EXPECT_EQ(a.docs[0].origin(), kLayouts + "/mmlu/hendrycks/test/abstract_algebra_test.csv:1");
  EXPECT_EQ(l.docs[2].origin(), kLayouts + "/mmlu/hendrycks/test/high_school_computer_science_test.csv:8");
}

TEST(EvalLayouts, MmluCsvExportsAndOneJsonl) {
  for (const char* s : {"mmlu_abstract_algebra", "mmlu_high_school_computer_science"}) {
    expect_layout(s, "mmlu/hf_csv", 5, "mmlu/hf");     // datasets' to_csv: numpy list cells
    expect_layout(s, "mmlu/csv_lists", 3, "mmlu/hf");  // JSON lists / Python list reprs, letters
    expect_layout(s, "mmlu/one_jsonl", 2, "mmlu/hf");  // one JSONL with a subject field
  }
  // The global_facts row of the combined files is left to its own task.
  EXPECT_EQ(load("mmlu_global_facts", kLayouts + "/mmlu/hf_csv").insts.size(), 1u);
  EXPECT_EQ(load("mmlu_global_facts", kLayouts + "/mmlu/one_jsonl").docs[0].line, 3);
}

TEST(EvalLayouts, RteGlueTsv) {
  expect_layout("rte", "rte/glue", 1, "rte/hf");
  const Loaded l = load("rte", kLayouts + "/rte/glue");
  ASSERT_EQ(l.insts.size(), 4u);
  EXPECT_EQ(l.insts[0].gold, 1);  // not_entailment
  EXPECT_EQ(l.insts[2].gold, 0);  // entailment
  // No quoting: a field that starts with a quote keeps it (csv.QUOTE_NONE).
  const std::string& ctx = l.insts[3].requests[0].context;
  EXPECT_NE(ctx.find("\nQuestion: \"Fairytale of New York\" does not contain the word \"faggot\". True or False?"),
            std::string::npos)
      << ctx;
  EXPECT_TRUE(ends_with(logged("rte", l.docs[3]), "\"label\":1,\"idx\":3}")) << logged("rte", l.docs[3]);
}

TEST(EvalLayouts, OpenBookQAOriginalRelease) {
  expect_layout("openbookqa", "openbookqa/original", 1, "openbookqa/hf");
  const Loaded l = load("openbookqa", kLayouts + "/openbookqa/original");
  EXPECT_EQ(l.insts[0].requests[3].context, "The sun is responsible for");
  EXPECT_EQ(l.insts[0].requests[3].continuation, " plants sprouting, blooming and wilting");
  EXPECT_EQ(l.insts[2].gold, 2);
}

TEST(EvalLayouts, SocialIqaReleases) {
  expect_layout("social_iqa", "social_iqa/leaderboard", 2, "social_iqa/hf");  // dev.jsonl + dev-labels.lst
  expect_layout("social_iqa", "social_iqa/v14", 4, "social_iqa/hf");          // correct: "A".."C"
  const Loaded l = load("social_iqa", kLayouts + "/social_iqa/leaderboard");
  EXPECT_EQ(l.insts[0].gold, 2);
  EXPECT_EQ(l.insts[1].gold, 0);
  // A labels file that does not match the rows is refused.
  const std::string dir = temp_dir("siqa");
  make_dirs(dir + "/social_iqa");
  copy_file(kLayouts + "/social_iqa/leaderboard/socialiqa-train-dev/dev.jsonl", dir + "/social_iqa/dev.jsonl");
  write_file_atomic(dir + "/social_iqa/dev-labels.lst", "3\n1\n");
  EXPECT_EQ(error_of([&] { load("social_iqa", dir); }),
            dir + "/social_iqa/dev-labels.lst: 2 labels for 5 rows of " + dir + "/social_iqa/dev.jsonl");
  remove_all(dir + "/social_iqa/dev-labels.lst");
  EXPECT_EQ(error_of([&] { load("social_iqa", dir); }),
            dir + "/social_iqa/dev-labels.lst: no such file (the labels of " + dir + "/social_iqa/dev.jsonl)");
  write_file_atomic(dir + "/social_iqa/dev-labels.lst", "3\n1\n2\n4\n3\n");
  EXPECT_EQ(error_of([&] { load("social_iqa", dir); }),
            dir + "/social_iqa/dev.jsonl:4: label must be 1, 2 or 3 (got '4')");
}

TEST(EvalLayouts, HellaswagOriginalReleaseAndLlamaCppFile) {
  expect_layout("hellaswag", "hellaswag/original", 2, "hellaswag/hf");
  // llama.cpp's text file has no ind / source_id / split / split_type: its documents are the HF rows
  // without them; the requests are the HF rows' (these are ActivityNet documents, see docs/eval.md).
  expect_layout("hellaswag", "hellaswag/llamacpp", 4, "hellaswag/hf", false);
  expect_same_docs("hellaswag", load("hellaswag", kLayouts + "/hellaswag/llamacpp"),
                   load("hellaswag", kLayouts + "/hellaswag/hf_subset"));
  const Loaded l = load("hellaswag", kLayouts + "/hellaswag/llamacpp");
  EXPECT_EQ(l.insts[0].requests[3].context, "Roof shingle removal: A man is sitting on a roof. He");
  EXPECT_EQ(l.insts[0].requests[3].continuation, " starts pulling up roofing on a roof.");
  EXPECT_EQ(l.insts[2].requests[0].context,
            "Canoeing: Two women in a child are shown in a canoe while a man pulls the canoe while standing in the "
            "water, with other individuals visible in the background. The child and a different man");
  EXPECT_EQ(l.docs[1].origin(), kLayouts + "/hellaswag/llamacpp/hellaswag_val_full.txt:7");
}

TEST(EvalLayouts, HellaswagCtxOnlyCopies) {
  // Real Rowan/hellaswag rows (2 WikiHow, 2 ActivityNet) with ctx_a / ctx_b removed: the split rule
  // gives them back, so requests and documents are the HF rows'.
  expect_layout("hellaswag", "hellaswag/ctx_only", 0, "hellaswag/hf_train");
  const Loaded l = load("hellaswag", kLayouts + "/hellaswag/ctx_only");
  EXPECT_EQ(l.insts[3].requests[0].context,
            "Removing ice from car: Then, the man writes over the snow covering the window of a car, and a woman "
            "wearing winter clothes smiles. Then");
  // lm-eval keeps the space left by a leading tag: "[step] Water ..." -> " Water ...".
  EXPECT_EQ(l.insts[1].requests[0].continuation.substr(0, 15), "  Water changes");

  EXPECT_EQ(hellaswag_split_ctx("A man is sitting on a roof. he"),
            std::make_pair(std::string("A man is sitting on a roof."), std::string("he")));
  EXPECT_EQ(hellaswag_split_ctx("He said \"stop.\" then the man"),
            std::make_pair(std::string("He said \"stop.\""), std::string("then the man")));
  EXPECT_EQ(hellaswag_split_ctx("[header] How to x [title] Do it. [step] Then rest."),
            std::make_pair(std::string("[header] How to x [title] Do it. [step] Then rest."), std::string()));
  EXPECT_EQ(hellaswag_split_ctx("the boy"), std::make_pair(std::string(), std::string("the boy")));
  EXPECT_EQ(hellaswag_split_ctx("Mr. Smith waves. then, the man"),
            std::make_pair(std::string("Mr. Smith waves."), std::string("then, the man")));
}

TEST(EvalLayouts, NothingFitsIsOneLine) {
  const std::string dir = temp_dir("none");
  EXPECT_EQ(error_of([&] { load("hellaswag", dir); }),
            dir + "/hellaswag/validation.jsonl: no such file for task 'hellaswag'; looked under " + dir +
                " for: hellaswag/validation.jsonl (HF Rowan/hellaswag JSONL, or a copy with ctx only), "
                "hellaswag/hellaswag_val.jsonl (the original release), hellaswag_val.jsonl (the original release), "
                "hellaswag/hellaswag_val_full.txt (llama.cpp's text file), hellaswag_val_full.txt (llama.cpp's text "
                "file)");
  EXPECT_EQ(error_of([&] { load("rte", dir); }),
            dir + "/rte/validation.jsonl: no such file for task 'rte'; looked under " + dir +
                " for: rte/validation.jsonl (HF nyu-mll/glue rte JSONL), RTE/dev.tsv (GLUE's TSV), "
                "glue_data/RTE/dev.tsv (GLUE's TSV)");
  const std::string mmlu = error_of([&] { load("mmlu_anatomy", dir); });
  EXPECT_EQ(mmlu.find('\n'), std::string::npos);
  EXPECT_EQ(mmlu.rfind(dir + "/mmlu/anatomy/test.jsonl: no such file for task 'mmlu_anatomy'; looked under ", 0), 0u)
      << mmlu;
  for (const char* part : {"mmlu/all/test.jsonl (HF cais/mmlu 'all' JSONL, rows with subject 'anatomy')",
                           "mmlu/test.csv (CSV export with a header, rows with subject 'anatomy')",
                           "test/anatomy_test.csv (the original release's CSV, no header)"})
    EXPECT_NE(mmlu.find(part), std::string::npos) << part;
  // One candidate: the message is unchanged.
  EXPECT_EQ(error_of([&] { load("boolq", dir); }), dir + "/boolq/validation.jsonl: no such file for task 'boolq'");
}

TEST(EvalLayouts, MalformedFilesNameTheLine) {
  const std::string dir = temp_dir("bad");
  make_dirs(dir + "/test");
  write_file_atomic(dir + "/test/anatomy_test.csv", "q1,a,b,c,d,A\nq2,a,b,c,d\n");
  EXPECT_EQ(error_of([&] { load("mmlu_anatomy", dir); }),
            dir + "/test/anatomy_test.csv:2: 5 fields, expected 6 (question, A, B, C, D, answer)");
  write_file_atomic(dir + "/test/anatomy_test.csv", "q1,a,b,c,d,E\n");
  EXPECT_EQ(error_of([&] { load("mmlu_anatomy", dir); }),
            dir + "/test/anatomy_test.csv:1: field 'answer' must be 0-3 or A-D (got 'E')");
  write_file_atomic(dir + "/test/anatomy_test.csv", "q1,a,b,c,d,A\n\"q2,a,b,c,d,B\n");
  EXPECT_EQ(error_of([&] { load("mmlu_anatomy", dir); }), dir + "/test/anatomy_test.csv:2: unterminated quoted field");
  make_dirs(dir + "/mmlu");
  write_file_atomic(dir + "/mmlu/test.csv", "question,subject,choices,answer\nq,anatomy,['a' 'b'],0\n");
  EXPECT_EQ(error_of([&] { load("mmlu_anatomy", dir); }),
            dir + "/mmlu/test.csv:2: field 'choices' must have 4 entries (has 2)");
  make_dirs(dir + "/RTE");
  write_file_atomic(dir + "/RTE/dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tcontradiction\n");
  EXPECT_EQ(error_of([&] { load("rte", dir); }),
            dir + "/RTE/dev.tsv:2: label must be entailment or not_entailment (got 'contradiction')");
  write_file_atomic(dir + "/hellaswag_val_full.txt", "A: b\n1\nx\ny\nz\n");
  EXPECT_EQ(error_of([&] { load("hellaswag", dir); }),
            dir + "/hellaswag_val_full.txt: 5 lines; llama.cpp's HellaSwag file has 6 per task (activity label: "
                  "context, gold, 4 endings)");
  write_file_atomic(dir + "/hellaswag_val.jsonl", R"({"activity_label":"A","endings":["x"],"label":0})" "\n");
  EXPECT_EQ(error_of([&] { load("hellaswag", dir); }),
            dir + "/hellaswag_val.jsonl:1: missing fields 'ctx_a' and 'ctx_b' (nor 'ctx')");
}

TEST(EvalLayouts, CsvRfc4180) {
  const auto r = parse_csv("a,\"b,c\",d\r\n\"say \"\"hi\"\"\",,\"two\r\nlines\"\n\n\"\",x", "t.csv");
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].fields, (std::vector<std::string>{"a", "b,c", "d"}));  // quoted comma, CRLF end
  EXPECT_EQ(r[1].fields, (std::vector<std::string>{"say \"hi\"", "", "two\nlines"}));  // doubled quote, CRLF inside
  EXPECT_EQ(r[1].line, 2);
  EXPECT_EQ(r[2].fields, (std::vector<std::string>{"", "x"}));  // blank line skipped, no final line end
  EXPECT_EQ(r[2].line, 5);
  // Embedded LF, a quote inside an unquoted field, an empty last field, a BOM, a lone CR as line end.
  const auto s = parse_csv("\xEF\xBB\xBFq\"x,\"l1\nl2\",\r\nz\rw", "t.csv");
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].fields, (std::vector<std::string>{"q\"x", "l1\nl2", ""}));
  EXPECT_EQ(s[1].fields, (std::vector<std::string>{"z"}));
  EXPECT_EQ(s[1].line, 3);
  EXPECT_EQ(s[2].fields, (std::vector<std::string>{"w"}));
  EXPECT_TRUE(parse_csv("", "t.csv").empty());
  EXPECT_EQ(error_of([] { parse_csv("a\n\"b\nc", "t.csv"); }), "t.csv:2: unterminated quoted field");
  EXPECT_EQ(error_of([] { parse_csv("\"a\"b,c", "t.csv"); }),
            "t.csv:1: a closing quote must be followed by ',' or the end of the line");
  // TSV: no quoting, CRLF accepted, empty fields kept.
  const auto t = parse_tsv("i\ts\r\n0\t\"q\" x\t\n", "t.tsv");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[1].fields, (std::vector<std::string>{"0", "\"q\" x", ""}));
}

TEST(EvalLayouts, ListCells) {
  using V = std::vector<std::string>;
  EXPECT_EQ(parse_list_cell(R"(["0", "4", "caf\u00e9", "a \"b\""])"), (V{"0", "4", "caf\xC3\xA9", "a \"b\""}));
  EXPECT_EQ(parse_list_cell(R"(['0', "it's", 'a\'b', 'x\ny\t\\'])"), (V{"0", "it's", "a'b", "x\ny\t\\"}));
  EXPECT_EQ(parse_list_cell("['True, True' 'False, False'\n 'caf\xC3\xA9' '\\xe9\\u2013']"),
            (V{"True, True", "False, False", "caf\xC3\xA9", "\xC3\xA9\xE2\x80\x93"}));
  EXPECT_EQ(parse_list_cell(" [] "), V{});
  EXPECT_NE(error_of([] { parse_list_cell("['0' '1' ... '9']"); }).find("shortened by numpy"), std::string::npos);
  EXPECT_NE(error_of([] { parse_list_cell("0|1|2"); }).find("expected a list"), std::string::npos);
  EXPECT_NE(error_of([] { parse_list_cell("['a' b]"); }).find("expected a quoted string"), std::string::npos);
  EXPECT_NE(error_of([] { parse_list_cell("['a]"); }).find("unterminated"), std::string::npos);
}
