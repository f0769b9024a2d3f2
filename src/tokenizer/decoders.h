// HF tokenizers decoders: ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder,
// Sequence. Each maps a list of token strings to a list of strings (decode_chain); the caller
// concatenates the result.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mf {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// nullptr for JSON null. Errors: mf::Error "<origin>: ...".
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& origin);
std::unique_ptr<Decoder> make_byte_level_decoder();

}  // namespace mf
