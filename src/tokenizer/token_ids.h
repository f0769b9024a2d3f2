// Bounds on the token ids a vocabulary file may declare. The id -> token table is as long as the
// largest id, so an id such as 2147483647 would ask for a table of 2^31 strings (and overflowed
// int32 before that); JSON integers beyond int32 were silently truncated by get<int32_t>().
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <limits>

namespace mf {

// 2^24 - 1 (about 16.8M ids; the largest real vocabularies hold about 260k).
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

// A JSON integer as int64, saturated (unsigned values above INT64_MAX become INT64_MAX): callers
// compare it with kMaxTokenId and print v.dump() in their message.
inline int64_t json_integer_saturated(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    return u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                                           : static_cast<int64_t>(u);
  }
  return v.get<int64_t>();
}

}  // namespace mf
