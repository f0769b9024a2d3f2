// SHA-256 for run records: every command records the content hash of its inputs.
#pragma once
#include <cstdint>
#include <string>

namespace mf {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  // Hex digest; the object must not be updated afterwards.
  std::string hex_digest();

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

std::string sha256_hex(const std::string& bytes);
// Hash of a file's contents; throws mf::Error naming the file if it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace mf
