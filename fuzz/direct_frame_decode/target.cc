// Fuzz target: the direct link frame parser (deliver and ack frames from a contact's direct link). Asserts
// that only the documented errors come back, that accepted frames respect the bounds, re-encode, decode
// equal, and that the encoding is a fixed point.
#include <cstddef>
#include <cstdint>

#include "core/wire/direct.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded = cw::wire::DecodeDirectFrame(std::span<const uint8_t>(data, size));
  if (!decoded) {
    const auto code = decoded.error().code();
    CW_FUZZ_CONTRACT_CHECK(code == cw::StatusCode::kMalformed || code == cw::StatusCode::kUnsupportedVersion,
                           decoded.error());
    return 0;
  }
  if (decoded->type == cw::wire::DirectFrameType::kDeliver) {
    CW_FUZZ_CHECK(!decoded->envelope.empty() && decoded->envelope.size() <= cw::wire::kMaxDirectEnvelopeSize);
  } else {
    CW_FUZZ_CHECK(decoded->type == cw::wire::DirectFrameType::kAck && decoded->envelope.empty());
  }

  auto encoded = cw::wire::EncodeDirectFrame(*decoded);
  CW_FUZZ_CHECK(encoded.has_value());
  CW_FUZZ_CHECK(encoded->size() <= cw::wire::kMaxDirectFrameSize);
  auto again = cw::wire::DecodeDirectFrame(*encoded);
  CW_FUZZ_CHECK(again.has_value());
  CW_FUZZ_CHECK(*again == *decoded);
  auto encoded_again = cw::wire::EncodeDirectFrame(*again);
  CW_FUZZ_CHECK(encoded_again.has_value());
  CW_FUZZ_CHECK(*encoded_again == *encoded);
  return 0;
}
