// moeforge tokenize MODEL_OR_TOKENIZER --text ... : ids and pieces of a text.
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/str.h"

namespace mf::cli {

namespace {

// A piece made printable: control characters and quotes escaped (JSON-style).
std::string printable(const std::string& s) {
  std::string q = json(s).dump(-1, ' ', false, json::error_handler_t::replace);
  return q;
}

}  // namespace

void add_tokenize_command(CLI::App& app, const GlobalOptions& globals) {
  struct Opts {
    std::string tokenizer, text, file;
    bool add_special = false, json_out = false, no_pieces = false;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("tokenize", "Print the token ids and pieces of a text (HF-exact ids).");
  cmd->add_option("tokenizer", opts->tokenizer,
                  "model directory, tokenizer.json, vocab.json/merges.txt or tokenizer.model")
      ->required();
  auto* text_opt = cmd->add_option("--text", opts->text, "text to tokenize");
  auto* file_opt = cmd->add_option("--file", opts->file, "read the text from this file ('-' = stdin)");
  text_opt->excludes(file_opt);
  cmd->add_flag("--add-special", opts->add_special, "add BOS/EOS as the tokenizer's post-processor says");
  cmd->add_flag("--json", opts->json_out, "print one JSON object");
  cmd->add_flag("--ids-only", opts->no_pieces, "print only the ids");
  cmd->callback([opts, text_opt, file_opt]() {
    if (!*text_opt && !*file_opt) throw UsageError("tokenize: give --text or --file");
    std::string text = opts->text;
    if (*file_opt) {
      if (opts->file == "-") {
        text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
      } else {
        text = read_file(opts->file);
      }
    }
    auto tok = Tokenizer::load(opts->tokenizer);
    auto ids = tok->encode(text, opts->add_special);
    std::vector<std::string> pieces;
    pieces.reserve(ids.size());
    for (int32_t id : ids) pieces.push_back(tok->id_to_piece(id));
    if (opts->json_out) {
      json j{{"tokenizer", opts->tokenizer}, {"kind", tok->kind()},       {"vocab_size", tok->vocab_size()},
             {"count", ids.size()},         {"ids", ids},                {"pieces", json::array()}};
      for (const auto& p : pieces) j["pieces"].push_back(json(p));
      std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
      return;
    }
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    std::printf("%s\n", line.c_str());
    if (!opts->no_pieces) {
      line.clear();
      for (size_t i = 0; i < pieces.size(); ++i) line += (i ? " " : "") + printable(pieces[i]);
      std::printf("%s\n", line.c_str());
      std::printf("%zu tokens\n", ids.size());
    }
  });
  (void)globals;
}

}  // namespace mf::cli
