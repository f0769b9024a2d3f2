// GGUF (llama.cpp's model file) constants shared by the writer, the reader and the exporter:
// the metadata value types of the format (version 3) and the ggml tensor types moeforge writes
// or recognises, with their block sizes. Format: llama.cpp gguf-py/gguf/constants.py and
// ggml/include/gguf.h. Pure C++ (no torch).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mf::gguf {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint32_t kVersion = 3;
constexpr uint32_t kDefaultAlignment = 32;
constexpr uint32_t kQuantizationVersion = 2;  // GGML_QNT_VERSION
constexpr int kMaxDims = 4;                   // GGML_MAX_DIMS

// Metadata value types (GGUFValueType).
enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* value_type_name(ValueType t);  // "u32", "string", ...; "?" when unknown
bool value_type_known(uint32_t t);
// Size of one scalar of a fixed-size type; 0 for STRING / ARRAY / unknown.
size_t value_type_size(ValueType t);

// ggml tensor types (GGMLQuantizationType). Only the ones moeforge writes or names are listed;
// the reader knows the block geometry of every type llama.cpp defines (type_traits below).
enum class TensorType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
};

struct TypeTraits {
  const char* name = nullptr;  // nullptr: unknown type
  int64_t block_size = 0;      // elements per block
  int64_t type_size = 0;       // bytes per block
};
// Geometry of ggml type `t` (every type of ggml.c's type_traits); name == nullptr if unknown.
TypeTraits type_traits(uint32_t t);
// Bytes of a tensor of `ne` (ggml order: ne[0] is the contiguous row) and type `t`; -1 when
// the row length is not a multiple of the block size or the size overflows int64.
int64_t tensor_nbytes(const std::vector<int64_t>& ne, uint32_t t);

// llama_ftype of a file whose 2-D weights are all of type `t` (general.file_type).
uint32_t file_type_for(TensorType t);

// Token types of tokenizer.ggml.token_type (llama_token_type / SentencePiece's piece types).
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

inline uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace mf::gguf
