// The crypto primitives Cipherward uses directly or hands to libsignal-protocol-c through its provider:
// AES (CBC with PKCS#7 padding, CTR) and HMAC-SHA256 on OpenSSL EVP, SHA-512 on OpenSSL EVP with a context
// that is reusable after Final(), ChaCha20-Poly1305 (RFC 8439) on OpenSSL EVP, libsodium's secretstream with
// its ChaCha20 and Poly1305 on OpenSSL EVP, and libsodium initialisation.
//
// Thread rules: free functions are safe from any thread; an HmacSha256 or Sha512 object belongs to one
// thread at a time. Keys and plaintext arrive as spans and are never copied into long-lived memory; outputs
// that are plaintext come back as SecretBytes.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>

#include "core/base/bytes.h"
#include "core/base/secret.h"
#include "core/base/status.h"

namespace cw::crypto {

// Initialises libsodium once per process. Safe to call repeatedly and from several threads.
// Every entry point of the engine calls it; callers need not.
Status Init();

enum class AesMode {
  kCbcPkcs7,  // AES-CBC with PKCS#7 padding (what Signal v3 uses with a 256-bit key)
  kCtr,       // AES-CTR, no padding; the IV is the initial 128-bit big-endian counter block
};

// REQUIRES: key is 16, 24 or 32 bytes; iv is 16 bytes. Otherwise kInvalidArgument.
Result<Bytes> AesEncrypt(AesMode mode, std::span<const uint8_t> key, std::span<const uint8_t> iv,
                         std::span<const uint8_t> plaintext);
// Bad PKCS#7 padding or a CBC ciphertext that is not a whole number of blocks: kTampered.
Result<SecretBytes> AesDecrypt(AesMode mode, std::span<const uint8_t> key, std::span<const uint8_t> iv,
                               std::span<const uint8_t> ciphertext);

inline constexpr size_t kHmacSha256Size = 32;
inline constexpr size_t kSha512Size = 64;

// Incremental HMAC-SHA256. An empty key is allowed (HMAC zero-pads keys; OpenSSL's EVP_MAC rejects a
// zero-length key, so it is passed as one zero byte, which is the same HMAC key).
class HmacSha256 {
 public:
  static Result<std::unique_ptr<HmacSha256>> New(std::span<const uint8_t> key);
  ~HmacSha256();
  HmacSha256(const HmacSha256&) = delete;
  HmacSha256& operator=(const HmacSha256&) = delete;

  Status Update(std::span<const uint8_t> data);
  // Single use: after Final() the object may only be destroyed.
  Result<std::array<uint8_t, kHmacSha256Size>> Final();

 private:
  struct Impl;
  explicit HmacSha256(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

Result<std::array<uint8_t, kHmacSha256Size>> HmacSha256Digest(std::span<const uint8_t> key,
                                                              std::span<const uint8_t> data);

// Incremental SHA-512. Final() returns the digest and resets the object, so it can hash the next input
// (libsignal's fingerprint code reuses one context 5200 times per safety number).
class Sha512 {
 public:
  static Result<std::unique_ptr<Sha512>> New();
  ~Sha512();
  Sha512(const Sha512&) = delete;
  Sha512& operator=(const Sha512&) = delete;

  Status Update(std::span<const uint8_t> data);
  Result<std::array<uint8_t, kSha512Size>> Final();

 private:
  struct Impl;
  explicit Sha512(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

Result<std::array<uint8_t, kSha512Size>> Sha512Digest(std::span<const uint8_t> data);

inline constexpr size_t kChaChaPolyKeySize = 32;
inline constexpr size_t kChaChaPolyNonceSize = 12;
inline constexpr size_t kChaChaPolyTagSize = 16;

// The ChaCha20-Poly1305 AEAD of RFC 8439, byte for byte libsodium's crypto_aead_chacha20poly1305_ietf, under
// one key for many nonces. On OpenSSL EVP because its vector code runs 2 to 2.3 times libsodium 1.0.18's on
// this project's machines from 4 KiB up (and level at 300 B); Noise links seal every byte with it, so it is
// much of a relay's and an attachment's CPU (bench/attachment_bench.cc). Where OpenSSL's configuration
// offers no ChaCha20-Poly1305 (a FIPS-only provider set), libsodium's computes it instead, so links keep
// working. Belongs to one thread at a time.
class ChaChaPoly {
 public:
  enum class Backend { kOpenSsl, kLibsodium };
  // REQUIRES: key is kChaChaPolyKeySize bytes, or kInvalidArgument. kOpenSsl falls back to kLibsodium when
  // OpenSSL has no ChaCha20-Poly1305; tests ask for kLibsodium to check the two agree.
  static Result<std::unique_ptr<ChaChaPoly>> New(std::span<const uint8_t> key,
                                                 Backend backend = Backend::kOpenSsl);
  Backend backend() const;
  ~ChaChaPoly();
  ChaChaPoly(const ChaChaPoly&) = delete;
  ChaChaPoly& operator=(const ChaChaPoly&) = delete;

  // Writes plaintext.size() + kChaChaPolyTagSize bytes to out: the ciphertext, then the tag. out may not
  // overlap plaintext.
  Status Seal(std::span<const uint8_t, kChaChaPolyNonceSize> nonce, std::span<const uint8_t> ad,
              std::span<const uint8_t> plaintext, uint8_t* out);
  // Writes ciphertext.size() - kChaChaPolyTagSize bytes to out, which may be ciphertext.data() itself (in
  // place) but may not overlap it otherwise. A ciphertext that does not authenticate is kTampered, and out
  // is wiped (EVP writes plaintext before it checks the tag).
  Status Open(std::span<const uint8_t, kChaChaPolyNonceSize> nonce, std::span<const uint8_t> ad,
              std::span<const uint8_t> ciphertext, uint8_t* out);

 private:
  struct Impl;
  explicit ChaChaPoly(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

inline constexpr size_t kSecretStreamKeySize = 32;
inline constexpr size_t kSecretStreamHeaderSize = 24;
inline constexpr size_t kSecretStreamOverhead = 17;  // the encrypted tag byte and a 16-byte MAC
inline constexpr uint8_t kSecretStreamTagMessage = 0;
inline constexpr uint8_t kSecretStreamTagFinal = 3;

// libsodium's crypto_secretstream_xchacha20poly1305, byte for byte and state for state, without associated
// data: what attachments are encrypted with. The header's HChaCha20, the nonce chaining and REKEY stay
// libsodium's own; each message's ChaCha20 and Poly1305 run on OpenSSL EVP, whose vector code does the pair
// at about twice libsodium 1.0.18's speed on 64 KiB chunks (bench/attachment_bench.cc), which both ends of
// an attachment pay on every byte. Where OpenSSL's configuration offers no ChaCha20 or Poly1305, libsodium's
// secretstream runs instead. Belongs to one thread at a time; the destructor wipes the state.
class SecretStream {
 public:
  using Backend = ChaChaPoly::Backend;
  // A stream to encrypt under `key` (kSecretStreamKeySize bytes, or kInvalidArgument); writes the header,
  // whose nonce libsodium draws, to `header`.
  static Result<std::unique_ptr<SecretStream>> NewPush(std::span<const uint8_t> key,
                                                       std::span<uint8_t, kSecretStreamHeaderSize> header,
                                                       Backend backend = Backend::kOpenSsl);
  // A stream to decrypt what NewPush's stream wrote after `header`.
  static Result<std::unique_ptr<SecretStream>> NewPull(
      std::span<const uint8_t> key, std::span<const uint8_t, kSecretStreamHeaderSize> header,
      Backend backend = Backend::kOpenSsl);
  Backend backend() const;
  ~SecretStream();
  SecretStream(const SecretStream&) = delete;
  SecretStream& operator=(const SecretStream&) = delete;

  // Encrypts the next message: writes message.size() + kSecretStreamOverhead bytes to out, which may not
  // overlap message. REQUIRES: a stream from NewPush; message.size() <= INT_MAX - 64.
  Status Push(std::span<const uint8_t> message, uint8_t tag, uint8_t* out);
  // Decrypts the next message and returns its tag: writes ciphertext.size() - kSecretStreamOverhead bytes
  // to out, which may not overlap ciphertext. A message that does not authenticate is kTampered, leaves
  // out untouched (the MAC is checked before anything is decrypted) and the stream where it was.
  // REQUIRES: a stream from NewPull.
  Result<uint8_t> Pull(std::span<const uint8_t> ciphertext, uint8_t* out);

 private:
  struct Impl;
  static Result<std::unique_ptr<Impl>> NewImpl(std::span<const uint8_t> key, Backend backend);
  explicit SecretStream(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cw::crypto
