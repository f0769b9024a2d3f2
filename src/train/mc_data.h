// Multiple-choice SFT data of the LoRA-MoE recipe (spec moe_routing_training.md §4.4): a task's
// documents as mLoRA prompts with the task's label list and the answer's index, the task's own
// train / validation / test files (or GMoE's split rules), and the tokenized examples with their
// loss mask and the padded batches the loss reads. docs/lora-moe.md "Data and evaluation".
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/task.h"
#include "train/recipe_data.h"

namespace mf {

class Tokenizer;

// One question. Training text is prompt + " " + labels[answer]; evaluation scores the token after
// the prompt among the labels' tokens.
struct McItem {
  std::string prompt;               // ends "\nAnswer:" (PIQA: "\nCorrect solution:")
  std::vector<std::string> labels;  // the task's label list (ARC: 1,2,3,4,A,B,C,D,E for every question)
  int64_t answer = 0;               // index into labels
};

enum class McSplit { Train, Validation, Test };
const char* mc_split_name(McSplit split);         // "train", "validation", "test"
McSplit parse_mc_split(const std::string& name);  // mf::UsageError for anything else

// Which documents each split holds.
//   TaskSplits: the task's own train / validation / test files.
//   GmoeFork:   GMoE's mLoRA fork: BoolQ and WinoGrande cut their official validation split 80/20
//               (Python random.seed(42) + random.shuffle, see gmoe_validation_split) into test /
//               validation; SIQA and HellaSwag use validation for both; PIQA tests on validation
//               (its HF test split has no labels); every other task and every train split as TaskSplits.
enum class SplitPolicy { TaskSplits, GmoeFork };

// Whether `task_name` has an mLoRA template (arc_easy, arc_challenge, boolq, openbookqa, piqa,
// social_iqa or siqa, hellaswag, winogrande); other multiple-choice tasks get the generic prompt.
bool has_mlora_template(const std::string& task_name);

// One document (in the HF field layout the task's loaders give) as an item; errors are
// "<file>:<line>: <what>".
McItem mc_item(const eval::TaskDef& task, const eval::Doc& doc);

// The documents of one of the task's own splits, read with the task's loaders. The split's name is
// lm-eval's training_split / validation_split / test_split of the task (a task that declares none,
// like a plain YAML task, has only a test split: its data_file). The file is, in this order,
// dataset_kwargs.data_files.<name> of the task's YAML (relative to data_dir), the task's own data
// file when the split is the one it evaluates (test_split, else validation_split), or that file with
// the split's name in place of its stem ("arc_easy/test.jsonl" -> "arc_easy/train.jsonl").
// A split the task does not have: one line, "task 'X' has no train split (it has: ...)".
std::vector<eval::Doc> task_split_docs(const eval::TaskDef& task, McSplit split, const std::string& data_dir);

std::vector<McItem> mc_items(const eval::TaskDef& task, McSplit split, const std::string& data_dir,
                             SplitPolicy policy = SplitPolicy::TaskSplits);

// Python's `random.seed(seed); x = list(range(n)); random.shuffle(x)` item for item (CPython's
// MT19937, eval::PyRandom, and random.py's shuffle / _randbelow); std::shuffle would differ.
std::vector<int64_t> py_shuffled_indices(int64_t n, uint64_t seed);

// GMoE's 80/20 cut of n validation documents: py_shuffled_indices(n, seed), test = the first
// int(n * 0.8), validation = the rest, both in shuffled order.
struct IndexSplit {
  std::vector<int64_t> test, validation;
};
IndexSplit gmoe_validation_split(int64_t n, uint64_t seed = 42);

// Tokenization as the recipe sees it: add_special_tokens adds BOS (and whatever else the tokenizer's
// post-processor adds) exactly as Tokenizer::encode does.
using McEncodeFn = std::function<std::vector<int32_t>(const std::string& text, bool add_special_tokens)>;
McEncodeFn mc_encoder(const Tokenizer& tok);  // keeps a reference to tok
// mLoRA's padding id: the tokenizer's pad, else <unk>, else EOS, else 0.
int32_t mlora_pad_id(const Tokenizer& tok);

// One training example: ids = encode(prompt + " " + answer label, add_special_tokens = true);
// loss_mask[i] = 1 when ids[i] is a target (predicted from position i - 1; never position 0).
struct McExample {
  std::vector<int64_t> ids;
  std::vector<uint8_t> loss_mask;
};

struct McSftOptions {
  // Default: loss on the answer tokens only, i.e. the tokens from the first one where the encoding
  // of prompt + " " + label departs from the encoding of the prompt alone.
  // true (mLoRA / GMoE compatibility, a pitfall): cross entropy over every position, prompt and
  // right padding included (padding's target is the pad id); mc_batch then pads to a multiple of 8
  // tokens as mLoRA's dispatcher does, so the mean runs over the same positions.
  bool loss_on_all_tokens = false;
  int64_t cutoff_len = 0;  // > 0: cut examples to this many tokens (mLoRA's cutoff_len)
};

McExample mc_example(const McItem& item, const McEncodeFn& encode, const McSftOptions& options = {});

// Right-pads examples into one batch for masked_lm_loss: input_ids [B, L-1] (pad_id after each
// example), targets [B, L-1] = the next token where it is a target, else -100; attention [B, L-1]
// 1 on real tokens (undefined when nothing is padded). L is the longest example, rounded up to a
// multiple of 8 with loss_on_all_tokens; there every position is a target, padding included.
DecodedBatch mc_batch(const std::vector<McExample>& examples, int32_t pad_id, const McSftOptions& options = {});

}  // namespace mf
