// Fuzz target: the receipt parser (the payload of a kReceipt AppMessage, written by a contact). Asserts that
// only the documented errors come back, that accepted receipts respect the bounds, re-encode, decode equal,
// and that the encoding is a fixed point.
#include <cstddef>
#include <cstdint>

#include "core/wire/receipt.h"
#include "fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto decoded = cw::wire::DecodeReceipt(std::span<const uint8_t>(data, size));
  if (!decoded) {
    const auto code = decoded.error().code();
    CW_FUZZ_CONTRACT_CHECK(code == cw::StatusCode::kMalformed || code == cw::StatusCode::kUnsupportedVersion,
                           decoded.error());
    return 0;
  }
  CW_FUZZ_CHECK(decoded->type == cw::wire::ReceiptType::kDelivered || decoded->type == cw::wire::ReceiptType::kRead);
  CW_FUZZ_CHECK(!decoded->refs.empty() && decoded->refs.size() <= cw::wire::kMaxReceiptRefs);

  auto encoded = cw::wire::EncodeReceipt(*decoded);
  CW_FUZZ_CHECK(encoded.has_value());
  auto again = cw::wire::DecodeReceipt(*encoded);
  CW_FUZZ_CHECK(again.has_value());
  CW_FUZZ_CHECK(*again == *decoded);
  auto encoded_again = cw::wire::EncodeReceipt(*again);
  CW_FUZZ_CHECK(encoded_again.has_value());
  CW_FUZZ_CHECK(*encoded_again == *encoded);
  return 0;
}
