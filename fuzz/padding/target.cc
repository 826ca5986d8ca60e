// Fuzz target: plaintext padding. Unpad runs on every decrypted message, so on bytes a peer chose.
// Asserts, for input x:
//   - Unpad(x) either fails with kMalformed or gives y with Pad(y) == x (padding is canonical: exactly one
//     padded form per plaintext, so nothing can ride in the pad);
//   - Pad(x) has the documented size (PaddedSize, at least kMinPaddedSize, at most 12% over the content
//     beyond the minimum bucket) and Unpad gives x back.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "core/wire/padding.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> input(data, size);

  auto unpadded = cw::wire::Unpad(input);
  if (unpadded) {
    CW_FUZZ_CHECK(unpadded->size() < size);
    auto repadded = cw::wire::Pad(unpadded->reveal());
    CW_FUZZ_CHECK(repadded.has_value());
    CW_FUZZ_CHECK(std::ranges::equal(repadded->reveal(), input));
  } else {
    CW_FUZZ_CONTRACT_CHECK(unpadded.error().code() == cw::StatusCode::kMalformed, unpadded.error());
  }

  auto padded = cw::wire::Pad(input);
  CW_FUZZ_CHECK(padded.has_value());  // fuzz inputs are far below kMaxPlaintextSize
  const size_t n = padded->size();
  CW_FUZZ_CHECK(n == cw::wire::PaddedSize(size));
  CW_FUZZ_CHECK(n >= cw::wire::kMinPaddedSize && n > size);
  if (size + 1 > cw::wire::kMinPaddedSize) CW_FUZZ_CHECK((n - size) * 100 <= size * 12);
  auto back = cw::wire::Unpad(padded->reveal());
  CW_FUZZ_CHECK(back.has_value());
  CW_FUZZ_CHECK(std::ranges::equal(back->reveal(), input));
  return 0;
}
