// Internal to cw_storage and its tests, fuzz targets and benchmarks: the seams that name rocksdb:: or raw
// keys, kept out of the public sealed_store.h.
//
// - OpenSealedStoreWithEnv: a SealedStore on an injected rocksdb::Env (a fault-injecting file system for the
//   power-loss test, an in-memory one). The Env is not owned and must outlive the store.
// - SealRecordWithKey / OpenRecordWithKey: the record sealing of sealed_store.cc under an explicit 32-byte
//   key, for the fuzz target (which has no keystore) and the migration test.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "core/base/random.h"
#include "core/base/status.h"
#include "storage/sealed_store.h"

namespace rocksdb {
class Env;
}

namespace cw::storage::internal {

using OpenedRecord = ::cw::storage::OpenedRecord;

// SealedStore::Open on `env` (rocksdb::Env::Default() when null).
Result<std::unique_ptr<SealedStore>> OpenSealedStoreWithEnv(const std::string& path, const Keystore* keystore,
                                                            SealedStoreOptions options, rocksdb::Env* env);

// The sealed form of (plain_key, value) stored under `stored_key` in column family `cf`, as schema version
// `schema` seals it (an older one only for migration tests).
std::string SealRecordWithKey(std::span<const uint8_t, 32> seal_key, Random& random, std::string_view cf,
                              std::string_view stored_key, std::string_view plain_key,
                              std::span<const uint8_t> value, uint32_t schema = kSchemaVersion);
// kTampered for anything that is not exactly such a record.
Result<OpenedRecord> OpenRecordWithKey(std::span<const uint8_t, 32> seal_key, std::string_view cf,
                                       std::string_view stored_key, std::string_view sealed,
                                       uint32_t schema = kSchemaVersion);

// The store's sealing key, derived from the unlocked keystore as the store derives it: for tests that build
// records of an older schema. kPermissionDenied when locked.
// The sealed bytes of commits held in the write-behind overlay, not yet written to RocksDB (sealed_store.h,
// "Write-behind").
size_t OverlayBytesForTesting(SealedStore& store);

Status DeriveSealKeyForTesting(const Keystore& keystore, std::span<uint8_t, 32> out);

}  // namespace cw::storage::internal
