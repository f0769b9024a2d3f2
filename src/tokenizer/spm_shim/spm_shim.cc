// libmoeforge_spm.so: a C interface over Debian's libsentencepiece, loaded at run time with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND) by src/tokenizer/sentencepiece.cpp.
//
// Why not link libsentencepiece directly: it carries its own copy of protobuf-lite with
// exported symbols, and libtorch loads libprotobuf.so. Linked into one process, protobuf's
// start-up code binds to sentencepiece's copy and crashes before main(). Loaded late with its
// own symbol scope, each library keeps its own protobuf.
//
// This file is deliberately .cc (not globbed into moeforge_core): it is its own shared library.
#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
void set_error(char* err, size_t len, const std::string& msg) {
  if (!err || len == 0) return;
  std::strncpy(err, msg.c_str(), len - 1);
  err[len - 1] = '\0';
}
sentencepiece::SentencePieceProcessor* P(void* h) { return static_cast<sentencepiece::SentencePieceProcessor*>(h); }
}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* mf_spm_load(const char* path, char* err, size_t err_len) {
  auto* p = new sentencepiece::SentencePieceProcessor();
  auto status = p->Load(path);
  if (!status.ok()) {
    set_error(err, err_len, status.ToString());
    delete p;
    return nullptr;
  }
  return p;
}

__attribute__((visibility("default"))) void mf_spm_free(void* h) { delete P(h); }
__attribute__((visibility("default"))) void mf_spm_free_buffer(void* b) { std::free(b); }

// ids: malloc'ed, caller frees with mf_spm_free_buffer. Returns 0 on success.
__attribute__((visibility("default"))) int mf_spm_encode(void* h, const char* text, size_t len, int** ids, size_t* n,
                                                         char* err, size_t err_len) {
  std::vector<int> v;
  auto status = P(h)->Encode(std::string(text, len), &v);
  if (!status.ok()) {
    set_error(err, err_len, status.ToString());
    return 1;
  }
  *n = v.size();
  *ids = static_cast<int*>(std::malloc(sizeof(int) * (v.empty() ? 1 : v.size())));
  if (!v.empty()) std::memcpy(*ids, v.data(), sizeof(int) * v.size());
  return 0;
}

__attribute__((visibility("default"))) int mf_spm_decode(void* h, const int* ids, size_t n, char** out, size_t* out_len,
                                                         char* err, size_t err_len) {
  std::string s;
  auto status = P(h)->Decode(std::vector<int>(ids, ids + n), &s);
  if (!status.ok()) {
    set_error(err, err_len, status.ToString());
    return 1;
  }
  *out_len = s.size();
  *out = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(*out, s.data(), s.size());
  return 0;
}

__attribute__((visibility("default"))) int mf_spm_piece_size(void* h) { return P(h)->GetPieceSize(); }
// The piece's bytes stay valid as long as the model is loaded.
__attribute__((visibility("default"))) const char* mf_spm_id_to_piece(void* h, int id, size_t* len) {
  const std::string& s = P(h)->IdToPiece(id);
  *len = s.size();
  return s.data();
}
__attribute__((visibility("default"))) int mf_spm_piece_to_id(void* h, const char* piece, size_t len) {
  return P(h)->PieceToId(std::string(piece, len));
}
__attribute__((visibility("default"))) int mf_spm_is_control(void* h, int id) { return P(h)->IsControl(id); }
__attribute__((visibility("default"))) int mf_spm_is_unknown(void* h, int id) { return P(h)->IsUnknown(id); }
__attribute__((visibility("default"))) int mf_spm_bos_id(void* h) { return P(h)->bos_id(); }
__attribute__((visibility("default"))) int mf_spm_eos_id(void* h) { return P(h)->eos_id(); }
__attribute__((visibility("default"))) int mf_spm_pad_id(void* h) { return P(h)->pad_id(); }

}  // extern "C"
