#include "tokenizer/sentencepiece.h"

#include <dlfcn.h>
#include <unistd.h>

#include <mutex>

#include "tokenizer/unicode.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/fs_checks.h"
#include "util/str.h"

#ifndef MOEFORGE_SPM_SHIM_BUILD_PATH
#define MOEFORGE_SPM_SHIM_BUILD_PATH ""
#endif

// The shim's protobuf (bundled in libsentencepiece) must not bind to libtorch's: RTLD_DEEPBIND
// keeps them apart. AddressSanitizer refuses RTLD_DEEPBIND (google/sanitizers#611), so sanitizer
// builds load the (uninstrumented) shim into a namespace of its own with dlmopen; its C interface
// passes only plain values and buffers the shim frees itself.
#if defined(__SANITIZE_ADDRESS__)
#define MOEFORGE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MOEFORGE_ASAN 1
#endif
#endif

static void* open_spm_shim(const char* path) {
#ifdef MOEFORGE_ASAN
  return dlmopen(LM_ID_NEWLM, path, RTLD_NOW | RTLD_LOCAL);
#else
  return dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#endif
}

namespace mf {

// The C functions of libmoeforge_spm.so.
struct SpmTokenizer::Api {
  void* (*load)(const char*, char*, size_t);
  void (*free_model)(void*);
  void (*free_buffer)(void*);
  int (*encode)(void*, const char*, size_t, int**, size_t*, char*, size_t);
  int (*decode)(void*, const int*, size_t, char**, size_t*, char*, size_t);
  int (*piece_size)(void*);
  const char* (*id_to_piece)(void*, int, size_t*);
  int (*piece_to_id)(void*, const char*, size_t);
  int (*is_control)(void*, int);
  int (*is_unknown)(void*, int);
  int (*bos_id)(void*);
  int (*eos_id)(void*);
  int (*pad_id)(void*);
};

namespace {

std::string self_dir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  return parent_dir(std::string(buf, size_t(n)));
}

// Loads the shim once per process: $MOEFORGE_SPM_SHIM, next to the executable, ../lib/moeforge
// relative to it, then the build tree.
const SpmTokenizer::Api* load_api(std::string& error) {
  static std::once_flag once;
  static SpmTokenizer::Api api;
  static const SpmTokenizer::Api* result = nullptr;
  static std::string load_error;
  std::call_once(once, []() {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("MOEFORGE_SPM_SHIM")) candidates.push_back(env);
    const std::string dir = self_dir();
    if (!dir.empty()) {
      candidates.push_back(path_join(dir, "libmoeforge_spm.so"));
      candidates.push_back(path_join(dir, "../lib/moeforge/libmoeforge_spm.so"));
    }
    if (*MOEFORGE_SPM_SHIM_BUILD_PATH) candidates.push_back(MOEFORGE_SPM_SHIM_BUILD_PATH);
    void* lib = nullptr;
    std::string tried;
    for (const auto& c : candidates) {
      if (!path_exists(c)) continue;
      lib = open_spm_shim(c.c_str());
      if (lib) break;
      tried += cat(" ", c, " (", dlerror(), ")");
    }
    if (!lib) {
      load_error = "libmoeforge_spm.so (SentencePiece support) not found" + (tried.empty() ? std::string() : ":" + tried);
      return;
    }
    bool ok = true;
    auto sym = [&](const char* name) {
      void* p = dlsym(lib, name);
      if (!p) ok = false;
      return p;
    };
    api.load = reinterpret_cast<decltype(api.load)>(sym("mf_spm_load"));
    api.free_model = reinterpret_cast<decltype(api.free_model)>(sym("mf_spm_free"));
    api.free_buffer = reinterpret_cast<decltype(api.free_buffer)>(sym("mf_spm_free_buffer"));
    api.encode = reinterpret_cast<decltype(api.encode)>(sym("mf_spm_encode"));
    api.decode = reinterpret_cast<decltype(api.decode)>(sym("mf_spm_decode"));
    api.piece_size = reinterpret_cast<decltype(api.piece_size)>(sym("mf_spm_piece_size"));
    api.id_to_piece = reinterpret_cast<decltype(api.id_to_piece)>(sym("mf_spm_id_to_piece"));
    api.piece_to_id = reinterpret_cast<decltype(api.piece_to_id)>(sym("mf_spm_piece_to_id"));
    api.is_control = reinterpret_cast<decltype(api.is_control)>(sym("mf_spm_is_control"));
    api.is_unknown = reinterpret_cast<decltype(api.is_unknown)>(sym("mf_spm_is_unknown"));
    api.bos_id = reinterpret_cast<decltype(api.bos_id)>(sym("mf_spm_bos_id"));
    api.eos_id = reinterpret_cast<decltype(api.eos_id)>(sym("mf_spm_eos_id"));
    api.pad_id = reinterpret_cast<decltype(api.pad_id)>(sym("mf_spm_pad_id"));
    if (!ok) {
      load_error = "libmoeforge_spm.so lacks expected symbols";
      return;
    }
    result = &api;
  });
  error = load_error;
  return result;
}

}  // namespace

SpmTokenizer::SpmTokenizer() = default;
SpmTokenizer::~SpmTokenizer() {
  if (api_ && handle_) api_->free_model(handle_);
}

std::unique_ptr<SpmTokenizer> SpmTokenizer::from_file(const std::string& path, const std::string& config_dir) {
  std::string error;
  const Api* api = load_api(error);
  if (!api) fail_file(path, error);
  require_regular_file(path);  // a FIFO would block SentencePiece's open
  std::unique_ptr<SpmTokenizer> t(new SpmTokenizer());
  t->api_ = api;
  char err[512] = {0};
  t->handle_ = api->load(path.c_str(), err, sizeof err);
  if (!t->handle_) fail_file(path, cat("cannot load SentencePiece model: ", err));
  t->n_pieces_ = api->piece_size(t->handle_);
  t->bos_id_ = api->bos_id(t->handle_);
  t->eos_id_ = api->eos_id(t->handle_);
  t->pad_id_ = api->pad_id(t->handle_);
  // transformers' LlamaTokenizer defaults: add_bos_token = True, add_eos_token = False.
  t->add_bos_token_ = 1;
  t->add_eos_token_ = 0;
  if (!config_dir.empty()) t->load_config_files(config_dir);
  t->set_eos_ids_from({});
  return t;
}

std::vector<int32_t> SpmTokenizer::encode(const std::string& text, bool add_special_tokens) const {
  const std::string clean = unicode::sanitize_utf8(text);
  int* ids = nullptr;
  size_t n = 0;
  char err[512] = {0};
  if (api_->encode(handle_, clean.data(), clean.size(), &ids, &n, err, sizeof err) != 0)
    fail(cat("sentencepiece encode failed: ", err));
  std::vector<int32_t> out;
  out.reserve(n + 2);
  if (add_special_tokens && add_bos_token_ == 1 && bos_id_ >= 0) out.push_back(bos_id_);
  out.insert(out.end(), ids, ids + n);
  api_->free_buffer(ids);
  if (add_special_tokens && add_eos_token_ == 1 && eos_id_ >= 0) out.push_back(eos_id_);
  return out;
}

std::string SpmTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  // sentencepiece decodes control tokens to nothing; without skip_special_tokens their text
  // is kept, as transformers does, between the decoded runs of ordinary pieces.
  std::string out;
  std::vector<int> run;
  auto flush = [&]() {
    if (run.empty()) return;
    char* s = nullptr;
    size_t len = 0;
    char err[512] = {0};
    if (api_->decode(handle_, run.data(), run.size(), &s, &len, err, sizeof err) != 0)
      fail(cat("sentencepiece decode failed: ", err));
    out.append(s, len);
    api_->free_buffer(s);
    run.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= n_pieces_) continue;
    if (api_->is_control(handle_, id)) {
      flush();
      if (!skip_special_tokens) out += id_to_piece(id);
    } else if (skip_special_tokens && api_->is_unknown(handle_, id)) {
      continue;
    } else {
      run.push_back(id);
    }
  }
  flush();
  return out;
}

std::string SpmTokenizer::id_to_piece(int32_t id) const {
  if (id < 0 || id >= n_pieces_) return std::string();
  size_t len = 0;
  const char* p = api_->id_to_piece(handle_, id, &len);
  return std::string(p, len);
}

int32_t SpmTokenizer::piece_to_id(const std::string& piece) const {
  int id = api_->piece_to_id(handle_, piece.data(), piece.size());
  if (id < 0 || id >= n_pieces_ || id_to_piece(id) != piece) return -1;
  return id;
}

int64_t SpmTokenizer::vocab_size() const { return n_pieces_; }

bool SpmTokenizer::is_special(int32_t id) const {
  if (id < 0 || id >= n_pieces_) return false;
  return api_->is_control(handle_, id) || api_->is_unknown(handle_, id);
}

}  // namespace mf
