// ProtocolStore: the only way the session engine reaches storage.
//
// A store is a set of tables of key -> sealed-or-not value. The engine reads through Get/List and writes
// only through Commit, one atomic batch per protocol operation: a received message's new session record,
// its consumed one-time pre-key and the rest land together or not at all, and a failed operation writes
// nothing. The RocksDB implementation (storage/) maps tables to column families and Commit to a WriteBatch.
//
// Values may hold private keys and ratchet state, so they travel as SecretBytes.
// Thread rules: an engine calls its store from its owner thread only; implementations need no locking for
// the engine's sake.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/secret.h"
#include "core/base/status.h"

namespace cw::session {

enum class Table : uint8_t {
  kMeta = 0,       // local identity key pair, registration id, counters
  kContact,        // per contact: accepted identity key, pending change, verified flag
  kPreKey,         // one-time pre-key records by id
  kSignedPreKey,   // signed pre-key records by id
  kSession,        // session records by (name, device)
  kSenderKey,      // sender-key records by (group, name, device)
  kGroup,          // group membership by group id
  // Tables of the layers above the engine, here so that their rows commit in the same batch as the
  // protocol state they go with (a received message's transcript row and dedup key with its session).
  kTranscript,     // messages per conversation, ordered by sequence
  kOutbox,         // messages written but not yet acknowledged by the relay
  kInboundDedup,   // relay message ids already received
  kConversation,   // per-conversation keys (deleting one crypto-shreds that conversation)
};
inline constexpr int kTableCount = 11;

struct Write {
  Table table;
  std::string key;
  std::optional<SecretBytes> value;  // nullopt deletes the key
};

struct WriteBatch {
  std::vector<Write> writes;
  bool empty() const { return writes.empty(); }
};

class ProtocolStore {
 public:
  virtual ~ProtocolStore() = default;
  // nullopt when the key is absent. Errors are storage failures or records that fail to open.
  virtual Result<std::optional<SecretBytes>> Get(Table table, std::string_view key) = 0;
  // Keys of a table that start with `prefix`, in byte order.
  virtual Result<std::vector<std::string>> ListKeys(Table table, std::string_view prefix) = 0;
  // Applies every write or none.
  virtual Status Commit(WriteBatch batch) = 0;
};

// A store in memory, for tests, fuzzing and benchmarks. Can be told to fail the Nth commit from now.
class InMemoryStore final : public ProtocolStore {
 public:
  Result<std::optional<SecretBytes>> Get(Table table, std::string_view key) override;
  Result<std::vector<std::string>> ListKeys(Table table, std::string_view prefix) override;
  Status Commit(WriteBatch batch) override;

  // The next `n` commits succeed, the one after fails with kUnavailable and writes nothing. -1 turns it off.
  void FailCommitAfter(int n) { fail_after_ = n; }
  size_t commit_count() const { return commits_; }
  // A deep copy, so a test can compare the state before and after an operation.
  std::map<std::string, SecretBytes> Snapshot() const;
  size_t Size(Table table) const { return tables_[static_cast<int>(table)].size(); }

 private:
  std::map<std::string, SecretBytes, std::less<>> tables_[kTableCount];
  int fail_after_ = -1;
  size_t commits_ = 0;
};

}  // namespace cw::session
