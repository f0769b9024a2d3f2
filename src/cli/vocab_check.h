// The check every command that feeds a tokenizer's ids to a model makes first (eval, perplexity,
// generate, profile): a tokenizer with more ids than the model's vocabulary would index past the
// embedding table ("index out of range in self" from libtorch). One line naming the tokenizer file.
#pragma once
#include <string>

#include "model/config.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/str.h"

namespace mf::cli {

// The file Tokenizer::load(path) takes the vocabulary from: `path` itself when it is a file, else
// tokenizer.json, vocab.json or tokenizer.model in that directory (the first that exists).
inline std::string tokenizer_vocab_file(const std::string& path) {
  if (!is_directory(path)) return path;
  for (const char* name : {"tokenizer.json", "vocab.json", "tokenizer.model"}) {
    const std::string f = path_join(path, name);
    if (path_exists(f)) return f;
  }
  return path;
}

// "<tokenizer file>: 9001 token ids, more than the 8192 of the model's vocabulary (vocab_size in
// <config.json>)". `tokenizer_path`: what was given to Tokenizer::load.
inline void check_tokenizer_fits_model(const Tokenizer& tok, const ModelConfig& cfg, const std::string& tokenizer_path) {
  if (tok.vocab_size() <= cfg.vocab_size) return;
  fail_file(tokenizer_vocab_file(tokenizer_path),
            cat(tok.vocab_size(), " token ids, more than the ", cfg.vocab_size, " of the model's vocabulary (vocab_size in ",
                cfg.origin.empty() ? std::string("config.json") : cfg.origin, ")"));
}

}  // namespace mf::cli
