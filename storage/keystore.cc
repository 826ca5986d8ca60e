#include "storage/keystore.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

#include "core/base/secret.h"
#include "core/crypto/crypto.h"

namespace cw::storage {
namespace {

// The keystore file, little-endian, fixed size:
//   0  "CWKS"   4  format version (1)   5  algorithm (crypto_pwhash_ALG_ARGON2ID13)   6  zero (2 bytes)
//   8  opslimit u64   16  memlimit u64   24  salt (16)   -- bytes [0, 40) are the wrap's associated data
//   40 nonce (24)   64  wrapped master key (32 + 16-byte tag)
//   112 failed attempts u32   116 zero (4)   120 last failure, ms since the epoch, i64
constexpr std::array<uint8_t, 4> kMagic = {'C', 'W', 'K', 'S'};
constexpr uint8_t kFormatVersion = 1;
constexpr size_t kSaltSize = crypto_pwhash_SALTBYTES;
constexpr size_t kNonceSize = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t kWrappedSize = kMasterKeySize + crypto_aead_xchacha20poly1305_ietf_ABYTES;
constexpr size_t kAdSize = 40;
constexpr size_t kFileSize = 128;
static_assert(kSaltSize == 16 && kNonceSize == 24 && kWrappedSize == 48);
static_assert(kMinSubkeySize == crypto_kdf_BYTES_MIN && kMaxSubkeySize == crypto_kdf_BYTES_MAX);
static_assert(kMasterKeySize == crypto_kdf_KEYBYTES);

// Bounds for Argon2id costs, from options or from a file: a file with absurd limits must not make the app
// allocate gigabytes or spin for minutes before the user gets an error.
constexpr uint64_t kMaxOpslimit = 32;
constexpr uint64_t kMaxMemlimit = 4ULL * 1024 * 1024 * 1024;

struct FileState {
  uint64_t opslimit = 0;
  uint64_t memlimit = 0;
  std::array<uint8_t, kSaltSize> salt{};
  std::array<uint8_t, kNonceSize> nonce{};
  std::array<uint8_t, kWrappedSize> wrapped{};
  uint32_t failed_attempts = 0;
  int64_t last_failure_ms = 0;
};

void PutLe(uint8_t* p, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t GetLe(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

std::array<uint8_t, kFileSize> Encode(const FileState& s) {
  std::array<uint8_t, kFileSize> b{};
  std::memcpy(b.data(), kMagic.data(), 4);
  b[4] = kFormatVersion;
  b[5] = crypto_pwhash_ALG_ARGON2ID13;
  PutLe(&b[8], s.opslimit, 8);
  PutLe(&b[16], s.memlimit, 8);
  std::memcpy(&b[24], s.salt.data(), kSaltSize);
  std::memcpy(&b[40], s.nonce.data(), kNonceSize);
  std::memcpy(&b[64], s.wrapped.data(), kWrappedSize);
  PutLe(&b[112], s.failed_attempts, 4);
  PutLe(&b[120], static_cast<uint64_t>(s.last_failure_ms), 8);
  return b;
}

bool ValidCost(uint64_t opslimit, uint64_t memlimit) {
  return opslimit >= crypto_pwhash_argon2id_OPSLIMIT_MIN && opslimit <= kMaxOpslimit &&
         memlimit >= crypto_pwhash_argon2id_MEMLIMIT_MIN && memlimit <= kMaxMemlimit;
}

Result<FileState> Decode(std::span<const uint8_t> b) {
  if (b.size() != kFileSize || !std::equal(kMagic.begin(), kMagic.end(), b.begin())) {
    return Error(StatusCode::kMalformed, "not a keystore file");
  }
  if (b[4] != kFormatVersion)
    return Error(StatusCode::kUnsupportedVersion, "unknown keystore format version");
  if (b[5] != crypto_pwhash_ALG_ARGON2ID13)
    return Error(StatusCode::kMalformed, "unknown keystore algorithm");
  FileState s;
  s.opslimit = GetLe(&b[8], 8);
  s.memlimit = GetLe(&b[16], 8);
  if (!ValidCost(s.opslimit, s.memlimit)) return Error(StatusCode::kMalformed, "keystore cost out of range");
  std::memcpy(s.salt.data(), &b[24], kSaltSize);
  std::memcpy(s.nonce.data(), &b[40], kNonceSize);
  std::memcpy(s.wrapped.data(), &b[64], kWrappedSize);
  s.failed_attempts = static_cast<uint32_t>(GetLe(&b[112], 4));
  s.last_failure_ms = static_cast<int64_t>(GetLe(&b[120], 8));
  return s;
}

std::string Errno(std::string_view what) { return std::string(what) + ": " + std::strerror(errno); }

std::string ParentDir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status SyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status(StatusCode::kUnavailable, Errno("keystore directory open failed"));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status(StatusCode::kUnavailable, Errno("keystore directory sync failed"));
  return Status::Ok();
}

Status WriteAll(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status(StatusCode::kUnavailable, Errno("keystore write failed"));
    data += n;
    size -= static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Write to a temporary file, sync it, rename it over the old one, sync the directory: a crash leaves the
// old file or the new one, never a torn one.
Status WriteFileAtomically(const std::string& path, std::span<const uint8_t> bytes) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status(StatusCode::kUnavailable, Errno("keystore create failed"));
  Status s = WriteAll(fd, bytes.data(), bytes.size());
  if (s.ok() && ::fsync(fd) != 0) s = Status(StatusCode::kUnavailable, Errno("keystore sync failed"));
  ::close(fd);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    s = Status(StatusCode::kUnavailable, Errno("keystore rename failed"));
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return SyncDir(ParentDir(path));
}

Result<std::array<uint8_t, kFileSize>> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Error(StatusCode::kNotFound, "no keystore");
    return Error(StatusCode::kUnavailable, Errno("keystore open failed"));
  }
  std::array<uint8_t, kFileSize + 1> buf{};
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::read(fd, buf.data() + got, buf.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return Error(StatusCode::kUnavailable, Errno("keystore read failed"));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got != kFileSize) return Error(StatusCode::kMalformed, "keystore file has the wrong size");
  std::array<uint8_t, kFileSize> out;
  std::memcpy(out.data(), buf.data(), kFileSize);
  return out;
}

// Overwrites the file's bytes in place before unlinking it, so the wrapped key does not linger in the
// freed blocks of a simple file system (flash translation layers may still keep a copy; the wrap under
// Argon2id is what protects that copy).
Status EraseFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    std::array<uint8_t, kFileSize> zeros{};
    Status s = WriteAll(fd, zeros.data(), zeros.size());
    if (s.ok()) ::fsync(fd);
    ::close(fd);
  }
  ::unlink((path + ".tmp").c_str());
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status(StatusCode::kUnavailable, Errno("keystore erase failed"));
  }
  return SyncDir(ParentDir(path));
}

Status CheckPassphraseSize(std::span<const uint8_t> p) {
  if (p.empty()) return Status(StatusCode::kInvalidArgument, "empty passphrase");
  if (p.size() > kMaxPassphraseSize) return Status(StatusCode::kInvalidArgument, "passphrase too long");
  return Status::Ok();
}

Result<SecretBytes> DeriveWrappingKey(std::span<const uint8_t> passphrase, const FileState& s) {
  SecretBytes key(kMasterKeySize);
  if (crypto_pwhash(key.reveal_mutable().data(), key.size(), reinterpret_cast<const char*>(passphrase.data()),
                    passphrase.size(), s.salt.data(), s.opslimit, static_cast<size_t>(s.memlimit),
                    crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return Error(StatusCode::kResourceExhausted, "Argon2id could not allocate its memory");
  }
  return key;
}

}  // namespace

KeystoreOptions KeystoreOptions::MinimumCostForTesting() {
  KeystoreOptions o;
  o.argon2_opslimit = crypto_pwhash_argon2id_OPSLIMIT_MIN;
  o.argon2_memlimit = crypto_pwhash_argon2id_MEMLIMIT_MIN;
  return o;
}

class Keystore::Impl {
 public:
  Impl(std::string path, KeystoreOptions options, FileState state)
      : path_(std::move(path)),
        options_(std::move(options)),
        clock_(options_.clock ? options_.clock : &SystemClock::Default()),
        random_(options_.random ? options_.random : &SystemRandom::Default()),
        state_(state) {}
  ~Impl() { WipeLocked(); }

  static Result<std::unique_ptr<Impl>> Create(std::string path, std::span<const uint8_t> passphrase,
                                              KeystoreOptions options) {
    CW_RETURN_IF_ERROR(crypto::Init());
    CW_RETURN_IF_ERROR(CheckPassphraseSize(passphrase));
    if (!ValidCost(options.argon2_opslimit, options.argon2_memlimit)) {
      return Error(StatusCode::kInvalidArgument, "Argon2id limits out of range");
    }
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) return Error(StatusCode::kAlreadyExists, "keystore exists");
    auto impl = std::make_unique<Impl>(std::move(path), std::move(options), FileState{});
    SecretBytes master(kMasterKeySize);
    impl->random_->Fill(master.reveal_mutable().data(), master.size());
    std::lock_guard<std::mutex> lock(impl->mu_);
    CW_RETURN_IF_ERROR(impl->WrapAndPersistLocked(master, passphrase));
    CW_RETURN_IF_ERROR(impl->HoldLocked(master));
    return impl;
  }

  static Result<std::unique_ptr<Impl>> Open(std::string path, KeystoreOptions options) {
    CW_RETURN_IF_ERROR(crypto::Init());
    CW_ASSIGN_OR_RETURN(auto bytes, ReadFile(path));
    CW_ASSIGN_OR_RETURN(FileState state, Decode(bytes));
    return std::make_unique<Impl>(std::move(path), std::move(options), state);
  }

  Status Unlock(std::span<const uint8_t> passphrase) {
    return WithLockThenNotify([&]() -> Status {
      CW_ASSIGN_OR_RETURN(SecretBytes master, CheckPassphraseLocked(passphrase));
      return HoldLocked(master);
    });
  }

  Status ChangePassphrase(std::span<const uint8_t> old_passphrase, std::span<const uint8_t> new_passphrase) {
    return WithLockThenNotify([&]() -> Status {
      CW_RETURN_IF_ERROR(CheckPassphraseSize(new_passphrase));
      if (!ValidCost(options_.argon2_opslimit, options_.argon2_memlimit)) {
        return Status(StatusCode::kInvalidArgument, "Argon2id limits out of range");
      }
      CW_ASSIGN_OR_RETURN(SecretBytes master, CheckPassphraseLocked(old_passphrase));
      CW_RETURN_IF_ERROR(WrapAndPersistLocked(master, new_passphrase));
      return HoldLocked(master);
    });
  }

  void Lock() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      WipeLocked();
    }
    // Outside mu_: a listener takes its own lock, which its owner may hold while calling DeriveSubkey.
    // Listeners run even if the keystore was already locked: Lock() always leaves nothing derived held.
    NotifyLockListeners();
  }

  Keystore::LockListenerId AddLockListener(std::function<void()> listener) const {
    std::lock_guard<std::mutex> lock(listeners_mu_);
    const Keystore::LockListenerId id = next_listener_id_++;
    listeners_.emplace(id, std::move(listener));
    return id;
  }

  void RemoveLockListener(Keystore::LockListenerId id) const {
    std::lock_guard<std::mutex> lock(listeners_mu_);
    listeners_.erase(id);
  }

  bool unlocked() const {
    std::lock_guard<std::mutex> lock(mu_);
    return master_ != nullptr;
  }
  uint32_t failed_attempts() const {
    std::lock_guard<std::mutex> lock(mu_);
    return state_.failed_attempts;
  }
  bool erased() const {
    std::lock_guard<std::mutex> lock(mu_);
    return erased_;
  }
  int64_t RetryAfterMillis() const {
    std::lock_guard<std::mutex> lock(mu_);
    return RemainingWaitLocked();
  }

  Status DeriveSubkey(uint64_t id, std::string_view context, std::span<uint8_t> out) const {
    if (out.size() < kMinSubkeySize || out.size() > kMaxSubkeySize ||
        context.size() != crypto_kdf_CONTEXTBYTES) {
      return Status(StatusCode::kInvalidArgument, "bad subkey size or context");
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (master_ == nullptr) return Status(StatusCode::kPermissionDenied, "keystore is locked");
    char ctx[crypto_kdf_CONTEXTBYTES];
    std::memcpy(ctx, context.data(), sizeof ctx);
    sodium_mprotect_readonly(master_);
    int rc = crypto_kdf_derive_from_key(out.data(), out.size(), id, ctx, master_);
    sodium_mprotect_noaccess(master_);
    if (rc != 0) return Status(StatusCode::kInternal, "subkey derivation failed");
    return Status::Ok();
  }

 private:
  // Runs `body` under mu_; if it wiped the master key (the erase after too many failures), tells the
  // listeners once mu_ is released.
  template <typename F>
  Status WithLockThenNotify(F&& body) {
    Status s = Status::Ok();
    bool wiped = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const uint64_t before = wipes_;
      s = body();
      wiped = wipes_ != before;
    }
    if (wiped) NotifyLockListeners();
    return s;
  }

  // Holding listeners_mu_ across the calls makes RemoveLockListener wait for a running listener.
  void NotifyLockListeners() const {
    std::lock_guard<std::mutex> lock(listeners_mu_);
    for (const auto& [id, listener] : listeners_) listener();
  }

  int64_t RequiredWaitLocked() const {
    if (state_.failed_attempts < options_.backoff_free_attempts) return 0;
    const int64_t cap = std::max<int64_t>(options_.backoff_max_ms, 0);
    int64_t wait = std::max<int64_t>(options_.backoff_base_ms, 0);
    for (uint32_t i = options_.backoff_free_attempts; i < state_.failed_attempts && wait < cap; ++i)
      wait *= 2;
    return std::min(wait, cap);
  }

  int64_t RemainingWaitLocked() const {
    if (erased_) return 0;
    const int64_t wait = RequiredWaitLocked();
    if (wait == 0) return 0;
    const int64_t elapsed = clock_->NowMillis() - state_.last_failure_ms;
    // A clock set back before the last failure does not shorten the wait, nor lengthen it past one period.
    if (elapsed < 0) return wait;
    return std::max<int64_t>(0, wait - elapsed);
  }

  // The backoff check, Argon2id, the unwrap, and the failure accounting shared by Unlock and
  // ChangePassphrase. On success returns the master key and clears the failure count.
  Result<SecretBytes> CheckPassphraseLocked(std::span<const uint8_t> passphrase) {
    if (erased_) return Error(StatusCode::kNotFound, "keystore was erased");
    if (int64_t wait = RemainingWaitLocked(); wait > 0) {
      return Error(StatusCode::kUnavailable,
                   "too many failed attempts; retry in " + std::to_string(wait) + " ms");
    }
    if (passphrase.empty() || passphrase.size() > kMaxPassphraseSize) return RecordFailureLocked();
    CW_ASSIGN_OR_RETURN(SecretBytes wrapping, DeriveWrappingKey(passphrase, state_));
    const auto header = Encode(state_);
    SecretBytes master(kMasterKeySize);
    unsigned long long len = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            master.reveal_mutable().data(), &len, nullptr, state_.wrapped.data(), state_.wrapped.size(),
            header.data(), kAdSize, state_.nonce.data(), wrapping.reveal().data()) != 0 ||
        len != kMasterKeySize) {
      return RecordFailureLocked();
    }
    if (state_.failed_attempts != 0) {
      state_.failed_attempts = 0;
      state_.last_failure_ms = 0;
      CW_RETURN_IF_ERROR(PersistLocked());
    }
    return master;
  }

  tl::unexpected<Status> RecordFailureLocked() {
    ++state_.failed_attempts;
    state_.last_failure_ms = clock_->NowMillis();
    const std::string count = std::to_string(state_.failed_attempts);
    if (options_.erase_after_failures && state_.failed_attempts >= *options_.erase_after_failures) {
      WipeLocked();
      erased_ = true;
      Status s = EraseFile(path_);
      if (!s.ok()) return Error(s);
      return Error(StatusCode::kPermissionDenied,
                   "wrong passphrase; keystore erased after " + count + " failed attempts");
    }
    // Counted on disk before the caller hears of it: killing the app does not reset the count.
    Status s = PersistLocked();
    if (!s.ok()) return Error(s.code(), "wrong passphrase, and recording the attempt failed: " + s.message());
    std::string message = "wrong passphrase (" + count + " failed attempts)";
    if (int64_t wait = RequiredWaitLocked(); wait > 0)
      message += "; next attempt in " + std::to_string(wait) + " ms";
    return Error(StatusCode::kPermissionDenied, std::move(message));
  }

  Status WrapAndPersistLocked(const SecretBytes& master, std::span<const uint8_t> passphrase) {
    FileState next;
    next.opslimit = options_.argon2_opslimit;
    next.memlimit = options_.argon2_memlimit;
    random_->Fill(next.salt.data(), next.salt.size());
    random_->Fill(next.nonce.data(), next.nonce.size());
    CW_ASSIGN_OR_RETURN(SecretBytes wrapping, DeriveWrappingKey(passphrase, next));
    const auto header = Encode(next);
    unsigned long long len = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(next.wrapped.data(), &len, master.reveal().data(),
                                               master.size(), header.data(), kAdSize, nullptr,
                                               next.nonce.data(), wrapping.reveal().data());
    CW_RETURN_IF_ERROR(WriteFileAtomically(path_, Encode(next)));
    state_ = next;
    return Status::Ok();
  }

  Status PersistLocked() { return WriteFileAtomically(path_, Encode(state_)); }

  Status HoldLocked(const SecretBytes& master) {
    if (master_ == nullptr) {
      master_ = static_cast<uint8_t*>(sodium_malloc(kMasterKeySize));
      if (master_ == nullptr) return Status(StatusCode::kResourceExhausted, "no guarded memory for the key");
    } else {
      sodium_mprotect_readwrite(master_);
    }
    std::memcpy(master_, master.reveal().data(), kMasterKeySize);
    sodium_mprotect_noaccess(master_);
    return Status::Ok();
  }

  void WipeLocked() {
    if (master_ == nullptr) return;
    sodium_mprotect_readwrite(master_);
    sodium_memzero(master_, kMasterKeySize);
    sodium_free(master_);  // wipes again, then unmaps with its guard pages
    master_ = nullptr;
    ++wipes_;
  }

  const std::string path_;
  const KeystoreOptions options_;
  Clock* const clock_;
  Random* const random_;
  mutable std::mutex mu_;
  FileState state_;
  bool erased_ = false;
  uint8_t* master_ = nullptr;  // sodium_malloc'd, PROT_NONE except inside DeriveSubkey and HoldLocked
  uint64_t wipes_ = 0;         // times WipeLocked wiped a held key

  mutable std::mutex listeners_mu_;  // never taken while holding mu_, nor mu_ while holding it
  mutable std::map<Keystore::LockListenerId, std::function<void()>> listeners_;
  mutable Keystore::LockListenerId next_listener_id_ = 1;
};

Keystore::Keystore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Keystore::~Keystore() = default;

Result<std::unique_ptr<Keystore>> Keystore::Create(std::string path, std::span<const uint8_t> passphrase,
                                                   KeystoreOptions options) {
  CW_ASSIGN_OR_RETURN(auto impl, Impl::Create(std::move(path), passphrase, std::move(options)));
  return std::unique_ptr<Keystore>(new Keystore(std::move(impl)));
}

Result<std::unique_ptr<Keystore>> Keystore::Open(std::string path, KeystoreOptions options) {
  CW_ASSIGN_OR_RETURN(auto impl, Impl::Open(std::move(path), std::move(options)));
  return std::unique_ptr<Keystore>(new Keystore(std::move(impl)));
}

Status Keystore::Unlock(std::span<const uint8_t> passphrase) { return impl_->Unlock(passphrase); }
void Keystore::Lock() { impl_->Lock(); }
bool Keystore::unlocked() const { return impl_->unlocked(); }
Status Keystore::ChangePassphrase(std::span<const uint8_t> old_passphrase,
                                  std::span<const uint8_t> new_passphrase) {
  return impl_->ChangePassphrase(old_passphrase, new_passphrase);
}
uint32_t Keystore::failed_attempts() const { return impl_->failed_attempts(); }
int64_t Keystore::RetryAfterMillis() const { return impl_->RetryAfterMillis(); }
bool Keystore::erased() const { return impl_->erased(); }
Status Keystore::DeriveSubkey(uint64_t id, std::string_view context, std::span<uint8_t> out) const {
  return impl_->DeriveSubkey(id, context, out);
}
Keystore::LockListenerId Keystore::AddLockListener(std::function<void()> listener) const {
  return impl_->AddLockListener(std::move(listener));
}
void Keystore::RemoveLockListener(LockListenerId id) const { impl_->RemoveLockListener(id); }

}  // namespace cw::storage
