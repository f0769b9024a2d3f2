#include "gguf/gguf.h"

#include <limits>

namespace mf::gguf {

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::UINT8: return "u8";
    case ValueType::INT8: return "i8";
    case ValueType::UINT16: return "u16";
    case ValueType::INT16: return "i16";
    case ValueType::UINT32: return "u32";
    case ValueType::INT32: return "i32";
    case ValueType::FLOAT32: return "f32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "string";
    case ValueType::ARRAY: return "array";
    case ValueType::UINT64: return "u64";
    case ValueType::INT64: return "i64";
    case ValueType::FLOAT64: return "f64";
  }
  return "?";
}

bool value_type_known(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::FLOAT64); }

size_t value_type_size(ValueType t) {
  switch (t) {
    case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
    case ValueType::UINT16: case ValueType::INT16: return 2;
    case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
    case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: return 8;
    default: return 0;
  }
}

TypeTraits type_traits(uint32_t t) {
  constexpr int64_t K = 256;  // QK_K
  switch (t) {
    case 0: return {"F32", 1, 4};
    case 1: return {"F16", 1, 2};
    case 2: return {"Q4_0", 32, 2 + 16};
    case 3: return {"Q4_1", 32, 2 + 2 + 16};
    case 6: return {"Q5_0", 32, 2 + 4 + 16};
    case 7: return {"Q5_1", 32, 2 + 2 + 4 + 16};
    case 8: return {"Q8_0", 32, 2 + 32};
    case 9: return {"Q8_1", 32, 2 + 2 + 32};
    case 10: return {"Q2_K", K, 2 + 2 + K / 16 + K / 4};
    case 11: return {"Q3_K", K, 2 + K / 4 + K / 8 + 12};
    case 12: return {"Q4_K", K, 2 + 2 + K / 2 + 12};
    case 13: return {"Q5_K", K, 2 + 2 + K / 2 + K / 8 + 12};
    case 14: return {"Q6_K", K, 2 + K / 2 + K / 4 + K / 16};
    case 15: return {"Q8_K", K, 4 + K + K / 8};
    case 16: return {"IQ2_XXS", K, 2 + K / 4};
    case 17: return {"IQ2_XS", K, 2 + K / 4 + K / 32};
    case 18: return {"IQ3_XXS", K, 2 + K / 4 + K / 8};
    case 19: return {"IQ1_S", K, 2 + K / 8 + K / 16};
    case 20: return {"IQ4_NL", 32, 2 + 16};
    case 21: return {"IQ3_S", K, 2 + K / 4 + K / 8 + K / 32 + 4};
    case 22: return {"IQ2_S", K, 2 + K / 4 + K / 16};
    case 23: return {"IQ4_XS", K, 2 + 2 + K / 2 + K / 64};
    case 24: return {"I8", 1, 1};
    case 25: return {"I16", 1, 2};
    case 26: return {"I32", 1, 4};
    case 27: return {"I64", 1, 8};
    case 28: return {"F64", 1, 8};
    case 29: return {"IQ1_M", K, K / 8 + K / 16 + K / 32};
    case 30: return {"BF16", 1, 2};
    case 34: return {"TQ1_0", K, 2 + 4 * 13};
    case 35: return {"TQ2_0", K, 2 + 64};
    case 39: return {"MXFP4", 32, 1 + 16};
    case 40: return {"NVFP4", 64, 4 + 32};
    case 41: return {"Q1_0", 128, 2 + 16};
    case 42: return {"Q2_0", 64, 2 + 16};
    default: return {};
  }
}

int64_t tensor_nbytes(const std::vector<int64_t>& ne, uint32_t t) {
  const TypeTraits tr = type_traits(t);
  if (!tr.name || ne.empty()) return -1;
  if (ne[0] % tr.block_size != 0) return -1;
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t rows = 1;
  for (size_t i = 1; i < ne.size(); ++i) {
    if (ne[i] < 0) return -1;
    if (ne[i] != 0 && rows > kMax / ne[i]) return -1;
    rows *= ne[i];
  }
  if (ne[0] < 0) return -1;
  const int64_t row_bytes_blocks = ne[0] / tr.block_size;
  if (row_bytes_blocks != 0 && tr.type_size > kMax / row_bytes_blocks) return -1;
  const int64_t row_bytes = row_bytes_blocks * tr.type_size;
  if (row_bytes != 0 && rows > kMax / row_bytes) return -1;
  return rows * row_bytes;
}

uint32_t file_type_for(TensorType t) {
  switch (t) {
    case TensorType::F32: return 0;    // ALL_F32
    case TensorType::F16: return 1;    // MOSTLY_F16
    case TensorType::Q8_0: return 7;   // MOSTLY_Q8_0
    case TensorType::BF16: return 32;  // MOSTLY_BF16
    default: return 1024;              // GUESSED
  }
}

}  // namespace mf::gguf
