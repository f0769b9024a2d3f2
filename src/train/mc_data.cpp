// Multiple-choice SFT data (mc_data.h). The mLoRA templates are those of mLoRA's
// mlora/tasks/qa_tasks.py (same text in MoE-PEFT's moe_peft/tasks/qa_tasks.py), built from the raw
// HF rows: HellaSwag's ctx is not run through lm-eval's preprocess, BoolQ has no passage.
#include "train/mc_data.h"

#include <algorithm>
#include <numeric>

#include "eval/metrics.h"
#include "eval/registry.h"
#include "eval/requests.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf {

using eval::Doc;
using eval::TaskDef;
using Json = nlohmann::json;

namespace {

enum class Template { None, Arc, BoolQ, Obqa, Piqa, Siqa, HellaSwag, WinoGrande };

Template template_of(const std::string& name) {
  if (name == "arc_easy" || name == "arc_challenge") return Template::Arc;
  if (name == "boolq") return Template::BoolQ;
  if (name == "openbookqa") return Template::Obqa;
  if (name == "piqa") return Template::Piqa;
  if (name == "social_iqa" || name == "siqa") return Template::Siqa;
  if (name == "hellaswag") return Template::HellaSwag;
  if (name == "winogrande") return Template::WinoGrande;
  return Template::None;
}

std::vector<std::string> letters(size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.emplace_back(1, static_cast<char>('A' + i));
  return out;
}

int64_t key_index(const std::vector<std::string>& labels, const std::string& key, const char* field) {
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] == key) return static_cast<int64_t>(i);
  fail(cat("field '", field, "' is '", key, "', not one of the labels ", join(labels, ", ")));
}

// A 0-based answer index checked against the number of labels (PIQA's unlabelled test rows say -1).
int64_t in_range(int64_t index, size_t n, const char* field) {
  if (index < 0 || index >= static_cast<int64_t>(n))
    fail(cat("field '", field, "' gives answer ", index, ", not one of 0..", n - 1, " (an unlabelled split?)"));
  return index;
}

// "Please choose the correct answer to the question: Q (l1) t1 (l2) t2 ...\nAnswer:" with the
// dataset's own choice labels (ARC, OBQA).
std::string labelled_question(const std::string& question, const Json& choices) {
  const auto labels = eval::str_list_field(choices, "label"), texts = eval::str_list_field(choices, "text");
  if (labels.size() != texts.size()) fail("fields 'choices.label' and 'choices.text' differ in length");
  std::string p = "Please choose the correct answer to the question: " + question;
  for (size_t i = 0; i < labels.size(); ++i) p += " (" + labels[i] + ") " + texts[i];
  return p + "\nAnswer:";
}

// google/boolq gives `answer` (bool), super_glue `label` (1 = true).
bool boolq_true(const Json& doc) {
  if (doc.is_object() && doc.contains("answer") && doc.at("answer").is_boolean()) return doc.at("answer").get<bool>();
  const char* key = doc.is_object() && doc.contains("label") ? "label" : "answer";
  const int64_t v = eval::int_field(doc, key);
  if (v != 0 && v != 1) fail(cat("field '", key, "' must be 0 or 1 (got ", v, ")"));
  return v == 1;
}

McItem mlora_item(Template t, const Json& doc) {
  using eval::field;
  using eval::int_field;
  using eval::str_field;
  McItem it;
  switch (t) {
    case Template::Arc:
      it.prompt = labelled_question(str_field(doc, "question"), field(doc, "choices"));
      it.labels = {"1", "2", "3", "4", "A", "B", "C", "D", "E"};
      it.answer = key_index(it.labels, str_field(doc, "answerKey"), "answerKey");
      break;
    case Template::Obqa:
      it.prompt = labelled_question(str_field(doc, "question_stem"), field(doc, "choices"));
      it.labels = letters(4);
      it.answer = key_index(it.labels, trim(str_field(doc, "answerKey")), "answerKey");
      break;
    case Template::BoolQ:
      it.prompt =
          "Please answer the following question with true or false: " + str_field(doc, "question") + "?\nAnswer:";
      it.labels = {"true", "false"};
      it.answer = boolq_true(doc) ? 0 : 1;
      break;
    case Template::Piqa:
      it.prompt = "Below is a common task along with two possible solutions labeled (A) and (B). "
                  "Please select the appropriate solution to achieve the task:\n" +
                  str_field(doc, "goal") + "\n\n(A) " + str_field(doc, "sol1") + "\n(B) " + str_field(doc, "sol2") +
                  "\n\nCorrect solution:";
      it.labels = letters(2);
      it.answer = in_range(int_field(doc, "label"), 2, "label");
      break;
    case Template::Siqa:
      it.prompt = "Please choose the correct answer to the question.\nQuestion: " + str_field(doc, "context") + " " +
                  str_field(doc, "question") + "\n(A) " + str_field(doc, "answerA") + "\n(B) " +
                  str_field(doc, "answerB") + "\n(C) " + str_field(doc, "answerC") + "\nAnswer:";
      it.labels = letters(3);
      it.answer = in_range(int_field(doc, "label") - 1, 3, "label");
      break;
    case Template::HellaSwag: {
      const auto endings = eval::str_list_field(doc, "endings");
      if (endings.size() != 4) fail(cat("field 'endings' must have 4 entries (has ", endings.size(), ")"));
      it.labels = letters(4);
      it.prompt = "Please choose the correct ending to complete the given sentence.\nSentence: " +
                  str_field(doc, "activity_label") + ". " + str_field(doc, "ctx");
      for (size_t i = 0; i < endings.size(); ++i) it.prompt += "\n(" + it.labels[i] + ") " + endings[i];
      it.prompt += "\nAnswer:";
      it.answer = in_range(int_field(doc, "label"), 4, "label");
      break;
    }
    case Template::WinoGrande:
      it.prompt = "Please choose the correct answer to fill in the blank to complete the given sentence.\nSentence: " +
                  str_field(doc, "sentence") + "\n(A) " + str_field(doc, "option1") + "\n(B) " +
                  str_field(doc, "option2") + "\nAnswer:";
      it.labels = letters(2);
      it.answer = in_range(int_field(doc, "answer") - 1, 2, "answer");
      break;
    case Template::None: fail("no mLoRA template");
  }
  return it;
}

// moeforge's prompt for a multiple-choice task without an mLoRA template, in the ARC template's
// shape: "Please choose the correct answer to the question: <doc_to_text> (A) c1 (B) c2 ...\nAnswer:"
// with labels A, B, C, ... In lm-eval's multiple-input mode (doc_to_text gives the gold index, the
// choices are contexts: WinoGrande, wordnet_define) the question is the shared continuation.
// The task's description is left out: it is written for lm-eval's own context.
McItem generic_item(const TaskDef& task, const Doc& doc) {
  const eval::Instance inst = eval::build_instance(task, doc, 0);  // gold and choices, lm-eval's checks
  const Json processed = task.process_doc ? task.process_doc(doc.value) : doc.value;
  const eval::TextOrIndex text = task.doc_to_text(processed);
  if (inst.choices.size() > 26)
    fail(cat(doc.origin(), ": ", inst.choices.size(), " choices; the generic prompt letters at most 26 (A-Z)"));
  McItem it;
  it.labels = letters(inst.choices.size());
  it.prompt = "Please choose the correct answer to the question: " + (text.is_index ? inst.target : text.text);
  for (size_t i = 0; i < inst.choices.size(); ++i) it.prompt += " (" + it.labels[i] + ") " + inst.choices[i];
  it.prompt += "\nAnswer:";
  it.answer = inst.gold;
  return it;
}

const char* split_key(McSplit s) {
  switch (s) {
    case McSplit::Train: return "training_split";
    case McSplit::Validation: return "validation_split";
    case McSplit::Test: return "test_split";
  }
  return "";
}

std::string config_string(const TaskDef& t, const char* key) {
  const auto& c = t.lm_config;
  if (!c.is_object() || !c.contains(key) || !c.at(key).is_string()) return "";
  return c.at(key).get<std::string>();
}

// The split's name in the task's data set, "" when the task has no such split.
std::string split_name(const TaskDef& t, McSplit s) {
  bool declared = false;
  for (McSplit x : {McSplit::Train, McSplit::Validation, McSplit::Test})
    declared = declared || !config_string(t, split_key(x)).empty();
  if (!declared) return s == McSplit::Test ? "test" : "";
  return config_string(t, split_key(s));
}

// The split the task's data_files hold: lm-eval evaluates test_split, else validation_split.
std::string eval_split_name(const TaskDef& t) {
  std::string s = config_string(t, "test_split");
  if (s.empty()) s = config_string(t, "validation_split");
  return s.empty() ? "test" : s;
}

// dataset_kwargs.data_files.<name> of a YAML task (a path or a list of paths), as lm-eval's json loader takes it.
std::vector<std::string> kwargs_files(const TaskDef& t, const std::string& name) {
  const auto& c = t.lm_config;
  if (!c.is_object() || !c.contains("dataset_kwargs") || !c.at("dataset_kwargs").is_object()) return {};
  const auto& kw = c.at("dataset_kwargs");
  if (!kw.contains("data_files") || !kw.at("data_files").is_object() || !kw.at("data_files").contains(name)) return {};
  const auto& v = kw.at("data_files").at(name);
  std::vector<std::string> out;
  bool ok = v.is_string() || (v.is_array() && !v.empty());
  if (v.is_string()) out.push_back(v.get<std::string>());
  if (v.is_array())
    for (const auto& e : v) {
      ok = ok && e.is_string();
      if (ok) out.push_back(e.get<std::string>());
    }
  if (!ok) fail("task '" + t.name + "': dataset_kwargs.data_files." + name + " must be a path or a list of paths");
  return out;
}

// "<dir>/<eval split>.<ext>" -> "<dir>/<name>.<ext>"; "" when the file is not named after its split.
std::string sibling_file(const std::string& file, const std::string& eval_split, const std::string& name) {
  const size_t slash = file.find_last_of('/');
  const size_t start = slash == std::string::npos ? 0 : slash + 1;
  const size_t dot = file.find('.', start);
  const std::string stem = file.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
  if (stem != eval_split) return "";
  return file.substr(0, start) + name + (dot == std::string::npos ? "" : file.substr(dot));
}

enum class GmoeRule { Own, Cut8020, ValidationForTest };

GmoeRule gmoe_rule(const std::string& name) {
  if (name == "boolq" || name == "winogrande") return GmoeRule::Cut8020;
  if (name == "social_iqa" || name == "siqa" || name == "hellaswag" || name == "piqa")
    return GmoeRule::ValidationForTest;
  return GmoeRule::Own;
}

std::vector<Doc> policy_docs(const TaskDef& task, McSplit split, const std::string& data_dir, SplitPolicy policy) {
  if (policy == SplitPolicy::TaskSplits || split == McSplit::Train) return task_split_docs(task, split, data_dir);
  switch (gmoe_rule(task.name)) {
    case GmoeRule::Own: return task_split_docs(task, split, data_dir);
    case GmoeRule::ValidationForTest:
      // SIQA / HellaSwag: validation for both; PIQA: validation picks the checkpoint and tests it.
      return task_split_docs(task, McSplit::Validation, data_dir);
    case GmoeRule::Cut8020: {
      std::vector<Doc> all = task_split_docs(task, McSplit::Validation, data_dir);
      const IndexSplit cut = gmoe_validation_split(static_cast<int64_t>(all.size()));
      std::vector<Doc> out;
      for (int64_t i : split == McSplit::Test ? cut.test : cut.validation) out.push_back(all[static_cast<size_t>(i)]);
      return out;
    }
  }
  return {};
}

}  // namespace

const char* mc_split_name(McSplit split) {
  switch (split) {
    case McSplit::Train: return "train";
    case McSplit::Validation: return "validation";
    case McSplit::Test: return "test";
  }
  return "?";
}

McSplit parse_mc_split(const std::string& name) {
  if (name == "train") return McSplit::Train;
  if (name == "validation") return McSplit::Validation;
  if (name == "test") return McSplit::Test;
  throw UsageError("split must be train, validation or test (got '" + name + "')");
}

bool has_mlora_template(const std::string& task_name) { return template_of(task_name) != Template::None; }

McItem mc_item(const TaskDef& task, const Doc& doc) {
  const Template t = template_of(task.name);
  if (t == Template::None) {
    if (task.output_type != eval::OutputType::MultipleChoice)
      fail("task '" + task.name + "' is not a multiple-choice task (output_type " +
           eval::output_type_name(task.output_type) + ")");
    return generic_item(task, doc);  // build_instance names the document in its errors
  }
  try {
    return mlora_item(t, doc.value);
  } catch (const Error& e) {
    fail(doc.origin() + ": " + one_line(e.what()));
  } catch (const Json::exception& e) {
    fail(doc.origin() + ": " + one_line(e.what()));
  }
}

std::vector<Doc> task_split_docs(const TaskDef& task, McSplit split, const std::string& data_dir) {
  const std::string name = split_name(task, split);
  if (name.empty()) {
    std::vector<std::string> has;
    for (McSplit s : {McSplit::Train, McSplit::Validation, McSplit::Test})
      if (!split_name(task, s).empty()) has.push_back(mc_split_name(s));
    fail(cat("task '", task.name, "' has no ", mc_split_name(split), " split (it has: ", join(has, ", "), ")"));
  }
  const std::vector<std::string> files = kwargs_files(task, name);
  if (!files.empty()) {
    std::vector<Doc> docs;
    for (const auto& f : files) {
      const std::string p = path_join(data_dir, f);
      if (!path_exists(p))
        fail_file(p, cat("no such file for the ", mc_split_name(split), " split of task '", task.name, "'"));
      for (auto& d : eval::load_task_data(task, eval::TaskData{p, task.data_files.size()}))
        docs.push_back(std::move(d));
    }
    return docs;
  }
  const std::string own = eval_split_name(task);
  if (name == own) return eval::load_task_data(task, eval::find_task_data(task, data_dir));
  TaskDef sibling = task;
  sibling.data_files.clear();
  for (const auto& l : task.data_files) {
    const std::string f = sibling_file(l.file, own, name);
    if (!f.empty()) sibling.data_files.emplace_back(f, l.what, l.read);
  }
  if (sibling.data_files.empty())
    fail(cat("task '", task.name, "': no file is known for its ", mc_split_name(split), " split '", name,
             "' (its data file is not named after its split; give dataset_kwargs.data_files.", name, ")"));
  return eval::load_task_data(sibling, eval::find_task_data(sibling, data_dir));
}

std::vector<McItem> mc_items(const TaskDef& task, McSplit split, const std::string& data_dir, SplitPolicy policy) {
  if (!has_mlora_template(task.name) && task.output_type != eval::OutputType::MultipleChoice)
    fail("task '" + task.name + "' is not a multiple-choice task (output_type " +
         eval::output_type_name(task.output_type) + ")");
  std::vector<McItem> items;
  for (const Doc& d : policy_docs(task, split, data_dir, policy)) items.push_back(mc_item(task, d));
  return items;
}

std::vector<int64_t> py_shuffled_indices(int64_t n, uint64_t seed) {
  if (n < 0 || n >= (int64_t{1} << 32)) fail(cat("py_shuffled_indices: size ", n, " out of range"));
  std::vector<int64_t> x(static_cast<size_t>(n));
  std::iota(x.begin(), x.end(), int64_t{0});
  eval::PyRandom rng(seed);
  // random.shuffle: for i = len-1 .. 1, j = _randbelow(i + 1), i.e. getrandbits(k) -- the top
  // k = (i + 1).bit_length() bits of one 32-bit draw -- until it is below i + 1.
  for (size_t i = x.size(); i-- > 1;) {
    const uint64_t bound = i + 1;
    int k = 0;
    while (k < 64 && (bound >> k) != 0) ++k;
    uint64_t j = rng.next_u32() >> (32 - k);
    while (j >= bound) j = rng.next_u32() >> (32 - k);
    std::swap(x[i], x[static_cast<size_t>(j)]);
  }
  return x;
}

IndexSplit gmoe_validation_split(int64_t n, uint64_t seed) {
  const std::vector<int64_t> idx = py_shuffled_indices(n, seed);
  // Python's int(n * 0.8): 0.8 as a double is slightly above 0.8, so the product never falls below
  // an integer it should reach, and the floor equals 4n / 5.
  const auto n_test = static_cast<size_t>(n * 4 / 5);
  return {std::vector<int64_t>(idx.begin(), idx.begin() + n_test),
          std::vector<int64_t>(idx.begin() + n_test, idx.end())};
}

McEncodeFn mc_encoder(const Tokenizer& tok) {
  return [&tok](const std::string& text, bool add_special) { return tok.encode(text, add_special); };
}

int32_t mlora_pad_id(const Tokenizer& tok) {
  if (tok.pad_id() >= 0) return tok.pad_id();
  if (const int32_t unk = tok.piece_to_id("<unk>"); unk >= 0) return unk;
  return tok.eos_id() >= 0 ? tok.eos_id() : 0;
}

McExample mc_example(const McItem& item, const McEncodeFn& encode, const McSftOptions& options) {
  if (item.answer < 0 || item.answer >= static_cast<int64_t>(item.labels.size()))
    fail(cat("answer index ", item.answer, " out of range for ", item.labels.size(), " labels"));
  const std::string& label = item.labels[static_cast<size_t>(item.answer)];
  const std::vector<int32_t> prompt = encode(item.prompt, true);
  const std::vector<int32_t> full = encode(item.prompt + " " + label, true);
  size_t first = 0;  // the first answer token: where the two encodings part
  while (first < prompt.size() && first < full.size() && prompt[first] == full[first]) ++first;
  if (first >= full.size()) fail("the answer '" + label + "' adds no token to the prompt's encoding");
  size_t n = full.size();
  if (options.cutoff_len > 0) n = std::min(n, static_cast<size_t>(options.cutoff_len));
  McExample ex;
  ex.ids.assign(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
  ex.loss_mask.resize(n);
  for (size_t i = 0; i < n; ++i) ex.loss_mask[i] = i > 0 && (options.loss_on_all_tokens || i >= first);
  return ex;
}

DecodedBatch mc_batch(const std::vector<McExample>& examples, int32_t pad_id, const McSftOptions& options) {
  if (examples.empty()) fail("mc_batch: no examples");
  if (pad_id < 0) fail("mc_batch: pad id must not be negative");
  int64_t len = 0;
  for (const auto& e : examples) {
    if (e.ids.size() != e.loss_mask.size()) fail("mc_batch: an example's ids and loss mask differ in length");
    if (e.ids.size() < 2) fail("mc_batch: an example needs at least 2 tokens");
    len = std::max(len, static_cast<int64_t>(e.ids.size()));
  }
  if (options.loss_on_all_tokens) len = (len + 7) / 8 * 8;  // mLoRA's dispatcher: ceil(len / 8) * 8
  const int64_t B = static_cast<int64_t>(examples.size()), T = len - 1;
  at::Tensor ids = at::full({B, len}, static_cast<int64_t>(pad_id), at::kLong);
  at::Tensor targets = at::full({B, T}, int64_t{-100}, at::kLong);
  at::Tensor attention = at::zeros({B, T}, at::kLong);
  auto ia = ids.accessor<int64_t, 2>();
  auto ta = targets.accessor<int64_t, 2>();
  auto aa = attention.accessor<int64_t, 2>();
  bool padded = false;
  for (int64_t b = 0; b < B; ++b) {
    const McExample& e = examples[static_cast<size_t>(b)];
    const auto n = static_cast<int64_t>(e.ids.size());
    for (int64_t i = 0; i < n; ++i) ia[b][i] = e.ids[static_cast<size_t>(i)];
    for (int64_t t = 0; t < T; ++t) {
      aa[b][t] = t < n ? 1 : 0;
      padded = padded || t >= n;
      const int64_t next = t + 1;  // the token position t predicts
      if (options.loss_on_all_tokens || (next < n && e.loss_mask[static_cast<size_t>(next)])) ta[b][t] = ia[b][next];
    }
  }
  DecodedBatch d;
  d.input_ids = ids.slice(1, 0, T).contiguous();
  if (padded) d.attention = attention;
  d.targets = targets;
  return d;
}

}  // namespace mf
