#include "core/base/secret.h"

namespace cw {

bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool SecretBytes::Equals(const SecretBytes& other) const { return ConstantTimeEquals(reveal(), other.reveal()); }

}  // namespace cw
