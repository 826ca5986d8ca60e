// The crypto primitives Cipherward uses directly or hands to libsignal-protocol-c through its provider:
// AES (CBC with PKCS#7 padding, CTR) and HMAC-SHA256 on OpenSSL EVP, SHA-512 on OpenSSL EVP with a context
// that is reusable after Final(), ChaCha20-Poly1305 (RFC 8439) on OpenSSL EVP, and libsodium initialisation.
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

}  // namespace cw::crypto
