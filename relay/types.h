// Identifiers the relay deals in. None of them is secret to the relay except the deposit token, which the
// relay keeps only as a keyed hash (see TokenHash) and never logs.
// Thread rules: plain value types.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/base/bytes.h"

namespace cw::relay {

inline constexpr size_t kLinkKeySize = 32;      // X25519 static public key learned by the Noise XK handshake
inline constexpr size_t kMailboxIdSize = 16;    // drawn by the relay from its CSPRNG
inline constexpr size_t kMessageIdSize = 16;    // drawn by the depositing client; the idempotency key
inline constexpr size_t kDepositTokenSize = 32; // drawn by the relay; the owner hands it to contacts
inline constexpr size_t kTokenHashSize = 32;    // BLAKE2b-256(mailbox id || token): what the store keeps
inline constexpr size_t kAttachmentIdSize = 16; // drawn by the relay

// The authenticated static key of the client on the other end of a link. The relay binds a mailbox to the
// link key that created it.
using LinkKey = std::array<uint8_t, kLinkKeySize>;
using MailboxId = std::array<uint8_t, kMailboxIdSize>;
using MessageId = std::array<uint8_t, kMessageIdSize>;
using DepositToken = std::array<uint8_t, kDepositTokenSize>;
using TokenHash = std::array<uint8_t, kTokenHashSize>;
using AttachmentId = std::array<uint8_t, kAttachmentIdSize>;

// A short, non-reversible tag for logs (first 4 bytes of BLAKE2b of the value, hex). Never log an id, key
// or token itself.
std::string LogTag(ByteView value);

// BLAKE2b-256 over mailbox id || token. Tokens are stored only in this form, so a copy of the store does
// not let anyone deposit.
TokenHash HashDepositToken(const MailboxId& mailbox, const DepositToken& token);

}  // namespace cw::relay
