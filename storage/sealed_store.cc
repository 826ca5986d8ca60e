#include "storage/sealed_store.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstring>

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

// Subkeys of the master key: one 64-byte crypto_kdf output split into the sealing key and the key-hashing
// key, so each operation costs one derivation.
constexpr std::string_view kKdfContext = "cwstore1";
constexpr uint64_t kKdfIdStoreKeys = 1;

constexpr uint8_t kRecordFormat = 1;
constexpr size_t kNonceSize = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t kTagSize = crypto_aead_xchacha20poly1305_ietf_ABYTES;
// 128 bits: keys are hashed under a secret key, so nobody can search for collisions offline, and the
// chance of an accidental one among a device's records is below 2^-90.
constexpr size_t kKeyHashSize = 16;

// The two subkeys one operation needs, wiped when it returns (every return path: the destructor).
class Subkeys {
 public:
  Subkeys() = default;
  Subkeys(const Subkeys&) = delete;
  Subkeys& operator=(const Subkeys&) = delete;
  ~Subkeys() { sodium_memzero(bytes_.data(), bytes_.size()); }

  Status Derive(const Keystore& keystore) {
    return keystore.DeriveSubkey(kKdfIdStoreKeys, kKdfContext, bytes_);
  }
  const uint8_t* seal_key() const { return bytes_.data(); }
  const uint8_t* hash_key() const { return bytes_.data() + 32; }

 private:
  std::array<uint8_t, 64> bytes_{};
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

// format || schema version || length of the column family name || the name || the stored key.
std::string AssociatedData(std::string_view cf, std::string_view stored_key) {
  std::string ad;
  ad.reserve(6 + cf.size() + stored_key.size());
  ad.push_back(static_cast<char>(kRecordFormat));
  ad += BigEndian32(kSchemaVersion);
  ad.push_back(static_cast<char>(cf.size()));
  ad += cf;
  ad += stored_key;
  return ad;
}

// Sealed record: format (1) || nonce (24) || XChaCha20-Poly1305(length of plain key (4, big-endian) ||
// plain key || value) with its tag. The plain key rides inside so a hashed table can still be listed.
std::string SealWithKey(const uint8_t* seal_key, Random& random, std::string_view cf, std::string_view stored_key,
                        std::string_view plain_key, std::span<const uint8_t> value) {
  SecretBytes plaintext;
  const std::string len = BigEndian32(static_cast<uint32_t>(plain_key.size()));
  plaintext.Append(AsBytes(len));
  plaintext.Append(AsBytes(plain_key));
  plaintext.Append(value);
  const std::string ad = AssociatedData(cf, stored_key);
  std::string out(1 + kNonceSize + plaintext.size() + kTagSize, '\0');
  auto* o = reinterpret_cast<uint8_t*>(out.data());
  o[0] = kRecordFormat;
  random.Fill(o + 1, kNonceSize);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(o + 1 + kNonceSize, &written, plaintext.reveal().data(),
                                             plaintext.size(), reinterpret_cast<const uint8_t*>(ad.data()),
                                             ad.size(), nullptr, o + 1, seal_key);
  return out;
}

std::string Seal(const Subkeys& keys, Random& random, std::string_view cf, std::string_view stored_key,
                 std::string_view plain_key, std::span<const uint8_t> value) {
  return SealWithKey(keys.seal_key(), random, cf, stored_key, plain_key, value);
}

using Opened = internal::OpenedRecord;

Result<Opened> UnsealWithKey(const uint8_t* seal_key, std::string_view cf, std::string_view stored_key,
                             std::string_view sealed) {
  // Every failure here is "tampered": a record we wrote always opens, so anything else was changed,
  // moved, truncated or sealed under another key. The message names the table only; keys may be names.
  auto tampered = [&] {
    return Error(StatusCode::kTampered, "record in " + std::string(cf) + " failed to open");
  };
  if (sealed.size() < 1 + kNonceSize + kTagSize + 4) return tampered();
  const auto* s = reinterpret_cast<const uint8_t*>(sealed.data());
  if (s[0] != kRecordFormat) return tampered();
  const std::string ad = AssociatedData(cf, stored_key);
  SecretBytes plaintext(sealed.size() - 1 - kNonceSize - kTagSize);
  unsigned long long len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(plaintext.reveal_mutable().data(), &len, nullptr,
                                                 s + 1 + kNonceSize, sealed.size() - 1 - kNonceSize,
                                                 reinterpret_cast<const uint8_t*>(ad.data()), ad.size(),
                                                 s + 1, seal_key) != 0) {
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

Result<std::string> StoredKey(const Subkeys& keys, Table table, std::string_view key) {
  const TableSpec& spec = kTables[static_cast<int>(table)];
  if (!spec.hashed) return std::string(key);
  std::string out;
  size_t start = 0;
  for (int i = 0; i < spec.separators; ++i) {
    const size_t nul = key.find('\0', start);
    if (nul == std::string_view::npos) {
      return Error(StatusCode::kInvalidArgument, "key in " + std::string(spec.cf) + " lacks its parts");
    }
    AppendPartHash(keys, table, i, key.substr(start, nul - start), &out);
    start = nul + 1;
  }
  if (spec.plain_tail) {
    out.append(key.substr(start));
  } else {
    AppendPartHash(keys, table, spec.separators, key.substr(start), &out);
  }
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

}  // namespace

class SealedStore::Impl {
 public:
  Impl(const Keystore* keystore, SealedStoreOptions options, rocksdb::Env* env)
      : keystore_(keystore),
        random_(options.random ? options.random : &SystemRandom::Default()),
        env_(env ? env : rocksdb::Env::Default()) {
    write_options_.sync = options.sync;
  }

  ~Impl() {
    if (db_ == nullptr) return;
    // Column family handles go before the database.
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    handles_.clear();
    db_->Close().PermitUncheckedError();
    db_.reset();
  }

  Status Open(const std::string& path, bool create_if_missing) {
    Subkeys keys;
    CW_RETURN_IF_ERROR(keys.Derive(*keystore_));

    rocksdb::DBOptions db_options;
    db_options.env = env_;
    db_options.keep_log_file_num = 2;
    rocksdb::ColumnFamilyOptions cf_options;
    // Sealed values are random-looking: compression would only spend CPU.
    cf_options.compression = rocksdb::kNoCompression;

    const bool fresh = !env_->FileExists(path + "/CURRENT").ok();
    std::vector<std::string> names;
    if (fresh) {
      if (!create_if_missing) return Status(StatusCode::kNotFound, "no store at that path");
      db_options.create_if_missing = true;
      db_options.create_missing_column_families = true;
      names.push_back(rocksdb::kDefaultColumnFamilyName);
      names.emplace_back(kMetadataCf);
      for (const auto& t : kTables) names.emplace_back(t.cf);
    } else {
      // Open exactly the column families that exist (a newer schema may have more), read the version, and
      // only then create anything.
      CW_RETURN_IF_ERROR(
          FromRocks(rocksdb::DB::ListColumnFamilies(db_options, path, &names), "list column families"));
    }
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& n : names) descriptors.emplace_back(n, cf_options);
    rocksdb::DB* raw = nullptr;
    CW_RETURN_IF_ERROR(
        FromRocks(rocksdb::DB::Open(db_options, path, descriptors, &handles_, &raw), "open store"));
    db_.reset(raw);
    for (auto* h : handles_) ByName(h->GetName(), h);

    if (fresh) {
      rocksdb::WriteBatch wb;
      CW_RETURN_IF_ERROR(
          FromRocks(wb.Put(metadata_, kSchemaVersionKey, BigEndian32(kSchemaVersion)), "batch"));
      CW_RETURN_IF_ERROR(FromRocks(
          wb.Put(metadata_, kKeyCheckKey,
                 Seal(keys, *random_, kMetadataCf, kKeyCheckKey, kKeyCheckKey, AsBytes(kKeyCheckValue))),
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
    // Version 1 is the first: older versions would be migrated here, in one batch per step.
    if (stored_version < 1) return Status(StatusCode::kMalformed, "store schema version 0");

    std::string check;
    s = db_->Get(rocksdb::ReadOptions(), metadata_, kKeyCheckKey, &check);
    if (s.IsNotFound()) return Status(StatusCode::kMalformed, "store has no key check");
    CW_RETURN_IF_ERROR(FromRocks(s, "read key check"));
    auto opened = Unseal(keys, kMetadataCf, kKeyCheckKey, check);
    if (!opened || opened->plain_key != kKeyCheckKey ||
        !ConstantTimeEquals(opened->value.reveal(), AsBytes(kKeyCheckValue))) {
      return Status(StatusCode::kTampered,
                    "store was sealed under another master key, or its key check was changed");
    }

    for (int i = 0; i < kTableCount; ++i) {
      if (tables_[i] != nullptr) continue;
      rocksdb::ColumnFamilyHandle* h = nullptr;
      CW_RETURN_IF_ERROR(FromRocks(db_->CreateColumnFamily(cf_options, std::string(kTables[i].cf), &h),
                                   "create column family"));
      handles_.push_back(h);
      tables_[i] = h;
    }
    return Status::Ok();
  }

  Result<std::optional<SecretBytes>> Get(Table table, std::string_view key) {
    if (!ValidTable(table)) return Error(StatusCode::kInvalidArgument, "unknown table");
    Subkeys keys;
    CW_RETURN_IF_ERROR(keys.Derive(*keystore_));
    CW_ASSIGN_OR_RETURN(std::string stored, StoredKey(keys, table, key));
    const std::string_view cf = kTables[static_cast<int>(table)].cf;
    rocksdb::PinnableSlice sealed;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), tables_[static_cast<int>(table)], stored, &sealed);
    if (s.IsNotFound()) return std::optional<SecretBytes>();
    CW_RETURN_IF_ERROR(FromRocks(s, "read"));
    CW_ASSIGN_OR_RETURN(Opened opened, Unseal(keys, cf, stored, sealed.ToStringView()));
    // The associated data already binds the stored key; this also catches a hash collision.
    if (opened.plain_key != key)
      return Error(StatusCode::kTampered, "record in " + std::string(cf) + " is for another key");
    return std::optional<SecretBytes>(std::move(opened.value));
  }

  Result<std::vector<std::string>> ListKeys(Table table, std::string_view prefix) {
    if (!ValidTable(table)) return Error(StatusCode::kInvalidArgument, "unknown table");
    Subkeys keys;
    CW_RETURN_IF_ERROR(keys.Derive(*keystore_));
    const TableSpec& spec = kTables[static_cast<int>(table)];
    const std::string stored_prefix = StoredPrefix(keys, table, prefix);
    // A conversation's transcript keys: its hashes are the prefix's, its plain tails are in the stored keys,
    // and they come in byte order. Nothing needs opening; a record that was moved here still fails its Get.
    const size_t hashed_len = WholeHashedPrefixLength(spec, prefix);
    const size_t stored_hashed_len = static_cast<size_t>(spec.separators) * kKeyHashSize;
    std::vector<std::string> out;
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), tables_[static_cast<int>(table)]));
    for (it->Seek(stored_prefix); it->Valid() && it->key().starts_with(stored_prefix); it->Next()) {
      if (!spec.hashed) {
        out.emplace_back(it->key().ToStringView());
        continue;
      }
      if (hashed_len != std::string_view::npos) {
        if (it->key().size() < stored_hashed_len) {
          return Error(StatusCode::kTampered, "key in " + std::string(spec.cf) + " is too short");
        }
        std::string plain(prefix.substr(0, hashed_len));
        plain.append(it->key().ToStringView().substr(stored_hashed_len));
        out.push_back(std::move(plain));
        continue;
      }
      CW_ASSIGN_OR_RETURN(Opened opened,
                          Unseal(keys, spec.cf, it->key().ToStringView(), it->value().ToStringView()));
      if (opened.plain_key.starts_with(prefix)) out.push_back(std::move(opened.plain_key));
    }
    CW_RETURN_IF_ERROR(FromRocks(it->status(), "list"));
    // Hashed keys come back in hash order; the interface promises byte order of the plain keys.
    if (spec.hashed && hashed_len == std::string_view::npos) std::sort(out.begin(), out.end());
    return out;
  }

  Status Commit(session::WriteBatch batch) {
    Subkeys keys;
    CW_RETURN_IF_ERROR(keys.Derive(*keystore_));
    rocksdb::WriteBatch wb;
    for (const auto& w : batch.writes) {
      if (!ValidTable(w.table)) return Status(StatusCode::kInvalidArgument, "unknown table");
      const int t = static_cast<int>(w.table);
      CW_ASSIGN_OR_RETURN(std::string stored, StoredKey(keys, w.table, w.key));
      rocksdb::Status s = w.value
                              ? wb.Put(tables_[t], stored,
                                       Seal(keys, *random_, kTables[t].cf, stored, w.key, w.value->reveal()))
                              : wb.Delete(tables_[t], stored);
      CW_RETURN_IF_ERROR(FromRocks(s, "batch"));
    }
    if (wb.Count() == 0) return Status::Ok();
    return FromRocks(db_->Write(write_options_, &wb), "commit");
  }

  Result<std::string> StoredKeyForTesting(Table table, std::string_view key) {
    if (!ValidTable(table)) return Error(StatusCode::kInvalidArgument, "unknown table");
    Subkeys keys;
    CW_RETURN_IF_ERROR(keys.Derive(*keystore_));
    return StoredKey(keys, table, key);
  }

  Result<Opened> OpenRawRecordForTesting(Table table, std::string_view stored_key, std::string_view sealed) {
    if (!ValidTable(table)) return Error(StatusCode::kInvalidArgument, "unknown table");
    Subkeys keys;
    CW_RETURN_IF_ERROR(keys.Derive(*keystore_));
    return Unseal(keys, kTables[static_cast<int>(table)].cf, stored_key, sealed);
  }

  Status FlushAll() {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    CW_RETURN_IF_ERROR(FromRocks(db_->Flush(fo, handles_), "flush"));
    // Flushing every column family retires the write-ahead logs that held their writes; RocksDB deletes
    // retired logs (WAL_ttl_seconds and WAL_size_limit_MB are 0, recycle_log_file_num is 0).
    return FromRocks(db_->FlushWAL(/*sync=*/true), "sync log");
  }

  Status SyncNow() { return FromRocks(db_->FlushWAL(/*sync=*/true), "sync log"); }

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
  rocksdb::WriteOptions write_options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // all of them, destroyed before db_
  rocksdb::ColumnFamilyHandle* metadata_ = nullptr;
  rocksdb::ColumnFamilyHandle* tables_[kTableCount] = {};
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
};

Result<std::unique_ptr<SealedStore>> internal::OpenSealedStoreWithEnv(const std::string& path,
                                                                      const Keystore* keystore,
                                                                      SealedStoreOptions options, rocksdb::Env* env) {
  CW_RETURN_IF_ERROR(crypto::Init());
  if (keystore == nullptr) return Error(StatusCode::kInvalidArgument, "no keystore");
  const bool create = options.create_if_missing;
  auto impl = std::make_unique<SealedStore::Impl>(keystore, options, env);
  CW_RETURN_IF_ERROR(impl->Open(path, create));
  return internal::SealedStoreAccess::Make(std::move(impl));
}

std::string internal::SealRecordWithKey(std::span<const uint8_t, 32> seal_key, Random& random,
                                        std::string_view cf, std::string_view stored_key,
                                        std::string_view plain_key, std::span<const uint8_t> value) {
  return SealWithKey(seal_key.data(), random, cf, stored_key, plain_key, value);
}

Result<internal::OpenedRecord> internal::OpenRecordWithKey(std::span<const uint8_t, 32> seal_key,
                                                           std::string_view cf, std::string_view stored_key,
                                                           std::string_view sealed) {
  return UnsealWithKey(seal_key.data(), cf, stored_key, sealed);
}

Status SealedStore::PurgeDeleted(Table table) { return impl_->PurgeDeleted(table); }
Status SealedStore::FlushForTesting() { return impl_->FlushAll(); }
Status SealedStore::SyncNow() { return impl_->SyncNow(); }
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
