// The audit trail: per device, append-only, hash-chained, with signed checkpoints.
//
// Entries. Each AuditEntry has a sequence number (1, 2, 3, ... with no gaps), the device clock's time, an
// event type and ids only: `subject` (whom or what it concerns: an identity fingerprint, a conversation hash)
// and `ref` (which thing: a message id, a receipt id), both IsValidId strings, so no message content, name
// or free text can be recorded; a small `code` and an optional 32-byte `digest` of the thing referred to.
// An entry also records prev_hash, the chain hash of the entry before it. The chain hash of entry n is
//   h(n) = BLAKE2b-256(h(n-1) || EncodeAuditEntry(entry n)),   h(0) =
//   BLAKE2b-256("cipherward-audit-genesis-v1"
//   || 0x00 || chain_id),
// so every entry commits to the whole chain before it, and chains of different devices never share a hash.
//
// Checkpoints. An AuditCheckpoint is (chain_id, sequence n, h(n), time) signed by the device's Signer
// (its identity key, see signing.h). The log writes one every `checkpoint_interval` entries and on demand
// (Checkpoint()): before an export, on lock, and to send to a peer. A checkpoint sent to a peer inside the
// session is a *signed chain head*: the peer records it (RecordPeerHead) and keeps its bytes, so either side
// can later show what the other had recorded.
//
// What VerifyChain proves (and what it cannot): given the entries, every checkpoint anyone holds and the
// device's public key, it fails on
//   - a modified entry: its hash no longer matches the next entry's prev_hash, or a checkpoint after it;
//   - a deleted entry: a sequence gap;
//   - reordered or inserted entries: a sequence out of order or repeated, or a prev_hash mismatch;
//   - truncation: a checkpoint whose sequence is past the end of the chain;
//   - a checkpoint not signed by the device, for another chain, or for a different head.
// It cannot detect, for the entries after the last checkpoint it is given (the unanchored tail, which it
// reports): their removal from the end (truncation back to any point after the last checkpoint), an edit of
// the final entry (no later entry's prev_hash disagrees with it), or the replacement of any tail entry by
// someone who rewrites every later entry consistently (whoever can write the store can recompute unsigned
// hashes). Within the sealed store an attacker without the master key can delete or
// roll back records but not forge them, so there the tail is exposed to truncation only. The tail is
// bounded by checkpoint_interval, shrinks to nothing on each on-demand checkpoint, and every signed head a
// peer holds is a checkpoint for this purpose.
//
// Storage: AuditLog writes through an AuditSink (append-only: entries by sequence, checkpoints by sequence).
// InMemoryAuditSink is for tests; the runtime's sink is a sealed-store table (docs/compliance.md). For writes
// that must commit with other state (a transcript row and its kMessageReceived entry), Prepare gives the
// record to stage into the same batch and Confirm advances the log after the batch commits.
//
// Thread rules: AuditLog is not thread-safe (the runtime's owner thread). Ownership: the sink, clock, signer
// and verifier are not owned and must outlive the log.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/clock.h"
#include "core/base/status.h"
#include "core/compliance/signing.h"

namespace cw::compliance {

inline constexpr uint8_t kAuditFormatVersion = 1;
inline constexpr size_t kMaxAuditIdSize = 128;
inline constexpr size_t kMaxAuditEntrySize = 512;
inline constexpr size_t kMaxCheckpointSize = 512;

enum class AuditEventType : uint8_t {
  kUnlockSucceeded = 1,
  kUnlockFailed = 2,        // code: consecutive failures
  kLocked = 3,              // code: 0 by the user, 1 by the idle timer (automatic logoff)
  kSessionEstablished = 4,  // subject: peer identity fingerprint
  kIdentityKeyChanged = 5,  // subject: peer (by its trusted key); digest: BLAKE2b of the new key; code: 0
                            // detected, 1 accepted by the user, 2 rejected by the user, 3 a rejection the
                            // user took back (the key awaits a decision again)
  kVerification = 6,        // subject: peer; code: 1 verified, 0 cleared
  kMessageSent = 7,         // subject: conversation hash; ref: message id
  kMessageReceived = 8,
  kMessageRead = 9,
  kMessageRefused = 10,     // a message whose purpose lacked consent; ref: message id; subject: sender
  kAttachment = 11,         // ref: attachment id; digest: its content hash
  kExport = 12,             // digest: BLAKE2b of the export body
  kErasure = 13,            // subject: conversation hash; ref: erasure id; digest: erasure receipt digest
  kConsentGiven = 14,       // subject: patient fingerprint; ref: receipt id; digest: receipt digest
  kConsentWithdrawn = 15,   // as kConsentGiven; digest: BLAKE2b of the withdrawal
  kPolicyChanged = 16,      // digest: ConsentPolicy::PolicyDigest or retention policy digest
  kRetentionConflict = 17,  // ref: message id; code: ms the retention floor added to a disappearing timer
  kPeerChainHead = 18,    // subject: peer chain id; code: its sequence; digest: the head's checkpoint digest
  kEmergencyAccess = 19,  // break-glass access (HIPAA 164.312(a)(2)(ii)); subject: who
};
inline constexpr uint8_t kMaxAuditEventType = 19;
std::string_view AuditEventTypeName(AuditEventType type);

struct AuditEvent {
  AuditEventType type = AuditEventType::kUnlockSucceeded;
  std::string subject;  // empty or IsValidId
  std::string ref;      // empty or IsValidId
  uint64_t code = 0;
  Bytes digest;  // empty or kDigestSize bytes
};

struct AuditEntry {
  uint64_t sequence = 0;
  int64_t time_ms = 0;
  AuditEventType type = AuditEventType::kUnlockSucceeded;
  std::string subject;
  std::string ref;
  uint64_t code = 0;
  Bytes digest;
  Digest prev_hash{};
  friend bool operator==(const AuditEntry&, const AuditEntry&) = default;
};

struct AuditCheckpoint {
  std::string chain_id;
  uint64_t sequence = 0;  // the number of entries covered; 0 covers none (the genesis)
  Digest head{};          // h(sequence)
  int64_t time_ms = 0;
  SigningPublicKey signer;
  Bytes signature;
  friend bool operator==(const AuditCheckpoint&, const AuditCheckpoint&) = default;
};

Digest AuditGenesis(std::string_view chain_id);
// h(n) from h(n-1) = entry.prev_hash.
Digest AuditEntryHash(const AuditEntry& entry);

// Canonical msgpack, [1, sequence, time, type, subject, ref, code, digest, prev_hash]. Decode is strict:
// kMalformed for anything that breaks a rule above or is not canonical; kUnsupportedVersion.
Result<Bytes> EncodeAuditEntry(const AuditEntry& entry);
Result<AuditEntry> DecodeAuditEntry(ByteView bytes);
// [1, [1, chain_id, sequence, head, time, [scheme, key]] (bin), signature].
Result<Bytes> EncodeCheckpoint(const AuditCheckpoint& checkpoint);
Result<AuditCheckpoint> DecodeCheckpoint(ByteView bytes);
Digest CheckpointDigest(const AuditCheckpoint& checkpoint);
// Checks a checkpoint's signature and that it belongs to `chain_id` and `device_key`.
Status VerifyCheckpoint(const AuditCheckpoint& checkpoint, std::string_view chain_id,
                        const SigningPublicKey& device_key, const Verifier& verifier);

struct ChainVerification {
  uint64_t entries = 0;           // entries verified
  uint64_t anchored_through = 0;  // the highest sequence a valid checkpoint covers
  uint64_t unanchored_tail = 0;   // entries after it: exposed to truncation (see above)
  Digest head{};                  // h(entries)
};

// See the header comment. Errors: kBadSignature (a checkpoint not signed by `device_key` or for another
// chain), kTampered naming the first sequence where the chain breaks and how (modified, missing,
// out of order, truncated). Checkpoints may come in any order and from any holder.
Result<ChainVerification> VerifyChain(std::string_view chain_id, const std::vector<AuditEntry>& entries,
                                      const std::vector<AuditCheckpoint>& checkpoints,
                                      const SigningPublicKey& device_key, const Verifier& verifier);
// The same from stored bytes (kMalformed for a record that does not decode).
Result<ChainVerification> VerifyChainRecords(std::string_view chain_id, const std::vector<Bytes>& entries,
                                             const std::vector<Bytes>& checkpoints,
                                             const SigningPublicKey& device_key, const Verifier& verifier);

// Append-only storage of one chain. Implementations must refuse (kAlreadyExists / kInvalidArgument) an entry
// whose sequence is not one past the last, so no caller can overwrite history through the interface.
class AuditSink {
 public:
  virtual ~AuditSink() = default;
  virtual Status AppendEntry(uint64_t sequence, ByteView record) = 0;
  virtual Status AppendCheckpoint(uint64_t sequence, ByteView record) = 0;
  virtual Result<std::vector<Bytes>> ReadEntries() const = 0;      // in sequence order
  virtual Result<std::vector<Bytes>> ReadCheckpoints() const = 0;  // in the order written
};

// For tests: the records in vectors, with direct access so tests can tamper with them.
class InMemoryAuditSink final : public AuditSink {
 public:
  Status AppendEntry(uint64_t sequence, ByteView record) override;
  Status AppendCheckpoint(uint64_t sequence, ByteView record) override;
  Result<std::vector<Bytes>> ReadEntries() const override { return entries_; }
  Result<std::vector<Bytes>> ReadCheckpoints() const override { return checkpoints_; }
  std::vector<Bytes>& entries() { return entries_; }
  std::vector<Bytes>& checkpoints() { return checkpoints_; }
  // The next AppendEntry/AppendCheckpoint fails with kUnavailable and stores nothing.
  void FailNextAppend() { fail_next_ = true; }

 private:
  std::vector<Bytes> entries_;
  std::vector<Bytes> checkpoints_;
  bool fail_next_ = false;
};

struct AuditLogOptions {
  std::string chain_id;                // IsValidId, e.g. "device:" + identity fingerprint + ":1"
  const Clock* clock = nullptr;        // SystemClock when null
  Signer* signer = nullptr;            // the device's signer; required
  const Verifier* verifier = nullptr;  // StandardVerifier when null
  uint64_t checkpoint_interval = 64;   // a checkpoint after every this many entries; 0 = on demand only
};

// An entry prepared but not yet in the log: stage `record` under key `entry.sequence` in the same batch as
// the state it goes with, commit the batch, then Confirm. Only one may be pending at a time.
struct PendingAuditEntry {
  AuditEntry entry;
  Bytes record;
  Digest hash{};
};

class AuditLog {
 public:
  // Reads and verifies what `sink` holds (its own checkpoints, under the signer's key) and continues the
  // chain. kTampered / kBadSignature when the stored chain does not verify: the runtime must surface that,
  // not start over. kInvalidArgument for missing options.
  static Result<std::unique_ptr<AuditLog>> Open(AuditSink* sink, AuditLogOptions options);

  // Appends one entry through the sink (and a checkpoint when the interval is reached). kInvalidArgument for
  // an event that breaks the entry rules; the sink's error otherwise, leaving the log unchanged.
  Result<AuditEntry> Append(const AuditEvent& event);

  Result<PendingAuditEntry> Prepare(const AuditEvent& event);
  // REQUIRES: `pending` came from the last Prepare and its record was committed. Writes an interval
  // checkpoint if due; the entry stays appended even if that checkpoint write fails (Checkpoint() retries).
  Status Confirm(const PendingAuditEntry& pending);
  // Forgets a prepared entry whose batch did not commit.
  void Abandon() { pending_ = false; }

  // Signs and stores a checkpoint of the current head (a signed chain head to send to a peer, too).
  Result<AuditCheckpoint> Checkpoint();

  uint64_t size() const { return size_; }
  const Digest& head() const { return head_; }
  const std::string& chain_id() const { return options_.chain_id; }
  const SigningPublicKey& device_key() const { return options_.signer->public_key(); }

 private:
  AuditLog(AuditSink* sink, AuditLogOptions options);
  Result<AuditEntry> MakeEntry(const AuditEvent& event) const;

  AuditSink* sink_;
  AuditLogOptions options_;
  uint64_t size_ = 0;
  Digest head_{};
  uint64_t last_checkpoint_ = 0;
  bool pending_ = false;
};

// Verifies a peer's signed chain head (against the peer's key, as the session authenticates it) and records
// it in `log` as kPeerChainHead. The caller keeps the head's bytes (EncodeCheckpoint) to hand to a later
// VerifyChain of that peer's chain.
Result<AuditEntry> RecordPeerHead(AuditLog& log, const AuditCheckpoint& peer_head,
                                  std::string_view peer_chain_id, const SigningPublicKey& peer_key,
                                  const Verifier& verifier);

}  // namespace cw::compliance
