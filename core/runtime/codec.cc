#include "core/runtime/codec.h"

#include <sodium.h>

#include <msgpack.hpp>

#include "core/compliance/signing.h"
#include "core/wire/content.h"
#include "core/wire/msgpack_util.h"
#include "core/wire/padding.h"

namespace cw::runtime {

namespace {

// Version 1 carried no signature: whoever could alter a code in transit could swap the box key, mailbox or
// relay and stay unnoticed, since safety numbers check only the identity key.
// Version 2: for new contacts (read by every signed-invite version). Version 3 adds the signed name of the
// contact whose new device a code is for; only such codes are written as version 3.
constexpr uint8_t kInviteVersion = 2;
constexpr uint8_t kDeviceInviteVersion = 3;
constexpr std::string_view kInviteSignatureContext = "cipherward invite v2";
// Version 1 did not carry the deposit token: see EnvelopeContent::token.
constexpr uint8_t kEnvelopeVersion = 2;

template <typename Stream>
void PackBin(msgpack::packer<Stream>& pk, ByteView b) {
  pk.pack_bin(static_cast<uint32_t>(b.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
}
template <typename Stream>
void PackStr(msgpack::packer<Stream>& pk, std::string_view s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

template <size_t N>
bool ReadFixedBin(const msgpack::object& o, std::array<uint8_t, N>* out) {
  if (o.type != msgpack::type::BIN || o.via.bin.size != N) return false;
  std::memcpy(out->data(), o.via.bin.ptr, N);
  return true;
}
bool ReadStr(const msgpack::object& o, size_t max, std::string* out) {
  if (o.type != msgpack::type::STR || o.via.str.size > max) return false;
  out->assign(o.via.str.ptr, o.via.str.size);
  return true;
}
bool ReadUint(const msgpack::object& o, uint64_t max, uint64_t* out) {
  if (o.type != msgpack::type::POSITIVE_INTEGER || o.via.u64 > max) return false;
  *out = o.via.u64;
  return true;
}

template <typename Stream>
void PackCard(msgpack::packer<Stream>& pk, const ContactCard& c) {
  pk.pack_array(4);
  PackStr(pk, c.relay);
  PackBin(pk, c.mailbox);
  PackBin(pk, c.token);
  PackBin(pk, c.box_key);
}
bool ReadCard(const msgpack::object& o, ContactCard* c) {
  if (o.type != msgpack::type::ARRAY || o.via.array.size != 4) return false;
  const auto* a = o.via.array.ptr;
  return ReadStr(a[0], kMaxRelayAddressSize, &c->relay) && !c->relay.empty() && ReadFixedBin(a[1], &c->mailbox) &&
         ReadFixedBin(a[2], &c->token) && ReadFixedBin(a[3], &c->box_key);
}

}  // namespace

std::string InviteIdOf(const DepositToken& token) {
  std::array<uint8_t, crypto_generichash_BYTES_MIN> h{};
  crypto_generichash(h.data(), h.size(), token.data(), token.size(), nullptr, 0);
  return ToHex(ByteView(h.data(), 6));
}

// Fields of an invite's code before the signature: 7 at version 2, 8 at version 3.
size_t InviteFieldCount(const Invite& invite) { return invite.for_device_of.empty() ? 7 : 8; }

// Everything of an invite but its signature, in code order.
template <typename Stream>
void PackInviteFields(msgpack::packer<Stream>& pk, const Invite& invite) {
  pk.pack_uint8(invite.for_device_of.empty() ? kInviteVersion : kDeviceInviteVersion);
  PackStr(pk, invite.card.relay);
  PackBin(pk, invite.card.mailbox);
  PackBin(pk, invite.card.token);
  PackBin(pk, invite.card.box_key);
  PackBin(pk, invite.identity_key);
  PackStr(pk, invite.name);
  if (!invite.for_device_of.empty()) PackStr(pk, invite.for_device_of);
}

SecretBytes InviteSignedBytes(const Invite& invite) {
  wire::internal::SecretSink sink;  // the deposit token is in it
  sink.write(kInviteSignatureContext.data(), kInviteSignatureContext.size());
  msgpack::packer<wire::internal::SecretSink> pk(sink);
  pk.pack_array(static_cast<uint32_t>(InviteFieldCount(invite)));
  PackInviteFields(pk, invite);
  return sink.Take();
}

Status VerifyInvite(const Invite& invite) {
  const compliance::SigningPublicKey key{compliance::SignatureScheme::kXEdDSA,
                                         Bytes(invite.identity_key.begin(), invite.identity_key.end())};
  if (!compliance::StandardVerifier()
           .Verify(key, InviteSignedBytes(invite).reveal(), invite.signature)
           .ok()) {
    return Status(
        StatusCode::kBadSignature,
        "the invite code is not signed by the identity it names: it was altered or damaged on the way; "
        "ask its sender for a new one");
  }
  return Status::Ok();
}

std::string EncodeInvite(const Invite& invite) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(static_cast<uint32_t>(InviteFieldCount(invite) + 1));
  PackInviteFields(pk, invite);
  PackBin(pk, invite.signature);
  const size_t len = sodium_base64_encoded_len(buf.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  std::string b64(len, '\0');
  sodium_bin2base64(b64.data(), len, reinterpret_cast<const unsigned char*>(buf.data()), buf.size(),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  b64.resize(len - 1);  // the terminating NUL
  return std::string(kInvitePrefix) + b64;
}

Result<Invite> DecodeInvite(std::string_view code) {
  while (!code.empty() && std::isspace(static_cast<unsigned char>(code.front()))) code.remove_prefix(1);
  while (!code.empty() && std::isspace(static_cast<unsigned char>(code.back()))) code.remove_suffix(1);
  const auto bad = [] { return Error(StatusCode::kMalformed, "not an invite code"); };
  if (code.size() > kMaxInviteCodeSize || !code.starts_with(kInvitePrefix)) return bad();
  code.remove_prefix(kInvitePrefix.size());
  if (code.empty()) return bad();
  Bytes raw(code.size());
  size_t raw_len = 0;
  if (sodium_base642bin(raw.data(), raw.size(), code.data(), code.size(), nullptr, &raw_len, nullptr,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
    return bad();
  }
  raw.resize(raw_len);
  wire::internal::Limits limits;
  limits.array = 9;
  limits.str = 256;
  limits.bin = 64;
  limits.depth = 1;
  auto handle = wire::internal::UnpackOne(raw, limits);
  if (!handle) return bad();
  const msgpack::object& o = handle->get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size < 1) return bad();
  const auto* a = o.via.array.ptr;
  uint64_t version = 0;
  if (!ReadUint(a[0], 255, &version)) return bad();
  if (version < kInviteVersion) {
    return Error(StatusCode::kUnsupportedVersion,
                 "an invite code of an older version, which was not signed: ask its sender for a new one");
  }
  if (version > kDeviceInviteVersion) {
    return Error(StatusCode::kUnsupportedVersion, "an invite code of a newer version: update Cipherward");
  }
  const bool device = version == kDeviceInviteVersion;
  if (o.via.array.size != (device ? 9u : 8u)) return bad();
  Invite inv;
  if (!ReadStr(a[1], kMaxRelayAddressSize, &inv.card.relay) || inv.card.relay.empty() ||
      !ReadFixedBin(a[2], &inv.card.mailbox) || !ReadFixedBin(a[3], &inv.card.token) ||
      !ReadFixedBin(a[4], &inv.card.box_key) || !ReadFixedBin(a[5], &inv.identity_key) ||
      !ReadStr(a[6], wire::kMaxNameSize, &inv.name) || !wire::IsValidName(inv.name) ||
      (device &&
       (!ReadStr(a[7], wire::kMaxNameSize, &inv.for_device_of) || !wire::IsValidName(inv.for_device_of))) ||
      !ReadFixedBin(a[device ? 8 : 7], &inv.signature)) {
    return bad();
  }
  return inv;
}

Result<Bytes> SealEnvelope(const EnvelopeContent& c, const BoxPublicKey& recipient_box_key) {
  wire::internal::SecretSink sink;
  msgpack::packer<wire::internal::SecretSink> pk(sink);
  pk.pack_array(9);
  pk.pack_uint8(kEnvelopeVersion);
  pk.pack_uint8(static_cast<uint8_t>(c.message.type));
  PackStr(pk, c.message.group_id);
  PackStr(pk, c.sender);
  pk.pack_uint32(c.sender_device);
  PackBin(pk, c.message.body);
  pk.pack_int64(c.sent_at_ms);
  if (c.card) {
    PackCard(pk, *c.card);
  } else {
    pk.pack_nil();
  }
  PackBin(pk, c.token);
  SecretBytes inner = sink.Take();
  CW_ASSIGN_OR_RETURN(SecretBytes padded, wire::Pad(inner.reveal()));
  Bytes sealed(padded.size() + crypto_box_SEALBYTES);
  if (crypto_box_seal(sealed.data(), padded.reveal().data(), padded.size(), recipient_box_key.data()) != 0) {
    return Error(StatusCode::kInternal, "crypto_box_seal failed");
  }
  return sealed;
}

Result<EnvelopeContent> OpenEnvelope(ByteView sealed, const BoxPublicKey& box_public,
                                     const SecretBytes& box_secret) {
  if (sealed.size() <= crypto_box_SEALBYTES || box_secret.size() != crypto_box_SECRETKEYBYTES) {
    return Error(StatusCode::kTampered, "envelope does not open");
  }
  SecretBytes padded(sealed.size() - crypto_box_SEALBYTES);
  if (crypto_box_seal_open(padded.reveal_mutable().data(), sealed.data(), sealed.size(), box_public.data(),
                           box_secret.reveal().data()) != 0) {
    return Error(StatusCode::kTampered, "envelope does not open");
  }
  auto inner = wire::Unpad(padded.reveal());
  if (!inner) return Error(StatusCode::kMalformed, "envelope padding is malformed");
  const auto bad = [] { return Error(StatusCode::kMalformed, "envelope is malformed"); };
  wire::internal::Limits limits;
  limits.array = 9;
  limits.str = 256;
  limits.bin = 96 * 1024;
  limits.depth = 2;
  auto handle = wire::internal::UnpackOne(inner->reveal(), limits);
  if (!handle) return bad();
  const msgpack::object& o = handle->get();
  if (o.type != msgpack::type::ARRAY || o.via.array.size < 1) return bad();
  const auto* a = o.via.array.ptr;
  uint64_t version = 0, type = 0, device = 0;
  if (!ReadUint(a[0], 255, &version)) return bad();
  if (version != kEnvelopeVersion) return Error(StatusCode::kUnsupportedVersion, "envelope of another version");
  if (o.via.array.size != 9) return bad();
  EnvelopeContent c;
  if (!ReadUint(a[1], 255, &type) ||
      (type != static_cast<uint64_t>(session::MessageType::kSignal) &&
       type != static_cast<uint64_t>(session::MessageType::kPreKey) &&
       type != static_cast<uint64_t>(session::MessageType::kSenderKey))) {
    return bad();
  }
  c.message.type = static_cast<session::MessageType>(type);
  if (!ReadStr(a[2], wire::kMaxGroupIdSize, &c.message.group_id) || !ReadStr(a[3], wire::kMaxNameSize, &c.sender) ||
      !wire::IsValidName(c.sender) || !ReadUint(a[4], UINT32_MAX, &device) || a[5].type != msgpack::type::BIN ||
      a[5].via.bin.size == 0) {
    return bad();
  }
  c.sender_device = static_cast<uint32_t>(device);
  c.message.body.assign(reinterpret_cast<const uint8_t*>(a[5].via.bin.ptr),
                        reinterpret_cast<const uint8_t*>(a[5].via.bin.ptr) + a[5].via.bin.size);
  if (a[6].type == msgpack::type::POSITIVE_INTEGER) {
    c.sent_at_ms = a[6].via.u64 > static_cast<uint64_t>(INT64_MAX) ? 0 : static_cast<int64_t>(a[6].via.u64);
  } else if (a[6].type != msgpack::type::NEGATIVE_INTEGER) {
    return bad();
  }
  if (a[7].type != msgpack::type::NIL) {
    ContactCard card;
    if (!ReadCard(a[7], &card)) return bad();
    c.card = std::move(card);
  }
  if (!ReadFixedBin(a[8], &c.token)) return bad();
  return c;
}

}  // namespace cw::runtime
