// StoreCore: the part of every MailboxStore that is the same whatever keeps the bytes. Internal to
// cw_relay; not a public header.
//
// It holds an in-memory index of everything except envelopes and attachment chunks (mailboxes, owners,
// token hashes, message index with sizes and expiries, pre-key sets, attachment metadata) and applies every
// rule there under one mutex: idempotency, quota, sequence numbers, one-time pre-key hand-out. A subclass
// makes the changes durable through the Record* hooks, which run under that mutex in the order the changes
// happen, and WaitDurable, which runs after the mutex is released, so that many callers share one sync.
//
// Thread rules: every public method is safe from any thread. Hooks are called with mu_ held.
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

#include "relay/mailbox_store.h"

namespace cw::relay::internal {

struct MessageEntry {
  uint64_t seq = 0;
  MessageId id{};
  int64_t expires_at_millis = 0;
  uint32_t size = 0;
  uint64_t ticket = 0;  // the durability ticket of its insert (a duplicate waits for the same one)
  Bytes envelope;       // kept only by stores that hold bodies in memory
};

struct PreKeyState {
  uint32_t registration_id = 0;
  uint32_t device_id = 1;
  wire::PublicKey identity_key{};
  wire::SignedPreKeyPublic signed_pre_key;
  std::map<uint32_t, wire::PublicKey> one_time;  // handed out lowest id first
};

// Sequence numbers are handed out in reserved ranges: RecordMailbox stores seq_limit, which is above every
// seq ever handed out, so an insert records the mailbox itself only once per kSeqReserve messages (one
// key fewer per deposit for a store that writes each record). After a reopen, numbering resumes at the
// recorded limit: it may skip the unused rest of a range, and never reuses a number.
inline constexpr uint64_t kSeqReserve = 4096;

// Message ids are chosen by depositors, so they are hashed with a key drawn at start (SipHash-2-4): nobody
// can pick ids that share a bucket and make a mailbox's lookups linear.
struct MessageIdHash {
  size_t operator()(const MessageId& id) const noexcept;
};

struct MailboxState {
  LinkKey owner{};
  uint64_t next_seq = 1;
  uint64_t seq_limit = 1;  // every seq handed out is below it; recorded by RecordMailbox
  uint64_t bytes = 0;
  std::map<uint64_t, MessageEntry> by_seq;
  std::unordered_map<MessageId, uint64_t, MessageIdHash> by_id;
  std::map<TokenHash, int64_t> tokens;  // token -> claim_by_millis (0: claimed)
  std::optional<PreKeyState> pre_keys;
};

struct AttachmentState {
  LinkKey uploader{};
  uint64_t total_size = 0;
  uint64_t written = 0;
  int64_t expires_at_millis = 0;
  uint64_t ticket = 0;  // makes the last append durable; a complete attachment is read only once it is
  std::map<uint64_t, Bytes> chunks;  // by offset; kept only by stores that hold bodies in memory
};

class WatchRegistry;

// Mailbox ids are drawn at random by the relay, so their first eight bytes are already a uniform hash; an id
// a client names that matches no mailbox costs one bucket's (short) chain, as any other lookup.
struct MailboxIdHash {
  size_t operator()(const MailboxId& id) const noexcept {
    uint64_t h = 0;
    for (size_t i = 0; i < sizeof h; ++i) h = (h << 8) | id[i];
    return static_cast<size_t>(h);
  }
};

class StoreCore : public virtual MailboxStore {
 public:
  StoreCore();
  ~StoreCore() override;

  Status CreateMailbox(const MailboxId& id, const LinkKey& owner) override;
  Result<std::optional<LinkKey>> MailboxOwner(const MailboxId& id) override;
  Result<std::vector<MailboxId>> MailboxesOwnedBy(const LinkKey& owner) override;
  Status AddDepositToken(const MailboxId& id, const TokenHash& token, size_t max_tokens,
                         int64_t claim_by_millis) override;
  Status RemoveDepositToken(const MailboxId& id, const TokenHash& token) override;
  Result<Admission> AdmitDeposit(const MailboxId& id, const TokenHash& token, int64_t now_millis) override;
  void WhenAllDurable(std::function<void(Status)> fn) override;
  Result<bool> HasDepositToken(const MailboxId& id, const TokenHash& token, int64_t now_millis) override;
  Result<InsertOutcome> Insert(const MailboxId& id, const MessageId& message_id, ByteView envelope,
                               int64_t expires_at_millis, const MessageQuota& quota) override;
  void InsertAsync(const MailboxId& id, const MessageId& message_id, ByteView envelope, int64_t expires_at_millis,
                   const MessageQuota& quota, InsertDone done) override;
  Result<std::vector<StoredMessage>> FetchAfter(const MailboxId& id, uint64_t after_seq, size_t max_count,
                                                size_t max_bytes, bool* more) override;
  Result<bool> Ack(const MailboxId& id, const MessageId& message_id) override;
  Result<size_t> AckMany(const MailboxId& id, std::span<const MessageId> message_ids) override;
  void AckManyAsync(const MailboxId& id, std::span<const MessageId> message_ids, AckDone done) override;
  Result<size_t> PurgeExpired(int64_t now_millis, int64_t unfinished_expiring_by_millis) override;
  std::unique_ptr<Watch> WatchMailbox(const MailboxId& id, WatchCallback callback) override;
  Result<uint32_t> PutPreKeys(const MailboxId& id, const PreKeySet& keys, size_t max_one_time) override;
  Result<std::optional<TakenBundle>> TakeBundle(const MailboxId& id) override;
  Result<std::optional<uint32_t>> CountOneTimePreKeys(const MailboxId& id) override;
  Status CreateAttachment(const AttachmentId& id, const LinkKey& uploader, uint64_t total_size,
                          int64_t expires_at_millis) override;
  Result<uint64_t> AppendAttachment(const AttachmentId& id, const LinkKey& uploader, uint64_t offset,
                                    ByteView chunk) override;
  void AppendAttachmentAsync(const AttachmentId& id, const LinkKey& uploader, uint64_t offset, ByteView chunk,
                             AppendDone done) override;
  Result<AttachmentChunkRead> ReadAttachment(const AttachmentId& id, uint64_t offset, size_t max_len) override;
  std::optional<Result<AttachmentChunkRead>> TryReadAttachmentWithoutBlocking(const AttachmentId& id,
                                                                              uint64_t offset,
                                                                              size_t max_len) override;
  Result<StoreStats> Stats() override;

 protected:
  // ---- Durability hooks (called with mu_ held) ----
  // Whether bodies (envelopes, chunks) stay in the index; a store that keeps them elsewhere says false.
  virtual bool KeepsBodies() const = 0;
  // Not ok once a sync has failed: every change is then refused (MailboxStore::Health).
  Status Health() const override = 0;
  // Owner or seq_limit changed (not called for each next_seq step: see kSeqReserve).
  virtual void RecordMailbox(const MailboxId& id, const MailboxState& state) = 0;
  // `claim_by_millis` as in MailboxStore::AddDepositToken; ignored when !present.
  virtual void RecordToken(const MailboxId& id, const TokenHash& token, bool present, int64_t claim_by_millis) = 0;
  virtual void RecordMessage(const MailboxId& id, const MessageEntry& entry, ByteView envelope) = 0;
  // A store may drop a message it has not written yet together with its removal: the insert's callback, if
  // WhenInsertDurable kept it, then runs from RunSettled.
  virtual void RecordMessageRemoved(const MailboxId& id, const MessageEntry& entry) = 0;
  // The identity and signed pre-key in `state`, and of its one-time keys only those this upload brought
  // (`uploaded`, new or replacing one with the same id): the others are stored already, and rewriting up to
  // the whole set for every upload would put kilobytes into the batch every deposit waits on.
  virtual void RecordPreKeys(const MailboxId& id, const PreKeyState& state,
                             std::span<const wire::OneTimePreKeyPublic> uploaded) = 0;
  virtual void RecordOneTimeRemoved(const MailboxId& id, uint32_t key_id) = 0;
  virtual void RecordAttachment(const AttachmentId& id, const AttachmentState& state) = 0;
  // The one Record* that can fail on its own (a store may write chunk bodies outside its batch, to a file):
  // on failure the append is refused and nothing about the attachment changes.
  virtual Status RecordAttachmentChunk(const AttachmentId& id, uint64_t offset, ByteView chunk) = 0;
  virtual void RecordAttachmentRemoved(const AttachmentId& id, const AttachmentState& state) = 0;
  // The ticket that covers every change recorded so far (called with mu_ held, after the Record* calls).
  virtual uint64_t Ticket() = 0;
  // Blocks until the changes covered by `ticket` are durable (called without mu_).
  virtual Status WaitDurable(uint64_t ticket) = 0;
  // Runs `fn` once with Ok when the changes covered by `ticket` are durable, or with the failure that keeps
  // them from ever being. Called without mu_; `fn` may run before WhenDurable returns (already durable) or
  // later on a thread of the subclass's, never under its locks.
  virtual void WhenDurable(uint64_t ticket, std::function<void(Status)> fn) = 0;
  // WhenDurable for the insert of message `seq` (called without mu_). A store whose RecordMessageRemoved can
  // drop a message it has not written may instead keep `fn` with the message, and run it with Ok from
  // RunSettled once a removal drops it: the owner has the message and has said so, and nothing is left to
  // make durable, so its depositor need not wait for a write of other changes.
  virtual void WhenInsertDurable(const MailboxId& id, uint64_t seq, uint64_t ticket,
                                 std::function<void(Status)> fn) {
    (void)id;
    (void)seq;
    WhenDurable(ticket, std::move(fn));
  }
  // Runs the insert callbacks that removals settled (see WhenInsertDurable), whoever made them. Called
  // without mu_ by every caller that removes messages, before it answers, however it leaves (SettleOnExit).
  virtual void RunSettled() {}
  virtual uint64_t SyncCount() const = 0;

  // ---- Body reads for stores that do not keep bodies (called without mu_) ----
  // Envelopes of the given durable messages, in order.
  virtual Result<std::vector<Bytes>> ReadEnvelopes(const MailboxId& id, const std::vector<uint64_t>& seqs);
  virtual Result<Bytes> ReadChunks(const AttachmentId& id, uint64_t offset, size_t len);
  // ReadChunks if it needs no wait for a disk; nullopt otherwise (the default).
  virtual std::optional<Result<Bytes>> TryReadChunksWithoutBlocking(const AttachmentId& id, uint64_t offset,
                                                                    size_t len);
  // Whether the message's insert is durable and may be handed out.
  virtual bool Durable(uint64_t ticket) const { (void)ticket; return true; }

  // For subclasses that load the index from disk at open (before any other call).
  std::map<MailboxId, MailboxState>& mailboxes_for_load() { return mailboxes_; }
  std::map<AttachmentId, AttachmentState>& attachments_for_load() { return attachments_; }
  void RebuildDerived();  // owners_, totals: after loading

 private:
  class SettleOnExit;
  // ReadAttachment; with `without_blocking`, nullopt where the body read would wait for a disk.
  std::optional<Result<AttachmentChunkRead>> ReadAttachmentVia(const AttachmentId& id, uint64_t offset,
                                                               size_t max_len, bool without_blocking);
  // What an insert decided under mu_: either the answer now (a refusal), or the ticket to wait for.
  struct InsertPlan {
    Status refused;                 // not ok: answer with this, nothing was recorded
    InsertOutcome outcome = InsertOutcome::kInserted;
    uint64_t ticket = 0;
    StoredMessage announced;        // for kInserted: what watchers hear
  };
  // Applies an append (or recognises a retransmission) and sets *ticket to what makes it durable; returns
  // the bytes written so far, or the refusal.
  Result<uint64_t> PlanAppend(const AttachmentId& id, const LinkKey& uploader, uint64_t offset,
                              ByteView chunk, uint64_t* ticket);
  InsertPlan PlanInsert(const MailboxId& id, const MessageId& message_id, ByteView envelope,
                        int64_t expires_at_millis, const MessageQuota& quota);
  // Removes the listed messages that are present and sets *ticket to what makes that durable; returns how
  // many it removed, or the refusal.
  Result<size_t> PlanAck(const MailboxId& id, std::span<const MessageId> message_ids, uint64_t* ticket);

  MailboxState* Find(const MailboxId& id);
  void RemoveMessage(const MailboxId& id, MailboxState& box, uint64_t seq);

  mutable std::mutex mu_;
  std::map<MailboxId, MailboxState> mailboxes_;  // ordered: PurgeExpired resumes after a mailbox id
  // Find's index into mailboxes_ (whose nodes never move): every deposit looks its mailbox up twice, and a
  // tree walk over thousands of mailboxes was the relay loop thread's largest cost (cw_relay_bench profile).
  std::unordered_map<MailboxId, MailboxState*, MailboxIdHash> mailbox_index_;
  std::map<LinkKey, std::set<MailboxId>> owners_;
  std::map<AttachmentId, AttachmentState> attachments_;
  uint64_t total_messages_ = 0;
  uint64_t total_bytes_ = 0;
  uint64_t total_attachment_bytes_ = 0;
  uint64_t announced_attachment_bytes_ = 0;  // sum of total_size: written plus still to come
  std::unique_ptr<WatchRegistry> watches_;
};

}  // namespace cw::relay::internal
