// The runtime's two formats, both parsers of untrusted bytes (bounded msgpack, exact arity and sizes):
//
// Invite code: "cwi1." + base64url (no padding) of the msgpack array
//   [2, relay address (str), mailbox (bin 16), deposit token (bin 32), box key (bin 32),
//    identity key (bin 33), name (str), signature (bin 64)]
// It fits a QR code (about 400 characters). Whoever holds it may deposit into the mailbox, so it is shown
// only to the person invited; the identity key lets the accepter check the bundle the relay serves.
// The signature is the identity key's XEdDSA signature (as over signed pre-keys) over "cipherward invite v2"
// followed by the msgpack array of the first seven fields: so comparing safety numbers, which checks the
// identity key alone, also vouches for where the accepter writes and for the box key that hides the sender's
// name from the relay. (Version 1 had no signature; it is refused as kUnsupportedVersion.)
//
// Envelope (what the relay stores): crypto_box_seal(recipient box key, Pad(inner)), where inner is
//   [2, message type (uint), group id (str), sender name (str), sender device (uint), ciphertext (bin),
//    sent at ms (int), card (nil or [relay address (str), mailbox (bin 16), token (bin 32), box key (bin
//    32)]), deposit token (bin 32)]
// Pad is the Padmé bucketing of core/wire/padding.h (at least 256 bytes), so the sealed size reveals little.
// The card tells a new contact where to reply; it is believed only after the Signal message in the same
// envelope decrypted (so only from the identity the session authenticates).
//
// Thread rules: free functions, safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "core/base/bytes.h"
#include "core/base/secret.h"
#include "core/base/status.h"
#include "core/session/engine.h"
#include "core/wire/bundle.h"

namespace cw::runtime {

inline constexpr size_t kBoxKeySize = 32;  // crypto_box_PUBLICKEYBYTES
inline constexpr size_t kMaxRelayAddressSize = 200;
// The longest code, a version 3 one with the longest relay address and two of the longest names, is about
// 1,220 characters: well within a QR code (2,953 bytes at the lowest error correction).
inline constexpr size_t kMaxInviteCodeSize = 1400;
inline constexpr std::string_view kInvitePrefix = "cwi1.";

using MailboxId = std::array<uint8_t, 16>;
using DepositToken = std::array<uint8_t, 32>;
using BoxPublicKey = std::array<uint8_t, kBoxKeySize>;
using InviteSignature = std::array<uint8_t, 64>;

// Where and how to reach a mailbox.
struct ContactCard {
  std::string relay;  // cw://<key>@host:port
  MailboxId mailbox{};
  DepositToken token{};
  BoxPublicKey box_key{};
  friend bool operator==(const ContactCard&, const ContactCard&) = default;
};

struct Invite {
  ContactCard card;
  wire::PublicKey identity_key{};
  std::string name;
  // Empty: a code for new contacts (version 2). Otherwise the contact whose new device it is for
  // (Client::CreateInviteForNewDevice; version 3), signed like the rest, so the accepter can tell.
  std::string for_device_of;
  InviteSignature signature{};  // by identity_key over InviteSignedBytes
  friend bool operator==(const Invite&, const Invite&) = default;
};

// What an invite's signature covers (every field but the signature, under a context string). It holds the
// deposit token, so it wipes itself.
SecretBytes InviteSignedBytes(const Invite& invite);
// Ok when `invite.signature` is its identity key's signature; kBadSignature otherwise. Runs libsignal's
// curve_verify_signature on public data only; the client calls it on its loop thread.
[[nodiscard]] Status VerifyInvite(const Invite& invite);
std::string EncodeInvite(const Invite& invite);
// The name an invite goes by on its inviter's device (Client::OpenInvites, CancelInvite): 12 hex digits of a
// hash of its deposit token, so listing and cancelling invites never shows the token (which admits whoever
// holds it).
std::string InviteIdOf(const DepositToken& token);
// kMalformed for anything else than one well-formed invite code (surrounding whitespace is ignored);
// kUnsupportedVersion for another version.
Result<Invite> DecodeInvite(std::string_view code);

struct EnvelopeContent {
  session::Ciphertext message;
  std::string sender;
  uint32_t sender_device = 1;
  int64_t sent_at_ms = 0;
  std::optional<ContactCard> card;
  // The deposit token it was deposited with. The sender's name is the sender's to write, and every contact
  // holds a token: the recipient believes a name only with the token it gave that contact (or an invite's),
  // so one contact cannot write as another.
  DepositToken token{};
};

// Serializes, pads and seals to `recipient_box_key`.
Result<Bytes> SealEnvelope(const EnvelopeContent& content, const BoxPublicKey& recipient_box_key);
// Opens with our box key pair. kTampered when it was not sealed to us (or was altered); kMalformed when the
// inner bytes do not parse.
Result<EnvelopeContent> OpenEnvelope(ByteView sealed, const BoxPublicKey& box_public,
                                     const SecretBytes& box_secret);

}  // namespace cw::runtime
