// Public tokenizer interface used by evaluation, training and the runtime.
//
// One class for every supported format:
//   - Hugging Face tokenizer.json (BPE model; normalizers, pre-tokenizers, added tokens,
//     post-processors and decoders as in HF `tokenizers`), see hf_tokenizer.cpp
//   - legacy GPT-2 vocab.json + merges.txt (converted to the same pipeline)
//   - SentencePiece tokenizer.model through libsentencepiece, see sentencepiece.cpp
// encode() gives exactly the ids of HF `tokenizer.encode(text, add_special_tokens=...)`.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/chat_template.h"

namespace mf {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // `path`: a model directory (tokenizer.json, or vocab.json + merges.txt, or tokenizer.model;
  // plus tokenizer_config.json / generation_config.json when present) or one of those files.
  // Errors: mf::Error "<file>: <what>".
  static std::unique_ptr<Tokenizer> load(const std::string& path);

  // add_special_tokens: BOS/EOS as the post-processor says (TemplateProcessing, Bert,
  // Roberta), otherwise as tokenizer_config.json's add_bos_token / add_eos_token say.
  // Added tokens (special or not) that occur in `text` are always recognised, as HF does.
  // Invalid UTF-8 in `text` is replaced by U+FFFD first (HF only accepts valid strings).
  virtual std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = false) const = 0;
  // Encodes every text on all cores (order preserved).
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts,
                                                 bool add_special_tokens) const;
  // skip_special_tokens drops added tokens marked special (BOS, EOS, <|eot_id|>, ...).
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const = 0;

  // The vocabulary's own string for an id ("Ġthe", "▁the", "<|eot_id|>"); "" if out of range.
  virtual std::string id_to_piece(int32_t id) const = 0;
  // -1 if absent.
  virtual int32_t piece_to_id(const std::string& piece) const = 0;
  // Number of ids (largest id + 1, added tokens included).
  virtual int64_t vocab_size() const = 0;
  // Whether `id` is a special (control) token, e.g. to hide it in printed output.
  virtual bool is_special(int32_t id) const = 0;

  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  // Every id that ends generation: eos_id plus generation_config.json's eos_token_id list and,
  // for the Llama-3 chat format, <|eot_id|> (Llama-3 instruct ends turns with it).
  std::vector<int32_t> eos_ids() const { return eos_ids_; }

  // "tokenizer.json", "gpt2-vocab-merges", "sentencepiece".
  virtual std::string kind() const = 0;
  ChatFormat chat_format() const { return chat_.format; }
  // The prompt text of `messages` in the model's chat format (chosen from tokenizer_config.json's
  // chat_template). Encode the result with add_special_tokens = false: BOS is part of the text
  // where the format has one. Error if the tokenizer has no known chat format.
  std::string apply_chat_template(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

 protected:
  // Reads tokenizer_config.json / generation_config.json (those that exist) next to `dir` and
  // sets bos/eos/pad, add_bos/add_eos and the chat format. Subclasses call it after loading.
  void load_config_files(const std::string& dir);
  void set_eos_ids_from(const std::vector<int32_t>& extra);

  int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
  std::vector<int32_t> eos_ids_;
  // From tokenizer_config.json; -1 = not given.
  int add_bos_token_ = -1, add_eos_token_ = -1;
  ChatTemplate chat_;
};

}  // namespace mf
