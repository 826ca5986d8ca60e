#include "core/compliance/erasure.h"

#include <algorithm>

#include "core/compliance/canonical.h"

namespace cw::compliance {

namespace {

constexpr std::string_view kConversationDomain = "cipherward-erasure-conversation-v1";
constexpr std::string_view kErasureDomain = "cipherward-erasure-receipt-v1";
constexpr uint8_t kErasureVersion = 1;

Bytes ErasureBody(const ErasureReceipt& r) {
  internal::Packer p;
  p.Array(7)
      .Uint(kErasureVersion)
      .Str(r.erasure_id)
      .Bin(r.conversation_hash)
      .Bin(r.salt)
      .Int(r.erased_at_ms)
      .Uint(static_cast<uint8_t>(r.reason));
  p.Array(2).Uint(static_cast<uint8_t>(r.signer.scheme)).Bin(r.signer.key);
  return p.Take();
}

bool ValidReason(uint64_t r) { return r >= 1 && r <= 4; }

}  // namespace

Digest ConversationHash(ByteView salt, std::string_view conversation_id) {
  const uint8_t zero = 0;
  return Blake2b256({AsBytes(kConversationDomain), ByteView(&zero, 1), salt, AsBytes(conversation_id)});
}

Result<ErasureReceipt> MakeErasureReceipt(std::string_view conversation_id, ErasureReason reason,
                                          const Clock& clock, Random& random, Signer& device) {
  if (conversation_id.empty()) return Error(StatusCode::kInvalidArgument, "conversation id missing");
  if (!ValidReason(static_cast<uint8_t>(reason)))
    return Error(StatusCode::kInvalidArgument, "unknown reason");
  ErasureReceipt r;
  uint8_t id[16];
  random.Fill(id, sizeof id);
  r.erasure_id = ToHex(ByteView(id, sizeof id));
  r.salt.resize(kErasureSaltSize);
  random.Fill(r.salt.data(), r.salt.size());
  r.conversation_hash = ConversationHash(r.salt, conversation_id);
  r.erased_at_ms = clock.NowMillis();
  r.reason = reason;
  r.signer = device.public_key();
  CW_ASSIGN_OR_RETURN(r.signature, device.Sign(SignedMessage(kErasureDomain, ErasureBody(r))));
  return r;
}

Result<Bytes> EncodeErasureReceipt(const ErasureReceipt& r) {
  if (!IsValidId(r.erasure_id, kMaxAuditIdSize) || r.salt.size() != kErasureSaltSize || r.erased_at_ms < 0 ||
      !ValidReason(static_cast<uint8_t>(r.reason)) || !IsWellFormed(r.signer) ||
      r.signature.size() != kSignatureSize) {
    return Error(StatusCode::kInvalidArgument, "erasure receipt is incomplete");
  }
  internal::Packer p;
  p.Array(2).Bin(ErasureBody(r)).Bin(r.signature);
  return p.Take();
}

Result<ErasureReceipt> DecodeErasureReceipt(ByteView bytes) {
  if (bytes.size() > kMaxErasureSize) return Error(StatusCode::kMalformed, "erasure receipt too large");
  internal::Limits outer;
  outer.array = 2;
  outer.str = 0;
  outer.bin = kMaxErasureSize;
  outer.depth = 1;
  auto handle = internal::UnpackOne(bytes, outer);
  if (!handle) return Error(StatusCode::kMalformed, "erasure receipt is not valid msgpack within limits");
  ErasureReceipt r;
  Bytes body;
  internal::Fields f(handle->get(), 2);
  f.Bin(&body, kMaxErasureSize).Bin(&r.signature, kSignatureSize);
  if (!f.ok()) return Error(StatusCode::kMalformed, "erasure receipt field has wrong type or size");
  CW_RETURN_IF_ERROR(internal::CheckHeader(body, kErasureVersion, "erasure receipt"));
  internal::Limits limits;
  limits.array = 7;
  limits.str = kMaxAuditIdSize;
  limits.bin = kXEdDSAPublicKeySize;
  limits.depth = 2;
  auto inner = internal::UnpackOne(body, limits);
  if (!inner) return Error(StatusCode::kMalformed, "erasure receipt body is not valid msgpack within limits");
  uint64_t version = 0, reason = 0, scheme = 0;
  Bytes hash;
  const msgpack::object* signer = nullptr;
  internal::Fields g(inner->get(), 7);
  g.Uint(&version)
      .Str(&r.erasure_id, kMaxAuditIdSize)
      .Bin(&hash, kDigestSize)
      .Bin(&r.salt, kErasureSaltSize)
      .Int(&r.erased_at_ms)
      .Uint(&reason)
      .Any(&signer);
  if (!g.ok() || hash.size() != kDigestSize || !ValidReason(reason)) {
    return Error(StatusCode::kMalformed, "erasure receipt field has wrong type or size");
  }
  internal::Fields k(*signer, 2);
  k.Uint(&scheme).Bin(&r.signer.key, kXEdDSAPublicKeySize);
  if (!k.ok() || (scheme != 1 && scheme != 2))
    return Error(StatusCode::kMalformed, "erasure signer malformed");
  r.signer.scheme = static_cast<SignatureScheme>(scheme);
  r.reason = static_cast<ErasureReason>(reason);
  std::copy(hash.begin(), hash.end(), r.conversation_hash.begin());
  auto again = EncodeErasureReceipt(r);
  if (!again)
    return Error(StatusCode::kMalformed, "erasure receipt breaks a rule: " + again.error().message());
  if (!std::equal(again->begin(), again->end(), bytes.begin(), bytes.end())) {
    return Error(StatusCode::kMalformed, "erasure receipt is not in canonical form");
  }
  return r;
}

Status VerifyErasureReceipt(const ErasureReceipt& r, const SigningPublicKey& device_key,
                            const Verifier& verifier) {
  if (!(r.signer == device_key))
    return Status(StatusCode::kBadSignature, "erasure receipt signed by another key");
  return verifier.Verify(r.signer, SignedMessage(kErasureDomain, ErasureBody(r)), r.signature);
}

bool ErasureNames(const ErasureReceipt& r, std::string_view conversation_id) {
  return ConversationHash(r.salt, conversation_id) == r.conversation_hash;
}

Digest ErasureDigest(const ErasureReceipt& r) {
  return Blake2b256({AsBytes(kErasureDomain), ErasureBody(r), r.signature});
}

AuditEvent ErasureEvent(const ErasureReceipt& r) {
  AuditEvent e;
  e.type = AuditEventType::kErasure;
  e.subject = ToHex(r.conversation_hash);
  e.ref = r.erasure_id;
  e.code = static_cast<uint8_t>(r.reason);
  const Digest d = ErasureDigest(r);
  e.digest.assign(d.begin(), d.end());
  return e;
}

Result<AuditEntry> RecordErasure(AuditLog& log, const ErasureReceipt& r) {
  return log.Append(ErasureEvent(r));
}

RetentionDecision ApplyRetentionFloor(const RetentionPolicy& policy, int64_t stored_at_ms, int64_t timer_ms) {
  RetentionDecision d;
  if (timer_ms <= 0) return d;  // kept until deleted by hand
  d.expires_at_ms = stored_at_ms + timer_ms;
  if (policy.floor_ms > 0 && timer_ms < policy.floor_ms) {
    d.conflict = true;
    d.extended_by_ms = policy.floor_ms - timer_ms;
    d.expires_at_ms = stored_at_ms + policy.floor_ms;
  }
  return d;
}

}  // namespace cw::compliance
