// SentencePiece tokenizer.model (Llama-2, Mistral, Mixtral, Gemma) through Debian's
// libsentencepiece, the reference implementation. The library is reached through
// libmoeforge_spm.so, dlopen()ed with its own symbol scope (see spm_shim/spm_shim.cc for why).
#pragma once
#include <memory>
#include <string>

#include "tokenizer/tokenizer.h"

namespace mf {

class SpmTokenizer : public Tokenizer {
 public:
  static std::unique_ptr<SpmTokenizer> from_file(const std::string& path, const std::string& config_dir);
  ~SpmTokenizer() override;

  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = false) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const override;
  std::string id_to_piece(int32_t id) const override;
  int32_t piece_to_id(const std::string& piece) const override;
  int64_t vocab_size() const override;
  bool is_special(int32_t id) const override;
  std::string kind() const override { return "sentencepiece"; }

  struct Api;  // the shim's C functions (sentencepiece.cpp)

 private:
  SpmTokenizer();
  const Api* api_ = nullptr;
  void* handle_ = nullptr;  // the shim's processor
  int n_pieces_ = 0;
};

}  // namespace mf
