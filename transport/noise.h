// The Noise Protocol Framework (revision 34), for Noise_XK_25519_ChaChaPoly_BLAKE2b (what Cipherward links
// use) and the other two patterns that authenticate both sides, IK and KK. There is deliberately no NN, NK,
// XX or any pattern in which a side stays anonymous: every completed handshake proves both static keys.
//
// The objects follow the spec's own: CipherState (k, n), SymmetricState (ck, h, CipherState, private to
// noise.cc), HandshakeState (s, e, rs, re, the message patterns). X25519 is libsodium's crypto_scalarmult
// (an all-zero shared secret, from a low-order public key, is an error, as section 4.1 allows), BLAKE2b is
// its crypto_generichash with a 64-byte output, and HKDF is the spec's HKDF over HMAC-BLAKE2b (block 128).
// ChaChaPoly is the RFC 8439 AEAD with the 96-bit nonce 0x00000000 || little-endian n, computed by
// crypto::ChaChaPoly on OpenSSL (the same bytes as libsodium's _ietf AEAD, at over twice its speed for the
// large messages links carry; tests/crypto/crypto_kat_test.cc checks the two agree, and noise_test.cc checks
// the nonce layout and REKEY against libsodium).
//
// Secrets (ephemeral private keys, the chaining key, cipher keys, DH outputs) live in SecretBytes or are
// wiped with sodium_memzero on every return path.
//
// Errors:
//   kInvalidArgument   misuse: wrong turn, missing key for the pattern, message or payload over 65535 bytes
//   kMalformed         a handshake message too short for its tokens, or a low-order public key
//   kTampered          authenticated decryption failed (wrong keys, modified bytes)
//   kResourceExhausted the nonce reached 2^64 - 1 (reserved by the spec)
// A HandshakeState that has returned an error is dead: every later call returns kInvalidArgument.
//
// Thread rules: value types, one thread at a time.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/base/status.h"
#include "core/crypto/crypto.h"
#include "transport/transport.h"

namespace cw::transport::noise {

inline constexpr size_t kDhLen = 32;
inline constexpr size_t kHashLen = 64;
inline constexpr size_t kKeyLen = 32;
inline constexpr size_t kTagLen = 16;
inline constexpr size_t kMaxMessageSize = kNoiseMaxMessageSize;
inline constexpr size_t kMaxTransportPlaintext = kMaxMessageSize - kTagLen;  // 65519

class CipherState {
 public:
  CipherState() = default;  // empty: no key
  CipherState(CipherState&&) noexcept = default;
  CipherState& operator=(CipherState&&) noexcept = default;

  // REQUIRES: key is empty (no key) or kKeyLen bytes. Sets n = 0.
  void InitializeKey(std::span<const uint8_t> key);
  bool HasKey() const { return !key_.empty(); }
  void SetNonce(uint64_t n) { n_ = n; }
  uint64_t nonce() const { return n_; }

  // With no key these pass the bytes through, as the spec says. On success n increments; a failed
  // decryption leaves n unchanged.
  Result<Bytes> EncryptWithAd(ByteView ad, ByteView plaintext);
  Result<Bytes> DecryptWithAd(ByteView ad, ByteView ciphertext);
  // The same into the caller's buffers, for a link's transport messages (no copy or allocation each):
  // EncryptWithAd appends the ciphertext to *out.
  Status EncryptWithAd(ByteView ad, ByteView plaintext, Bytes* out);
  // Decrypts `message` over itself and returns its plaintext, the first message.size() - kTagLen bytes (no
  // key: all of it). On failure the message is wiped.
  Result<std::span<uint8_t>> DecryptInPlace(ByteView ad, std::span<uint8_t> message);
  // Spec section 4.2 REKEY: k = first 32 bytes of ENCRYPT(k, 2^64-1, empty, 32 zero bytes).
  Status Rekey();

 private:
  Status EnsureAead();

  SecretBytes key_;
  uint64_t n_ = 0;
  std::unique_ptr<crypto::ChaChaPoly> aead_;  // made from key_ at first use
};

enum class Pattern { kXK, kIK, kKK };
enum class Role { kInitiator, kResponder };

// "Noise_XK_25519_ChaChaPoly_BLAKE2b" and so on.
std::string_view ProtocolName(Pattern pattern);

struct HandshakeConfig {
  Pattern pattern = Pattern::kXK;
  Role role = Role::kInitiator;
  ByteView prologue;
  const StaticKeyPair* local_static = nullptr;  // required by every supported pattern; must outlive New()
  // The peer's static key known in advance: required for the XK and IK initiator and for KK on both sides.
  std::optional<PublicKey> remote_static;
  // Draws the ephemeral private key (32 bytes). Must outlive the HandshakeState. Tests pass a fixed stream
  // to reproduce published test vectors.
  Random* random = nullptr;
};

struct TransportCiphers {
  CipherState send;
  CipherState receive;
  std::array<uint8_t, kHashLen> handshake_hash{};  // channel binding; not secret
};

class HandshakeState {
 public:
  // kInvalidArgument if a key the pattern needs is missing or random is null.
  static Result<std::unique_ptr<HandshakeState>> New(const HandshakeConfig& config);
  ~HandshakeState();
  HandshakeState(const HandshakeState&) = delete;
  HandshakeState& operator=(const HandshakeState&) = delete;

  // The next handshake message carrying `payload`. REQUIRES: IsMyTurn().
  Result<Bytes> WriteMessage(ByteView payload);
  // Processes the peer's next handshake message and returns its payload. REQUIRES: !IsMyTurn().
  Result<Bytes> ReadMessage(ByteView message);

  bool IsMyTurn() const;
  bool IsComplete() const;
  // The peer's static key: known from the start for a pre-message pattern, else once it was received.
  const std::optional<PublicKey>& remote_static() const;
  // REQUIRES: IsComplete(). Moves the two CipherStates out (initiator sends with the first); the
  // HandshakeState's own secrets are wiped. Single use.
  Result<TransportCiphers> Split();

 private:
  struct Impl;
  explicit HandshakeState(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cw::transport::noise
