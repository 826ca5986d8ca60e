// Receipt: the payload of a kReceipt AppMessage (core/wire/app_message.h). The recipient of a text or file
// message tells its sender that the message was stored on its device (delivered) or shown to its user
// (read). A peer with a valid session controls every byte, so DecodeReceipt parses untrusted input.
//
// Encoding (msgpack array, version 1):
//   [1, type (uint: 1 delivered, 2 read), refs (array of 1..kMaxReceiptRefs bin, each kReceiptRefSize)]
// A reference is the relay message id the sender deposited the message under (the runtime derives it from
// the ciphertext and recipient, so both ends know it and it names nobody).
//
// Thread rules: free functions over values; safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/status.h"

namespace cw::wire {

inline constexpr uint8_t kReceiptVersion = 1;
inline constexpr size_t kReceiptRefSize = 16;   // relay::MessageId
inline constexpr size_t kMaxReceiptRefs = 256;  // a MarkRead over more sends several receipts

enum class ReceiptType : uint8_t { kDelivered = 1, kRead = 2 };

using ReceiptRef = std::array<uint8_t, kReceiptRefSize>;

struct Receipt {
  ReceiptType type = ReceiptType::kDelivered;
  std::vector<ReceiptRef> refs;
  friend bool operator==(const Receipt&, const Receipt&) = default;
};

// kInvalidArgument for an unknown type, no refs or more than kMaxReceiptRefs.
Result<Bytes> EncodeReceipt(const Receipt& receipt);
// kMalformed for anything that is not exactly the encoding above; kUnsupportedVersion for another version.
Result<Receipt> DecodeReceipt(std::span<const uint8_t> bytes);

}  // namespace cw::wire
