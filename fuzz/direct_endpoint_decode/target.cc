// Fuzz target: the direct endpoint announcement parser (the payload of a kDirectEndpoint AppMessage, written
// by a contact). Asserts that only the documented errors come back, that accepted endpoints respect the host
// and port rules, re-encode, decode equal, and that the encoding is a fixed point.
#include <cstddef>
#include <cstdint>

#include "core/wire/direct.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded = cw::wire::DecodeDirectEndpoint(std::span<const uint8_t>(data, size));
  if (!decoded) {
    const auto code = decoded.error().code();
    CW_FUZZ_CONTRACT_CHECK(code == cw::StatusCode::kMalformed || code == cw::StatusCode::kUnsupportedVersion,
                           decoded.error());
    return 0;
  }
  CW_FUZZ_CHECK(decoded->host.size() <= cw::wire::kMaxDirectHostSize);
  CW_FUZZ_CHECK(decoded->host.empty() == !decoded->listens());

  auto encoded = cw::wire::EncodeDirectEndpoint(*decoded);
  CW_FUZZ_CHECK(encoded.has_value());
  auto again = cw::wire::DecodeDirectEndpoint(*encoded);
  CW_FUZZ_CHECK(again.has_value());
  CW_FUZZ_CHECK(*again == *decoded);
  auto encoded_again = cw::wire::EncodeDirectEndpoint(*again);
  CW_FUZZ_CHECK(encoded_again.has_value());
  CW_FUZZ_CHECK(*encoded_again == *encoded);
  return 0;
}
