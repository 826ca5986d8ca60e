#include "storage/sealed_store.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <thread>
#include <unordered_map>

#include "core/crypto/crypto.h"
#include "storage/sealed_store_internal.h"

namespace cw::storage {
namespace {

using session::kTableCount;
using session::Table;

// Where each table goes, and whether its keys are hashed. `separators` counts the NUL separators the engine
// puts in a key (records.cc: SessionKey = name '\0' device, SenderKeyKey = group '\0' name '\0' device);
// each part is hashed on its own so that a prefix ending at a separator maps to a prefix of stored keys.
// With `plain_tail` the part after the last separator is stored as it is, after the hashes: the transcript's
// and outbox's big-endian sequence numbers identify nobody, and keeping them plain keeps a conversation's
// rows in sequence order on disk, so listing a conversation needs no record opened (see ListKeys).
struct TableSpec {
  std::string_view cf;
  bool hashed;
  int separators;
  bool plain_tail = false;
};
constexpr TableSpec kTables[kTableCount] = {
    {"identity", false, 0},         // kMeta: fixed names ("registration_id", ...)
    {"contacts", true, 0},          // kContact: a contact's name
    {"pre_keys", false, 0},         // kPreKey: big-endian ids
    {"signed_pre_keys", false, 0},  // kSignedPreKey: big-endian ids
    {"sessions", true, 1},          // kSession: name '\0' device
    {"sender_keys", true, 2},       // kSenderKey: group '\0' name '\0' device
    {"groups", true, 0},            // kGroup: group id
    {"transcript", true, 1, true},  // kTranscript: conversation '\0' BE64(sequence), sequence plain
    {"outbox", true, 1, true},      // kOutbox: conversation '\0' BE64(sequence), sequence plain
    {"inbound_dedup", true, 0},     // kInboundDedup: relay message ids
    {"conversations", true, 0},     // kConversation: per-conversation keys
};
constexpr std::string_view kMetadataCf = "metadata";
constexpr std::string_view kSchemaVersionKey = "schema_version";
constexpr std::string_view kKeyCheckKey = "key_check";
constexpr std::string_view kKeyCheckValue = "cipherward sealed store key check";
// The store digest (schema 2): see "Rollback" in sealed_store.h and StoreDigest below.
constexpr std::string_view kDigestKey = "digest";

// Subkeys of the master key: one 64-byte crypto_kdf output split into the sealing key and the key-hashing
// key, and a second derivation for the digest key (crypto_kdf outputs at most 64 bytes).
constexpr std::string_view kKdfContext = "cwstore1";
constexpr uint64_t kKdfIdStoreKeys = 1;
constexpr uint64_t kKdfIdDigestKey = 2;

constexpr uint8_t kRecordFormat = 1;
constexpr size_t kNonceSize = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t kTagSize = crypto_aead_xchacha20poly1305_ietf_ABYTES;
// 128 bits: keys are hashed under a secret key, so nobody can search for collisions offline, and the
// chance of an accidental one among a device's records is below 2^-90.
constexpr size_t kKeyHashSize = 16;

constexpr size_t kSubkeysSize = 96;

// The three subkeys: a view of SubkeyCache's guarded memory, valid while its lease is held.
class Subkeys {
 public:
  explicit Subkeys(const uint8_t* bytes) : bytes_(bytes) {}
  const uint8_t* seal_key() const { return bytes_; }
  const uint8_t* hash_key() const { return bytes_ + 32; }
  const uint8_t* digest_key() const { return bytes_ + 64; }

 private:
  const uint8_t* bytes_;
};

// The store's subkeys, derived from the keystore once per unlock instead of once per call (each derivation
// took the keystore's mutex and two mprotect system calls, about a fifth of a persisted message's cost).
// They live in sodium_malloc'd memory (guard pages, mlock'd, read-only once filled) and are wiped and freed
// by the keystore's lock listener, before Keystore::Lock() returns; the next call derives again, which fails
// with kPermissionDenied while the keystore is locked.
//
// Operations hold a shared lease while they use the keys; Wipe takes the lock exclusively, so it never
// frees keys that a sealing on another thread is reading. Lock order: the cache's mutex, then the keystore's
// (Fill calls DeriveSubkey); Keystore::Lock calls the listener without holding its own.
class SubkeyCache {
 public:
  explicit SubkeyCache(const Keystore* keystore) : keystore_(keystore) {}
  ~SubkeyCache() { Wipe(); }
  SubkeyCache(const SubkeyCache&) = delete;
  SubkeyCache& operator=(const SubkeyCache&) = delete;

  class Lease {
   public:
    Subkeys keys() const { return Subkeys(bytes_); }

   private:
    friend class SubkeyCache;
    Lease(std::shared_lock<std::shared_mutex> lock, const uint8_t* bytes)
        : lock_(std::move(lock)), bytes_(bytes) {}
    std::shared_lock<std::shared_mutex> lock_;
    const uint8_t* bytes_;
  };

  Result<Lease> Acquire() {
    for (;;) {
      std::shared_lock<std::shared_mutex> shared(mu_);
      if (keys_ != nullptr) return Lease(std::move(shared), keys_);
      shared.unlock();
      std::unique_lock<std::shared_mutex> exclusive(mu_);
      if (keys_ == nullptr) CW_RETURN_IF_ERROR(FillLocked());
    }
  }

  void Wipe() {
    std::unique_lock<std::shared_mutex> exclusive(mu_);
    if (keys_ == nullptr) return;
    sodium_mprotect_readwrite(keys_);
    sodium_memzero(keys_, kSubkeysSize);
    sodium_free(keys_);  // wipes again and unmaps with its guard pages
    keys_ = nullptr;
  }

 private:
  Status FillLocked() {
    auto* fresh = static_cast<uint8_t*>(sodium_malloc(kSubkeysSize));
    if (fresh == nullptr) return Status(StatusCode::kResourceExhausted, "no guarded memory for the store keys");
    Status s = keystore_->DeriveSubkey(kKdfIdStoreKeys, kKdfContext, std::span<uint8_t>(fresh, 64));
    if (s.ok()) s = keystore_->DeriveSubkey(kKdfIdDigestKey, kKdfContext, std::span<uint8_t>(fresh + 64, 32));
    if (!s.ok()) {
      sodium_memzero(fresh, kSubkeysSize);
      sodium_free(fresh);
      return s;
    }
    sodium_mprotect_readonly(fresh);
    keys_ = fresh;
    return Status::Ok();
  }

  const Keystore* const keystore_;
  std::shared_mutex mu_;
  uint8_t* keys_ = nullptr;  // sodium_malloc'd, read-only; null when not derived or wiped
};
static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32 && crypto_generichash_KEYBYTES == 32);

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  StatusCode code = StatusCode::kUnavailable;
  if (s.IsNotFound()) code = StatusCode::kNotFound;
  if (s.IsCorruption()) code = StatusCode::kTampered;
  if (s.IsInvalidArgument()) code = StatusCode::kInvalidArgument;
  return Status(code, std::string(what) + ": " + s.ToString());
}

std::string BigEndian32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(v >> (24 - 8 * i));
  return s;
}

void PutBigEndian32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

// format || schema version || length of the column family name || the name || the stored key. Built on the
// stack for the usual short keys: every Get and every sealed record needs one. `schema` is the version the
// record was sealed under: kSchemaVersion, except while migrating an older store.
class AssociatedData {
 public:
  AssociatedData(std::string_view cf, std::string_view stored_key, uint32_t schema = kSchemaVersion)
      : size_(6 + cf.size() + stored_key.size()) {
    uint8_t* p = inline_.data();
    if (size_ > inline_.size()) {
      heap_.resize(size_);
      p = heap_.data();
    }
    data_ = p;
    p[0] = kRecordFormat;
    PutBigEndian32(p + 1, schema);
    p[5] = static_cast<uint8_t>(cf.size());
    std::memcpy(p + 6, cf.data(), cf.size());
    if (!stored_key.empty()) std::memcpy(p + 6 + cf.size(), stored_key.data(), stored_key.size());
  }
  AssociatedData(const AssociatedData&) = delete;
  AssociatedData& operator=(const AssociatedData&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  std::array<uint8_t, 128> inline_;
  std::vector<uint8_t> heap_;
  const uint8_t* data_;
  size_t size_;
};

// Sealed record: format (1) || nonce (24) || XChaCha20-Poly1305(length of plain key (4, big-endian) ||
// plain key || value) with its tag. The plain key rides inside so a hashed table can still be listed.
// The plaintext is laid out in the output buffer and encrypted in place (libsodium allows c == m), so no
// other copy of the value is made.
// SealInto reuses the capacity of `out` (the commit's scratch).
void SealInto(std::string* out, const uint8_t* seal_key, const uint8_t* nonce, std::string_view cf,
              std::string_view stored_key, std::string_view plain_key, std::span<const uint8_t> value,
              uint32_t schema = kSchemaVersion) {
  const size_t plain_size = 4 + plain_key.size() + value.size();
  out->resize(1 + kNonceSize + plain_size + kTagSize);
  auto* o = reinterpret_cast<uint8_t*>(out->data());
  o[0] = kRecordFormat;
  std::memcpy(o + 1, nonce, kNonceSize);
  uint8_t* m = o + 1 + kNonceSize;
  PutBigEndian32(m, static_cast<uint32_t>(plain_key.size()));
  if (!plain_key.empty()) std::memcpy(m + 4, plain_key.data(), plain_key.size());
  if (!value.empty()) std::memcpy(m + 4 + plain_key.size(), value.data(), value.size());
  const AssociatedData ad(cf, stored_key, schema);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(m, &written, m, plain_size, ad.data(), ad.size(), nullptr, o + 1,
                                             seal_key);
}

std::string SealWithKey(const uint8_t* seal_key, const uint8_t* nonce, std::string_view cf,
                        std::string_view stored_key, std::string_view plain_key, std::span<const uint8_t> value,
                        uint32_t schema = kSchemaVersion) {
  std::string out;
  SealInto(&out, seal_key, nonce, cf, stored_key, plain_key, value, schema);
  return out;
}

std::string Seal(const Subkeys& keys, const uint8_t* nonce, std::string_view cf, std::string_view stored_key,
                 std::string_view plain_key, std::span<const uint8_t> value) {
  return SealWithKey(keys.seal_key(), nonce, cf, stored_key, plain_key, value);
}

using Opened = internal::OpenedRecord;

Result<Opened> UnsealWithKey(const uint8_t* seal_key, std::string_view cf, std::string_view stored_key,
                             std::string_view sealed, uint32_t schema = kSchemaVersion) {
  // Every failure here is "tampered": a record we wrote always opens, so anything else was changed,
  // moved, truncated or sealed under another key. The message names the table only; keys may be names.
  auto tampered = [&] {
    return Error(StatusCode::kTampered, "record in " + std::string(cf) + " failed to open");
  };
  if (sealed.size() < 1 + kNonceSize + kTagSize + 4) return tampered();
  const auto* s = reinterpret_cast<const uint8_t*>(sealed.data());
  if (s[0] != kRecordFormat) return tampered();
  const AssociatedData ad(cf, stored_key, schema);
  SecretBytes plaintext(sealed.size() - 1 - kNonceSize - kTagSize);
  unsigned long long len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(plaintext.reveal_mutable().data(), &len, nullptr,
                                                 s + 1 + kNonceSize, sealed.size() - 1 - kNonceSize, ad.data(),
                                                 ad.size(), s + 1, seal_key) != 0) {
    return tampered();
  }
  auto p = plaintext.reveal();
  const uint32_t key_len = uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
  if (key_len > p.size() - 4) return tampered();
  Opened out;
  out.plain_key.assign(reinterpret_cast<const char*>(p.data()) + 4, key_len);
  out.value = SecretBytes(p.subspan(4 + key_len));
  return out;
}

Result<Opened> Unseal(const Subkeys& keys, std::string_view cf, std::string_view stored_key,
                      std::string_view sealed) {
  return UnsealWithKey(keys.seal_key(), cf, stored_key, sealed);
}

// H_k(table || position || part), domain-separated so equal names in different tables or positions give
// unrelated hashes.
void AppendPartHash(const Subkeys& keys, Table table, int position, std::string_view part, std::string* out) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, keys.hash_key(), 32, kKeyHashSize);
  const uint8_t domain[2] = {static_cast<uint8_t>(table), static_cast<uint8_t>(position)};
  crypto_generichash_update(&st, domain, sizeof domain);
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(part.data()), part.size());
  uint8_t h[kKeyHashSize];
  crypto_generichash_final(&st, h, sizeof h);
  sodium_memzero(&st, sizeof st);
  out->append(reinterpret_cast<const char*>(h), sizeof h);
}

// Part hashes computed recently, by table || position || part: a message's session key and conversation id
// are the previous message's, and each hash is two BLAKE2b compressions (the key block, then the part). The
// parts are names (and the last relay message id), so the keystore's lock listener wipes this with the record
// cache; bounded (cleared when full). Safe from any thread.
class PartHashCache {
 public:
  static constexpr size_t kMaxEntries = 256;

  void Append(const Subkeys& keys, Table table, int position, std::string_view part, std::string* out) {
    // A relay message id is looked up once (is it a duplicate?) and written once, in the commit right after:
    // one slot keeps the last one's hash. Caching them all would only push out the names.
    if (table == Table::kInboundDedup) return AppendDedupHash(keys, position, part, out);
    std::string id(2, '\0');
    id[0] = static_cast<char>(table);
    id[1] = static_cast<char>(position);
    id.append(part);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = entries_.find(id); it != entries_.end()) {
        out->append(reinterpret_cast<const char*>(it->second.data()), kKeyHashSize);
        return;
      }
    }
    const size_t at = out->size();
    AppendPartHash(keys, table, position, part, out);
    std::array<uint8_t, kKeyHashSize> h;
    std::memcpy(h.data(), out->data() + at, kKeyHashSize);
    std::lock_guard<std::mutex> lock(mu_);
    if (entries_.size() >= kMaxEntries) entries_.clear();
    entries_.insert_or_assign(std::move(id), h);
  }

  void Wipe() {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.clear();
    last_dedup_.reset();
  }

 private:
  void AppendDedupHash(const Subkeys& keys, int position, std::string_view part, std::string* out) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (last_dedup_ && last_dedup_->position == position && last_dedup_->part == part) {
        out->append(reinterpret_cast<const char*>(last_dedup_->hash.data()), kKeyHashSize);
        return;
      }
    }
    const size_t at = out->size();
    AppendPartHash(keys, Table::kInboundDedup, position, part, out);
    std::lock_guard<std::mutex> lock(mu_);
    // Assigned whole rather than emplace()d: clang 14 (the fuzz build) cannot default-construct a nested
    // struct with member initializers inside the class that declares it.
    last_dedup_ = DedupSlot{position, std::string(part), {}};
    std::memcpy(last_dedup_->hash.data(), out->data() + at, kKeyHashSize);
  }

  struct DedupSlot {
    int position = 0;
    std::string part;
    std::array<uint8_t, kKeyHashSize> hash;
  };

  std::mutex mu_;
  std::unordered_map<std::string, std::array<uint8_t, kKeyHashSize>> entries_;
  std::optional<DedupSlot> last_dedup_;
};

// The stored key into `*out` (its capacity reused: the commit's scratch).
Status StoredKeyInto(const Subkeys& keys, Table table, std::string_view key, PartHashCache* cache,
                     std::string* out) {
  const TableSpec& spec = kTables[static_cast<int>(table)];
  out->clear();
  if (!spec.hashed) {
    out->append(key);
    return Status::Ok();
  }
  auto append = [&](int position, std::string_view part, std::string* o) {
    if (cache != nullptr) return cache->Append(keys, table, position, part, o);
    AppendPartHash(keys, table, position, part, o);
  };
  size_t start = 0;
  for (int i = 0; i < spec.separators; ++i) {
    const size_t nul = key.find('\0', start);
    if (nul == std::string_view::npos) {
      return Status(StatusCode::kInvalidArgument, "key in " + std::string(spec.cf) + " lacks its parts");
    }
    append(i, key.substr(start, nul - start), out);
    start = nul + 1;
  }
  if (spec.plain_tail) {
    out->append(key.substr(start));
  } else {
    append(spec.separators, key.substr(start), out);
  }
  return Status::Ok();
}

Result<std::string> StoredKey(const Subkeys& keys, Table table, std::string_view key,
                              PartHashCache* cache = nullptr) {
  std::string out;
  CW_RETURN_IF_ERROR(StoredKeyInto(keys, table, key, cache, &out));
  return out;
}

// The stored-key prefix under which every key starting with `prefix` lies: the hashes of the prefix's whole
// parts. What follows the last separator of the prefix is checked on the opened plain keys.
std::string StoredPrefix(const Subkeys& keys, Table table, std::string_view prefix) {
  const TableSpec& spec = kTables[static_cast<int>(table)];
  if (!spec.hashed) return std::string(prefix);
  std::string out;
  size_t start = 0;
  for (int i = 0; i < spec.separators; ++i) {
    const size_t nul = prefix.find('\0', start);
    if (nul == std::string_view::npos) return out;
    AppendPartHash(keys, table, i, prefix.substr(start, nul - start), &out);
    start = nul + 1;
  }
  // Every hashed part is whole: a plain tail's beginning narrows the range further.
  if (spec.plain_tail) out.append(prefix.substr(start));
  return out;
}

// With a plain tail and a prefix holding every hashed part whole, the hashed parts of each listed key are
// the prefix's own: the length of that part of the prefix, else npos.
size_t WholeHashedPrefixLength(const TableSpec& spec, std::string_view prefix) {
  if (!spec.plain_tail) return std::string_view::npos;
  size_t start = 0;
  for (int i = 0; i < spec.separators; ++i) {
    const size_t nul = prefix.find('\0', start);
    if (nul == std::string_view::npos) return std::string_view::npos;
    start = nul + 1;
  }
  return start;
}

bool ValidTable(Table table) { return static_cast<int>(table) < kTableCount; }  // the enum is unsigned

// Records opened recently, by table and plain key: the engine reads a record several times per message
// (libsignal asks whether a session exists, then loads it; the transcript reads its conversation record for
// every message), and each read would otherwise hash the key, read RocksDB and open the record again. A
// Get that opens a record adds it; a Commit writes through to entries already present (the new session
// record after a message) and drops them when it cannot be sure of the order.
//
// It holds plaintext records (session state, conversation keys) on the heap in wiping buffers, like the
// engine's own working state; the keystore's lock listener wipes it with the subkeys, and it is bounded
// (kMaxEntries records, none over kMaxValueSize).
//
// Coherence with concurrent callers: a Get that found nothing adds what it read only if no commit ran or
// finished while it read; a Commit writes through only if no other commit overlapped it (RocksDB decides
// the order of overlapping writes, and we cannot see it), else it drops the entries it touched. Commits
// never add entries, so one finishing after a Lock leaves nothing behind.
class RecordCache {
 public:
  static constexpr size_t kMaxEntries = 64;
  static constexpr size_t kMaxValueSize = 16 * 1024;

  std::optional<SecretBytes> Find(Table table, std::string_view key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(CacheKey(table, key));
    if (it == entries_.end()) return std::nullopt;
    it->second.last_use = ++tick_;
    return it->second.value.Clone();
  }

  // Taken before a Get reads RocksDB, handed to Add after.
  struct ReadTicket {
    uint64_t commits;
    bool quiet;
  };
  ReadTicket BeginRead() {
    std::lock_guard<std::mutex> lock(mu_);
    return ReadTicket{commits_finished_, active_commits_ == 0};
  }
  void Add(const ReadTicket& ticket, Table table, std::string_view key, const SecretBytes& value) {
    if (value.size() > kMaxValueSize) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (!ticket.quiet || active_commits_ != 0 || commits_finished_ != ticket.commits) return;
    if (entries_.size() >= kMaxEntries) {
      auto oldest = entries_.begin();
      for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (it->second.last_use < oldest->second.last_use) oldest = it;
      }
      entries_.erase(oldest);
    }
    entries_.insert_or_assign(CacheKey(table, key), Entry{value.Clone(), ++tick_});
  }

  // Around a Commit's write: BeginCommit before it, EndCommit after, with the batch and whether it was
  // written. EndCommit may take the values out of the batch.
  uint64_t BeginCommit() {
    std::lock_guard<std::mutex> lock(mu_);
    ++active_commits_;
    return commits_finished_;
  }
  void EndCommit(uint64_t begun_after, session::WriteBatch& batch, bool written) {
    std::lock_guard<std::mutex> lock(mu_);
    const bool alone = active_commits_ == 1 && commits_finished_ == begun_after;
    --active_commits_;
    ++commits_finished_;
    if (entries_.empty()) return;
    for (auto& w : batch.writes) {
      auto it = entries_.find(CacheKey(w.table, w.key));
      if (it == entries_.end()) continue;
      if (written && alone && w.value && w.value->size() <= kMaxValueSize) {
        it->second.value = std::move(*w.value);
        it->second.last_use = ++tick_;
      } else {
        entries_.erase(it);
      }
    }
  }

  void Wipe() {
    std::lock_guard<std::mutex> lock(mu_);
    entries_.clear();  // SecretBytes wipe as they go
  }

 private:
  struct Entry {
    SecretBytes value;
    uint64_t last_use;
  };
  static std::string CacheKey(Table table, std::string_view key) {
    std::string k(1, static_cast<char>(table));
    k.append(key);
    return k;
  }

  std::mutex mu_;
  std::map<std::string, Entry, std::less<>> entries_;
  uint64_t tick_ = 0;
  uint64_t commits_finished_ = 0;
  int active_commits_ = 0;
};

// The store digest (schema 2). For every table, the sum modulo 2^256 of E(record) over the table's records,
// where E(record) = BLAKE2b-256 under the digest subkey of (table || length of the stored key || stored key ||
// the record's format byte and nonce). Every write to RocksDB (a synced commit; under group commit, a
// write-out of the overlay) subtracts the elements of the records it replaces or deletes, adds those of the
// records it writes, and puts the new sums with a commit counter, sealed, in the same RocksDB batch, so sums
// and records never disagree after a crash. Opening the store recomputes each
// table's sum from the keys and nonces on disk (it opens no record). A record rolled back to an older version
// of itself, deleted, brought back after its deletion, copied, moved or swapped changes its table's sum; a
// damaged record whose nonce survived fails only its own AEAD check.
//
// Plain addition is enough because the element hash is keyed: this is MSet-Add-Hash of Clarke et al.,
// "Incremental Multiset Hash Functions and Their Application to Memory Integrity Checking" (2003), secure
// when the hash is a secret PRF. Without the master key nobody can choose old records whose elements sum to
// the expected value, and the sums themselves are sealed.
constexpr size_t kElementSize = 32;
constexpr size_t kElementInputSize = 1 + kNonceSize;  // the sealed record's format byte and nonce

class TableSum {
 public:
  void Add(const uint8_t* e) {
    unsigned __int128 carry = 0;
    for (int i = 0; i < 4; ++i) {
      carry += static_cast<unsigned __int128>(w_[i]) + Limb(e, i);
      w_[i] = static_cast<uint64_t>(carry);
      carry >>= 64;
    }
  }
  void Sub(const uint8_t* e) {
    uint64_t borrow = 0;
    for (int i = 0; i < 4; ++i) {
      const uint64_t x = Limb(e, i);
      const uint64_t d = w_[i] - x - borrow;
      borrow = (w_[i] < x || (w_[i] == x && borrow)) ? 1 : 0;
      w_[i] = d;
    }
  }
  void Store(uint8_t* out) const {
    for (int i = 0; i < 4; ++i) {
      for (int b = 0; b < 8; ++b) out[8 * i + b] = static_cast<uint8_t>(w_[i] >> (8 * b));
    }
  }
  void Load(const uint8_t* in) {
    for (int i = 0; i < 4; ++i) w_[i] = Limb(in, i);
  }
  // The sums are not secret (an attacker never sees them, and they reveal nothing of the records' contents),
  // so an ordinary comparison serves.
  friend bool operator==(const TableSum&, const TableSum&) = default;

 private:
  static uint64_t Limb(const uint8_t* e, int i) {
    uint64_t v = 0;
    for (int b = 7; b >= 0; --b) v = v << 8 | e[8 * i + b];
    return v;
  }
  std::array<uint64_t, 4> w_{};
};

// E(record) from the stored key and the sealed bytes as stored. A record too short to hold a nonce still
// gets a well-defined element from what it has.
void Element(const Subkeys& keys, int table, std::string_view stored_key, std::string_view sealed, uint8_t* out) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, keys.digest_key(), 32, kElementSize);
  uint8_t head[5] = {static_cast<uint8_t>(table)};
  PutBigEndian32(head + 1, static_cast<uint32_t>(stored_key.size()));
  crypto_generichash_update(&st, head, sizeof head);
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(stored_key.data()), stored_key.size());
  const std::string_view id = sealed.substr(0, kElementInputSize);
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(id.data()), id.size());
  crypto_generichash_final(&st, out, kElementSize);
  sodium_memzero(&st, sizeof st);
}

// Which (table, stored key) pairs may hold a record: a Bloom filter over every key on disk, filled from the
// scan that verifies the digest when the store opens and by every put since. Every write to RocksDB looks up
// the record each put or deletion replaces (the digest subtracts it), and a message's transcript row, outbox
// entry and dedup key are new keys: the filter tells those apart as absent without a RocksDB read (Get, too,
// for a dedup key not yet seen; under group commit the commit asks it, and the overlay remembers the answer
// for the write-out). It only ever has false positives (deleted keys stay in it; a lookup it cannot
// rule out goes to RocksDB as before), and only this store writes the database while it is open (RocksDB's
// lock file keeps other processes out), so "not in the filter" means "not on disk".
//
// Blocked layout: each key sets 6 bits in one 64-byte block (one cache line per lookup); 10 bits per key
// keeps false positives near 1%. A layer that has taken its capacity is followed by one twice as large
// (Almeida et al., "Scalable Bloom Filters", 2007), so it never needs the keys again to grow; lookups test
// every layer. Not secret: the bits come from stored keys, which are in the files.
//
// Thread rules: Add from one thread at a time (commits hold commit_mu_; Open is alone); MayContain from any.
// A key added before a Commit's write is visible to every Get that starts after the Commit returned.
class KeyFilter {
 public:
  // A first layer for about `capacity` keys.
  void Reset(size_t capacity) {
    for (auto& l : layers_) l.reset();
    count_.store(0, std::memory_order_relaxed);
    AddLayer(std::max<size_t>(capacity, kMinCapacity));
  }

  void Add(int table, std::string_view stored_key) {
    int n = count_.load(std::memory_order_relaxed);
    if (n == 0) return;  // Reset not called: MayContain answers "maybe" for everything
    Layer* layer = layers_[n - 1].get();
    if (layer->added >= layer->capacity && n < kMaxLayers) layer = AddLayer(layer->capacity * 2);
    ++layer->added;
    const uint64_t h = Hash(table, stored_key);
    const uint64_t bits = Mix(h + kGolden);
    std::atomic<uint64_t>* block = layer->Block(h);
    for (int i = 0; i < kProbes; ++i) {
      const unsigned bit = (bits >> (9 * i)) & 511;
      block[bit >> 6].fetch_or(uint64_t{1} << (bit & 63), std::memory_order_relaxed);
    }
  }

  bool MayContain(int table, std::string_view stored_key) const {
    const int n = count_.load(std::memory_order_acquire);
    if (n == 0) return true;
    const uint64_t h = Hash(table, stored_key);
    const uint64_t bits = Mix(h + kGolden);
    for (int l = 0; l < n; ++l) {
      const std::atomic<uint64_t>* block = layers_[l]->Block(h);
      bool all = true;
      for (int i = 0; i < kProbes && all; ++i) {
        const unsigned bit = (bits >> (9 * i)) & 511;
        all = (block[bit >> 6].load(std::memory_order_relaxed) >> (bit & 63)) & 1;
      }
      if (all) return true;
    }
    return false;
  }

 private:
  static constexpr size_t kMinCapacity = 1 << 14;
  static constexpr size_t kBitsPerKey = 10;
  static constexpr int kProbes = 6;  // 9 bits each select a bit of the 512-bit block
  static constexpr int kMaxLayers = 40;

  struct Layer {
    size_t capacity;
    size_t added = 0;
    size_t blocks;
    std::unique_ptr<std::atomic<uint64_t>[]> words;  // blocks * 8, zeroed
    std::atomic<uint64_t>* Block(uint64_t h) const {
      // The high half of the key's hash picks the block; a second mix of it picks the bits in the block.
      return words.get() + 8 * static_cast<size_t>(((h >> 32) * blocks) >> 32);
    }
  };

  // Stored keys of hashed tables are already uniform; ids and fixed names of the plain tables are not, so
  // every key is mixed (splitmix64's finalizer over std::hash). Collisions only cost a RocksDB read.
  static constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;
  static uint64_t Mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  static uint64_t Hash(int table, std::string_view key) {
    return Mix(std::hash<std::string_view>{}(key) + kGolden * static_cast<uint64_t>(table + 1));
  }

  Layer* AddLayer(size_t capacity) {
    const int n = count_.load(std::memory_order_relaxed);
    auto layer = std::make_unique<Layer>();
    layer->capacity = capacity;
    layer->blocks = std::min<size_t>((capacity * kBitsPerKey + 511) / 512, size_t{1} << 32);
    layer->words = std::make_unique<std::atomic<uint64_t>[]>(layer->blocks * 8);  // value-initialized: 0
    layers_[n] = std::move(layer);
    count_.store(n + 1, std::memory_order_release);
    return layers_[n].get();
  }

  std::unique_ptr<Layer> layers_[kMaxLayers];
  std::atomic<int> count_{0};
};

// What is known of the record on disk under a key: whether there is one, and its digest element.
struct Identity {
  bool present = false;
  std::array<uint8_t, kElementSize> element{};
};

// A put the write-behind overlay holds (sealed_store.h, "Write-behind"): the record's format byte and nonce,
// drawn at commit (its digest element comes from them when it is written out), whether the key had no record
// on disk when the overlay took it (the write-out then has no record to subtract), and the
// plaintext it will seal, laid out as inside a sealed record: BE32 length of the plain key || plain key ||
// value, in a wiping buffer. It is sealed once, with that nonce, when the overlay is written out; a put
// replaced before then is wiped unsealed, and its nonce is never used.
struct Pending {
  std::array<uint8_t, kElementInputSize> head;  // format || nonce
  bool absent_on_disk = false;
  SecretBytes plain;

  std::string_view head_view() const { return {reinterpret_cast<const char*>(head.data()), head.size()}; }
  std::string_view plain_key() const {
    auto p = plain.reveal();
    return {reinterpret_cast<const char*>(p.data()) + 4, ReadKeyLength()};
  }
  std::span<const uint8_t> value() const { return plain.reveal().subspan(4 + ReadKeyLength()); }

 private:
  size_t ReadKeyLength() const {
    auto p = plain.reveal();
    return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
  }
};

// The sealed record of a pending put, into `*out` (its capacity reused).
void SealPendingInto(std::string* out, const uint8_t* seal_key, std::string_view cf, std::string_view stored_key,
                     const Pending& pending) {
  const auto plain = pending.plain.reveal();
  out->resize(kElementInputSize + plain.size() + kTagSize);
  auto* o = reinterpret_cast<uint8_t*>(out->data());
  std::memcpy(o, pending.head.data(), kElementInputSize);
  uint8_t* m = o + kElementInputSize;
  std::memcpy(m, plain.data(), plain.size());
  const AssociatedData ad(cf, stored_key);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(m, &written, m, plain.size(), ad.data(), ad.size(), nullptr, o + 1,
                                             seal_key);
}

// The digest record's value: BE64 commit count || BE32 number of tables || one 32-byte sum per table.
constexpr size_t kDigestValueSize = 12 + kTableCount * kElementSize;
void DigestValueInto(std::string* v, uint64_t generation, const TableSum* sums) {
  v->resize(kDigestValueSize);
  auto* p = reinterpret_cast<uint8_t*>(v->data());
  PutBigEndian32(p, static_cast<uint32_t>(generation >> 32));
  PutBigEndian32(p + 4, static_cast<uint32_t>(generation));
  PutBigEndian32(p + 8, kTableCount);
  for (int t = 0; t < kTableCount; ++t) sums[t].Store(p + 12 + t * kElementSize);
}
std::string DigestValue(uint64_t generation, const TableSum* sums) {
  std::string v;
  DigestValueInto(&v, generation, sums);
  return v;
}

uint32_t ReadBigEndian32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

}  // namespace

class SealedStore::Impl {
 public:
  Impl(const Keystore* keystore, SealedStoreOptions options, rocksdb::Env* env)
      : keystore_(keystore),
        random_(options.random ? options.random : &SystemRandom::Default()),
        env_(env ? env : rocksdb::Env::Default()),
        subkeys_(keystore),
        lock_listener_(keystore->AddLockListener([this] {
          // Write-behind first: the overlay is sealed with the subkeys still cached (the keystore's own key
          // is gone already), written and wiped, and the subkeys wiped, all under commit_mu_, so no commit
          // adds to it after; the sync runs at the end. Then the subkeys (if not yet): that waits for every
          // operation holding them, and no new one can start, so nothing adds to the record cache after it
          // is wiped.
          const bool write_behind = !write_options_.sync && opened_.load();
          uint64_t target = 0;
          Status written = Status::Ok();
          if (write_behind) {
            std::lock_guard<std::mutex> write_lock(write_mu_);
            std::lock_guard<std::mutex> commit_lock(commit_mu_);
            target = generation_;
            written = WriteOut(nullptr);
            if (!written.ok()) LoseOverlayLocked(written);
            subkeys_.Wipe();
          }
          subkeys_.Wipe();
          records_.Wipe();
          part_hashes_.Wipe();
          if (write_behind) {
            if (written.ok()) written = FromRocks(db_->FlushWAL(/*sync=*/true), "sync log");
            MarkSynced(target, written);
          }
        })) {
    write_options_.sync = options.sync;
    overlay_limit_bytes_ = options.overlay_limit_bytes;
  }

  // Open succeeded: the lock listener may write the overlay from now on.
  void MarkOpened() { opened_.store(true); }

  ~Impl() {
    // First: after this returns no Lock() can be inside the listener, and none will call it.
    keystore_->RemoveLockListener(lock_listener_);
    StopSyncer();
    // Under group commit the overlay and the log may sit in memory (manual_wal_flush): a clean close keeps
    // them. The overlay is sealed with the subkeys, so before they are wiped.
    if (db_ != nullptr && !write_options_.sync) {
      {
        std::lock_guard<std::mutex> write_lock(write_mu_);
        std::lock_guard<std::mutex> commit_lock(commit_mu_);
        (void)WriteOut(nullptr);
        LoseOverlayLocked(Status(StatusCode::kAborted, "the store closed"));  // wipes what could not be written
      }
      db_->FlushWAL(/*sync=*/true).PermitUncheckedError();
    }
    subkeys_.Wipe();
    records_.Wipe();
    part_hashes_.Wipe();
    if (db_ == nullptr) return;
    // Column family handles go before the database.
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    handles_.clear();
    db_->Close().PermitUncheckedError();
    db_.reset();
  }

  Status Open(const std::string& path, bool create_if_missing) {
    CW_ASSIGN_OR_RETURN(SubkeyCache::Lease lease, subkeys_.Acquire());
    const Subkeys keys = lease.keys();

    rocksdb::DBOptions db_options;
    db_options.env = env_;
    db_options.keep_log_file_num = 2;
    // Group commit: the write-ahead log stays in RocksDB's buffer until SyncNow writes and syncs it, one
    // write system call per group instead of one per commit. A commit that was never synced may then be lost
    // to a crash as well as to a power cut; the contract (sealed_store.h) is that nothing relies on a commit
    // before it is synced.
    db_options.manual_wal_flush = !write_options_.sync;


    const bool fresh = !env_->FileExists(path + "/CURRENT").ok();
    std::vector<std::string> names;
    if (fresh) {
      // The default column family only: the others are created below in one CreateColumnFamilies call.
      // DB::Open's create_missing_column_families creates them one at a time, writing and re-parsing the
      // OPTIONS file for each (twelve times; most of the cost of creating a store).
      if (!create_if_missing) return Status(StatusCode::kNotFound, "no store at that path");
      db_options.create_if_missing = true;
      names.push_back(rocksdb::kDefaultColumnFamilyName);
    } else {
      // Open exactly the column families that exist (a newer schema may have more), read the version, and
      // only then create anything.
      CW_RETURN_IF_ERROR(
          FromRocks(rocksdb::DB::ListColumnFamilies(db_options, path, &names), "list column families"));
    }
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& n : names) descriptors.emplace_back(n, CfOptions());
    rocksdb::DB* raw = nullptr;
    CW_RETURN_IF_ERROR(
        FromRocks(rocksdb::DB::Open(db_options, path, descriptors, &handles_, &raw), "open store"));
    db_.reset(raw);
    for (auto* h : handles_) ByName(h->GetName(), h);

    if (fresh) {
      present_.Reset(0);
      std::vector<std::string> missing{std::string(kMetadataCf)};
      for (const auto& t : kTables) missing.emplace_back(t.cf);
      CW_RETURN_IF_ERROR(CreateColumnFamilies(missing));
      rocksdb::WriteBatch wb;
      CW_RETURN_IF_ERROR(
          FromRocks(wb.Put(metadata_, kSchemaVersionKey, BigEndian32(kSchemaVersion)), "batch"));
      uint8_t nonce[2 * kNonceSize];
      random_->Fill(nonce, sizeof nonce);
      CW_RETURN_IF_ERROR(FromRocks(
          wb.Put(metadata_, kKeyCheckKey,
                 Seal(keys, nonce, kMetadataCf, kKeyCheckKey, kKeyCheckKey, AsBytes(kKeyCheckValue))),
          "batch"));
      CW_RETURN_IF_ERROR(FromRocks(wb.Put(metadata_, kDigestKey,
                                          Seal(keys, nonce + kNonceSize, kMetadataCf, kDigestKey, kDigestKey,
                                               AsBytes(DigestValue(0, sums_)))),
                                   "batch"));
      rocksdb::WriteOptions sync;
      sync.sync = true;
      return FromRocks(db_->Write(sync, &wb), "write store metadata");
    }

    if (metadata_ == nullptr) return Status(StatusCode::kMalformed, "not a Cipherward store");
    std::string version;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), metadata_, kSchemaVersionKey, &version);
    if (s.IsNotFound() || (s.ok() && version.size() != 4)) {
      return Status(StatusCode::kMalformed, "store has no schema version");
    }
    CW_RETURN_IF_ERROR(FromRocks(s, "read schema version"));
    const auto* v = reinterpret_cast<const uint8_t*>(version.data());
    const uint32_t stored_version = uint32_t{v[0]} << 24 | uint32_t{v[1]} << 16 | uint32_t{v[2]} << 8 | v[3];
    if (stored_version > kSchemaVersion) {
      return Status(StatusCode::kUnsupportedVersion,
                    "store schema version " + std::to_string(stored_version) +
                        " is newer than this build's " + std::to_string(kSchemaVersion));
    }
    if (stored_version < 1) return Status(StatusCode::kMalformed, "store schema version 0");

    std::string check;
    s = db_->Get(rocksdb::ReadOptions(), metadata_, kKeyCheckKey, &check);
    if (s.IsNotFound()) return Status(StatusCode::kMalformed, "store has no key check");
    CW_RETURN_IF_ERROR(FromRocks(s, "read key check"));
    // Records carry the schema version they were sealed under in their associated data.
    auto opened = UnsealWithKey(keys.seal_key(), kMetadataCf, kKeyCheckKey, check, stored_version);
    if (!opened || opened->plain_key != kKeyCheckKey ||
        !ConstantTimeEquals(opened->value.reveal(), AsBytes(kKeyCheckValue))) {
      return Status(StatusCode::kTampered,
                    "store was sealed under another master key, or its key check was changed");
    }

    std::vector<std::string> missing;
    for (int i = 0; i < kTableCount; ++i) {
      if (tables_[i] == nullptr) missing.emplace_back(kTables[i].cf);
    }
    CW_RETURN_IF_ERROR(CreateColumnFamilies(missing));
    // Sized for twice the records on disk (RocksDB's estimate), so a store that doubles before it is opened
    // again still has one layer to test.
    uint64_t estimate = 0;
    for (int t = 0; t < kTableCount; ++t) {
      uint64_t n = 0;
      if (db_->GetIntProperty(tables_[t], rocksdb::DB::Properties::kEstimateNumKeys, &n)) estimate += n;
    }
    present_.Reset(static_cast<size_t>(std::min<uint64_t>(estimate, uint64_t{1} << 30)) * 2);
    if (stored_version == 1) return MigrateFromVersion1(keys);
    return LoadAndVerifyDigest(keys);
  }

  // Schema 1 had no store digest, and its records were sealed with version 1 in their associated data.
  // Every record is opened and sealed again under version 2 with a fresh nonce, the digest is computed, and
  // all of it, with the new key check and version, is written in one synced batch: a crash leaves either the
  // old store or the new one. A version-1 record that does not open is carried over unchanged (it failed
  // before and fails after; nothing is dropped).
  Status MigrateFromVersion1(const Subkeys& keys) {
    rocksdb::WriteBatch wb;
    std::vector<uint8_t> nonce(kNonceSize);
    uint8_t e[kElementSize];
    for (int t = 0; t < kTableCount; ++t) {
      const std::string_view cf = kTables[t].cf;
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options_, tables_[t]));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        const std::string_view stored = it->key().ToStringView();
        present_.Add(t, stored);
        auto old = UnsealWithKey(keys.seal_key(), cf, stored, it->value().ToStringView(), /*schema=*/1);
        if (!old) {
          Element(keys, t, stored, it->value().ToStringView(), e);
          sums_[t].Add(e);
          continue;
        }
        random_->Fill(nonce.data(), nonce.size());
        const std::string sealed = Seal(keys, nonce.data(), cf, stored, old->plain_key, old->value.reveal());
        Element(keys, t, stored, sealed, e);
        sums_[t].Add(e);
        CW_RETURN_IF_ERROR(FromRocks(wb.Put(tables_[t], it->key(), sealed), "migrate"));
      }
      CW_RETURN_IF_ERROR(FromRocks(it->status(), "migrate"));
    }
    uint8_t meta_nonces[2 * kNonceSize];
    random_->Fill(meta_nonces, sizeof meta_nonces);
    CW_RETURN_IF_ERROR(FromRocks(
        wb.Put(metadata_, kKeyCheckKey,
               Seal(keys, meta_nonces, kMetadataCf, kKeyCheckKey, kKeyCheckKey, AsBytes(kKeyCheckValue))),
        "migrate"));
    CW_RETURN_IF_ERROR(FromRocks(wb.Put(metadata_, kDigestKey,
                                        Seal(keys, meta_nonces + kNonceSize, kMetadataCf, kDigestKey,
                                             kDigestKey, AsBytes(DigestValue(0, sums_)))),
                                 "migrate"));
    CW_RETURN_IF_ERROR(FromRocks(wb.Put(metadata_, kSchemaVersionKey, BigEndian32(kSchemaVersion)), "migrate"));
    rocksdb::WriteOptions sync;
    sync.sync = true;
    return FromRocks(db_->Write(sync, &wb), "write migrated store");
  }

  // Reads the sealed digest and compares each table's sum with the records on disk. A table that differs
  // is refused from now on (Get, ListKeys and Commit fail with kTampered): some record in it is not the one
  // this store last wrote, and the sum cannot tell which, so none of them can be trusted to be current. The
  // other tables serve as before, and nothing is rewritten or deleted.
  Status LoadAndVerifyDigest(const Subkeys& keys) {
    std::string sealed;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), metadata_, kDigestKey, &sealed);
    if (s.IsNotFound()) return Status(StatusCode::kTampered, "the store's digest is missing");
    CW_RETURN_IF_ERROR(FromRocks(s, "read digest"));
    auto opened = Unseal(keys, kMetadataCf, kDigestKey, sealed);
    if (!opened || opened->plain_key != kDigestKey) {
      return Status(StatusCode::kTampered, "the store's digest failed to open");
    }
    auto v = opened->value.reveal();
    if (v.size() < 12) return Status(StatusCode::kTampered, "the store's digest is truncated");
    const uint32_t tables = ReadBigEndian32(v.data() + 8);
    if (tables > static_cast<uint32_t>(kTableCount) || v.size() != 12 + tables * kElementSize) {
      return Status(StatusCode::kTampered, "the store's digest has the wrong size");
    }
    generation_ = uint64_t{ReadBigEndian32(v.data())} << 32 | ReadBigEndian32(v.data() + 4);
    // Tables added after the digest was written were empty then: their sums stay zero.
    for (uint32_t t = 0; t < tables; ++t) sums_[t].Load(v.data() + 12 + t * kElementSize);
    TableSum on_disk[kTableCount];
    CW_RETURN_IF_ERROR(SumTables(keys, on_disk, &present_));
    for (int t = 0; t < kTableCount; ++t) flagged_[t] = !(on_disk[t] == sums_[t]);
    // Whatever RocksDB recovered at open is in synced files now (recovery flushes it).
    synced_through_ = generation_;
    return Status::Ok();
  }

  // With `fill`, also adds every key to the filter (at open).
  Status SumTables(const Subkeys& keys, TableSum* out, KeyFilter* fill = nullptr) {
    uint8_t e[kElementSize];
    for (int t = 0; t < kTableCount; ++t) {
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options_, tables_[t]));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        Element(keys, t, it->key().ToStringView(), it->value().ToStringView(), e);
        out[t].Add(e);
        if (fill != nullptr) fill->Add(t, it->key().ToStringView());
      }
      CW_RETURN_IF_ERROR(FromRocks(it->status(), "verify digest"));
    }
    return Status::Ok();
  }

  std::vector<Table> TamperedTables() {
    std::vector<Table> out;
    for (int t = 0; t < kTableCount; ++t) {
      if (flagged_[t]) out.push_back(static_cast<Table>(t));
    }
    return out;
  }

  Status AcceptCurrentState() {
    std::lock_guard<std::mutex> write_lock(write_mu_);
    std::lock_guard<std::mutex> commit_lock(commit_mu_);
    CW_RETURN_IF_ERROR(WriteOut(nullptr));  // the sums are computed from what RocksDB holds
    CW_ASSIGN_OR_RETURN(SubkeyCache::Lease lease, subkeys_.Acquire());
    const Subkeys keys = lease.keys();
    TableSum sums[kTableCount];
    CW_RETURN_IF_ERROR(SumTables(keys, sums));
    uint8_t nonce[kNonceSize];
    random_->Fill(nonce, sizeof nonce);
    const uint64_t next = generation_ + 1;
    rocksdb::WriteBatch wb;
    CW_RETURN_IF_ERROR(FromRocks(
        wb.Put(metadata_, kDigestKey,
               Seal(keys, nonce, kMetadataCf, kDigestKey, kDigestKey, AsBytes(DigestValue(next, sums)))),
        "batch"));
    rocksdb::WriteOptions sync;
    sync.sync = true;
    CW_RETURN_IF_ERROR(FromRocks(db_->Write(sync, &wb), "write digest"));
    for (int t = 0; t < kTableCount; ++t) {
      sums_[t] = sums[t];
      flagged_[t] = false;
    }
    identities_.clear();
    generation_ = next;
    MarkSynced(next, Status::Ok());
    return Status::Ok();
  }

  Status Refused(int table) const {
    return Status(StatusCode::kTampered, "records in " + std::string(kTables[table].cf) +
                                             " were rolled back, deleted or replaced outside the store");
  }

  static rocksdb::ColumnFamilyOptions CfOptions() {
    rocksdb::ColumnFamilyOptions options;
    // Sealed values are random-looking: compression would only spend CPU.
    options.compression = rocksdb::kNoCompression;
    // Bloom filters over whole keys in every table file answer most lookups of keys that are not there
    // (the few the store's own key filter cannot rule out). The memtables go without one: the key filter
    // answers the lookups of new keys before RocksDB is asked, and a memtable's filter is allocated and
    // zeroed with it (1.3 MB per table at the default write buffer size), and each insert dirtied a random
    // line of it.
    rocksdb::BlockBasedTableOptions table_options;
    table_options.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table_options));
    return options;
  }

  Status CreateColumnFamilies(const std::vector<std::string>& names) {
    if (names.empty()) return Status::Ok();
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& n : names) descriptors.emplace_back(n, CfOptions());
    std::vector<rocksdb::ColumnFamilyHandle*> created;
    rocksdb::Status s = db_->CreateColumnFamilies(descriptors, &created);
    // Handles of the ones created before a failure are ours to destroy too.
    for (auto* h : created) {
      handles_.push_back(h);
      ByName(h->GetName(), h);
    }
    return FromRocks(s, "create column families");
  }

  Result<std::optional<SecretBytes>> Get(Table table, std::string_view key) {
    if (!ValidTable(table)) return Error(StatusCode::kInvalidArgument, "unknown table");
    if (flagged_[static_cast<int>(table)]) return Error(Refused(static_cast<int>(table)));
    CW_ASSIGN_OR_RETURN(SubkeyCache::Lease lease, subkeys_.Acquire());
    if (auto cached = records_.Find(table, key)) return std::optional<SecretBytes>(std::move(*cached));
    const Subkeys keys = lease.keys();
    CW_ASSIGN_OR_RETURN(std::string stored, StoredKey(keys, table, key, &part_hashes_));
    const std::string_view cf = kTables[static_cast<int>(table)].cf;
    if (!present_.MayContain(static_cast<int>(table), stored)) return std::optional<SecretBytes>();
    const RecordCache::ReadTicket ticket = records_.BeginRead();
    // The overlay first: it holds the newest unwritten value or deletion. A write-out puts its records in
    // RocksDB before it empties the overlay, so a key missing here is in RocksDB if anywhere.
    // What it finds there enters the record cache like what it reads from RocksDB: a record rewritten by
    // every message (a session) is otherwise always in the overlay, and each read would hash its key again.
    if (!write_options_.sync) {
      std::optional<SecretBytes> unwritten;
      bool found = false;
      {
        std::lock_guard<std::mutex> lock(overlay_mu_);
        for (const auto* m : {&overlay_[static_cast<int>(table)], &writing_[static_cast<int>(table)]}) {
          if (auto it = m->find(stored); it != m->end()) {
            found = true;
            if (it->second) unwritten.emplace(it->second->value());
            break;
          }
        }
      }
      if (found) {
        if (unwritten) records_.Add(ticket, table, key, *unwritten);
        return unwritten;
      }
    }
    rocksdb::PinnableSlice sealed;
    rocksdb::Status s = db_->Get(read_options_, tables_[static_cast<int>(table)], stored, &sealed);
    if (s.IsNotFound()) return std::optional<SecretBytes>();
    CW_RETURN_IF_ERROR(FromRocks(s, "read"));
    CW_ASSIGN_OR_RETURN(Opened opened, Unseal(keys, cf, stored, sealed.ToStringView()));
    // The associated data already binds the stored key; this also catches a hash collision.
    if (opened.plain_key != key)
      return Error(StatusCode::kTampered, "record in " + std::string(cf) + " is for another key");
    records_.Add(ticket, table, key, opened.value);
    return std::optional<SecretBytes>(std::move(opened.value));
  }

  Result<std::vector<std::string>> ListKeys(Table table, std::string_view prefix) {
    if (!ValidTable(table)) return Error(StatusCode::kInvalidArgument, "unknown table");
    if (flagged_[static_cast<int>(table)]) return Error(Refused(static_cast<int>(table)));
    CW_ASSIGN_OR_RETURN(SubkeyCache::Lease lease, subkeys_.Acquire());
    const Subkeys keys = lease.keys();
    const TableSpec& spec = kTables[static_cast<int>(table)];
    const std::string stored_prefix = StoredPrefix(keys, table, prefix);
    // A conversation's transcript keys: its hashes are the prefix's, its plain tails are in the stored keys,
    // and they come in byte order. Nothing needs opening; a record that was moved here still fails its Get.
    const size_t hashed_len = WholeHashedPrefixLength(spec, prefix);
    const size_t stored_hashed_len = static_cast<size_t>(spec.separators) * kKeyHashSize;
    std::vector<std::string> out;
    // `plain_key`: an overlay entry's, known without opening anything.
    auto emit = [&](std::string_view stored, std::string_view sealed, const std::string* plain_key) -> Status {
      if (!spec.hashed) {
        out.emplace_back(stored);
        return Status::Ok();
      }
      if (hashed_len != std::string_view::npos) {
        if (stored.size() < stored_hashed_len) {
          return Status(StatusCode::kTampered, "key in " + std::string(spec.cf) + " is too short");
        }
        std::string plain(prefix.substr(0, hashed_len));
        plain.append(stored.substr(stored_hashed_len));
        out.push_back(std::move(plain));
        return Status::Ok();
      }
      if (plain_key != nullptr) {
        if (plain_key->starts_with(prefix)) out.push_back(*plain_key);
        return Status::Ok();
      }
      CW_ASSIGN_OR_RETURN(Opened opened, Unseal(keys, spec.cf, stored, sealed));
      if (opened.plain_key.starts_with(prefix)) out.push_back(std::move(opened.plain_key));
      return Status::Ok();
    };
    // The overlay's entries in the range, copied before the iterator is made: an entry a write-out moves to
    // RocksDB meanwhile is then in the iterator, in the copy, or in both (the copy wins; it is the same).
    std::vector<std::pair<std::string, std::optional<std::string>>> unwritten;  // stored key, plain key
    if (!write_options_.sync) {
      std::map<std::string_view, const std::optional<Pending>*> range;  // overlay_ over writing_
      std::lock_guard<std::mutex> lock(overlay_mu_);
      for (const auto* m : {&overlay_[static_cast<int>(table)], &writing_[static_cast<int>(table)]}) {
        for (auto o = m->lower_bound(stored_prefix); o != m->end() && o->first.starts_with(stored_prefix); ++o) {
          range.try_emplace(o->first, &o->second);
        }
      }
      for (const auto& [stored, pending] : range) {
        unwritten.emplace_back(std::string(stored), std::nullopt);
        if (*pending) unwritten.back().second.emplace((*pending)->plain_key());
      }
    }
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(read_options_, tables_[static_cast<int>(table)]));
    // Both in byte order of the stored keys: merge them, the overlay's value or deletion replacing RocksDB's.
    size_t next_unwritten = 0;
    it->Seek(stored_prefix);
    for (;;) {
      const bool in_db = it->Valid() && it->key().starts_with(stored_prefix);
      const bool in_overlay = next_unwritten < unwritten.size();
      if (!in_db && !in_overlay) break;
      const int order = !in_db ? 1 : !in_overlay ? -1 : it->key().compare(unwritten[next_unwritten].first);
      if (order < 0) {
        CW_RETURN_IF_ERROR(emit(it->key().ToStringView(), it->value().ToStringView(), nullptr));
        it->Next();
        continue;
      }
      const auto& [stored, plain_key] = unwritten[next_unwritten++];
      if (plain_key) CW_RETURN_IF_ERROR(emit(stored, {}, &*plain_key));
      if (order == 0) it->Next();
    }
    CW_RETURN_IF_ERROR(FromRocks(it->status(), "list"));
    // Hashed keys come back in hash order; the interface promises byte order of the plain keys.
    if (spec.hashed && hashed_len == std::string_view::npos) std::sort(out.begin(), out.end());
    return out;
  }

  Status Commit(session::WriteBatch batch) {
    if (batch.writes.empty()) return Status::Ok();
    size_t puts = 0;
    for (const auto& w : batch.writes) {
      if (!ValidTable(w.table)) return Status(StatusCode::kInvalidArgument, "unknown table");
      // A refused table takes no writes: they would be added to sums that no longer describe it.
      if (flagged_[static_cast<int>(w.table)]) return Refused(static_cast<int>(w.table));
      if (w.value) ++puts;
    }
    // Commits are serialized: each builds on the state the previous one left (the sums of a synced commit,
    // the overlay under group commit). The engine commits from its one owner thread anyway; this orders the
    // transcript sweeper and other threads.
    std::lock_guard<std::mutex> commit_lock(commit_mu_);
    if (!overlay_lost_.ok()) return overlay_lost_;
    Status s = StageAndWrite(batch, puts);
    ReleaseLargeScratch();
    return s;
  }

  // The body of Commit. REQUIRES: commit_mu_ held.
  Status StageAndWrite(session::WriteBatch& batch, size_t puts) {
    if (!write_options_.sync) return StageWriteBehind(batch, puts);
    return StageAndWriteSynced(batch, puts);
  }

  // Group commit: the batch goes into the overlay, to be sealed and written when the next sync (or the
  // overlay limit) writes it out. A commit only computes stored keys and draws nonces: the digest's elements
  // and sums are computed at write-out (SealAndWriteWriting), on the sync thread, once per key however often
  // commits rewrote it in between (a session record is rewritten by every message).
  // REQUIRES: commit_mu_ held.
  Status StageWriteBehind(session::WriteBatch& batch, size_t puts) {
    const size_t n = batch.writes.size();
    if (staged_.size() < n) staged_.resize(n);
    nonces_.resize(std::max<size_t>(puts, 1) * kNonceSize);
    TakeNonces(nonces_.data(), puts);
    {
      CW_ASSIGN_OR_RETURN(SubkeyCache::Lease lease, subkeys_.Acquire());
      const Subkeys keys = lease.keys();
      for (size_t i = 0; i < n; ++i) {
        const session::Write& w = batch.writes[i];
        CW_RETURN_IF_ERROR(StoredKeyInto(keys, w.table, w.key, &part_hashes_, &staged_[i].stored));
      }
    }
    const uint8_t* nonce = nonces_.data();
    for (size_t i = 0; i < n; ++i) {
      const session::Write& w = batch.writes[i];
      if (!w.value) continue;
      // Only the head: the record is sealed with this nonce when it is written out, and its digest element
      // comes from it.
      Staged& st = staged_[i];
      st.sealed.resize(kElementInputSize);
      st.sealed[0] = static_cast<char>(kRecordFormat);
      std::memcpy(st.sealed.data() + 1, nonce, kNonceSize);
      nonce += kNonceSize;
      // A new key enters the filter before readers can miss it in the overlay (a write-out moves it to
      // RocksDB). A key the filter may hold already needs nothing: its bits are set, and stay set. A key it
      // rules out has no record on disk, and none can get there before the overlay entry made now is written
      // out (only write-outs write, and a later put of the key finds it in the filter): the write-out need
      // not look for one.
      const int t = static_cast<int>(w.table);
      st.absent_on_disk = !present_.MayContain(t, st.stored);
      if (st.absent_on_disk) present_.Add(t, st.stored);
    }
    const uint64_t begun_after = records_.BeginCommit();
    AddToOverlay(batch, n);
    records_.EndCommit(begun_after, batch, /*written=*/true);
    generation_ = generation_ + 1;
    // Past the limit the overlay goes to RocksDB now, unsynced, unless a write-out is under way already
    // (write_mu_ comes before commit_mu_, so only a try). A failure leaves it here for the next sync, which
    // reports it; this commit stands either way (reads already see it).
    if (overlay_bytes_ > overlay_limit_bytes_ && write_mu_.try_lock()) {
      std::lock_guard<std::mutex> write_lock(write_mu_, std::adopt_lock);
      (void)WriteOut(nullptr);
    }
    return Status::Ok();
  }

  // Every commit written (and, with SealedStoreOptions::sync, synced) by itself: sealed here, its digest
  // updated in the same RocksDB batch.
  //
  // Three passes, so that each primitive's code runs back to back (a commit's sealings alone would otherwise
  // refill the instruction cache for every record): stored keys and the identities of the records replaced;
  // then the sealing; then the sums and the batch. Everything is built in the scratch members, whose
  // capacity stays from one commit to the next: a message's commit then allocates almost nothing, and in
  // particular no multi-kilobyte batch buffer (each such malloc made glibc consolidate its free lists).
  // REQUIRES: commit_mu_ held.
  Status StageAndWriteSynced(session::WriteBatch& batch, size_t puts) {
    const size_t n = batch.writes.size();
    if (staged_.size() < n) staged_.resize(n);
    nonces_.resize((puts + 1) * kNonceSize);
    TakeNonces(nonces_.data(), puts + 1);
    TableSum sums[kTableCount];
    std::copy(std::begin(sums_), std::end(sums_), std::begin(sums));
    const uint64_t next = generation_ + 1;
    wb_.Clear();
    {
      CW_ASSIGN_OR_RETURN(SubkeyCache::Lease lease, subkeys_.Acquire());
      const Subkeys keys = lease.keys();
      // A key written twice in one batch: its second write replaces the first one's record, not the one on
      // disk, so it shares the first one's identity (`first`).
      std::map<std::pair<int, std::string_view>, size_t> seen;  // only for large batches
      for (size_t i = 0; i < n; ++i) {
        const session::Write& w = batch.writes[i];
        const int t = static_cast<int>(w.table);
        Staged& st = staged_[i];
        CW_RETURN_IF_ERROR(StoredKeyInto(keys, w.table, w.key, &part_hashes_, &st.stored));
        st.first = i;
        if (n <= kLinearBatch) {
          for (size_t j = 0; j < i; ++j) {
            if (batch.writes[j].table == w.table && staged_[j].stored == st.stored) {
              st.first = j;
              break;
            }
          }
        } else {
          st.first = seen.try_emplace({t, std::string_view(st.stored)}, i).first->second;
        }
        if (st.first != i) continue;
        CW_RETURN_IF_ERROR(DiskIdentity(keys, t, st.stored, &st.identity));
      }
      const uint8_t* nonce = nonces_.data();
      for (size_t i = 0; i < n; ++i) {
        const session::Write& w = batch.writes[i];
        if (!w.value) continue;
        SealInto(&staged_[i].sealed, keys.seal_key(), nonce, kTables[static_cast<int>(w.table)].cf,
                 staged_[i].stored, w.key, w.value->reveal());
        nonce += kNonceSize;
      }
      uint8_t e[kElementSize];
      for (size_t i = 0; i < n; ++i) {
        const int t = static_cast<int>(batch.writes[i].table);
        Staged& st = staged_[i];
        Identity& identity = staged_[st.first].identity;
        if (identity.present) sums[t].Sub(identity.element.data());
        rocksdb::Status put;
        if (batch.writes[i].value) {
          // A key with no record before this write enters the filter, ahead of the write: should the write
          // fail, the filter merely holds one more key that is not there.
          if (!identity.present) present_.Add(t, st.stored);
          Element(keys, t, st.stored, st.sealed, e);
          sums[t].Add(e);
          identity.present = true;
          std::memcpy(identity.element.data(), e, kElementSize);
          put = wb_.Put(tables_[t], st.stored, st.sealed);
        } else {
          identity.present = false;
          put = wb_.Delete(tables_[t], st.stored);
        }
        CW_RETURN_IF_ERROR(FromRocks(put, "batch"));
      }
      DigestValueInto(&digest_value_, next, sums);
      SealInto(&digest_sealed_, keys.seal_key(), nonce, kMetadataCf, kDigestKey, kDigestKey,
               AsBytes(digest_value_));
      CW_RETURN_IF_ERROR(FromRocks(wb_.Put(metadata_, kDigestKey, digest_sealed_), "batch"));
    }  // The keys are not needed for the write: a concurrent Lock need not wait for the disk.
    const uint64_t begun_after = records_.BeginCommit();
    Status written = FromRocks(db_->Write(write_options_, &wb_), "commit");
    records_.EndCommit(begun_after, batch, written.ok());
    if (!written.ok()) return written;
    std::copy(std::begin(sums), std::end(sums), std::begin(sums_));
    for (size_t i = 0; i < n; ++i) {
      const Staged& st = staged_[i];
      if (st.first == i) RememberIdentity(static_cast<int>(batch.writes[i].table), st.stored, st.identity);
    }
    generation_ = next;
    MarkSynced(next, Status::Ok());
    return Status::Ok();
  }

  // The digest identity of the record on disk under a stored key: from the identities of recent writes, or
  // read from RocksDB (the key filter rules out most keys that were never written). REQUIRES: the lock that
  // orders writes to RocksDB (identities_, below).
  Status DiskIdentity(const Subkeys& keys, int table, std::string_view stored, Identity* out) {
    *out = Identity{};
    id_key_.assign(1, static_cast<char>(table));
    id_key_.append(stored);
    if (auto it = identities_.find(id_key_); it != identities_.end()) {
      *out = it->second;
      return Status::Ok();
    }
    if (!present_.MayContain(table, stored)) return Status::Ok();
    rocksdb::PinnableSlice old;
    const rocksdb::Status got = db_->Get(read_options_, tables_[table], stored, &old);
    if (got.IsNotFound()) return Status::Ok();
    CW_RETURN_IF_ERROR(FromRocks(got, "read"));
    out->present = true;
    Element(keys, table, stored, old.ToStringView(), out->element.data());
    return Status::Ok();
  }

  // Records that `identity` is now on disk under the key. Not for dedup keys: each is written once and
  // deleted by the sweeper long after, so remembering them would only push out the keys that are rewritten
  // (sessions, conversations, outbox entries and transcript rows as they are sent and read).
  // REQUIRES: as DiskIdentity.
  void RememberIdentity(int table, std::string_view stored, const Identity& identity) {
    if (table == static_cast<int>(Table::kInboundDedup)) return;
    if (identities_.size() >= kMaxIdentities) identities_.clear();
    id_key_.assign(1, static_cast<char>(table));
    id_key_.append(stored);
    identities_.insert_or_assign(id_key_, identity);
  }

  // A batch far larger than a message's (a migration, a deleted conversation) does not keep its buffers.
  // REQUIRES: commit_mu_ held.
  void ReleaseLargeScratch() {
    if (staged_.size() > kLinearBatch) {
      staged_.clear();
      staged_.shrink_to_fit();
    }
    if (wb_.GetDataSize() > kMaxKeptBatchBytes) wb_ = rocksdb::WriteBatch();
    if (nonces_.capacity() > 64 * kNonceSize) std::vector<uint8_t>().swap(nonces_);
  }

  uint64_t LastCommitSequence() const { return generation_; }

  // A staged commit into the overlay: each key's pending put (its head from the staging, its plaintext
  // copied into the entry's wiping buffer, whose capacity a rewritten key reuses) or deletion.
  // REQUIRES: commit_mu_ held.
  static constexpr size_t kEntryOverhead = 96;  // an overlay entry's map node and strings
  void AddToOverlay(const session::WriteBatch& batch, size_t n) {
    std::lock_guard<std::mutex> lock(overlay_mu_);
    for (size_t i = 0; i < n; ++i) {
      const session::Write& w = batch.writes[i];
      const Staged& st = staged_[i];
      auto [it, added] = overlay_[static_cast<int>(w.table)].try_emplace(st.stored);
      if (added) {
        overlay_bytes_ += kEntryOverhead + st.stored.size();
      } else if (it->second) {
        overlay_bytes_ -= it->second->plain.size();
      }
      if (!w.value) {
        it->second.reset();  // wipes the replaced plaintext
        continue;
      }
      if (!it->second) {
        it->second.emplace();
        // A new entry knows whether the key has a record on disk; one that replaces a deletion does not.
        it->second->absent_on_disk = added && st.absent_on_disk;
      }
      Pending& p = *it->second;
      std::memcpy(p.head.data(), st.sealed.data(), kElementInputSize);
      const auto value = w.value->reveal();
      p.plain.Resize(4 + w.key.size() + value.size());
      uint8_t* m = p.plain.reveal_mutable().data();
      PutBigEndian32(m, static_cast<uint32_t>(w.key.size()));
      if (!w.key.empty()) std::memcpy(m + 4, w.key.data(), w.key.size());
      if (!value.empty()) std::memcpy(m + 4 + w.key.size(), value.data(), value.size());
      overlay_bytes_ += p.plain.size();
    }
    overlay_dirty_ = true;
  }

  // Writes the overlay out as one RocksDB batch, unsynced: every entry sealed, then the digest record of the
  // newest commit (sealed with a fresh nonce), which describes exactly the records on disk after the batch.
  // Atomic, so a crash keeps all of it or none. The overlay moves to writing_ (which reads consult after it)
  // and commits go on into a fresh one; with `commit_lock`, commit_mu_ is released while the batch is sealed,
  // its digest computed and the batch written, so the engine is not held up by a sync. writing_ is emptied
  // (its plaintext wiped) only after the write, so a reader that misses both finds the records in RocksDB. On
  // failure its entries go back under the newer ones, to be written by the next try, and the sums stay those
  // of what is on disk.
  // REQUIRES: write_mu_ and commit_mu_ held (`commit_lock`, if given, holds commit_mu_; it does on return).
  Status WriteOut(std::unique_lock<std::mutex>* commit_lock) {
    if (!overlay_lost_.ok()) return overlay_lost_;
    if (!overlay_dirty_) return Status::Ok();  // nothing committed since the last write-out
    uint8_t digest_nonce[kNonceSize];
    TakeNonces(digest_nonce, 1);
    const uint64_t generation = generation_;  // the newest commit in the overlay
    {
      std::lock_guard<std::mutex> lock(overlay_mu_);
      for (int t = 0; t < kTableCount; ++t) writing_[t].swap(overlay_[t]);  // writing_ was empty
      overlay_dirty_ = false;
      overlay_bytes_ = 0;
    }
    if (commit_lock != nullptr) commit_lock->unlock();
    Status s = SealAndWriteWriting(digest_nonce, generation);
    if (commit_lock != nullptr) commit_lock->lock();
    std::lock_guard<std::mutex> lock(overlay_mu_);
    if (!s.ok()) {
      overlay_bytes_ = 0;
      for (int t = 0; t < kTableCount; ++t) {
        overlay_[t].merge(writing_[t]);  // keeps the newer entry of a key in both
        for (const auto& [stored, pending] : overlay_[t]) {
          overlay_bytes_ += kEntryOverhead + stored.size() + (pending ? pending->plain.size() : 0);
        }
      }
      overlay_dirty_ = true;
    }
    for (auto& m : writing_) m.clear();  // SecretBytes wipe as they go
    return s;
  }

  // WriteOut's sealing and write of writing_, with the digest of commit `generation`: each entry's record on
  // disk leaves the sums and its replacement (if a put) enters them. sums_ and identities_ change only once
  // the batch is written. REQUIRES: write_mu_ held (writing_ does not change meanwhile; commits only read it,
  // and nothing else writes RocksDB).
  Status SealAndWriteWriting(const uint8_t* digest_nonce, uint64_t generation) {
    // However it ends: no pointer into writing_ outlives it, and no oversized buffer is kept.
    struct Tidy {
      Impl* impl;
      ~Tidy() {
        impl->out_identities_.clear();
        if (impl->out_wb_.GetDataSize() > kMaxKeptBatchBytes) impl->out_wb_ = rocksdb::WriteBatch();
        if (impl->out_scratch_.capacity() > kMaxKeptBatchBytes) std::string().swap(impl->out_scratch_);
      }
    } tidy{this};
    TableSum sums[kTableCount];
    std::copy(std::begin(sums_), std::end(sums_), std::begin(sums));
    {
      CW_ASSIGN_OR_RETURN(SubkeyCache::Lease lease, subkeys_.Acquire());
      const Subkeys keys = lease.keys();
      out_wb_.Clear();
      for (int t = 0; t < kTableCount; ++t) {
        for (const auto& [stored, pending] : writing_[t]) {
          Identity identity;
          if (!pending || !pending->absent_on_disk) {
            CW_RETURN_IF_ERROR(DiskIdentity(keys, t, stored, &identity));
          }
          if (identity.present) sums[t].Sub(identity.element.data());
          rocksdb::Status added;
          if (pending) {
            SealPendingInto(&out_scratch_, keys.seal_key(), kTables[t].cf, stored, *pending);
            added = out_wb_.Put(tables_[t], stored, out_scratch_);
            identity.present = true;
            Element(keys, t, stored, pending->head_view(), identity.element.data());
            sums[t].Add(identity.element.data());
          } else {
            added = out_wb_.Delete(tables_[t], stored);
            identity.present = false;
          }
          CW_RETURN_IF_ERROR(FromRocks(added, "batch"));
          out_identities_.push_back({t, &stored, identity});
        }
      }
      DigestValueInto(&out_digest_value_, generation, sums);
      SealInto(&out_scratch_, keys.seal_key(), digest_nonce, kMetadataCf, kDigestKey, kDigestKey,
               AsBytes(out_digest_value_));
      CW_RETURN_IF_ERROR(FromRocks(out_wb_.Put(metadata_, kDigestKey, out_scratch_), "batch"));
    }
    Status s = FromRocks(db_->Write(write_options_, &out_wb_), "write");
    if (s.ok()) {
      std::copy(std::begin(sums), std::end(sums), std::begin(sums_));
      for (const auto& w : out_identities_) RememberIdentity(w.table, *w.stored, w.identity);
    }
    return s;
  }

  // The overlay could not be written (I/O failure at Lock or close): its plaintext must not outlive the keys,
  // so it is wiped, and those commits are lost. From then on commits and syncs fail with `why`: a later sync
  // must not report them durable. REQUIRES: write_mu_ and commit_mu_ held.
  void LoseOverlayLocked(const Status& why) {
    if (!overlay_dirty_) return;
    {
      std::lock_guard<std::mutex> lock(overlay_mu_);
      for (auto& m : overlay_) m.clear();
      overlay_dirty_ = false;
      overlay_bytes_ = 0;
    }
    overlay_lost_ = Status(StatusCode::kUnavailable,
                           "commits not yet synced were lost when the store could not write them: " + why.ToString());
  }

  size_t OverlayBytes() {
    std::lock_guard<std::mutex> lock(overlay_mu_);
    return overlay_bytes_;
  }

  // `count` fresh nonces into `out`. REQUIRES: commit_mu_ held.
  void TakeNonces(uint8_t* out, size_t count) {
    const size_t bytes = count * kNonceSize;
    if (bytes > nonce_pool_.size()) {
      random_->Fill(out, bytes);
      return;
    }
    if (nonce_pool_.size() - nonce_pool_next_ < bytes) {
      random_->Fill(nonce_pool_.data(), nonce_pool_.size());
      nonce_pool_next_ = 0;
    }
    std::memcpy(out, nonce_pool_.data() + nonce_pool_next_, bytes);
    nonce_pool_next_ += bytes;
  }

  uint64_t SyncedThrough() {
    std::lock_guard<std::mutex> lock(sync_mu_);
    return synced_through_;
  }

  Status WhenSynced(uint64_t sequence, SealedStore::SyncedCallback done) {
    if (!done) return Status(StatusCode::kInvalidArgument, "no callback");
    {
      std::unique_lock<std::mutex> lock(sync_mu_);
      if (sequence > generation_) return Status(StatusCode::kInvalidArgument, "no such commit yet");
      if (sequence > synced_through_) {
        if (stop_) return Status(StatusCode::kAborted, "the store is closing");
        waiters_.emplace(sequence, std::move(done));
        if (!syncer_.joinable()) syncer_ = std::thread([this] { SyncLoop(); });
        sync_cv_.notify_one();
        return Status::Ok();
      }
    }
    done(Status::Ok());
    return Status::Ok();
  }

  Result<std::string> StoredKeyForTesting(Table table, std::string_view key) {
    if (!ValidTable(table)) return Error(StatusCode::kInvalidArgument, "unknown table");
    CW_ASSIGN_OR_RETURN(SubkeyCache::Lease lease, subkeys_.Acquire());
    return StoredKey(lease.keys(), table, key);
  }

  Result<Opened> OpenRawRecordForTesting(Table table, std::string_view stored_key, std::string_view sealed) {
    if (!ValidTable(table)) return Error(StatusCode::kInvalidArgument, "unknown table");
    CW_ASSIGN_OR_RETURN(SubkeyCache::Lease lease, subkeys_.Acquire());
    return Unseal(lease.keys(), kTables[static_cast<int>(table)].cf, stored_key, sealed);
  }

  Status FlushAll() {
    {
      std::lock_guard<std::mutex> write_lock(write_mu_);
      std::lock_guard<std::mutex> commit_lock(commit_mu_);
      CW_RETURN_IF_ERROR(WriteOut(nullptr));
    }
    rocksdb::FlushOptions fo;
    fo.wait = true;
    CW_RETURN_IF_ERROR(FromRocks(db_->Flush(fo, handles_), "flush"));
    // Flushing every column family retires the write-ahead logs that held their writes; RocksDB deletes
    // retired logs (WAL_ttl_seconds and WAL_size_limit_MB are 0, recycle_log_file_num is 0).
    return FromRocks(db_->FlushWAL(/*sync=*/true), "sync log");
  }

  // The commits that have returned before it starts are durable when it returns OK. Waiters for them are
  // called here, on this thread; on a failure, with the failure (their commits may not be durable).
  //
  // Write-behind: the overlay is written out first (unsynced; the engine goes on committing while it is sealed
  // and written, see WriteOut), then the log is synced.
  Status SyncNow() {
    uint64_t target = 0;
    Status s = Status::Ok();
    {
      std::lock_guard<std::mutex> write_lock(write_mu_);
      std::unique_lock<std::mutex> commit_lock(commit_mu_);
      target = generation_;
      s = WriteOut(&commit_lock);
    }
    if (s.ok()) s = FromRocks(db_->FlushWAL(/*sync=*/true), "sync log");
    MarkSynced(target, s);
    return s;
  }

  void MarkSynced(uint64_t target, const Status& s) {
    std::vector<SealedStore::SyncedCallback> ready;
    {
      std::lock_guard<std::mutex> lock(sync_mu_);
      if (s.ok()) synced_through_ = std::max(synced_through_, target);
      auto end = waiters_.upper_bound(s.ok() ? synced_through_ : target);
      for (auto it = waiters_.begin(); it != end; ++it) ready.push_back(std::move(it->second));
      waiters_.erase(waiters_.begin(), end);
    }
    for (auto& done : ready) done(s);
  }

  // The group-commit thread: whenever someone waits, one fsync covers every commit made so far. Commits made
  // while it syncs wait for the next round, so the syncs batch themselves under load.
  void SyncLoop() {
    std::unique_lock<std::mutex> lock(sync_mu_);
    for (;;) {
      sync_cv_.wait(lock, [&] { return stop_ || !waiters_.empty(); });
      if (waiters_.empty()) return;  // stopping, with nobody left waiting
      lock.unlock();
      (void)SyncNow();  // a failure reaches the waiters it covered
      lock.lock();
    }
  }

  void StopSyncer() {
    {
      std::lock_guard<std::mutex> lock(sync_mu_);
      stop_ = true;
    }
    sync_cv_.notify_one();
    if (syncer_.joinable()) syncer_.join();  // it syncs for whoever still waits before it ends
  }

  Status PurgeDeleted(Table table) {
    if (!ValidTable(table)) return Status(StatusCode::kInvalidArgument, "unknown table");
    CW_RETURN_IF_ERROR(FlushAll());
    rocksdb::CompactRangeOptions co;
    // Rewrite even the bottom level: that is where an old value of a long-lived record sits.
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    co.exclusive_manual_compaction = true;
    return FromRocks(db_->CompactRange(co, tables_[static_cast<int>(table)], nullptr, nullptr), "compact");
  }

 private:
  void ByName(const std::string& name, rocksdb::ColumnFamilyHandle* h) {
    if (name == kMetadataCf) metadata_ = h;
    for (int i = 0; i < kTableCount; ++i) {
      if (name == kTables[i].cf) tables_[i] = h;
    }
  }

  const Keystore* const keystore_;
  Random* const random_;
  rocksdb::Env* const env_;
  SubkeyCache subkeys_;
  RecordCache records_;
  PartHashCache part_hashes_;
  const Keystore::LockListenerId lock_listener_;  // after the caches its listener wipes
  rocksdb::WriteOptions write_options_;
  const rocksdb::ReadOptions read_options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // all of them, destroyed before db_
  rocksdb::ColumnFamilyHandle* metadata_ = nullptr;
  rocksdb::ColumnFamilyHandle* tables_[kTableCount] = {};

  // The digest: the sums of the records on disk, and the digest elements of records recently written (or
  // deleted), by table byte || stored key: the record a write replaces is nearly always one written a moment
  // ago (a session, a conversation), and each lookup saved is a RocksDB read and a hash. Not secret (keyed
  // hashes of bytes that are in the files, like the sums); cleared when full. Both belong to whoever writes
  // RocksDB: commits under commit_mu_ when every commit is synced, write-outs under write_mu_ under group
  // commit (the overlay's records join the sums when they are written out). id_key_ is their scratch.
  std::mutex commit_mu_;
  TableSum sums_[kTableCount];
  static constexpr size_t kMaxIdentities = 4096;
  std::unordered_map<std::string, Identity> identities_;
  std::string id_key_;
  KeyFilter present_;  // Add under commit_mu_ (or in Open); MayContain from any thread
  // Commit's scratch (see StageAndWrite), under commit_mu_. Sealed values, stored keys and the batch: no
  // plaintext is kept here.
  struct Staged {
    std::string stored;  // the stored key
    std::string sealed;  // the sealed record, for a put (under group commit only its head)
    size_t first = 0;    // the batch's first write of this key: its `identity` is the key's current one
    Identity identity;   // valid where first == this index (synced commits only)
    bool absent_on_disk = false;  // group commit: the key filter ruled the key out at this put
  };
  static constexpr size_t kLinearBatch = 32;
  static constexpr size_t kMaxKeptBatchBytes = 256 * 1024;
  std::vector<Staged> staged_;
  rocksdb::WriteBatch wb_;
  std::vector<uint8_t> nonces_;
  std::string digest_value_;
  std::string digest_sealed_;
  // Nonces drawn from the Random ahead of need, so a commit makes a getrandom system call about once every
  // dozen commits instead of once each. Not secret (each is stored in the clear in its record); each is
  // taken once, whether or not its commit succeeds. Under commit_mu_.
  std::array<uint8_t, 64 * kNonceSize> nonce_pool_;
  size_t nonce_pool_next_ = 64 * kNonceSize;  // all used
  std::atomic<uint64_t> generation_{0};   // commits so far, also the sequence of the newest one
  std::atomic<bool> flagged_[kTableCount] = {};  // tables whose records do not match their sum
  std::atomic<bool> opened_{false};

  // Write-behind (group commit only; sealed_store.h): per table, stored key -> newest unwritten put (nullopt:
  // deleted), in stored-key order for ListKeys; whether anything was committed since the last write-out;
  // the plaintext's approximate size. Changed under commit_mu_ and overlay_mu_ both, so a commit reads them
  // under commit_mu_ alone; Get and ListKeys read under overlay_mu_. The plaintext is in wiping buffers, and
  // is written out and wiped before the subkeys are (Lock, close).
  std::mutex overlay_mu_;
  std::map<std::string, std::optional<Pending>, std::less<>> overlay_[kTableCount];
  bool overlay_dirty_ = false;
  size_t overlay_bytes_ = 0;
  // The overlay being written out (WriteOut), under the same rules; readers look in it after overlay_.
  std::map<std::string, std::optional<Pending>, std::less<>> writing_[kTableCount];
  Status overlay_lost_ = Status::Ok();  // under commit_mu_
  // Serializes write-outs, so their batches reach RocksDB in commit order. Taken before commit_mu_.
  std::mutex write_mu_;
  rocksdb::WriteBatch out_wb_;     // under write_mu_
  std::string out_scratch_;        // under write_mu_
  std::string out_digest_value_;   // under write_mu_
  struct WrittenIdentity {
    int table;
    const std::string* stored;  // a key of writing_
    Identity identity;
  };
  std::vector<WrittenIdentity> out_identities_;  // under write_mu_
  size_t overlay_limit_bytes_ = 0;

  // Group commit.
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  uint64_t synced_through_ = 0;  // under sync_mu_
  std::multimap<uint64_t, SealedStore::SyncedCallback> waiters_;  // under sync_mu_
  bool stop_ = false;                                             // under sync_mu_
  std::thread syncer_;  // started by the first WhenSynced that has to wait
};

SealedStore::SealedStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SealedStore::~SealedStore() = default;

Result<std::unique_ptr<SealedStore>> SealedStore::Open(const std::string& path, const Keystore* keystore,
                                                       SealedStoreOptions options) {
  return internal::OpenSealedStoreWithEnv(path, keystore, options, nullptr);
}

struct internal::SealedStoreAccess {
  static std::unique_ptr<SealedStore> Make(std::unique_ptr<SealedStore::Impl> impl) {
    return std::unique_ptr<SealedStore>(new SealedStore(std::move(impl)));
  }
  static size_t Overlay(SealedStore& store) { return store.impl_->OverlayBytes(); }
};

Result<std::unique_ptr<SealedStore>> internal::OpenSealedStoreWithEnv(const std::string& path,
                                                                      const Keystore* keystore,
                                                                      SealedStoreOptions options, rocksdb::Env* env) {
  CW_RETURN_IF_ERROR(crypto::Init());
  if (keystore == nullptr) return Error(StatusCode::kInvalidArgument, "no keystore");
  const bool create = options.create_if_missing;
  auto impl = std::make_unique<SealedStore::Impl>(keystore, options, env);
  CW_RETURN_IF_ERROR(impl->Open(path, create));
  impl->MarkOpened();
  return internal::SealedStoreAccess::Make(std::move(impl));
}

std::string internal::SealRecordWithKey(std::span<const uint8_t, 32> seal_key, Random& random,
                                        std::string_view cf, std::string_view stored_key,
                                        std::string_view plain_key, std::span<const uint8_t> value,
                                        uint32_t schema) {
  uint8_t nonce[kNonceSize];
  random.Fill(nonce, sizeof nonce);
  return SealWithKey(seal_key.data(), nonce, cf, stored_key, plain_key, value, schema);
}

Result<internal::OpenedRecord> internal::OpenRecordWithKey(std::span<const uint8_t, 32> seal_key,
                                                           std::string_view cf, std::string_view stored_key,
                                                           std::string_view sealed, uint32_t schema) {
  return UnsealWithKey(seal_key.data(), cf, stored_key, sealed, schema);
}

size_t internal::OverlayBytesForTesting(SealedStore& store) {
  return internal::SealedStoreAccess::Overlay(store);
}

Status internal::DeriveSealKeyForTesting(const Keystore& keystore, std::span<uint8_t, 32> out) {
  uint8_t both[64];
  Status s = keystore.DeriveSubkey(kKdfIdStoreKeys, kKdfContext, both);
  if (s.ok()) std::memcpy(out.data(), both, 32);
  sodium_memzero(both, sizeof both);
  return s;
}

Status SealedStore::PurgeDeleted(Table table) { return impl_->PurgeDeleted(table); }
Status SealedStore::FlushForTesting() { return impl_->FlushAll(); }
Status SealedStore::SyncNow() { return impl_->SyncNow(); }
uint64_t SealedStore::LastCommitSequence() const { return impl_->LastCommitSequence(); }
uint64_t SealedStore::SyncedThrough() { return impl_->SyncedThrough(); }
Status SealedStore::WhenSynced(uint64_t sequence, SyncedCallback done) {
  return impl_->WhenSynced(sequence, std::move(done));
}
std::vector<Table> SealedStore::TamperedTables() { return impl_->TamperedTables(); }
Status SealedStore::AcceptCurrentState() { return impl_->AcceptCurrentState(); }
Result<internal::OpenedRecord> SealedStore::OpenRawRecordForTesting(Table table, std::string_view stored_key,
                                                                    std::string_view sealed) {
  return impl_->OpenRawRecordForTesting(table, stored_key, sealed);
}

Result<std::optional<SecretBytes>> SealedStore::Get(Table table, std::string_view key) {
  return impl_->Get(table, key);
}
Result<std::vector<std::string>> SealedStore::ListKeys(Table table, std::string_view prefix) {
  return impl_->ListKeys(table, prefix);
}
Status SealedStore::Commit(session::WriteBatch batch) { return impl_->Commit(std::move(batch)); }
Result<std::string> SealedStore::StoredKeyForTesting(Table table, std::string_view key) {
  return impl_->StoredKeyForTesting(table, key);
}

std::string_view SealedStore::ColumnFamilyName(Table table) {
  if (!ValidTable(table)) return {};
  return kTables[static_cast<int>(table)].cf;
}

}  // namespace cw::storage
