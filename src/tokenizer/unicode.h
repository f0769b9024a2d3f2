// UTF-8 and the GPT-2 byte <-> unicode map used by every byte-level BPE.
#pragma once
#include <cstdint>
#include <string>

namespace mf::unicode {

// Length of the UTF-8 sequence starting with lead byte c (1 for invalid lead bytes).
inline int utf8_len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

void append_utf8(std::string& out, uint32_t cp);
// Decodes the code point at s[i] (valid UTF-8 assumed) and advances i.
uint32_t next_code_point(const std::string& s, size_t& i);

// True if `s` is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool is_valid_utf8(const std::string& s);
// Replaces every maximal invalid subsequence with U+FFFD, as Python's
// bytes.decode("utf-8", errors="replace") and Rust's String::from_utf8_lossy do.
std::string sanitize_utf8(const std::string& s);

// GPT-2 bytes_to_unicode(): printable bytes map to themselves, the other 68 to U+0100.. in order.
// byte_to_piece(b) is that character's UTF-8 string.
const std::string& byte_to_piece(unsigned char b);
// Inverse for one code point: the byte, or -1 if cp is not in the map.
int piece_code_point_to_byte(uint32_t cp);
// Maps every byte of `bytes` through byte_to_piece.
std::string bytes_to_pieces(const std::string& bytes);

}  // namespace mf::unicode
