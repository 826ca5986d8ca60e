// Keystore: the device's master key, wrapped under the user's passphrase, in one small file.
//
// A random 256-bit master key is wrapped with XChaCha20-Poly1305 under a key that Argon2id
// (libsodium crypto_pwhash) derives from the passphrase and a random salt. The file holds the Argon2id
// parameters, the salt, the wrapped key and the failed-attempt state; the header is the associated data of
// the wrap, so editing the parameters or salt makes the passphrase fail rather than weaken it. Changing the
// passphrase re-wraps the same master key (new salt, new nonce): no data is re-encrypted.
//
// Unlock policy:
// - A wrong passphrase fails with kPermissionDenied and is counted in the file before the call returns,
//   so killing the app does not reset the count. The message never holds the passphrase.
// - After `backoff_free_attempts` failures every further attempt must wait backoff_base_ms * 2^(extra
//   failures), capped at backoff_max_ms, measured from the last failure on the injected Clock. An attempt
//   during the wait fails with kUnavailable, naming the remaining wait, and runs no Argon2id and is not
//   counted. RetryAfterMillis() gives the wait as a number.
// - With erase_after_failures set, the failure that reaches it overwrites and deletes the keystore file
//   (and so crypto-shreds everything sealed under the master key); later calls get kNotFound.
// - A success resets the count.
// The count protects the UI against online guessing only: someone holding a copy of the file can reset it;
// against them the defence is Argon2id's cost.
//
// Memory: while unlocked the master key lives in sodium_malloc'd memory (guard pages, mlock'd, wiped on
// free) that is PROT_NONE except inside DeriveSubkey. Lock() wipes and frees it; afterwards DeriveSubkey
// (and so every SealedStore read or write) fails with kPermissionDenied "keystore is locked".
//
// Lock listeners: a holder of values derived from the master key (SealedStore caches its subkeys) registers
// a listener, and every Lock() (and the erase after too many failures) calls it, after the master key is
// wiped and before Lock() returns, on the thread that locked. A listener must wipe what it holds and must
// not call back into the Keystore's listener methods.
//
// Thread rules: every method is safe from any thread (one internal mutex), so a runtime's idle timer may
// call Lock() while the owner thread works. Ownership: the Clock and Random in the options are not owned
// and must outlive the Keystore.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/status.h"

namespace cw::storage {

inline constexpr size_t kMasterKeySize = 32;
inline constexpr size_t kMinSubkeySize = 16;  // crypto_kdf_BYTES_MIN
inline constexpr size_t kMaxSubkeySize = 64;  // crypto_kdf_BYTES_MAX
inline constexpr size_t kMaxPassphraseSize = 4096;

struct KeystoreOptions {
  // Argon2id cost for new wraps (Create, ChangePassphrase). Unlock uses what the file records.
  // The defaults are libsodium's MODERATE limits (about 0.45 s and 256 MiB on the reference machine).
  uint64_t argon2_opslimit = 3;                 // crypto_pwhash_OPSLIMIT_MODERATE
  size_t argon2_memlimit = 256u * 1024 * 1024;  // crypto_pwhash_MEMLIMIT_MODERATE

  Clock* clock = nullptr;    // SystemClock when null
  Random* random = nullptr;  // SystemRandom when null: master key, salts, nonces

  uint32_t backoff_free_attempts = 3;
  int64_t backoff_base_ms = 1000;
  int64_t backoff_max_ms = 60LL * 60 * 1000;
  // Erase the keystore at this many consecutive failures. Off by default; 10 is the usual policy.
  std::optional<uint32_t> erase_after_failures;

  // libsodium's minimum Argon2id limits: for tests only, never for a real passphrase.
  static KeystoreOptions MinimumCostForTesting();
};

class Keystore {
 public:
  // Creates a keystore file at `path` with a fresh random master key wrapped under `passphrase`, and
  // returns it unlocked. kAlreadyExists if the file exists; kInvalidArgument for an empty passphrase, one
  // longer than kMaxPassphraseSize, or Argon2id limits outside libsodium's range.
  static Result<std::unique_ptr<Keystore>> Create(std::string path, std::span<const uint8_t> passphrase,
                                                  KeystoreOptions options = {});
  // Opens an existing keystore file, locked. kNotFound if there is none (never created, or erased);
  // kMalformed or kUnsupportedVersion if the file is not one we can read.
  static Result<std::unique_ptr<Keystore>> Open(std::string path, KeystoreOptions options = {});

  ~Keystore();
  Keystore(const Keystore&) = delete;
  Keystore& operator=(const Keystore&) = delete;

  // Unwraps the master key. kPermissionDenied on a wrong passphrase (counted); kUnavailable while backing
  // off; kNotFound after an erase; kResourceExhausted if Argon2id cannot get its memory.
  Status Unlock(std::span<const uint8_t> passphrase);
  // Wipes the unlocked master key. Idempotent.
  void Lock();
  bool unlocked() const;

  // Checks `old_passphrase` exactly as Unlock does (same counting and backoff), then re-wraps the master key
  // under `new_passphrase` with a new salt and the current options' Argon2id cost, replacing the file
  // atomically. On success the keystore is unlocked.
  // The master key itself stays the same: any earlier copy of the keystore file (a backup, or blocks the
  // replaced file leaves free on disk, which no overwrite reliably reaches on flash storage) still opens
  // with the old passphrase. A passphrase that leaked calls for a new identity, not just a new passphrase.
  Status ChangePassphrase(std::span<const uint8_t> old_passphrase, std::span<const uint8_t> new_passphrase);

  // Consecutive failed attempts recorded in the file.
  uint32_t failed_attempts() const;
  // How long until the next Unlock may run; 0 when it may run now.
  int64_t RetryAfterMillis() const;
  // True once erase_after_failures erased the file.
  bool erased() const;

  // Fills `out` with the subkey `id` under the 8-character `context` of the master key
  // (crypto_kdf_derive_from_key). This is the only way master-key material leaves the keystore.
  // kPermissionDenied when locked; kInvalidArgument unless out is kMinSubkeySize..kMaxSubkeySize bytes and
  // context is 8 characters.
  Status DeriveSubkey(uint64_t id, std::string_view context, std::span<uint8_t> out) const;

  // Registers `listener` to run on every Lock (see above) until RemoveLockListener(id). Const because it
  // changes no key state: a SealedStore holds a const Keystore*.
  using LockListenerId = uint64_t;
  LockListenerId AddLockListener(std::function<void()> listener) const;
  // After it returns the listener is not running and will not run again. Unknown ids are ignored.
  // REQUIRES: not called from inside a listener.
  void RemoveLockListener(LockListenerId id) const;

  class Impl;

 private:
  explicit Keystore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cw::storage
