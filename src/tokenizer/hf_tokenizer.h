// Tokenizers built from an HF tokenizer.json (or legacy GPT-2 vocab.json + merges.txt):
// added tokens -> normalizer -> pre-tokenizer -> BPE model -> post-processor; decoder for decode().
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoders.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer.h"

namespace mf {

class HfTokenizer : public Tokenizer {
 public:
  // `config_dir`: where tokenizer_config.json / generation_config.json may be ("" = none).
  static std::unique_ptr<HfTokenizer> from_tokenizer_json(const std::string& path, const std::string& config_dir);
  static std::unique_ptr<HfTokenizer> from_json(const nlohmann::json& j, const std::string& origin,
                                                const std::string& config_dir);
  static std::unique_ptr<HfTokenizer> from_gpt2_files(const std::string& vocab_path, const std::string& merges_path,
                                                      const std::string& config_dir);

  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = false) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override;
  std::string id_to_piece(int32_t id) const override;
  int32_t piece_to_id(const std::string& piece) const override;
  int64_t vocab_size() const override;
  bool is_special(int32_t id) const override;
  std::string kind() const override { return kind_; }

  const BpeModel& model() const { return *model_; }

 private:
  HfTokenizer() = default;
  // After tokenizer_config.json: bos/eos defaults and what add_special_tokens adds.
  void finish_setup(const std::string& config_dir);
  std::vector<int32_t> encode_unchecked(const std::string& text, bool add_special_tokens) const;

  std::string kind_;
  std::string origin_;  // the file the definition came from, for errors raised while encoding
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<PostProcessor> post_;
  std::unique_ptr<Decoder> decoder_;
  AddedVocabulary added_;
};

}  // namespace mf
