// Fuzz target: pre-key bundle parsing. Bundles arrive from the relay, so from anyone.
// Asserts that whatever DecodeBundle accepts survives a round trip: encoding it gives bytes that decode to
// the same bundle, that fit the size limit, and that are a fixed point of decode-then-encode.
#include <cstddef>
#include <cstdint>

#include "core/wire/bundle.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded = cw::wire::DecodeBundle(cw::ByteView(data, size));
  if (!decoded) {
    const auto code = decoded.error().code();
    CW_FUZZ_CONTRACT_CHECK(code == cw::StatusCode::kMalformed || code == cw::StatusCode::kUnsupportedVersion,
                           decoded.error());
    return 0;
  }
  const cw::Bytes encoded = cw::wire::EncodeBundle(*decoded);
  CW_FUZZ_CHECK(encoded.size() <= cw::wire::kMaxBundleSize);
  auto again = cw::wire::DecodeBundle(encoded);
  CW_FUZZ_CHECK(again.has_value());
  CW_FUZZ_CHECK(*again == *decoded);
  CW_FUZZ_CHECK(cw::wire::EncodeBundle(*again) == encoded);
  return 0;
}
