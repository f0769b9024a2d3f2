// Arbitrary bytes as a tokenizer.json: loading succeeds (then fixed texts encode, decode and map
// ids to pieces) or throws mf::Error.
#include "fuzz_target.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

MOEFORGE_FUZZ_TARGET(tokenizer_json) {
  const std::string path = mf::fuzz::write_input(data, size, "tokenizer.json");
  try {
    auto tok = mf::Tokenizer::load(path);
    for (const char* text : {"Hello world", " it's  12345\n\tend", "\xc3\xa9t\xc3\xa9 \xe4\xb8\xad", "<s>a</s>", ""}) {
      auto ids = tok->encode(text, true);
      (void)tok->decode(ids, false);
      for (int32_t id : ids) (void)tok->id_to_piece(id);
    }
  } catch (const mf::Error&) {
  }
}
