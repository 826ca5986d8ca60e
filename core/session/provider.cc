// The crypto provider libsignal-protocol-c calls for every primitive except Curve25519, which it carries
// itself (its X25519 is replaced through the PLT at the end of this file, with its signal_buffer_free). Each callback returns 0 or a negative SG_ERR_* code, allocates outputs with signal_buffer_create,
// and never lets an exception escape into C.
#include <dlfcn.h>
#include <sodium.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "core/crypto/crypto.h"
#include "core/session/fast_curve.h"
#include "core/session/signal_util.h"

namespace cw::session::internal {

namespace {

int RandomBytes(uint8_t* data, size_t len, void* user_data) {
  try {
    static_cast<SignalContext*>(user_data)->random()->Fill(data, len);
    return 0;
  } catch (...) {
    return SG_ERR_UNKNOWN;  // a caller-supplied Random threw
  }
}

int HmacInit(void** hmac_context, const uint8_t* key, size_t key_len, void*) {
  try {
    auto h = crypto::HmacSha256::New({key, key_len});
    if (!h) return SG_ERR_UNKNOWN;
    *hmac_context = h->release();
    return 0;
  } catch (...) {
    return SG_ERR_NOMEM;
  }
}

int HmacUpdate(void* hmac_context, const uint8_t* data, size_t data_len, void*) {
  try {
    return static_cast<crypto::HmacSha256*>(hmac_context)->Update({data, data_len}).ok() ? 0 : SG_ERR_UNKNOWN;
  } catch (...) {
    return SG_ERR_NOMEM;
  }
}

int HmacFinal(void* hmac_context, signal_buffer** output, void*) {
  try {
    auto mac = static_cast<crypto::HmacSha256*>(hmac_context)->Final();
    if (!mac) return SG_ERR_UNKNOWN;
    *output = signal_buffer_create(mac->data(), mac->size());
    sodium_memzero(mac->data(), mac->size());
    return *output ? 0 : SG_ERR_NOMEM;
  } catch (...) {
    return SG_ERR_NOMEM;
  }
}

void HmacCleanup(void* hmac_context, void*) { delete static_cast<crypto::HmacSha256*>(hmac_context); }

int Sha512Init(void** digest_context, void*) {
  try {
    auto h = crypto::Sha512::New();
    if (!h) return SG_ERR_UNKNOWN;
    *digest_context = h->release();
    return 0;
  } catch (...) {
    return SG_ERR_NOMEM;
  }
}

int Sha512Update(void* digest_context, const uint8_t* data, size_t data_len, void*) {
  try {
    return static_cast<crypto::Sha512*>(digest_context)->Update({data, data_len}).ok() ? 0 : SG_ERR_UNKNOWN;
  } catch (...) {
    return SG_ERR_NOMEM;
  }
}

int Sha512Final(void* digest_context, signal_buffer** output, void*) {
  try {
    auto digest = static_cast<crypto::Sha512*>(digest_context)->Final();
    if (!digest) return SG_ERR_UNKNOWN;
    *output = signal_buffer_create(digest->data(), digest->size());
    sodium_memzero(digest->data(), digest->size());
    return *output ? 0 : SG_ERR_NOMEM;
  } catch (...) {
    return SG_ERR_NOMEM;
  }
}

void Sha512Cleanup(void* digest_context, void*) { delete static_cast<crypto::Sha512*>(digest_context); }

Result<crypto::AesMode> ModeOf(int cipher) {
  if (cipher == SG_CIPHER_AES_CBC_PKCS5) return crypto::AesMode::kCbcPkcs7;
  if (cipher == SG_CIPHER_AES_CTR_NOPADDING) return crypto::AesMode::kCtr;
  return Error(StatusCode::kInvalidArgument, "unknown cipher");
}

int Encrypt(signal_buffer** output, int cipher, const uint8_t* key, size_t key_len, const uint8_t* iv,
            size_t iv_len, const uint8_t* plaintext, size_t plaintext_len, void*) {
  try {
    auto mode = ModeOf(cipher);
    if (!mode) return SG_ERR_INVAL;
    auto out = crypto::AesEncrypt(*mode, {key, key_len}, {iv, iv_len}, {plaintext, plaintext_len});
    if (!out) return SG_ERR_UNKNOWN;
    *output = signal_buffer_create(out->data(), out->size());
    return *output ? 0 : SG_ERR_NOMEM;
  } catch (...) {
    return SG_ERR_NOMEM;
  }
}

int Decrypt(signal_buffer** output, int cipher, const uint8_t* key, size_t key_len, const uint8_t* iv,
            size_t iv_len, const uint8_t* ciphertext, size_t ciphertext_len, void*) {
  try {
    auto mode = ModeOf(cipher);
    if (!mode) return SG_ERR_INVAL;
    auto out = crypto::AesDecrypt(*mode, {key, key_len}, {iv, iv_len}, {ciphertext, ciphertext_len});
    if (!out) return SG_ERR_UNKNOWN;
    *output = signal_buffer_create(out->reveal().data(), out->size());
    return *output ? 0 : SG_ERR_NOMEM;
  } catch (...) {
    return SG_ERR_NOMEM;
  }
}

}  // namespace

SignalContext::SignalContext(Random* random) : random_(random) {}

SignalContext::~SignalContext() {
  if (ctx_) signal_context_destroy(ctx_);
}

Status SignalContext::Init() {
  CW_RETURN_IF_ERROR(crypto::Init());
  if (signal_context_create(&ctx_, this) != 0) return Status(StatusCode::kInternal, "signal_context_create failed");
  signal_crypto_provider provider = {};
  provider.random_func = RandomBytes;
  provider.hmac_sha256_init_func = HmacInit;
  provider.hmac_sha256_update_func = HmacUpdate;
  provider.hmac_sha256_final_func = HmacFinal;
  provider.hmac_sha256_cleanup_func = HmacCleanup;
  provider.sha512_digest_init_func = Sha512Init;
  provider.sha512_digest_update_func = Sha512Update;
  provider.sha512_digest_final_func = Sha512Final;
  provider.sha512_digest_cleanup_func = Sha512Cleanup;
  provider.encrypt_func = Encrypt;
  provider.decrypt_func = Decrypt;
  provider.user_data = this;
  if (signal_context_set_crypto_provider(ctx_, &provider) != 0 ||
      signal_context_set_locking_functions(ctx_, Lock, Unlock) != 0 ||
      signal_context_set_log_function(ctx_, Log) != 0) {
    return Status(StatusCode::kInternal, "signal context setup failed");
  }
  return Status::Ok();
}

// noexcept: an exception must not unwind through libsignal's C frames; a failing lock ends the process.
void SignalContext::Lock(void* user_data) noexcept { static_cast<SignalContext*>(user_data)->mutex_.lock(); }
void SignalContext::Unlock(void* user_data) noexcept { static_cast<SignalContext*>(user_data)->mutex_.unlock(); }

void SignalContext::Log(int, const char* message, size_t len, void* user_data) noexcept {
  // Only looked at, never printed: some lines name the peer, and logs must not identify patients.
  auto* self = static_cast<SignalContext*>(user_data);
  std::string_view line(message, len);
  Problem seen = Problem::kNone;
  if (line.find("into the future") != std::string_view::npos) {
    seen = Problem::kTooFarAhead;
  } else if (line.find("Unknown version") != std::string_view::npos ||
             line.find("egacy") != std::string_view::npos ||
             line.find("version mismatch") != std::string_view::npos) {
    seen = Problem::kUnknownVersion;
  } else if (line.find("Bad MAC") != std::string_view::npos || line.find("mac not verified") != std::string_view::npos ||
             line.find("Invalid signature") != std::string_view::npos) {
    seen = Problem::kBadMac;
  }
  if (seen > self->problem_) self->problem_ = seen;
}

Status FromSignal(int code, const char* what) {
  std::string prefix(what);
  switch (code) {
    case SG_ERR_DUPLICATE_MESSAGE: return Status(StatusCode::kDuplicate, prefix + ": message already received");
    case SG_ERR_INVALID_MAC: return Status(StatusCode::kTampered, prefix + ": message authentication failed");
    case SG_ERR_INVALID_KEY: return Status(StatusCode::kMalformed, prefix + ": invalid key");
    case SG_ERR_INVALID_KEY_ID: return Status(StatusCode::kNotFound, prefix + ": unknown pre-key id");
    case SG_ERR_INVALID_MESSAGE: return Status(StatusCode::kMalformed, prefix + ": invalid message");
    case SG_ERR_INVALID_VERSION:
    case SG_ERR_LEGACY_MESSAGE:
    case SG_ERR_FP_VERSION_MISMATCH:
      return Status(StatusCode::kUnsupportedVersion, prefix + ": unsupported version");
    case SG_ERR_INVALID_PROTO_BUF: return Status(StatusCode::kMalformed, prefix + ": malformed message");
    case SG_ERR_NO_SESSION: return Status(StatusCode::kNoSession, prefix + ": no session");
    case SG_ERR_UNTRUSTED_IDENTITY:
      return Status(StatusCode::kUntrustedIdentity, prefix + ": identity key changed and is not accepted");
    case SG_ERR_VRF_SIG_VERIF_FAILED: return Status(StatusCode::kBadSignature, prefix + ": bad signature");
    case SG_ERR_STALE_KEY_EXCHANGE: return Status(StatusCode::kDuplicate, prefix + ": stale key exchange");
    case SG_ERR_FP_IDENT_MISMATCH: return Status(StatusCode::kInvalidArgument, prefix + ": identity mismatch");
    case SG_ERR_NOMEM: return Status(StatusCode::kResourceExhausted, prefix + ": out of memory");
    // Our own arguments are checked before libsignal sees them; what it still finds invalid is the bytes
    // from outside (a body too short to hold its fields, for one).
    case SG_ERR_INVAL: return Status(StatusCode::kMalformed, prefix + ": malformed input");
    default: return Status(StatusCode::kInternal, prefix + ": libsignal error " + std::to_string(code));
  }
}

}  // namespace cw::session::internal

// libsignal-protocol-c frees every buffer with signal_buffer_free, which does not wipe: session records
// (root and chain keys), serialized private keys, sender-key chain keys and plaintext would stay in freed
// heap. Its own calls go through the PLT (159 call sites in Debian's build, none direct), so defining the
// function here, exported from every binary that links the engine, makes all of them wipe first. Same
// layout and allocator as the library's: a length followed by the bytes, from malloc.
// The fuzz build links a static libsignal-protocol-c whose own signal_buffer_free is patched to wipe
// (scripts/fuzz-build.sh), so there is nothing to interpose there.
#ifndef CW_SIGNAL_STATIC
extern "C" __attribute__((visibility("default"))) void signal_buffer_free(signal_buffer* buffer) {
  if (!buffer) return;
  sodium_memzero(signal_buffer_data(buffer), signal_buffer_len(buffer));
  free(buffer);
}
#endif

// libsignal-protocol-c's curve25519-donna takes about 185 us per scalar multiplication on this machine,
// libsodium's 43 (2000 calls each, same process), and a ratchet step does three.
// The library calls it only through the PLT, so defining it here, exported from every binary that links the
// engine (cw_session's link options, core/capi/cipherward.map), binds all of libsignal's calls to this one.
//
// The two are not the same function at every input: libsignal's donna does not clamp the scalar (the
// library clamps private keys when it makes them), while libsodium always clamps, and refuses a result of
// all zeros (a low-order point). So libsodium answers only for a clamped scalar and a result it accepts;
// everything else goes to the library's own donna, found behind this definition (RTLD_NEXT). Outputs are
// therefore the library's, bit for bit. The test checks that on known answers, random and low-order inputs.
//
// It lives in this file, with the crypto provider, because every binary that uses the engine links this
// object (a static archive's other objects are linked only when something calls into them). The fuzz build
// links a static libsignal-protocol-c whose donna cannot be interposed (nor needs to be).
#ifndef CW_SIGNAL_STATIC

namespace {

std::atomic<uint64_t> g_fast_calls{0};

using DonnaFn = int (*)(uint8_t*, const uint8_t*, const uint8_t*);

DonnaFn LibraryDonna() {
  static const DonnaFn next = reinterpret_cast<DonnaFn>(dlsym(RTLD_NEXT, "curve25519_donna"));
  return next;
}

// The form libsignal gives its private keys (curve_generate_private_key): low three bits clear, bit 255
// clear, bit 254 set. Branching on it reveals only whether a key has that form, which all of them do.
bool Clamped(const uint8_t* scalar) { return (scalar[0] & 7) == 0 && (scalar[31] & 0xc0) == 0x40; }

}  // namespace

extern "C" __attribute__((visibility("default"))) int curve25519_donna(uint8_t* mypublic, const uint8_t* secret,
                                                                       const uint8_t* basepoint) {
  if (Clamped(secret) && crypto_scalarmult_curve25519(mypublic, secret, basepoint) == 0) {
    g_fast_calls.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  const DonnaFn library = LibraryDonna();
  // Not found would mean no libsignal in the process; libsignal treats a nonzero result as a bad key.
  if (library == nullptr) return -1;
  return library(mypublic, secret, basepoint);
}

#endif  // CW_SIGNAL_STATIC

namespace cw::session {

uint64_t FastCurveCallsForTesting() {
#ifndef CW_SIGNAL_STATIC
  return g_fast_calls.load(std::memory_order_relaxed);
#else
  return 0;
#endif
}

}  // namespace cw::session
