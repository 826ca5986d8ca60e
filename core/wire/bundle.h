// Pre-key bundles and the public halves of pre-keys, in Cipherward's versioned msgpack format
// (docs/prekey-bundle-format.md). Every parser here takes untrusted bytes: it checks sizes, types and the
// version, and never trusts a length it did not bound. Signatures are verified by the session layer.
#pragma once

#include <array>
#include <cstdint>
#include <optional>

#include "core/base/bytes.h"
#include "core/base/status.h"

namespace cw::wire {

inline constexpr uint8_t kBundleVersion = 1;
inline constexpr size_t kPublicKeySize = 33;  // 0x05 type byte + 32-byte Curve25519 key
inline constexpr size_t kSignatureSize = 64;  // XEdDSA over the serialized signed pre-key
inline constexpr size_t kMaxBundleSize = 512;

using PublicKey = std::array<uint8_t, kPublicKeySize>;
using Signature = std::array<uint8_t, kSignatureSize>;

struct SignedPreKeyPublic {
  uint32_t id = 0;
  PublicKey public_key{};
  Signature signature{};
  friend bool operator==(const SignedPreKeyPublic&, const SignedPreKeyPublic&) = default;
};

struct OneTimePreKeyPublic {
  uint32_t id = 0;
  PublicKey public_key{};
  friend bool operator==(const OneTimePreKeyPublic&, const OneTimePreKeyPublic&) = default;
};

struct PreKeyBundle {
  uint32_t registration_id = 0;
  uint32_t device_id = 1;
  PublicKey identity_key{};
  SignedPreKeyPublic signed_pre_key;
  std::optional<OneTimePreKeyPublic> one_time_pre_key;
  friend bool operator==(const PreKeyBundle&, const PreKeyBundle&) = default;
};

Bytes EncodeBundle(const PreKeyBundle& bundle);
// kMalformed for anything that is not exactly one well-formed bundle; kUnsupportedVersion for a bundle of
// another version.
Result<PreKeyBundle> DecodeBundle(ByteView bytes);

}  // namespace cw::wire
