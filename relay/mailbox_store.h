// MailboxStore: everything the relay keeps, behind an interface a distributed engine can implement later.
//
// What is stored, and nothing else: mailboxes (id, the link key that owns it, the next sequence number);
// deposit tokens as keyed hashes; messages as (mailbox id, sequence, message id, expiry, opaque envelope);
// one pre-key set per mailbox (public keys only); attachments as (id, uploader's link key, declared size,
// expiry, opaque chunks). No sender, no timestamps besides expiry, no plaintext.
//
// Contract every implementation keeps:
// - A mutating call returns only once its change is durable (for RocksDB: in a synced write). Writes from
//   many threads may share one sync (group commit). A deposit removed (acknowledged) before its write need
//   never be written: its insert may then be answered as soon as the removal is made, as durable as it
//   needs to be (the owner has the message and has said so, or it has expired).
// - Insert is idempotent by (mailbox, message id): a repeated id is stored once and reported kDuplicate;
//   it returns only once the original is durable too.
// - Quota: an insert that would take a mailbox past its message count or byte quota fails with
//   kResourceExhausted and stores nothing. Nothing is ever dropped to make room.
// - Sequence numbers within a mailbox rise strictly and are never reused, even after acks and restarts.
// - TakeBundle hands out each one-time pre-key at most once, even under concurrent calls and across
//   restarts (the removal is durable before the bundle is returned).
// - Watchers of a mailbox hear of every newly inserted message once, outside the store's locks: those
//   registered when it is recorded hear at once, on the inserting thread, before it is durable (the owner
//   deduplicates by message id, and the depositor, answered only after the sync or the message's removal,
//   deposits again if the store loses it); those registered while its sync is under way hear after it (or
//   its removal), on the thread that completes the insert. Duplicates are not announced. A fetch hands out
//   durable messages only.
// - After a failed sync the store refuses every further change with kUnavailable (its in-memory view may
//   be ahead of disk); reopen it.
//
// Thread rules: every method is safe from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/status.h"
#include "core/wire/bundle.h"
#include "relay/types.h"

namespace cw::relay {

struct MessageQuota {
  uint32_t max_messages = 1000;         // kept under the ratchet's 2000 skipped-message-key limit
  uint64_t max_bytes = 64ull << 20;     // 64 MiB of envelopes
};

struct StoredMessage {
  uint64_t seq = 0;
  MessageId id{};
  int64_t expires_at_millis = 0;
  Bytes envelope;
};

enum class InsertOutcome { kInserted, kDuplicate };

// The pre-key material of one mailbox's device.
struct PreKeySet {
  uint32_t registration_id = 0;
  uint32_t device_id = 1;
  wire::PublicKey identity_key{};
  wire::SignedPreKeyPublic signed_pre_key;
  std::vector<wire::OneTimePreKeyPublic> one_time_pre_keys;
};

struct TakenBundle {
  wire::PreKeyBundle bundle;         // one_time_pre_key empty when none was left
  uint32_t one_time_remaining = 0;   // after this take
};

struct AttachmentChunkRead {
  uint64_t total_size = 0;
  Bytes data;
};

struct StoreStats {
  uint64_t mailboxes = 0;
  uint64_t messages = 0;
  uint64_t message_bytes = 0;
  uint64_t attachments = 0;
  uint64_t attachment_bytes = 0;
  uint64_t attachment_bytes_pending = 0;  // announced by attachments but not uploaded yet
  uint64_t syncs = 0;  // synced writes so far (0 for a store without syncs)
};

class MailboxStore {
 public:
  virtual ~MailboxStore() = default;

  // ---- Mailboxes ----
  // kAlreadyExists if the id is taken.
  virtual Status CreateMailbox(const MailboxId& id, const LinkKey& owner) = 0;
  // nullopt when there is no such mailbox.
  virtual Result<std::optional<LinkKey>> MailboxOwner(const MailboxId& id) = 0;
  virtual Result<std::vector<MailboxId>> MailboxesOwnedBy(const LinkKey& owner) = 0;

  // ---- Deposit tokens (kept as hashes) ----
  // A token is claimed (kept until revoked) or, with a claim_by time, claimable: an invite's token that admits
  // its first deposit only before then, and is forgotten (PurgeExpired) if nobody deposited with it by then.
  // The first deposit it admits claims it. The relay thereby enforces an invite's expiry itself, whether or
  // not the inviter is online, and an answer in time keeps working after the expiry.
  // kNotFound without the mailbox; kResourceExhausted when it already holds `max_tokens`. `claim_by_millis`
  // 0: claimed from the start. Adding a token that is present changes nothing.
  virtual Status AddDepositToken(const MailboxId& id, const TokenHash& token, size_t max_tokens,
                                 int64_t claim_by_millis) = 0;
  // kNotFound when absent.
  virtual Status RemoveDepositToken(const MailboxId& id, const TokenHash& token) = 0;
  // Whether a deposit with `token` is taken into `id` at `now_millis` (the token is claimed, or claimable
  // until later); a claimable one is claimed by this call (kClaimed), and the caller answers the deposit
  // only once WhenAllDurable says the claim is durable too, whatever became of the deposit. kRefused for an
  // unknown mailbox as for an unknown or lapsed token: the caller cannot tell them apart, by design.
  enum class Admission { kRefused, kAdmitted, kClaimed };
  virtual Result<Admission> AdmitDeposit(const MailboxId& id, const TokenHash& token, int64_t now_millis) = 0;
  // Runs `fn` once every change made so far is durable, or with the failure that keeps it from ever being;
  // possibly before it returns, or later on a thread of the store's (never under its locks).
  virtual void WhenAllDurable(std::function<void(Status)> fn) = 0;
  // The same question without claiming anything.
  virtual Result<bool> HasDepositToken(const MailboxId& id, const TokenHash& token, int64_t now_millis) = 0;

  // ---- Messages ----
  // kNotFound without the mailbox; kResourceExhausted over quota. REQUIRES: envelope not empty.
  virtual Result<InsertOutcome> Insert(const MailboxId& id, const MessageId& message_id, ByteView envelope,
                                       int64_t expires_at_millis, const MessageQuota& quota) = 0;
  // Insert without holding the calling thread while the change is made durable, so that a server can keep
  // many deposits waiting for one sync without a thread each. `done` runs exactly once with what Insert
  // would have returned, after the message (or, for kDuplicate, the original) is durable or the insert has
  // failed: either on the calling thread before InsertAsync returns (a refusal, a store that is durable at
  // once, an original already synced) or on a thread of the store's (for RocksDB: its committer, after the
  // synced write). The envelope is copied before InsertAsync returns. `done` must not block and must not
  // call back into the store on that thread.
  using InsertDone = std::function<void(Result<InsertOutcome>)>;
  virtual void InsertAsync(const MailboxId& id, const MessageId& message_id, ByteView envelope,
                           int64_t expires_at_millis, const MessageQuota& quota, InsertDone done) = 0;
  // Messages with seq > after_seq in sequence order: at most max_count, and stopping before the total
  // envelope size passes max_bytes (but always at least one when any is waiting). `more` tells whether
  // further messages remain.
  virtual Result<std::vector<StoredMessage>> FetchAfter(const MailboxId& id, uint64_t after_seq, size_t max_count,
                                                        size_t max_bytes, bool* more) = 0;
  // True when the message was present and is now removed.
  virtual Result<bool> Ack(const MailboxId& id, const MessageId& message_id) = 0;
  // Removes each listed message that is present (an id not there is no error) and returns how many it
  // removed; an owner's acknowledgement of many messages at once. The default runs Ack for each; a store
  // that syncs should make them durable together, with one wait.
  virtual Result<size_t> AckMany(const MailboxId& id, std::span<const MessageId> message_ids) {
    size_t removed = 0;
    for (const MessageId& m : message_ids) {
      auto r = Ack(id, m);
      if (!r) return Error(r.error());
      if (*r) ++removed;
    }
    return removed;
  }
  // AckMany without holding the calling thread while the removals are made durable (as InsertAsync): `done`
  // runs exactly once with what AckMany would have returned, on the calling thread before this returns
  // (nothing to remove, a refusal, a store that is durable at once) or later on a thread of the store's. The
  // removals are applied before it returns, so a fetch that follows no longer sees them. `done` must not
  // block and must not call back into the store on that thread.
  using AckDone = std::function<void(Result<size_t>)>;
  virtual void AckManyAsync(const MailboxId& id, std::span<const MessageId> message_ids, AckDone done) = 0;
  // Removes messages and attachments whose expiry is at or before now, and attachments whose upload is
  // unfinished and whose expiry is at or before `unfinished_expiring_by_millis` (the relay passes a later
  // time than now: an abandoned upload goes long before a finished attachment would); returns how many
  // things it removed. Also forgets claimable deposit tokens whose claim_by time has passed (not counted).
  virtual Result<size_t> PurgeExpired(int64_t now_millis, int64_t unfinished_expiring_by_millis) = 0;

  class Watch {
   public:
    virtual ~Watch() = default;  // stops the callbacks (one already running may finish)
  };
  using WatchCallback = std::function<void(const MailboxId&, const StoredMessage&)>;
  // Calls `callback` for every message inserted into `id` from now on until the Watch is destroyed.
  // The callback must not call back into the store on the same thread (it may block the inserter).
  virtual std::unique_ptr<Watch> WatchMailbox(const MailboxId& id, WatchCallback callback) = 0;

  // ---- Pre-key directory ----
  // Replaces the identity key, registration and signed pre-key, and adds the one-time pre-keys (a key id
  // already present is replaced). kNotFound without the mailbox; kResourceExhausted past `max_one_time`
  // stored keys. Returns the number of one-time pre-keys now stored.
  virtual Result<uint32_t> PutPreKeys(const MailboxId& id, const PreKeySet& keys, size_t max_one_time) = 0;
  // Atomically removes one one-time pre-key (if any) and returns the bundle. nullopt when the mailbox has
  // no pre-key set (or does not exist).
  virtual Result<std::optional<TakenBundle>> TakeBundle(const MailboxId& id) = 0;
  // nullopt when no pre-key set was uploaded.
  virtual Result<std::optional<uint32_t>> CountOneTimePreKeys(const MailboxId& id) = 0;

  // ---- Attachments ----
  // kAlreadyExists if the id is taken.
  virtual Status CreateAttachment(const AttachmentId& id, const LinkKey& uploader, uint64_t total_size,
                                  int64_t expires_at_millis) = 0;
  // Appends at `offset`, which must equal the bytes written so far; a chunk lying wholly inside what is
  // already written is a retransmission and accepted unchanged. kNotFound for an unknown id or another
  // uploader; kInvalidArgument for a gap, an overlap or a chunk past the declared size. Returns bytes
  // written so far.
  virtual Result<uint64_t> AppendAttachment(const AttachmentId& id, const LinkKey& uploader, uint64_t offset,
                                            ByteView chunk) = 0;
  // AppendAttachment without holding the calling thread while the chunk is made durable (as InsertAsync):
  // `done` runs exactly once with what AppendAttachment would have returned, on the calling thread before
  // this returns or later on a thread of the store's. Calls made in order are applied in that order, so an
  // uploader's pipelined chunks are never refused for overtaking each other. The chunk is copied before it
  // returns. `done` must not block and must not call back into the store on that thread.
  using AppendDone = std::function<void(Result<uint64_t>)>;
  virtual void AppendAttachmentAsync(const AttachmentId& id, const LinkKey& uploader, uint64_t offset,
                                     ByteView chunk, AppendDone done) = 0;
  // Reads up to max_len bytes at offset from a complete attachment whose last chunk is durable. kNotFound
  // for an unknown or incomplete one; kInvalidArgument for an offset past the end.
  virtual Result<AttachmentChunkRead> ReadAttachment(const AttachmentId& id, uint64_t offset, size_t max_len) = 0;
  // ReadAttachment's answer when the store can give it without waiting for a disk (from memory or the page
  // cache), for a caller on an event loop; nullopt when it cannot: call ReadAttachment where blocking is
  // allowed. The default never can.
  virtual std::optional<Result<AttachmentChunkRead>> TryReadAttachmentWithoutBlocking(const AttachmentId& id,
                                                                                      uint64_t offset,
                                                                                      size_t max_len) {
    (void)id, (void)offset, (void)max_len;
    return std::nullopt;
  }

  virtual Result<StoreStats> Stats() = 0;
  // Bytes free for this store on its disk, what new attachments are weighed against (RelayOptions::
  // min_free_disk_bytes). A store that cannot tell says UINT64_MAX.
  virtual Result<uint64_t> FreeDiskBytes() { return UINT64_MAX; }

  // Ok while the store takes changes. Once a write has failed (a full or failing disk), the error: from then
  // on every change is refused, because what the store holds in memory is ahead of what reached the disk, and
  // only closing and reopening it (which reads back what is durable) brings it back. RunRelay does that.
  virtual Status Health() const { return Status::Ok(); }
};

// A store held in memory: for tests, and for a relay that may lose everything on restart.
std::unique_ptr<MailboxStore> NewInMemoryMailboxStore();

}  // namespace cw::relay
