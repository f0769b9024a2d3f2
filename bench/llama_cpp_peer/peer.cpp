// llama.cpp's side of the moeforge-vs-llama.cpp speed comparison (bench/llama_cpp_peer.sh).
// Uses only llama.cpp's C API and runs it the way llama-bench does: CPU backends loaded through
// ggml's registry, a persistent CPU thread pool attached to the context, a warm-up run first.
//
//   peer MODEL.gguf --threads N --mode decode|prefill --reps R [--prompt-ids 1,2,3,...]
//        [--n-prompt N] [--n-gen N] [--mmap] [--no-warmup] [--verbose]
//
// decode:  the prompt (32 tokens by default) in one llama_decode, then greedy generation one token
//          at a time until n_gen (128) tokens are chosen. Counted like `moeforge generate`: the
//          first token comes from the prompt's logits, so n_gen tokens take 1 + (n_gen - 1)
//          forwards and the last chosen token is never fed back. tok_s = n_gen / (prompt + steps).
// prefill: n_prompt (512) tokens in one llama_decode on an empty KV cache; tok_s = n_prompt / time.
// Prints one JSON line on stdout: every run's numbers, their median and the greedy token ids.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "llama.h"

namespace {

struct Args {
  std::string model, mode = "decode";
  int threads = 1, reps = 3, n_prompt = -1, n_gen = 128;
  std::vector<llama_token> prompt_ids;
  bool mmap = false, warmup = true, verbose = false;
};

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "peer: %s\n", msg.c_str());
  std::exit(1);
}

int to_int(const std::string& s, const char* what) {
  char* end = nullptr;
  long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0') die(std::string("bad ") + what + ": " + s);
  return static_cast<int>(v);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die(k + " needs a value");
      return argv[++i];
    };
    if (k == "--threads") a.threads = to_int(val(), "--threads");
    else if (k == "--mode") a.mode = val();
    else if (k == "--reps") a.reps = to_int(val(), "--reps");
    else if (k == "--n-prompt") a.n_prompt = to_int(val(), "--n-prompt");
    else if (k == "--n-gen") a.n_gen = to_int(val(), "--n-gen");
    else if (k == "--mmap") a.mmap = true;
    else if (k == "--no-warmup") a.warmup = false;
    else if (k == "--verbose") a.verbose = true;
    else if (k == "--prompt-ids") {
      std::stringstream ss(val());
      for (std::string t; std::getline(ss, t, ',');) a.prompt_ids.push_back(to_int(t, "token id"));
    } else if (!k.empty() && k[0] != '-' && a.model.empty()) a.model = k;
    else die("unknown argument " + k);
  }
  if (a.model.empty()) die("usage: peer MODEL.gguf --threads N --mode decode|prefill --reps R [--prompt-ids ...]");
  if (a.mode != "decode" && a.mode != "prefill") die("--mode is decode or prefill");
  if (a.threads < 1 || a.reps < 1 || a.n_gen < 1) die("--threads, --reps and --n-gen must be >= 1");
  if (!a.prompt_ids.empty()) {
    if (a.n_prompt >= 0 && a.n_prompt != static_cast<int>(a.prompt_ids.size())) die("--n-prompt != number of --prompt-ids");
    a.n_prompt = static_cast<int>(a.prompt_ids.size());
  }
  if (a.n_prompt < 0) a.n_prompt = a.mode == "decode" ? 32 : 512;
  if (a.n_prompt < 1 || a.n_prompt > 512) die("the prompt must have 1..512 tokens (one batch)");
  return a;
}

// Deterministic stand-in for llama-bench's BOS + rand() % n_vocab (std::rand differs between libcs).
std::vector<llama_token> default_prompt(const llama_vocab* vocab, int n) {
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);
  std::vector<llama_token> ids(n);
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < n; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    ids[i] = static_cast<llama_token>((state >> 33) % static_cast<uint64_t>(n_vocab));
  }
  if (llama_vocab_get_add_bos(vocab)) ids[0] = llama_vocab_bos(vocab);
  return ids;
}

// Greedy choice as in moeforge's sample_token: the largest logit, ties to the lowest id.
llama_token argmax_last(llama_context* ctx, int32_t n_vocab) {
  const float* logits = llama_get_logits_ith(ctx, -1);  // also waits for the computation
  if (!logits) die("no logits");
  return static_cast<llama_token>(std::max_element(logits, logits + n_vocab) - logits);
}

void decode_or_die(llama_context* ctx, llama_token* ids, int n) {
  if (llama_decode(ctx, llama_batch_get_one(ids, n)) != 0) die("llama_decode failed");
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string join(const std::vector<llama_token>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) o += ' ';
    else o += c;
  }
  return o;
}

// The folder of the loaded libggml: node-llama-cpp ships the CPU variants (libggml-cpu-*.so) there,
// and the registry picks the best one for this CPU, as in node-llama-cpp and llama-bench.
std::string ggml_library_dir() {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<void*>(&ggml_backend_load_all_from_path), &info) || !info.dli_fname)
    die("cannot locate libggml");
  std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

bool g_verbose = false;
void log_cb(ggml_log_level level, const char* text, void*) {
  if (g_verbose || level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  g_verbose = a.verbose;
  llama_log_set(log_cb, nullptr);
  ggml_backend_load_all_from_path(ggml_library_dir().c_str());

  // The thread pool functions live in the dynamically loaded CPU backend: look them up as llama-bench does.
  ggml_backend_dev_t cpu_dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  if (!cpu_dev) die("the CPU backend is not loaded");
  ggml_backend_reg_t cpu_reg = ggml_backend_dev_backend_reg(cpu_dev);
  auto* threadpool_new = reinterpret_cast<decltype(ggml_threadpool_new)*>(
      ggml_backend_reg_get_proc_address(cpu_reg, "ggml_threadpool_new"));
  auto* threadpool_free = reinterpret_cast<decltype(ggml_threadpool_free)*>(
      ggml_backend_reg_get_proc_address(cpu_reg, "ggml_threadpool_free"));
  if (!threadpool_new || !threadpool_free) die("the CPU backend has no thread pool functions");
  llama_backend_init();

  llama_model_params mp = llama_model_default_params();
  mp.n_gpu_layers = 0;
  ggml_backend_dev_t devices[] = {cpu_dev, nullptr};  // CPU only, whatever else is registered
  mp.devices = devices;
  // Weights read into memory like moeforge does, so page faults on a mapped file cannot differ.
  mp.load_mode = a.mmap ? LLAMA_LOAD_MODE_MMAP : LLAMA_LOAD_MODE_NONE;
  llama_model* model = llama_model_load_from_file(a.model.c_str(), mp);
  if (!model) die("cannot load " + a.model);
  const llama_vocab* vocab = llama_model_get_vocab(model);
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);

  std::vector<llama_token> prompt = a.prompt_ids.empty() ? default_prompt(vocab, a.n_prompt) : a.prompt_ids;
  for (llama_token t : prompt)
    if (t < 0 || t >= n_vocab) die("prompt id " + std::to_string(t) + " is outside the vocabulary");

  llama_context_params cp = llama_context_default_params();
  const int n_needed = a.n_prompt + (a.mode == "decode" ? a.n_gen : 0);
  cp.n_ctx = static_cast<uint32_t>(std::max(640, n_needed));
  cp.n_batch = cp.n_ubatch = 512;  // llama-bench's defaults: the 512-token prefill is one ubatch
  cp.n_seq_max = 1;
  cp.n_threads = cp.n_threads_batch = a.threads;
  cp.no_perf = true;
  llama_context* ctx = llama_init_from_model(model, cp);
  if (!ctx) die("cannot create a context");

  // A persistent pool (llama-bench's defaults: poll 50, no CPU mask), so the threads stay alive
  // between llama_decode calls instead of being started per graph.
  ggml_threadpool_params tpp = ggml_threadpool_params_default(a.threads);
  ggml_threadpool* pool = threadpool_new(&tpp);
  if (!pool) die("cannot create a thread pool of " + std::to_string(a.threads) + " threads");
  llama_attach_threadpool(ctx, pool, nullptr);
  llama_set_n_threads(ctx, a.threads, a.threads);

  llama_memory_t mem = llama_get_memory(ctx);
  std::vector<llama_token> batch = prompt;  // llama_batch_get_one wants a mutable buffer
  std::vector<llama_token> generated;
  std::vector<double> tok_s, first_s, steps_s;

  // One measured (or warm-up) run; returns tokens per second.
  auto run = [&]() -> double {
    llama_memory_clear(mem, true);
    batch = prompt;
    const double t0 = now_s();
    decode_or_die(ctx, batch.data(), a.n_prompt);
    if (a.mode == "prefill") {
      llama_synchronize(ctx);
      return a.n_prompt / (now_s() - t0);
    }
    generated.assign(1, argmax_last(ctx, n_vocab));
    const double t1 = now_s();
    while (static_cast<int>(generated.size()) < a.n_gen) {
      llama_token t = generated.back();
      decode_or_die(ctx, &t, 1);
      generated.push_back(argmax_last(ctx, n_vocab));
    }
    const double t2 = now_s();
    first_s.push_back(t1 - t0);
    steps_s.push_back(t2 - t1);
    return a.n_gen / (t2 - t0);
  };

  if (a.warmup) run();  // first touch of weights and buffers, thread start-up (llama-bench does one too)
  first_s.clear();
  steps_s.clear();
  for (int r = 0; r < a.reps; ++r) tok_s.push_back(run());

  std::string runs;
  for (size_t i = 0; i < tok_s.size(); ++i) {
    char buf[200];
    if (a.mode == "decode")
      std::snprintf(buf, sizeof buf, "%s{\"tok_s\":%.4f,\"prompt_s\":%.6f,\"steps_s\":%.6f,\"step_tok_s\":%.4f}",
                    i ? "," : "", tok_s[i], first_s[i], steps_s[i],
                    steps_s[i] > 0 ? (a.n_gen - 1) / steps_s[i] : 0.0);
    else
      std::snprintf(buf, sizeof buf, "%s{\"tok_s\":%.4f,\"seconds\":%.6f}", i ? "," : "", tok_s[i],
                    a.n_prompt / tok_s[i]);
    runs += buf;
  }
  std::printf(
      "{\"engine\":\"llama.cpp\",\"model\":\"%s\",\"mode\":\"%s\",\"threads\":%d,\"n_prompt\":%d,\"n_gen\":%d,"
      "\"reps\":%d,\"median_tok_s\":%.4f,\"runs\":[%s],\"prompt_ids\":[%s],\"generated_ids\":[%s],"
      "\"system_info\":\"%s\"}\n",
      json_escape(a.model).c_str(), a.mode.c_str(), a.threads, a.n_prompt, a.mode == "decode" ? a.n_gen : 0, a.reps,
      median(tok_s), runs.c_str(), join(prompt).c_str(), a.mode == "decode" ? join(generated).c_str() : "",
      json_escape(llama_print_system_info()).c_str());

  llama_free(ctx);
  threadpool_free(pool);
  llama_model_free(model);
  llama_backend_free();
  return 0;
}
