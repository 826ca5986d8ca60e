// Fuzz target: the app message parser. An AppMessage is what a peer with a valid session puts inside a
// message's content body, so a hostile contact controls every byte. Asserts that only the documented errors
// come back, that accepted messages respect the bounds, re-encode, decode equal, and that the encoding is a
// fixed point.
#include <cstddef>
#include <cstdint>

#include "core/wire/app_message.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded = cw::wire::DecodeAppMessage(std::span<const uint8_t>(data, size));
  if (!decoded) {
    const auto code = decoded.error().code();
    CW_FUZZ_CONTRACT_CHECK(code == cw::StatusCode::kMalformed || code == cw::StatusCode::kUnsupportedVersion,
                           decoded.error());
    return 0;
  }
  const auto kind = static_cast<uint8_t>(decoded->kind);
  CW_FUZZ_CHECK(kind >= 1 && kind <= cw::wire::kMaxAppKind);
  CW_FUZZ_CHECK(decoded->purpose.size() <= cw::wire::kMaxPurposeSize);
  CW_FUZZ_CHECK(decoded->payload.size() <= cw::wire::kMaxAppPayloadSize);

  auto encoded = cw::wire::EncodeAppMessage(*decoded);
  CW_FUZZ_CHECK(encoded.has_value());
  auto again = cw::wire::DecodeAppMessage(encoded->reveal());
  CW_FUZZ_CHECK(again.has_value());
  CW_FUZZ_CHECK(again->kind == decoded->kind && again->purpose == decoded->purpose &&
                again->payload.Equals(decoded->payload));
  auto encoded_again = cw::wire::EncodeAppMessage(*again);
  CW_FUZZ_CHECK(encoded_again.has_value());
  CW_FUZZ_CHECK(encoded_again->Equals(*encoded));
  return 0;
}
