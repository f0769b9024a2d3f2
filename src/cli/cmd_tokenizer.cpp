// moeforge tokenizer train --vocab-size N --input FILES --out DIR : byte-level BPE training.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::cli {

void add_tokenizer_command(CLI::App& app, const GlobalOptions& globals) {
  auto* cmd = app.add_subcommand("tokenizer", "Tokenizer tools.");
  cmd->require_subcommand(1);

  struct TrainOpts {
    int64_t vocab_size = 8192, min_frequency = 2;
    std::vector<std::string> inputs;
    std::string out, bos = "<|begin_of_text|>", eos = "<|end_of_text|>", pad = "<|pad|>";
    bool json_out = false;
  };
  auto o = std::make_shared<TrainOpts>();
  auto* train = cmd->add_subcommand(
      "train", "Train a byte-level BPE tokenizer; writes an HF tokenizer.json (+ tokenizer_config.json) to --out.");
  train->add_option("--vocab-size", o->vocab_size, "vocabulary size, special tokens and 256 bytes included")
      ->check(CLI::Range(int64_t(259), int64_t(1) << 30));
  train->add_option("--input", o->inputs, "UTF-8 text files")->required()->expected(1, -1);
  train->add_option("--out", o->out, "output directory")->required();
  train->add_option("--min-frequency", o->min_frequency, "stop when the best pair occurs fewer times")
      ->check(positive());
  train->add_option("--bos", o->bos, "BOS token (id 0)");
  train->add_option("--eos", o->eos, "EOS token (id 1)");
  train->add_option("--pad", o->pad, "padding token (id 2)");
  train->add_flag("--json", o->json_out, "print the training record as JSON");
  train->callback([o, &globals]() {
    const auto t0 = std::chrono::steady_clock::now();
    BpeTrainerOptions opt;
    opt.vocab_size = o->vocab_size;
    opt.min_frequency = o->min_frequency;
    opt.bos_token = o->bos;
    opt.eos_token = o->eos;
    opt.pad_token = o->pad;
    opt.threads = globals.threads;
    if (o->bos == o->eos || o->bos == o->pad || o->eos == o->pad) throw UsageError("--bos, --eos and --pad must differ");
    json inputs = json::array();
    for (const auto& p : o->inputs) {
      if (!path_exists(p) || is_directory(p)) fail_file(p, "no such file");
      inputs.push_back(json{{"path", p}, {"bytes", file_size(p)}, {"sha256", sha256_file(p)}});
    }
    BpeTrainer trainer(opt);
    trainer.add_files(o->inputs);
    const double count_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    trainer.train();
    {
      AtomicDir dir(o->out);
      trainer.save(dir.path());
      dir.commit();
    }
    // Check what we wrote loads back with our own HF-compatible loader.
    auto tok = Tokenizer::load(o->out);
    const double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json record{{"command", "tokenizer train"},
                {"inputs", inputs},
                {"settings", {{"vocab_size", o->vocab_size}, {"min_frequency", o->min_frequency},
                              {"bos", o->bos}, {"eos", o->eos}, {"pad", o->pad},
                              {"pre_tokenizer", "Llama-3 split regex + ByteLevel"}}},
                {"results", {{"vocab_size", tok->vocab_size()}, {"merges", trainer.num_merges()},
                             {"distinct_pre_tokens", trainer.num_words()}, {"bytes", trainer.bytes_seen()},
                             {"count_seconds", count_s}, {"total_seconds", total_s},
                             {"tokenizer_json_sha256", sha256_file(path_join(o->out, "tokenizer.json"))}}}};
    write_json_file(path_join(o->out, "moeforge_train_record.json"), record);
    if (o->json_out) {
      std::printf("%s\n", record.dump(2).c_str());
    } else {
      log_info("wrote ", path_join(o->out, "tokenizer.json"), ": vocabulary ", tok->vocab_size(), ", ",
               trainer.num_merges(), " merges, ", format_bytes(double(trainer.bytes_seen())), " of text in ",
               format_duration(total_s));
    }
  });
}

}  // namespace mf::cli
