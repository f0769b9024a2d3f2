// moeforge perplexity MODEL --text FILE [--context N --stride S] : rolling-window perplexity.
// Hidden: --token-logprobs FILE writes, for every scored token, log p(token | context) and the
// top-k next-token log-probabilities (the llama.cpp agreement check, tests/gguf/check.mjs).
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/vocab_check.h"
#include "model/model.h"
#include "model/perplexity.h"
#include "tokenizer/tokenizer.h"
#include "train/peft.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/progress.h"

namespace mf::cli {

namespace {

// The windows of rolling_perplexity (model/perplexity.cpp), with every scored position's
// log-probabilities (computed in fp64 from the fp32 logits).
json token_logprobs(Model& model, const std::vector<int64_t>& ids, int64_t context, int64_t stride, int64_t top) {
  at::NoGradGuard guard;
  const int64_t L = static_cast<int64_t>(ids.size());
  const at::Tensor all = at::tensor(ids, at::kLong);
  json windows = json::array(), target_index = json::array(), logprob = json::array(), top_ids = json::array(),
       top_lp = json::array();
  int64_t scored_until = 1;
  for (int64_t begin = 0; scored_until < L; begin += stride) {
    const int64_t end = std::min(begin + context, L);
    const int64_t first = std::max(scored_until, begin + 1);
    if (first >= end) continue;
    const at::Tensor h = model.forward_hidden(all.slice(0, begin, end).view({1, -1}));
    const at::Tensor lp =
        at::log_softmax(model.lm_head(h[0].slice(0, first - 1 - begin, end - 1 - begin)).to(at::kDouble), -1).cpu();
    const int64_t k = std::min<int64_t>(top, lp.size(1));
    const auto best = lp.topk(k, -1);
    const at::Tensor bv = std::get<0>(best).contiguous(), bi = std::get<1>(best).contiguous();
    for (int64_t t = first; t < end; ++t) {
      const int64_t row = t - first;
      target_index.push_back(t);
      logprob.push_back(lp[row][ids[static_cast<size_t>(t)]].item<double>());
      json ti = json::array(), tl = json::array();
      for (int64_t j = 0; j < k; ++j) {
        ti.push_back(bi[row][j].item<int64_t>());
        tl.push_back(bv[row][j].item<double>());
      }
      top_ids.push_back(ti);
      top_lp.push_back(tl);
    }
    windows.push_back({{"begin", begin}, {"end", end}, {"first", first}});
    scored_until = end;
  }
  return json{{"ids", ids},         {"context", context},   {"stride", stride},   {"windows", windows},
              {"target_index", target_index}, {"logprob", logprob}, {"top_ids", top_ids}, {"top_logprobs", top_lp}};
}

}  // namespace

void add_perplexity_command(CLI::App& app, const GlobalOptions& globals) {
  struct Opts {
    std::string model, text, dtype = "float32", device = "cpu", output, adapter, token_logprobs;
    int64_t context = 0, stride = 0, top = 8;
    bool json_out = false;
  };
  auto o = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("perplexity", "Perplexity of a text file with rolling windows (HF perplexity guide).");
  cmd->add_option("model", o->model, "Hugging Face model directory")->required();
  cmd->add_option("--text", o->text, "UTF-8 text file")->required();
  cmd->add_option("--context", o->context, "window length in tokens (default: min(max_position_embeddings, 1024))")
      ->check(positive());
  cmd->add_option("--stride", o->stride, "window advance in tokens (default: context / 2)")->check(positive());
  cmd->add_option("--adapter", o->adapter,
                  "PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) applied to the model");
  cmd->add_option("--dtype", o->dtype, "float32 or bfloat16");
  cmd->add_option("--device", o->device, "cpu or cuda[:N]");
  cmd->add_flag("--json", o->json_out, "print the result as JSON");
  cmd->add_option("--output", o->output, "also write the JSON record to this file");
  // Hidden (group ""): the per-token record of the llama.cpp agreement check.
  cmd->add_option("--token-logprobs", o->token_logprobs, "write per-token log-probabilities (JSON) to this file")
      ->group("");
  cmd->add_option("--token-logprobs-top", o->top, "top-k next-token log-probabilities per position")
      ->check(positive())
      ->group("");
  cmd->callback([o]() {
    std::string text = read_file(o->text);
    LoadOptions lo{parse_dtype(o->dtype), parse_device(o->device)};
    auto model = Model::load(o->model, lo);
    std::shared_ptr<LoraAdapters> adapter;  // attached for the whole run
    if (!o->adapter.empty()) adapter = load_peft_adapter(*model, o->adapter);
    auto tok = Tokenizer::load(o->model);
    check_tokenizer_fits_model(*tok, model->config(), o->model);
    auto ids32 = tok->encode(text, /*add_special_tokens=*/true);
    std::vector<int64_t> ids(ids32.begin(), ids32.end());
    if (ids.size() < 2) fail_file(o->text, "needs at least 2 tokens of text");
    int64_t context = o->context ? o->context : std::min<int64_t>(model->config().max_position_embeddings, 1024);
    int64_t stride = o->stride ? o->stride : std::max<int64_t>(1, context / 2);
    if (stride > context) throw UsageError("--stride must not exceed --context");
    Progress bar("perplexity", static_cast<int64_t>(ids.size()), "tok");
    auto t0 = std::chrono::steady_clock::now();
    PerplexityResult r = rolling_perplexity(*model, ids, context, stride, [&](int64_t done, int64_t) { bar.set(done); });
    bar.finish();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json j{{"model", o->model},
           {"adapter", o->adapter.empty() ? json(nullptr) : json(o->adapter)},
           {"text", o->text},
           {"text_sha256", sha256_file(o->text)},
           {"tokens", ids.size()},
           {"scored_tokens", r.tokens},
           {"windows", r.windows},
           {"context", context},
           {"stride", stride},
           {"dtype", o->dtype},
           {"nll_sum", r.nll_sum},
           {"mean_nll", r.mean_nll()},
           {"perplexity", r.perplexity()},
           {"seconds", secs}};
    if (!o->output.empty()) write_json_file(o->output, j);
    if (!o->token_logprobs.empty())
      write_json_file(o->token_logprobs, token_logprobs(*model, ids, context, stride, o->top));
    if (o->json_out) std::printf("%s\n", j.dump(2).c_str());
    else std::printf("perplexity %.4f (mean NLL %.4f nats over %lld tokens, %lld windows of %lld, stride %lld)\n",
                     r.perplexity(), r.mean_nll(), static_cast<long long>(r.tokens), static_cast<long long>(r.windows),
                     static_cast<long long>(context), static_cast<long long>(stride));
  });
  (void)globals;
}

}  // namespace mf::cli
