// Signing seams for compliance records (consent receipts, withdrawals, audit checkpoints, exports, erasure
// receipts), and the digests and fingerprints they share.
//
// Which key signs (the design choice; docs/compliance.md explains it at length):
//   Compliance records are signed by the party's Signal identity key itself, with XEdDSA (the scheme
//   libsignal uses for signed pre-keys: curve_calculate_signature / curve_verify_signature on the
//   Curve25519 identity key pair). That key is what safety numbers authenticate, so a receipt signed with it
//   is bound to the person the clinician verified, with no second key to certify, rotate or lose; and a
//   verifier that has only public identity keys (an auditor's machine) can check everything.
//   The engine holds the identity private key inside libsignal, so this library never sees it: it signs
//   through the abstract `Signer`, which the client runtime implements over the engine's identity key.
//   `Ed25519Signer` (libsodium crypto_sign) is the second implementation: for tests and fuzzing, and for any
//   deployment that prefers a separate compliance key (its public half must then be vouched for by the
//   identity key, e.g. in a receipt's signers field exchanged inside the authenticated session).
//   Every signature names its scheme, so verifiers never guess.
//
// Verification: `StandardVerifier` checks Ed25519 (libsodium) and XEdDSA (libsignal's curve_verify_signature,
// public keys only). Every signed message is prefixed with a domain-separation string naming the record
// type, so a signature over one kind of record never verifies as another.
//
// Thread rules: Ed25519Signer and StandardVerifier are immutable after construction and safe from any thread.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/base/status.h"

namespace cw::compliance {

enum class SignatureScheme : uint8_t {
  kEd25519 = 1,  // libsodium crypto_sign_detached; 32-byte public key, 64-byte signature
  kXEdDSA = 2,   // libsignal curve_calculate_signature on a Curve25519 identity key; 33-byte key (0x05 || u)
};

inline constexpr size_t kEd25519PublicKeySize = 32;
inline constexpr size_t kXEdDSAPublicKeySize = 33;
inline constexpr size_t kSignatureSize = 64;  // both schemes
inline constexpr size_t kDigestSize = 32;

using Digest = std::array<uint8_t, kDigestSize>;

struct SigningPublicKey {
  SignatureScheme scheme = SignatureScheme::kEd25519;
  Bytes key;
  friend bool operator==(const SigningPublicKey&, const SigningPublicKey&) = default;
};

// True when the key has the size its scheme requires and a known scheme.
bool IsWellFormed(const SigningPublicKey& key);

// Signs on behalf of one party. Implementations: Ed25519Signer here; the runtime's identity-key XEdDSA
// signer.
class Signer {
 public:
  virtual ~Signer() = default;
  virtual const SigningPublicKey& public_key() const = 0;
  // A kSignatureSize signature over exactly `message`.
  virtual Result<Bytes> Sign(ByteView message) = 0;
};

class Verifier {
 public:
  virtual ~Verifier() = default;
  // Ok when `signature` is `key`'s signature over `message`; kBadSignature otherwise (a malformed key or
  // signature is kBadSignature too: to a verifier every failure means "not signed by that key").
  [[nodiscard]] virtual Status Verify(const SigningPublicKey& key, ByteView message,
                                      ByteView signature) const = 0;
};

class Ed25519Signer final : public Signer {
 public:
  // From a 32-byte seed (crypto_sign_seed_keypair): the same seed gives the same key, for tests and for a key
  // derived from the keystore (Keystore::DeriveSubkey). kInvalidArgument on another size.
  static Result<std::unique_ptr<Ed25519Signer>> FromSeed(ByteView seed);
  static Result<std::unique_ptr<Ed25519Signer>> Generate(Random& random);
  ~Ed25519Signer() override;
  Ed25519Signer(const Ed25519Signer&) = delete;
  Ed25519Signer& operator=(const Ed25519Signer&) = delete;

  const SigningPublicKey& public_key() const override { return public_key_; }
  Result<Bytes> Sign(ByteView message) override;

 private:
  Ed25519Signer() = default;
  SecretBytes secret_key_;  // libsodium's 64-byte secret key (seed || public key)
  SigningPublicKey public_key_;
};

class StandardVerifier final : public Verifier {
 public:
  Status Verify(const SigningPublicKey& key, ByteView message, ByteView signature) const override;
};

// BLAKE2b-256 (crypto_generichash, 32-byte output, no key) over the concatenation of `parts`.
Digest Blake2b256(std::initializer_list<ByteView> parts);

// The fingerprint of a Signal identity key, as a consent receipt names its principal: lower-case hex of
// BLAKE2b-256("cipherward-identity-fingerprint-v1" || key). 64 characters; reveals nothing but the key.
std::string IdentityFingerprint(ByteView identity_key);

// Identifiers recorded in receipts and audit entries (ids, fingerprints, hashes, labels): 1..max bytes of
// [A-Za-z0-9._:-]. The restricted alphabet keeps free text, and so message content, out of the audit trail.
bool IsValidId(std::string_view id, size_t max_size = 128);

// The message a record's signature covers: `domain` || 0x00 || body.
Bytes SignedMessage(std::string_view domain, ByteView body);

}  // namespace cw::compliance
