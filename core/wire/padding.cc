#include "core/wire/padding.h"

#include <bit>

namespace cw::wire {

namespace {
constexpr uint8_t kMarker = 0x80;

size_t Padme(size_t length) {
  if (length < 2) return length;
  const unsigned e = std::bit_width(length) - 1;  // floor(log2 L)
  const unsigned s = std::bit_width(static_cast<size_t>(e));  // floor(log2 E) + 1
  const unsigned last_bits = e - s;
  const size_t mask = (size_t{1} << last_bits) - 1;
  return (length + mask) & ~mask;
}
}  // namespace

size_t PaddedSize(size_t content_size) {
  size_t n = content_size + 1;  // the marker byte
  if (n <= kMinPaddedSize) return kMinPaddedSize;
  return Padme(n);
}

Result<SecretBytes> Pad(std::span<const uint8_t> plaintext) {
  if (plaintext.size() > kMaxPlaintextSize) return Error(StatusCode::kInvalidArgument, "plaintext too large");
  SecretBytes out(PaddedSize(plaintext.size()));
  auto dst = out.reveal_mutable();
  std::copy(plaintext.begin(), plaintext.end(), dst.begin());
  dst[plaintext.size()] = kMarker;  // the rest is already zero
  return out;
}

Result<SecretBytes> Unpad(std::span<const uint8_t> padded) {
  // Scan the whole tail rather than stopping early: the time taken depends only on the padded length,
  // which the ciphertext length already shows.
  size_t marker = padded.size();
  uint8_t bad = 0;
  bool found = false;
  for (size_t i = padded.size(); i-- > 0;) {
    if (!found) {
      if (padded[i] == kMarker) {
        marker = i;
        found = true;
      } else {
        bad |= padded[i];
      }
    }
  }
  if (!found || bad != 0 || PaddedSize(marker) != padded.size()) {
    return Error(StatusCode::kMalformed, "plaintext padding is invalid");
  }
  return SecretBytes(padded.data(), marker);
}

}  // namespace cw::wire
