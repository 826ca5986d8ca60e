// SealedStore: the session engine's ProtocolStore on RocksDB, every record sealed under the master key.
//
// Layout: one column family per session::Table ("identity", "contacts", "pre_keys", "signed_pre_keys",
// "sessions", "sender_keys", "groups", ...) and "metadata" for the store's own records (schema version, a
// key check, the store digest). Commit is one rocksdb::WriteBatch, written with sync=true unless the options
// choose group commit (below).
//
// Sealing: each value is XChaCha20-Poly1305 under a subkey of the master key, with a random nonce and
// associated data = schema version || column family name || stored key. A value moved or copied to another
// key or table, swapped with another, sealed under another master key, or truncated fails to open with
// kTampered.
//
// Rollback: a record replaced by an older version of itself still opens, and a deleted record would read as
// absent (a deleted contact record would even let trust-on-first-use accept a new identity key). So the
// store keeps a digest: per table, a keyed multiset hash of (stored key, nonce) over its records, updated by
// every commit in the same batch and sealed in "metadata" with a commit counter (sealed_store.cc explains
// the construction). Open recomputes it from the files. A table whose records no longer match (a record
// rolled back, deleted, resurrected, copied, moved or swapped behind the store's back) is refused: every
// Get, ListKeys and Commit on it fails with kTampered "records in <table> were rolled back, deleted or
// replaced outside the store", because the digest cannot tell which of its records are current. The other
// tables serve as before and nothing is rewritten or deleted; TamperedTables() names the refused ones and
// AcceptCurrentState() is the user's explicit decision to go on with what is on disk. What the digest cannot
// see is the whole store replaced by an older copy of itself (files, digest and all): that needs a counter
// outside the device's files (a hardware-backed monotonic counter), which LastCommitSequence() can feed.
//
// Schema versions: 2 is this layout. A version-1 store (no digest) is migrated when opened: every record is
// sealed again under version 2 and the digest computed, in one synced batch. A newer version is refused.
//
// Keys: in the tables whose keys name people or groups (contacts, sessions, sender keys, groups, and the
// transcript, outbox, inbound-dedup and conversation tables of the layers above) the stored
// key is a keyed hash (BLAKE2b under another subkey), not the name. To keep ListKeys(table, prefix) working
// the key is hashed part by part at the engine's NUL separators: a session key name '\0' device becomes
// H(name) || H(device), a sender key group '\0' name '\0' device becomes H(group) || H(name) || H(device),
// each part's hash domain-separated by table and position, so the session of "alice" cannot be linked to
// her contact record or group entries by equal hashes. A listing hashes the whole parts of the prefix, scans
// that range, and opens each record to recover the plain key, which is sealed inside the value and checked
// against the prefix. The ids and fixed names of the other tables (pre-key ids, "registration_id") say
// nothing about anyone and are stored plain, so their listings read no values. In the transcript and outbox
// tables (keys conversation '\0' BE64(sequence)) the conversation is hashed and the sequence kept plain after
// it, so a conversation's rows lie in sequence order and listing them by the prefix conversation '\0' opens
// no record. See sealed_store.cc.
//
// Deleting: a deleted or overwritten value stays in the database's files until compaction rewrites them.
// PurgeDeleted(table) forces that for one table (the crypto-shredding of a conversation key uses it).
//
// Lock: the store derives its two subkeys from the Keystore once per unlock and keeps them in guarded
// memory (sodium_malloc, read-only); it also keeps the last few records it opened (at most 64, plaintext in
// wiping buffers), because the engine reads the same session and conversation records several times per
// message, and the key hashes of the last few names it used (at most 256). It registers a lock listener, so
// Keystore::Lock() wipes all three (and the write-behind overlay, once written; below) before it returns;
// after it every Get, ListKeys and Commit fails with
// kPermissionDenied "keystore is locked" until Unlock. Not wiped: a Bloom filter of the stored keys on disk
// (filled when the store opens, so a lookup of a key that is not there needs no read), the digest
// elements of recently written records, both derived from bytes that are in the files, and the plain keys
// the caches were indexed by (table and name, e.g. a conversation id): they are freed, not zeroed, as the
// names are not secret in the locked process (the client keeps its contact list while locked).
//
// Group commit (SealedStoreOptions::sync = false): commits return before they are durable, and the log is
// written and synced once for many of them. Every commit gets a sequence number (LastCommitSequence() right
// after it returns, on the committing thread); WhenSynced(sequence, done) calls `done` once that commit is
// durable, and a background thread makes one fsync for everyone waiting. Nothing may rely on a commit before
// it is synced: not a relay acknowledgement of a received message, and not a deposit of a message whose
// session state is in it (a lost session state would reuse message keys). A crash or power cut loses only
// commits that were never synced, and always a suffix of them.
//
// Write-behind (group commit only): a commit does not go to RocksDB. Its puts go into an in-memory overlay
// as plaintext in wiping buffers, each with the nonce its record will be sealed with, drawn at commit (the
// digest element is computed from the stored key and the nonce when the record is written out); its
// deletions go in as deletions. Get and ListKeys read the overlay first. A sync seals and writes the overlay
// as ONE RocksDB batch (the newest put or deletion of each key written since the last write-out, and the
// digest record of the newest commit, sealed then), then syncs the log: a session record rewritten by 64
// commits between syncs is sealed and written once, and a put replaced before a write-out is wiped unsealed
// (its nonce is never used). Each batch is atomic and ends at a commit boundary, so a crash leaves a prefix
// of the commits, with a digest that matches them. The overlay is also written out, unsynced, when it
// passes SealedStoreOptions::overlay_limit_bytes. Keystore::Lock() seals, writes, syncs and wipes it before
// the subkeys are wiped, and a clean close does the same; should that write fail, the overlay is wiped
// anyway (its commits lost) and every later Commit and SyncNow fails with kUnavailable.
//
// Thread rules: Get, ListKeys, Commit, SyncNow and WhenSynced are safe from any thread, SyncNow also while
// another thread commits (commits are serialized; the session engine calls from its owner thread).
// Ownership: the Keystore and Random are not owned and must outlive the store.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/base/status.h"
#include "core/session/store.h"
#include "storage/keystore.h"

namespace cw::storage {

namespace internal {
struct SealedStoreAccess;  // sealed_store.cc: builds stores for sealed_store_internal.h
}

// The layout this code writes. Opening a store with a newer version is kUnsupportedVersion; version 1 is
// migrated.
inline constexpr uint32_t kSchemaVersion = 2;

// A sealed record opened: the plain key sealed inside it and its value.
struct OpenedRecord {
  std::string plain_key;
  SecretBytes value;
};

struct SealedStoreOptions {
  // Sync the write-ahead log on every Commit. Off for group commit: the caller relies on a commit only once
  // WhenSynced (or SyncNow) says it is durable.
  bool sync = true;
  bool create_if_missing = true;
  // Nonces; SystemRandom when null. Must be safe from every thread that calls the store.
  Random* random = nullptr;
  // Group commit only: the sealed bytes of unsynced commits the overlay may hold (see "Write-behind") before
  // it is written to RocksDB without waiting for a sync. 0 writes every commit at once (no coalescing).
  size_t overlay_limit_bytes = 4 << 20;
};

class SealedStore final : public session::ProtocolStore {
 public:
  // Opens (or creates) the RocksDB database in directory `path`.
  // REQUIRES: `keystore` is unlocked (kPermissionDenied otherwise).
  // Errors: kTampered when the store was sealed under another master key; kUnsupportedVersion for a
  // newer schema; kNotFound when absent and !create_if_missing; kUnavailable for I/O and lock failures
  // (another process holds the database).
  static Result<std::unique_ptr<SealedStore>> Open(const std::string& path, const Keystore* keystore,
                                                   SealedStoreOptions options = {});
  ~SealedStore() override;
  SealedStore(const SealedStore&) = delete;
  SealedStore& operator=(const SealedStore&) = delete;

  // session::ProtocolStore. Errors: kPermissionDenied (locked), kTampered (a record failed to open),
  // kInvalidArgument (a key of a hashed table without its NUL-separated parts), kUnavailable (I/O).
  Result<std::optional<SecretBytes>> Get(session::Table table, std::string_view key) override;
  Result<std::vector<std::string>> ListKeys(session::Table table, std::string_view prefix) override;
  Status Commit(session::WriteBatch batch) override;

  // The column family name of a table, as stored and as bound into every sealed record.
  static std::string_view ColumnFamilyName(session::Table table);
  // The stored RocksDB key for `key` in `table` (a keyed hash in hashed tables), for tests and tools that
  // look at the raw database. kPermissionDenied when locked.
  Result<std::string> StoredKeyForTesting(session::Table table, std::string_view key);

  // Makes every commit that has returned so far durable (writes the write-behind overlay as one batch, then one
  // fsync of the write-ahead log). With
  // SealedStoreOptions::sync off this is the group commit: the runtime commits a burst of received messages,
  // calls SyncNow(), and only then acknowledges them to the relay. It may run on another thread while the
  // engine goes on committing the next burst (commits that return meanwhile may or may not be covered).
  // kUnavailable on I/O failure.
  Status SyncNow();

  // The sequence number of the newest commit that returned (commits are numbered 1, 2, ... over the store's
  // life). Read right after a Commit on the committing thread, it is that commit's.
  uint64_t LastCommitSequence() const;
  // Every commit up to this sequence is durable.
  uint64_t SyncedThrough();
  // Calls `done` once commit `sequence` is durable: at once (on this thread) when it already is, else on
  // the store's sync thread (or the thread of a SyncNow that covered it), with OK, or with the I/O error that
  // kept it from being synced. `done` must be short and must not call WhenSynced or close the store.
  // kInvalidArgument for a sequence not yet committed; kAborted while the store closes (a waiting callback
  // still gets its sync before the store closes).
  using SyncedCallback = std::function<void(const Status&)>;
  Status WhenSynced(uint64_t sequence, SyncedCallback done);

  // The tables refused because their records did not match the digest when the store opened (see Rollback).
  std::vector<session::Table> TamperedTables();
  // The user's decision to continue with the records as they are on disk: the digest is recomputed from
  // them and every table serves again. Records that fail to open still fail, one by one.
  Status AcceptCurrentState();

  // Flushes every column family's memtable (retiring the write-ahead logs that held their writes), then
  // compacts `table` down to the bottom level, so values deleted or overwritten in it are in no live file.
  // Slow (it rewrites the whole table): for rare deletes that must not linger, such as a conversation key.
  // Errors: kInvalidArgument (unknown table), kUnavailable (I/O).
  Status PurgeDeleted(session::Table table);
  // Flushes every memtable to SST files and retires the logs, so tests can look at the files.
  Status FlushForTesting();
  // Opens a raw (stored key, sealed value) pair as read from the files, as someone with the passphrase and a
  // copy of the files could: kTampered unless it is a record of `table` under this master key.
  Result<OpenedRecord> OpenRawRecordForTesting(session::Table table, std::string_view stored_key,
                                               std::string_view sealed);

  class Impl;

 private:
  friend struct internal::SealedStoreAccess;
  explicit SealedStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace cw::storage
