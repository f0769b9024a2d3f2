// moeforge generate MODEL --prompt ... : streams sampled tokens to stdout, KV-cached.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <set>

#include "cli/commands.h"
#include "cli/vocab_check.h"
#include "model/generate.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "train/peft.h"
#include "util/error.h"
#include "util/json.h"
#include "util/log.h"
#include "util/str.h"

namespace mf::cli {

namespace {

// A decoded prefix that ends inside a multi-byte character shows U+FFFD; wait for more tokens.
bool ends_incomplete(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

}  // namespace

void add_generate_command(CLI::App& app, const GlobalOptions& globals) {
  struct Opts {
    std::string model, prompt, system, dtype = "bfloat16", device = "cpu", adapter;
    std::vector<int64_t> prompt_ids;
    int64_t max_new_tokens = 128, top_k = 0;
    double temperature = 1.0, top_p = 1.0;
    uint64_t seed = 0;
    bool chat = false, json_out = false, ignore_eos = false, warmup = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt (KV cache, streaming).");
  cmd->add_option("model", o->model, "Hugging Face model directory (config.json, safetensors, tokenizer)")->required();
  auto* text_opt = cmd->add_option("--prompt", o->prompt, "prompt text");
  auto* ids_opt = cmd->add_option("--prompt-ids", o->prompt_ids, "prompt as token ids (comma-separated), instead of --prompt")
                      ->delimiter(',')
                      ->excludes(text_opt);
  text_opt->excludes(ids_opt);
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "tokens to generate at most")->check(positive());
  cmd->add_option("--temperature", o->temperature, "softmax temperature; 0 = greedy")->check(non_negative());
  cmd->add_option("--top-p", o->top_p, "nucleus sampling mass (1 = off)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--top-k", o->top_k, "keep the k most likely tokens (0 = off)")->check(non_negative());
  cmd->add_option("--seed", o->seed, "sampling seed");
  cmd->add_flag("--chat", o->chat, "wrap the prompt in the tokenizer's chat template (user turn)");
  cmd->add_option("--system", o->system, "system message for --chat");
  cmd->add_option("--adapter", o->adapter,
                  "PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) applied to the model");
  cmd->add_option("--dtype", o->dtype, "float32 or bfloat16");
  cmd->add_option("--device", o->device, "cpu or cuda[:N] (CUDA needs a CUDA libtorch build)");
  cmd->add_flag("--ignore-eos", o->ignore_eos, "do not stop at EOS: generate exactly --max-new-tokens (benchmarks)");
  cmd->add_flag("--warmup", o->warmup, "run the prompt and one step once, untimed, before the timed generation (benchmarks)");
  cmd->add_flag("--json", o->json_out, "print one JSON record at the end instead of streaming");
  cmd->callback([o]() {
    LoadOptions lo{parse_dtype(o->dtype), parse_device(o->device)};
    auto model = Model::load(o->model, lo);
    std::shared_ptr<LoraAdapters> adapter;  // attached for the whole run
    if (!o->adapter.empty()) adapter = load_peft_adapter(*model, o->adapter);
    auto tok = Tokenizer::load(o->model);
    check_tokenizer_fits_model(*tok, model->config(), o->model);
    if (o->prompt.empty() && o->prompt_ids.empty()) throw UsageError("give --prompt or --prompt-ids");
    if (!o->prompt_ids.empty() && o->chat) throw UsageError("--chat needs a text --prompt, not --prompt-ids");
    std::string text = o->prompt;
    if (o->chat) {
      std::vector<ChatMessage> msgs;
      if (!o->system.empty()) msgs.push_back({"system", o->system});
      msgs.push_back({"user", o->prompt});
      text = tok->apply_chat_template(msgs, true);
    } else if (!o->system.empty()) {
      throw UsageError("--system needs --chat");
    }
    std::vector<int64_t> prompt = o->prompt_ids;
    if (prompt.empty()) {
      auto ids32 = tok->encode(text, /*add_special_tokens=*/!o->chat);
      prompt.assign(ids32.begin(), ids32.end());
    } else {
      for (int64_t id : prompt)
        if (id < 0 || id >= model->config().vocab_size)
          throw UsageError(cat("--prompt-ids: ", id, " is not a token id of this model (vocabulary ", model->config().vocab_size, ")"));
      text = tok->decode(std::vector<int32_t>(prompt.begin(), prompt.end()), false);
    }
    if (prompt.empty()) throw UsageError("the prompt encodes to no tokens");

    GenerateOptions go;
    go.max_new_tokens = o->max_new_tokens;
    go.sampling.temperature = o->temperature;
    go.sampling.top_k = o->top_k;
    go.sampling.top_p = o->top_p;
    go.seed = o->seed;
    std::set<int64_t> stops(model->config().eos_token_ids.begin(), model->config().eos_token_ids.end());
    for (int32_t id : tok->eos_ids()) stops.insert(id);
    if (!o->ignore_eos) go.stop_ids.assign(stops.begin(), stops.end());
    if (o->warmup) {  // first-use costs (page faults, kernel setup) out of the timed run
      GenerateOptions w = go;
      w.max_new_tokens = std::min<int64_t>(2, go.max_new_tokens);
      generate(*model, prompt, w, [](int64_t) { return true; });
    }

    std::vector<int32_t> out;
    size_t printed = 0;
    auto t0 = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point t_first;  // the first token: the prompt's forward and one sample
    auto result = generate(*model, prompt, go, [&](int64_t t) {
      if (t_first == std::chrono::steady_clock::time_point()) t_first = std::chrono::steady_clock::now();
      if (o->json_out) return true;
      out.push_back(static_cast<int32_t>(t));
      std::string s = tok->decode(out, /*skip_special_tokens=*/true);
      if (!ends_incomplete(s) && s.size() > printed) {
        std::fwrite(s.data() + printed, 1, s.size() - printed, stdout);
        std::fflush(stdout);
        printed = s.size();
      }
      return true;
    });
    const auto t_end = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(t_end - t0).count();
    const double prompt_secs = result.empty() ? secs : std::chrono::duration<double>(t_first - t0).count();
    const double decode_secs = secs - prompt_secs;
    std::vector<int32_t> gen(result.begin(), result.end());
    const bool stopped = !result.empty() && stops.count(result.back());
    if (o->json_out) {
      json j{{"model", o->model},
             {"prompt", text},
             {"prompt_tokens", prompt.size()},
             {"text", tok->decode(gen, true)},
             {"ids", result},
             {"adapter", o->adapter.empty() ? json(nullptr) : json(o->adapter)},
             {"stopped_at_eos", stopped},
             {"seconds", secs},
             {"tokens_per_second", secs > 0 ? result.size() / secs : 0.0},
             // The prompt's forward up to the first token, then the one-token steps after it.
             {"prompt_seconds", prompt_secs},
             {"prompt_tokens_per_second", prompt_secs > 0 ? prompt.size() / prompt_secs : 0.0},
             {"decode_seconds", decode_secs},
             {"decode_tokens_per_second", decode_secs > 0 ? (result.size() - 1) / decode_secs : 0.0},
             {"settings",
              {{"temperature", o->temperature}, {"top_k", o->top_k}, {"top_p", o->top_p}, {"seed", o->seed},
               {"dtype", o->dtype}, {"max_new_tokens", o->max_new_tokens}, {"ignore_eos", o->ignore_eos}}}};
      std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
    } else {
      std::printf("\n");
      log_info(result.size(), " tokens in ", format_duration(secs), " (", secs > 0 ? result.size() / secs : 0.0,
               " tok/s)", stopped ? ", stopped at EOS" : "");
    }
  });
  (void)globals;
}

}  // namespace mf::cli
