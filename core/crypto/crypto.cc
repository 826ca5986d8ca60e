#include "core/crypto/crypto.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <sodium.h>

#include <climits>
#include <cstring>
#include <vector>
#include <new>
#include <utility>

namespace cw::crypto {
namespace {

template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, Deleter<EVP_CIPHER_CTX_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX_free>>;
using MacCtxPtr = std::unique_ptr<EVP_MAC_CTX, Deleter<EVP_MAC_CTX_free>>;

constexpr size_t kAesBlockSize = 16;
// EVP lengths are ints; leave room for the padding block.
constexpr size_t kMaxAesInput = INT_MAX - 2 * kAesBlockSize;

// Fetched once: an implicit fetch (EVP_sha512(), a name in EVP_MAC_init's params) takes a lock and a
// method-store lookup on every init, and these run on every message. Never freed, so a thread still
// hashing while the process exits cannot touch a freed algorithm.
struct Algorithms {
  EVP_MD* sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  EVP_MD* sha512 = EVP_MD_fetch(nullptr, "SHA512", nullptr);
  EVP_CIPHER* cbc[3] = {EVP_CIPHER_fetch(nullptr, "AES-128-CBC", nullptr),
                        EVP_CIPHER_fetch(nullptr, "AES-192-CBC", nullptr),
                        EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr)};
  EVP_CIPHER* ctr[3] = {EVP_CIPHER_fetch(nullptr, "AES-128-CTR", nullptr),
                        EVP_CIPHER_fetch(nullptr, "AES-192-CTR", nullptr),
                        EVP_CIPHER_fetch(nullptr, "AES-256-CTR", nullptr)};
  EVP_CIPHER* chacha_poly = EVP_CIPHER_fetch(nullptr, "ChaCha20-Poly1305", nullptr);
  EVP_CIPHER* chacha20 = EVP_CIPHER_fetch(nullptr, "ChaCha20", nullptr);
  EVP_MAC* poly1305 = EVP_MAC_fetch(nullptr, "POLY1305", nullptr);
};

const Algorithms& Algs() {
  static const Algorithms* const algs = new Algorithms;
  return *algs;
}

// OpenSSL queues errors per thread; drop them so they neither pile up nor surface in a later, unrelated
// failure. The message is fixed text: nothing of the caller's bytes reaches it.
Status OpenSslFailure(StatusCode code, std::string message) {
  ERR_clear_error();
  return Status(code, std::move(message));
}

// Every argument check, before any buffer is sized from the input.
Result<const EVP_CIPHER*> CheckedCipher(AesMode mode, bool encrypt, std::span<const uint8_t> key,
                                        std::span<const uint8_t> iv, std::span<const uint8_t> in) {
  if (key.size() != 16 && key.size() != 24 && key.size() != 32) {
    return Error(StatusCode::kInvalidArgument, "AES key must be 16, 24 or 32 bytes");
  }
  if (iv.size() != kAesBlockSize) return Error(StatusCode::kInvalidArgument, "AES IV must be 16 bytes");
  if (in.size() > kMaxAesInput) return Error(StatusCode::kInvalidArgument, "AES input too long");
  // Caught here rather than by EVP so that a cut ciphertext is kTampered, never kInternal. Even an empty
  // plaintext encrypts to one padding block, so an empty ciphertext is cut too.
  if (!encrypt && mode == AesMode::kCbcPkcs7 && (in.empty() || in.size() % kAesBlockSize != 0)) {
    return Error(StatusCode::kTampered, "AES-CBC ciphertext is not a whole number of blocks");
  }
  const size_t index = key.size() / 8 - 2;  // 16, 24, 32 bytes: 0, 1, 2
  const EVP_CIPHER* cipher = mode == AesMode::kCbcPkcs7 ? Algs().cbc[index] : Algs().ctr[index];
  if (cipher == nullptr) return Error(OpenSslFailure(StatusCode::kInternal, "AES cipher unavailable"));
  return cipher;
}

// One whole AES operation. `out` must hold in.size() + one block (EVP's worst case with padding on);
// returns how many bytes were written.
Result<size_t> AesRun(const EVP_CIPHER* cipher, AesMode mode, bool encrypt, std::span<const uint8_t> key,
                      std::span<const uint8_t> iv, std::span<const uint8_t> in, std::span<uint8_t> out) {
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_CipherInit_ex2(ctx.get(), cipher, key.data(), iv.data(), encrypt ? 1 : 0, nullptr) != 1 ||
      EVP_CIPHER_CTX_set_padding(ctx.get(), mode == AesMode::kCbcPkcs7 ? 1 : 0) != 1) {
    return Error(OpenSslFailure(StatusCode::kInternal, "AES init failed"));
  }
  int written = 0;
  if (!in.empty() &&
      EVP_CipherUpdate(ctx.get(), out.data(), &written, in.data(), static_cast<int>(in.size())) != 1) {
    return Error(OpenSslFailure(StatusCode::kInternal, "AES update failed"));
  }
  int final_written = 0;
  if (EVP_CipherFinal_ex(ctx.get(), out.data() + written, &final_written) != 1) {
    // Lengths were checked first, so on decrypt the one way to fail is bad padding.
    return Error(encrypt ? OpenSslFailure(StatusCode::kInternal, "AES final failed")
                         : OpenSslFailure(StatusCode::kTampered, "AES-CBC padding check failed"));
  }
  return static_cast<size_t>(written) + static_cast<size_t>(final_written);
}

}  // namespace

Status Init() {
  // sodium_init is idempotent and thread-safe; the static keeps later calls to one load.
  static const int result = sodium_init();
  if (result < 0) return Status(StatusCode::kInternal, "libsodium failed to initialise");
  return Status::Ok();
}

Result<Bytes> AesEncrypt(AesMode mode, std::span<const uint8_t> key, std::span<const uint8_t> iv,
                         std::span<const uint8_t> plaintext) {
  CW_ASSIGN_OR_RETURN(const EVP_CIPHER* cipher, CheckedCipher(mode, /*encrypt=*/true, key, iv, plaintext));
  Bytes ciphertext;
  // Sized by the caller's input, which may be up to 2 GiB: running out of memory is an error, not a throw.
  try {
    ciphertext.resize(plaintext.size() + kAesBlockSize);
  } catch (const std::bad_alloc&) {
    return Error(StatusCode::kResourceExhausted, "no memory for AES output");
  }
  CW_ASSIGN_OR_RETURN(size_t size, AesRun(cipher, mode, /*encrypt=*/true, key, iv, plaintext, ciphertext));
  ciphertext.resize(size);
  return ciphertext;
}

Result<SecretBytes> AesDecrypt(AesMode mode, std::span<const uint8_t> key, std::span<const uint8_t> iv,
                               std::span<const uint8_t> ciphertext) {
  CW_ASSIGN_OR_RETURN(const EVP_CIPHER* cipher, CheckedCipher(mode, /*encrypt=*/false, key, iv, ciphertext));
  // SecretBytes wipes on every return path, so neither a failed decrypt's partial plaintext nor the
  // padding trimmed off below outlives this object.
  SecretBytes plaintext;
  try {
    plaintext.Resize(ciphertext.size() + kAesBlockSize);
  } catch (const std::bad_alloc&) {
    return Error(StatusCode::kResourceExhausted, "no memory for AES output");
  }
  CW_ASSIGN_OR_RETURN(
      size_t size, AesRun(cipher, mode, /*encrypt=*/false, key, iv, ciphertext, plaintext.reveal_mutable()));
  plaintext.Resize(size);
  return plaintext;
}

// HMAC-SHA256 built from two SHA-256 digest contexts (RFC 2104): the inner one keyed with key ^ ipad, the
// outer with key ^ opad. OpenSSL's EVP_MAC costs about 1.2 µs per HMAC in set-up alone (context duplication,
// re-keying, three digest contexts freed), about half of a whole Signal message; libsignal runs ~14 HMACs
// per message. Reusing digest contexts from a per-thread pool brings an HMAC to about 0.35 µs.
namespace {

constexpr size_t kSha256BlockSize = 64;

// Digest contexts already bound to SHA-256, kept per thread (OpenSSL contexts are never shared between
// threads). A context goes back only after re-initialisation, which overwrites its key-derived state.
class DigestPool {
 public:
  ~DigestPool() {
    for (EVP_MD_CTX* c : free_) EVP_MD_CTX_free(c);
  }
  EVP_MD_CTX* Take() {
    if (!free_.empty()) {
      EVP_MD_CTX* c = free_.back();
      free_.pop_back();
      return c;
    }
    EVP_MD_CTX* c = EVP_MD_CTX_new();
    if (c && EVP_DigestInit_ex2(c, Algs().sha256, nullptr) != 1) {
      EVP_MD_CTX_free(c);
      return nullptr;
    }
    return c;
  }
  void Give(EVP_MD_CTX* c) {
    if (!c) return;
    if (free_.size() < kMaxPooled && EVP_DigestInit_ex2(c, nullptr, nullptr) == 1) {
      free_.push_back(c);
    } else {
      EVP_MD_CTX_free(c);  // frees (and OpenSSL cleanses) the SHA-256 state
    }
  }

 private:
  static constexpr size_t kMaxPooled = 16;
  std::vector<EVP_MD_CTX*> free_;
};

DigestPool& Pool() {
  thread_local DigestPool pool;
  return pool;
}

}  // namespace

struct HmacSha256::Impl {
  EVP_MD_CTX* inner = nullptr;
  EVP_MD_CTX* outer = nullptr;
  bool finished = false;
  ~Impl() {
    Pool().Give(inner);
    Pool().Give(outer);
  }
};

HmacSha256::HmacSha256(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HmacSha256::~HmacSha256() = default;

Result<std::unique_ptr<HmacSha256>> HmacSha256::New(std::span<const uint8_t> key) {
  if (Algs().sha256 == nullptr) return Error(OpenSslFailure(StatusCode::kInternal, "SHA-256 unavailable"));
  // Keys longer than a block are hashed first; shorter ones are zero-padded (so an empty key is all zeros).
  uint8_t block[kSha256BlockSize] = {};
  if (key.size() > kSha256BlockSize) {
    unsigned int len = 0;
    if (EVP_Digest(key.data(), key.size(), block, &len, Algs().sha256, nullptr) != 1) {
      return Error(OpenSslFailure(StatusCode::kInternal, "HMAC key hash failed"));
    }
  } else if (!key.empty()) {
    std::memcpy(block, key.data(), key.size());
  }
  auto impl = std::make_unique<Impl>();
  impl->inner = Pool().Take();
  impl->outer = Pool().Take();
  bool ok = impl->inner != nullptr && impl->outer != nullptr;
  for (auto& b : block) b ^= 0x36;
  ok = ok && EVP_DigestUpdate(impl->inner, block, sizeof block) == 1;
  for (auto& b : block) b ^= 0x36 ^ 0x5c;
  ok = ok && EVP_DigestUpdate(impl->outer, block, sizeof block) == 1;
  sodium_memzero(block, sizeof block);
  if (!ok) return Error(OpenSslFailure(StatusCode::kInternal, "HMAC init failed"));
  return std::unique_ptr<HmacSha256>(new HmacSha256(std::move(impl)));
}

Status HmacSha256::Update(std::span<const uint8_t> data) {
  if (impl_->finished) return Status(StatusCode::kInvalidArgument, "HMAC already finished");
  if (EVP_DigestUpdate(impl_->inner, data.data(), data.size()) != 1) {
    return OpenSslFailure(StatusCode::kInternal, "HMAC update failed");
  }
  return Status::Ok();
}

Result<std::array<uint8_t, kHmacSha256Size>> HmacSha256::Final() {
  if (impl_->finished) return Error(StatusCode::kInvalidArgument, "HMAC already finished");
  impl_->finished = true;
  std::array<uint8_t, kHmacSha256Size> mac;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(impl_->inner, mac.data(), &len) != 1 ||
      EVP_DigestUpdate(impl_->outer, mac.data(), mac.size()) != 1 ||
      EVP_DigestFinal_ex(impl_->outer, mac.data(), &len) != 1 || len != mac.size()) {
    sodium_memzero(mac.data(), mac.size());
    return Error(OpenSslFailure(StatusCode::kInternal, "HMAC final failed"));
  }
  return mac;
}

Result<std::array<uint8_t, kHmacSha256Size>> HmacSha256Digest(std::span<const uint8_t> key,
                                                              std::span<const uint8_t> data) {
  CW_ASSIGN_OR_RETURN(auto hmac, HmacSha256::New(key));
  CW_RETURN_IF_ERROR(hmac->Update(data));
  return hmac->Final();
}

struct Sha512::Impl {
  MdCtxPtr ctx;
};

Sha512::Sha512(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Sha512::~Sha512() = default;

Result<std::unique_ptr<Sha512>> Sha512::New() {
  if (Algs().sha512 == nullptr) return Error(OpenSslFailure(StatusCode::kInternal, "SHA-512 unavailable"));
  auto impl = std::make_unique<Impl>();
  impl->ctx.reset(EVP_MD_CTX_new());
  if (!impl->ctx || EVP_DigestInit_ex2(impl->ctx.get(), Algs().sha512, nullptr) != 1) {
    return Error(OpenSslFailure(StatusCode::kInternal, "SHA-512 init failed"));
  }
  return std::unique_ptr<Sha512>(new Sha512(std::move(impl)));
}

Status Sha512::Update(std::span<const uint8_t> data) {
  if (EVP_DigestUpdate(impl_->ctx.get(), data.data(), data.size()) != 1) {
    return OpenSslFailure(StatusCode::kInternal, "SHA-512 update failed");
  }
  return Status::Ok();
}

Result<std::array<uint8_t, kSha512Size>> Sha512::Final() {
  std::array<uint8_t, kSha512Size> digest;
  unsigned int written = 0;
  // Re-initialised straight away because libsignal's fingerprint code hashes again with the same context.
  if (EVP_DigestFinal_ex(impl_->ctx.get(), digest.data(), &written) != 1 || written != digest.size() ||
      EVP_DigestInit_ex2(impl_->ctx.get(), Algs().sha512, nullptr) != 1) {
    return Error(OpenSslFailure(StatusCode::kInternal, "SHA-512 final failed"));
  }
  return digest;
}

Result<std::array<uint8_t, kSha512Size>> Sha512Digest(std::span<const uint8_t> data) {
  CW_ASSIGN_OR_RETURN(auto sha, Sha512::New());
  CW_RETURN_IF_ERROR(sha->Update(data));
  return sha->Final();
}

// ------------------------------------------------------------------------------------------------ ChaChaPoly

struct ChaChaPoly::Impl {
  CipherCtxPtr ctx;  // OpenSSL: holds the key; EVP_CIPHER_CTX_free wipes it
  SecretBytes key;   // libsodium: empty with OpenSSL
};

ChaChaPoly::ChaChaPoly(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ChaChaPoly::~ChaChaPoly() = default;

ChaChaPoly::Backend ChaChaPoly::backend() const {
  return impl_->ctx ? Backend::kOpenSsl : Backend::kLibsodium;
}

Result<std::unique_ptr<ChaChaPoly>> ChaChaPoly::New(std::span<const uint8_t> key, Backend backend) {
  if (key.size() != kChaChaPolyKeySize) {
    return Error(StatusCode::kInvalidArgument, "ChaCha20-Poly1305 key of the wrong size");
  }
  auto impl = std::make_unique<Impl>();
  if (backend == Backend::kOpenSsl && Algs().chacha_poly != nullptr) {
    impl->ctx.reset(EVP_CIPHER_CTX_new());
    if (!impl->ctx ||
        EVP_EncryptInit_ex2(impl->ctx.get(), Algs().chacha_poly, key.data(), nullptr, nullptr) != 1) {
      return Error(OpenSslFailure(StatusCode::kInternal, "ChaCha20-Poly1305 init failed"));
    }
  } else {
    ERR_clear_error();  // the failed fetch's, if any
    CW_RETURN_IF_ERROR(Init());
    impl->key = SecretBytes(key);
  }
  return std::unique_ptr<ChaChaPoly>(new ChaChaPoly(std::move(impl)));
}

// With OpenSSL each message re-initialises the context with its nonce only: the key stays, the Poly1305
// state and lengths start over, and the direction is the one the call sets.
Status ChaChaPoly::Seal(std::span<const uint8_t, kChaChaPolyNonceSize> nonce, std::span<const uint8_t> ad,
                        std::span<const uint8_t> plaintext, uint8_t* out) {
  if (ad.size() > INT_MAX || plaintext.size() > INT_MAX - kChaChaPolyTagSize) {
    return Status(StatusCode::kInvalidArgument, "ChaCha20-Poly1305 input too long");
  }
  if (!impl_->ctx) {
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(out, out + plaintext.size(), nullptr, plaintext.data(),
                                                       plaintext.size(), ad.data(), ad.size(), nullptr,
                                                       nonce.data(), impl_->key.reveal().data());
    return Status::Ok();
  }
  EVP_CIPHER_CTX* ctx = impl_->ctx.get();
  int written = 0, final_written = 0;
  if (EVP_EncryptInit_ex2(ctx, nullptr, nullptr, nonce.data(), nullptr) != 1 ||
      (!ad.empty() &&
       EVP_EncryptUpdate(ctx, nullptr, &written, ad.data(), static_cast<int>(ad.size())) != 1) ||
      (!plaintext.empty() &&
       EVP_EncryptUpdate(ctx, out, &written, plaintext.data(), static_cast<int>(plaintext.size())) != 1) ||
      EVP_EncryptFinal_ex(ctx, out + plaintext.size(), &final_written) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, kChaChaPolyTagSize, out + plaintext.size()) != 1) {
    return OpenSslFailure(StatusCode::kInternal, "ChaCha20-Poly1305 encryption failed");
  }
  return Status::Ok();
}

Status ChaChaPoly::Open(std::span<const uint8_t, kChaChaPolyNonceSize> nonce, std::span<const uint8_t> ad,
                        std::span<const uint8_t> ciphertext, uint8_t* out) {
  if (ciphertext.size() < kChaChaPolyTagSize) {
    return Status(StatusCode::kTampered, "ChaCha20-Poly1305 ciphertext shorter than its tag");
  }
  if (ad.size() > INT_MAX || ciphertext.size() > INT_MAX) {
    return Status(StatusCode::kInvalidArgument, "ChaCha20-Poly1305 input too long");
  }
  const size_t size = ciphertext.size() - kChaChaPolyTagSize;
  // The tag is copied out: OpenSSL's ctrl takes a non-const pointer, and in place its bytes stay ciphertext.
  uint8_t tag[kChaChaPolyTagSize];
  std::memcpy(tag, ciphertext.data() + size, sizeof tag);
  if (!impl_->ctx) {
    // libsodium checks the tag before it writes anything.
    if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(out, nullptr, ciphertext.data(), size, tag,
                                                           ad.data(), ad.size(), nonce.data(),
                                                           impl_->key.reveal().data()) != 0) {
      if (size != 0) sodium_memzero(out, size);
      return Status(StatusCode::kTampered, "ChaCha20-Poly1305 ciphertext failed to authenticate");
    }
    return Status::Ok();
  }
  EVP_CIPHER_CTX* ctx = impl_->ctx.get();
  int written = 0, final_written = 0;
  if (EVP_DecryptInit_ex2(ctx, nullptr, nullptr, nonce.data(), nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, sizeof tag, tag) != 1 ||
      (!ad.empty() &&
       EVP_DecryptUpdate(ctx, nullptr, &written, ad.data(), static_cast<int>(ad.size())) != 1) ||
      (size != 0 && EVP_DecryptUpdate(ctx, out, &written, ciphertext.data(), static_cast<int>(size)) != 1)) {
    if (size != 0) sodium_memzero(out, size);
    return OpenSslFailure(StatusCode::kInternal, "ChaCha20-Poly1305 decryption failed");
  }
  if (EVP_DecryptFinal_ex(ctx, out + size, &final_written) != 1) {
    if (size != 0) sodium_memzero(out, size);
    return OpenSslFailure(StatusCode::kTampered, "ChaCha20-Poly1305 ciphertext failed to authenticate");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------- SecretStream

namespace {

using StreamState = crypto_secretstream_xchacha20poly1305_state;
static_assert(kSecretStreamKeySize == crypto_secretstream_xchacha20poly1305_KEYBYTES);
static_assert(kSecretStreamHeaderSize == crypto_secretstream_xchacha20poly1305_HEADERBYTES);
static_assert(kSecretStreamOverhead == crypto_secretstream_xchacha20poly1305_ABYTES);
static_assert(kSecretStreamTagMessage == crypto_secretstream_xchacha20poly1305_TAG_MESSAGE);
static_assert(kSecretStreamTagFinal == crypto_secretstream_xchacha20poly1305_TAG_FINAL);

// The state's nonce is a 32-bit little-endian message counter, then the 64-bit chained nonce.
constexpr size_t kCounterBytes = 4;
constexpr size_t kChainedNonceBytes = 8;
constexpr size_t kBlock = 64;  // a ChaCha20 block

// What libsodium's push and pull do after a message: chain the MAC into the nonce, count the message, and
// rekey on REKEY or when the counter wraps. The rekey is libsodium's own function on the same state.
void Advance(StreamState& st, const uint8_t mac[16], uint8_t tag) {
  for (size_t i = 0; i < kChainedNonceBytes; ++i) st.nonce[kCounterBytes + i] ^= mac[i];
  sodium_increment(st.nonce, kCounterBytes);
  if ((tag & crypto_secretstream_xchacha20poly1305_TAG_REKEY) != 0 ||
      sodium_is_zero(st.nonce, kCounterBytes)) {
    crypto_secretstream_xchacha20poly1305_rekey(&st);
  }
}

}  // namespace

struct SecretStream::Impl {
  StreamState st{};
  bool push = false;
  CipherCtxPtr chacha;  // OpenSSL ChaCha20, re-keyed for every message; null: libsodium's secretstream
  MacCtxPtr poly;       // OpenSSL Poly1305, keyed for every message
  ~Impl() { sodium_memzero(&st, sizeof st); }

  // Keys ChaCha20 at block 0 of this message (OpenSSL's 16-byte IV is the little-endian block counter,
  // then the 96-bit nonce) and Poly1305 with that block's first half, as secretstream does.
  bool Start() {
    uint8_t iv[16] = {};
    std::memcpy(iv + 4, st.nonce, sizeof st.nonce);
    uint8_t block[kBlock] = {};
    const bool ok = EVP_EncryptInit_ex2(chacha.get(), nullptr, st.k, iv, nullptr) == 1 &&
                    Xor(block, block, kBlock) && EVP_MAC_init(poly.get(), block, 32, nullptr) == 1;
    sodium_memzero(block, sizeof block);
    return ok;
  }
  // `in` XORed with the keystream's next `size` bytes, into `out` (which may be `in`).
  bool Xor(const uint8_t* in, uint8_t* out, size_t size) {
    int written = 0;
    return size == 0 || EVP_EncryptUpdate(chacha.get(), out, &written, in, static_cast<int>(size)) == 1;
  }
  // Poly1305 over the message's block 1 (encrypted tag byte and keystream) and ciphertext, as libsodium pads
  // it: ciphertext.size() % 16 zero bytes (not to a multiple of 16), then both lengths.
  bool Mac(const uint8_t block1[kBlock], std::span<const uint8_t> ciphertext, uint8_t mac[16]) {
    static constexpr uint8_t kZeros[16] = {};
    uint8_t lengths[16] = {};
    const uint64_t authenticated = kBlock + ciphertext.size();
    for (int i = 0; i < 8; ++i) lengths[8 + i] = static_cast<uint8_t>(authenticated >> (8 * i));
    size_t written = 0;
    return EVP_MAC_update(poly.get(), block1, kBlock) == 1 &&
           (ciphertext.empty() || EVP_MAC_update(poly.get(), ciphertext.data(), ciphertext.size()) == 1) &&
           EVP_MAC_update(poly.get(), kZeros, ciphertext.size() % 16) == 1 &&
           EVP_MAC_update(poly.get(), lengths, sizeof lengths) == 1 &&
           EVP_MAC_final(poly.get(), mac, &written, 16) == 1 && written == 16;
  }
};

SecretStream::SecretStream(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SecretStream::~SecretStream() = default;

SecretStream::Backend SecretStream::backend() const {
  return impl_->chacha ? Backend::kOpenSsl : Backend::kLibsodium;
}

Result<std::unique_ptr<SecretStream::Impl>> SecretStream::NewImpl(std::span<const uint8_t> key,
                                                                  Backend backend) {
  if (key.size() != kSecretStreamKeySize) {
    return Error(StatusCode::kInvalidArgument, "secretstream key of the wrong size");
  }
  CW_RETURN_IF_ERROR(Init());
  auto impl = std::make_unique<Impl>();
  if (backend == Backend::kOpenSsl && Algs().chacha20 != nullptr && Algs().poly1305 != nullptr) {
    impl->chacha.reset(EVP_CIPHER_CTX_new());
    impl->poly.reset(EVP_MAC_CTX_new(Algs().poly1305));
    if (!impl->chacha || !impl->poly ||
        EVP_EncryptInit_ex2(impl->chacha.get(), Algs().chacha20, nullptr, nullptr, nullptr) != 1) {
      return Error(OpenSslFailure(StatusCode::kInternal, "secretstream init failed"));
    }
  } else {
    ERR_clear_error();  // the failed fetches', if any
  }
  return impl;
}

Result<std::unique_ptr<SecretStream>> SecretStream::NewPush(
    std::span<const uint8_t> key, std::span<uint8_t, kSecretStreamHeaderSize> header, Backend backend) {
  CW_ASSIGN_OR_RETURN(auto impl, NewImpl(key, backend));
  impl->push = true;
  crypto_secretstream_xchacha20poly1305_init_push(&impl->st, header.data(), key.data());
  return std::unique_ptr<SecretStream>(new SecretStream(std::move(impl)));
}

Result<std::unique_ptr<SecretStream>> SecretStream::NewPull(
    std::span<const uint8_t> key, std::span<const uint8_t, kSecretStreamHeaderSize> header, Backend backend) {
  CW_ASSIGN_OR_RETURN(auto impl, NewImpl(key, backend));
  if (crypto_secretstream_xchacha20poly1305_init_pull(&impl->st, header.data(), key.data()) != 0) {
    return Error(StatusCode::kTampered, "secretstream header is invalid");
  }
  return std::unique_ptr<SecretStream>(new SecretStream(std::move(impl)));
}

Status SecretStream::Push(std::span<const uint8_t> message, uint8_t tag, uint8_t* out) {
  if (!impl_->push) return Status(StatusCode::kInternal, "secretstream push on a stream opened to pull");
  if (message.size() > INT_MAX - kBlock)
    return Status(StatusCode::kInvalidArgument, "secretstream message too long");
  StreamState& st = impl_->st;
  if (!impl_->chacha) {
    crypto_secretstream_xchacha20poly1305_push(&st, out, nullptr, message.data(), message.size(), nullptr, 0,
                                               tag);
    return Status::Ok();
  }
  uint8_t* const ciphertext = out + 1;
  uint8_t* const mac = ciphertext + message.size();
  uint8_t block1[kBlock] = {tag};
  const bool ok = impl_->Start() && impl_->Xor(block1, block1, kBlock) &&
                  impl_->Xor(message.data(), ciphertext, message.size()) &&
                  impl_->Mac(block1, std::span<const uint8_t>(ciphertext, message.size()), mac);
  out[0] = block1[0];
  sodium_memzero(block1, sizeof block1);
  if (!ok) return OpenSslFailure(StatusCode::kInternal, "secretstream encryption failed");
  Advance(st, mac, tag);
  return Status::Ok();
}

Result<uint8_t> SecretStream::Pull(std::span<const uint8_t> ciphertext, uint8_t* out) {
  if (impl_->push) return Error(StatusCode::kInternal, "secretstream pull on a stream opened to push");
  if (ciphertext.size() < kSecretStreamOverhead) {
    return Error(StatusCode::kTampered, "secretstream message shorter than its overhead");
  }
  if (ciphertext.size() > INT_MAX)
    return Error(StatusCode::kInvalidArgument, "secretstream message too long");
  const size_t size = ciphertext.size() - kSecretStreamOverhead;
  StreamState& st = impl_->st;
  uint8_t tag = 0;
  if (!impl_->chacha) {
    // libsodium checks the MAC before it writes anything.
    if (crypto_secretstream_xchacha20poly1305_pull(&st, out, nullptr, &tag, ciphertext.data(),
                                                   ciphertext.size(), nullptr, 0) != 0) {
      return Error(StatusCode::kTampered, "secretstream message failed to authenticate");
    }
    return tag;
  }
  // Block 1 as the sender authenticated it: the encrypted tag byte, then keystream.
  uint8_t block1[kBlock] = {};
  uint8_t mac[16];
  const std::span<const uint8_t> body = ciphertext.subspan(1, size);
  bool ok = impl_->Start() && impl_->Xor(block1, block1, kBlock);
  tag = static_cast<uint8_t>(block1[0] ^ ciphertext[0]);
  block1[0] = ciphertext[0];
  ok = ok && impl_->Mac(block1, body, mac);
  sodium_memzero(block1, sizeof block1);
  if (!ok) return Error(OpenSslFailure(StatusCode::kInternal, "secretstream decryption failed"));
  if (sodium_memcmp(mac, ciphertext.data() + 1 + size, sizeof mac) != 0) {
    sodium_memzero(mac, sizeof mac);  // the tag the forged message should have had
    return Error(StatusCode::kTampered, "secretstream message failed to authenticate");
  }
  // The keystream is at block 2 now, where the message's own bytes start.
  if (!impl_->Xor(body.data(), out, size)) {
    if (size != 0) sodium_memzero(out, size);
    return Error(OpenSslFailure(StatusCode::kInternal, "secretstream decryption failed"));
  }
  Advance(st, mac, tag);
  return tag;
}

}  // namespace cw::crypto
