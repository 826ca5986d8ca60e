#include "core/base/bytes.h"

#include <sodium.h>

namespace cw {

void ToHexInto(ByteView bytes, std::span<uint8_t> out) {
  static constexpr char kDigits[] = "0123456789abcdef";
  size_t at = 0;
  for (uint8_t b : bytes) {
    out[at++] = static_cast<uint8_t>(kDigits[b >> 4]);
    out[at++] = static_cast<uint8_t>(kDigits[b & 0xf]);
  }
}

std::string ToHex(ByteView bytes) {
  std::string out(bytes.size() * 2, '\0');
  ToHexInto(bytes, std::span<uint8_t>(reinterpret_cast<uint8_t*>(out.data()), out.size()));
  return out;
}

// sodium_hex2bin: keys and tokens are decoded here, and it does not branch on the digits it reads.
bool FromHexInto(std::string_view hex, std::span<uint8_t> out) {
  if (hex.size() != 2 * out.size()) return false;
  size_t len = 0;
  return sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &len, nullptr) == 0 &&
         len == out.size();
}

bool FromHex(std::string_view hex, Bytes* out) {
  out->assign(hex.size() / 2, 0);
  if (hex.size() % 2 == 0 && FromHexInto(hex, *out)) return true;
  out->clear();
  return false;
}

}  // namespace cw
