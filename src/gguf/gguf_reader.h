// GGUF header reader: metadata, tensor infos and the data section's bounds, checked as
// llama.cpp's gguf_init_from_file checks them (plus the file's size), without reading tensor data.
// Every problem is one mf::Error "<file>: <what>" (truncated file, bad magic, unsupported version,
// a string or array running past the end, an unknown value or tensor type, a duplicate key or
// tensor, a bad alignment, a row length the block size does not divide, an offset out of place,
// tensor data past the end of the file). Used by `moeforge info FILE.gguf` and the tests.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gguf/gguf.h"
#include "util/json.h"

namespace mf::gguf {

struct KeyValue {
  std::string key;
  ValueType type = ValueType::UINT32;
  ValueType elem_type = ValueType::UINT32;  // arrays only
  uint64_t count = 1;                       // arrays: number of elements
  json value;                               // numbers, bool, string, or an array of them
};

struct TensorEntry {
  std::string name;
  std::vector<int64_t> ne;  // ggml order (ne[0] = row length)
  uint32_t type = 0;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t nbytes = 0;
  int64_t numel() const;
};

struct File {
  std::string path;
  uint32_t version = 0;
  uint64_t file_size = 0;
  uint32_t alignment = kDefaultAlignment;
  uint64_t data_offset = 0;  // where the data section starts in the file
  std::vector<KeyValue> kv;
  std::vector<TensorEntry> tensors;

  const KeyValue* find(const std::string& key) const;
  // Typed lookups; fallback when the key is absent or has another type.
  std::string get_string(const std::string& key, const std::string& fallback = "") const;
  int64_t get_int(const std::string& key, int64_t fallback = -1) const;
  double get_float(const std::string& key, double fallback = 0) const;
};

// Whether the file at `path` starts with the GGUF magic (false for unreadable / short files).
bool has_gguf_magic(const std::string& path);

// Reads and checks the header of a GGUF file (versions 2 and 3, little-endian).
File read_file(const std::string& path);

}  // namespace mf::gguf
