// AppMessage: what a 1:1 message's Content body (ContentKind::kMessage, content.h) carries. The body used to
// be the raw text; it is now a typed application message with a purpose label, so the runtime can gate
// delivery on consent (core/compliance/ledger.h) and carry compliance records and attachments end to end.
// A peer with a valid session controls every byte, so DecodeAppMessage is a parser of untrusted input.
//
// Encoding (msgpack array, version 1):
//   [1, kind (uint), purpose (str, 0..kMaxPurposeSize bytes, "" = none), payload (bin, <= kMaxAppPayloadSize)]
// Payload by kind:
//   kText               UTF-8 text (not checked here: the transcript stores bytes)
//   kFile               an attachment descriptor (core/wire/attachment.h)
//   kReceipt            a delivery/read receipt (core/wire/receipt.h)
//   kConsent            compliance::EncodeSignedReceipt (patient-signed, or countersigned on the way back)
//   kConsentWithdrawal  compliance::EncodeWithdrawal
//   kAuditHead          compliance::EncodeCheckpoint: the sender's signed audit chain head
//   kErasure            compliance::EncodeErasureReceipt
//   kDirectEndpoint     a direct P2P announcement (core/wire/direct.h): the sender's link key and endpoint
//   kInviteAnswer       the deposit token (32 bytes) of the recipient's invite that the sender accepted, so the
//                       inviter knows which of its invite tokens to revoke for this contact
// Unknown kinds are kMalformed (a newer kind must not be shown as text by an older device).
//
// Thread rules: free functions over values; safe from any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "core/base/secret.h"
#include "core/base/status.h"

namespace cw::wire {

inline constexpr uint8_t kAppMessageVersion = 1;
inline constexpr size_t kMaxPurposeSize = 64;
// The Content body is at most kMaxPlaintextSize (1 MiB); the envelope around the payload takes at most
// 1 + 1 + 2 + 64 + 5 bytes, so this bound keeps every AppMessage inside it.
inline constexpr size_t kMaxAppPayloadSize = (1u << 20) - 128;

enum class AppKind : uint8_t {
  kText = 1,
  kFile = 2,
  kReceipt = 3,
  kConsent = 4,
  kConsentWithdrawal = 5,
  kAuditHead = 6,
  kErasure = 7,
  kDirectEndpoint = 8,
  kInviteAnswer = 9,
};
inline constexpr uint8_t kMaxAppKind = 9;

struct AppMessage {
  AppKind kind = AppKind::kText;
  std::string purpose;  // a purpose label ("treatment", ...) or "" for none; the runtime checks the label
  SecretBytes payload;
};

// kInvalidArgument for an unknown kind, a purpose over kMaxPurposeSize or a payload over kMaxAppPayloadSize.
Result<SecretBytes> EncodeAppMessage(const AppMessage& message);
// kMalformed for anything that is not exactly the encoding above; kUnsupportedVersion for another version.
Result<AppMessage> DecodeAppMessage(std::span<const uint8_t> bytes);

}  // namespace cw::wire
