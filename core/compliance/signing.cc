#include "core/compliance/signing.h"

#include <signal/curve.h>
#include <signal/signal_protocol.h>
#include <sodium.h>

namespace cw::compliance {

namespace {
constexpr std::string_view kFingerprintDomain = "cipherward-identity-fingerprint-v1";
}  // namespace

bool IsWellFormed(const SigningPublicKey& key) {
  switch (key.scheme) {
    case SignatureScheme::kEd25519:
      return key.key.size() == kEd25519PublicKeySize;
    case SignatureScheme::kXEdDSA:
      return key.key.size() == kXEdDSAPublicKeySize && key.key[0] == 0x05;
  }
  return false;
}

Result<std::unique_ptr<Ed25519Signer>> Ed25519Signer::FromSeed(ByteView seed) {
  if (sodium_init() < 0) return Error(StatusCode::kInternal, "libsodium failed to initialise");
  if (seed.size() != crypto_sign_SEEDBYTES)
    return Error(StatusCode::kInvalidArgument, "Ed25519 seed must be 32 bytes");
  std::unique_ptr<Ed25519Signer> signer(new Ed25519Signer());
  signer->secret_key_ = SecretBytes(crypto_sign_SECRETKEYBYTES);
  signer->public_key_.scheme = SignatureScheme::kEd25519;
  signer->public_key_.key.resize(crypto_sign_PUBLICKEYBYTES);
  if (crypto_sign_seed_keypair(signer->public_key_.key.data(), signer->secret_key_.reveal_mutable().data(),
                               seed.data()) != 0) {
    return Error(StatusCode::kInternal, "Ed25519 key generation failed");
  }
  return signer;
}

Result<std::unique_ptr<Ed25519Signer>> Ed25519Signer::Generate(Random& random) {
  SecretBytes seed(crypto_sign_SEEDBYTES);
  random.Fill(seed.reveal_mutable().data(), seed.size());
  return FromSeed(seed.reveal());
}

Ed25519Signer::~Ed25519Signer() = default;

Result<Bytes> Ed25519Signer::Sign(ByteView message) {
  Bytes signature(crypto_sign_BYTES);
  if (crypto_sign_detached(signature.data(), nullptr, message.data(), message.size(),
                           secret_key_.reveal().data()) != 0) {
    return Error(StatusCode::kInternal, "Ed25519 signing failed");
  }
  return signature;
}

Status StandardVerifier::Verify(const SigningPublicKey& key, ByteView message, ByteView signature) const {
  if (!IsWellFormed(key) || signature.size() != kSignatureSize) {
    return Status(StatusCode::kBadSignature, "malformed signing key or signature");
  }
  if (key.scheme == SignatureScheme::kEd25519) {
    if (sodium_init() < 0) return Status(StatusCode::kInternal, "libsodium failed to initialise");
    if (crypto_sign_verify_detached(signature.data(), message.data(), message.size(), key.key.data()) != 0) {
      return Status(StatusCode::kBadSignature, "signature does not verify");
    }
    return Status::Ok();
  }
  // XEdDSA on the Curve25519 identity key, exactly as libsignal verifies signed pre-keys. Only public data is
  // involved, so no signal_context (crypto provider) is needed: curve_decode_point uses it only to log.
  ec_public_key* point = nullptr;
  if (curve_decode_point(&point, key.key.data(), key.key.size(), nullptr) != 0 || point == nullptr) {
    return Status(StatusCode::kBadSignature, "malformed identity key");
  }
  const int rc =
      curve_verify_signature(point, message.data(), message.size(), signature.data(), signature.size());
  SIGNAL_UNREF(point);
  if (rc != 1) return Status(StatusCode::kBadSignature, "signature does not verify");
  return Status::Ok();
}

Digest Blake2b256(std::initializer_list<ByteView> parts) {
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, kDigestSize);
  for (ByteView p : parts) crypto_generichash_update(&state, p.data(), p.size());
  Digest out{};
  crypto_generichash_final(&state, out.data(), out.size());
  return out;
}

std::string IdentityFingerprint(ByteView identity_key) {
  const Digest d = Blake2b256({AsBytes(kFingerprintDomain), identity_key});
  return ToHex(d);
}

bool IsValidId(std::string_view id, size_t max_size) {
  if (id.empty() || id.size() > max_size) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Bytes SignedMessage(std::string_view domain, ByteView body) {
  Bytes out;
  out.reserve(domain.size() + 1 + body.size());
  out.insert(out.end(), domain.begin(), domain.end());
  out.push_back(0);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

}  // namespace cw::compliance
