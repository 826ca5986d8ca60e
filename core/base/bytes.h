// Byte strings that are not secret (ciphertext, public keys, ids), and helpers to show them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cw {

using Bytes = std::vector<uint8_t>;
using ByteView = std::span<const uint8_t>;

inline ByteView AsBytes(std::string_view s) {
  return ByteView(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}
inline Bytes ToBytes(std::string_view s) { return Bytes(s.begin(), s.end()); }
// The bytes as characters, without a copy (AsBytes the other way).
inline std::string_view AsText(ByteView b) { return std::string_view(reinterpret_cast<const char*>(b.data()), b.size()); }

std::string ToHex(ByteView bytes);
// Empty result and false on odd length or a non-hex digit.
bool FromHex(std::string_view hex, Bytes* out);
// In place, for secrets kept in wiped memory: ToHexInto writes exactly 2 * bytes.size() characters (no NUL);
// FromHexInto decodes exactly out.size() bytes, false on another length or a non-hex digit (`out` then holds
// garbage).
void ToHexInto(ByteView bytes, std::span<uint8_t> out);
bool FromHexInto(std::string_view hex, std::span<uint8_t> out);

}  // namespace cw
