// Transcripts: the messages of each conversation, on any session::ProtocolStore (SealedStore on a device).
//
// Layout (tables of core/session/store.h):
// - kConversation, key conversation id: the conversation's own random 256-bit key, its disappearing timer
//   and creation time. The store seals the record under the master key.
// - kTranscript, key conversation id '\0' BE64(sequence): one message. Its status and expiry travel beside a
//   blob sealed with XChaCha20-Poly1305 under the conversation key (associated data: a hash of the
//   conversation id and the sequence) that holds everything else: message id, direction, sender, times,
//   body and attachment references. The store seals the whole row again under the master key.
// - kOutbox, same key as the row: the ciphertext of an outgoing message and its recipients, until the relay
//   acknowledges it (MarkSent).
// - kInboundDedup, key relay message id: the expiry of that id (relay TTL, 30 days by default).
//
// Crypto-shredding: DeleteConversation deletes the conversation key, the rows and the outbox entries, then
// has the store purge deleted values of kConversation from its files (TranscriptOptions::purge_deleted,
// SealedStore::PurgeDeleted). Rows that compaction has not yet rewritten stay in the files, but their blobs
// were sealed under a key that exists nowhere any more. The deletion's batch also records that a purge is
// due (kMeta "transcripts.purge_due"), cleared once one succeeds: a purge cut short by a crash or an I/O
// error is run again by FinishPendingPurge, which the client calls each time it opens.
//
// Atomicity: StageIncoming and StageOutgoing only add writes to a session::WriteBatch. Pass them as the
// engine's hook, so the transcript row, the dedup key or outbox entry and the new session state commit in
// one batch or not at all:
//   engine.Decrypt(sender, ct, [&](const session::Received& r, session::WriteBatch* b) {
//     return transcripts.StageIncoming(r, relay_id, b);
//   });
// REQUIRES: a batch staged for a conversation is committed (or dropped) before the next one for that
// conversation is staged, and no DeleteConversation or PendingOutbox runs in between; and this is the only
// Transcripts on its store (it keeps the next sequences and the outbox's keys in memory).
//
// Sequences start at 1 and only grow; a staged batch that is never committed leaves a gap.
//
// Thread rules: not thread-safe; use from the thread that owns the engine (the store's owner thread).
// Ownership: the store, Clock and Random are not owned and must outlive the Transcripts.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/base/status.h"
#include "core/session/engine.h"
#include "core/session/store.h"

namespace cw::storage {

inline constexpr size_t kMessageIdSize = 16;
inline constexpr size_t kConversationKeySize = 32;
inline constexpr size_t kMaxConversationIdSize =
    320;  // "group:" + a 64-byte group id, "dm:" + a 256-byte name
inline constexpr size_t kMaxSenderSize = 256;
inline constexpr size_t kMaxBodySize = 96 * 1024;  // the relay's cap on a message
inline constexpr size_t kMaxAttachments = 16;
inline constexpr size_t kMaxAttachmentRefSize = 1024;
inline constexpr size_t kMaxRelayMessageIdSize = 128;
inline constexpr size_t kMaxOutboxRecipients = 256;                     // wire::kMaxGroupMembers
inline constexpr int64_t kDefaultDedupTtlMs = 30LL * 24 * 3600 * 1000;  // the relay's mailbox TTL

using MessageId = std::array<uint8_t, kMessageIdSize>;

enum class Direction : uint8_t { kIncoming = 1, kOutgoing = 2 };
enum class MessageStatus : uint8_t { kQueued = 1, kSent = 2, kDelivered = 3, kRead = 4, kFailed = 5 };

struct TranscriptMessage {
  std::string conversation_id;
  uint64_t sequence = 0;
  MessageId message_id{};
  Direction direction = Direction::kIncoming;
  std::string sender;  // the contact's name; this device's local name for outgoing messages
  uint32_t sender_device = 1;
  int64_t sent_at_ms = 0;      // 0 when unknown
  int64_t received_at_ms = 0;  // 0 for outgoing messages
  SecretBytes body;
  // Opaque references as the runtime wrote them: a file's carries its key, so they are wiped like the body.
  std::vector<SecretBytes> attachments;
  MessageStatus status = MessageStatus::kQueued;
  int64_t expires_at_ms = 0;  // 0: never
};

struct ConversationInfo {
  std::string id;
  int64_t disappearing_ms = 0;  // 0: off
  int64_t created_at_ms = 0;
};

// An outgoing message's ciphertext waiting for the relay's acknowledgement.
struct OutboxEntry {
  std::string conversation_id;
  uint64_t sequence = 0;
  std::vector<session::Address> recipients;
  session::Ciphertext message;
};

struct IncomingDetails {
  std::string conversation_id;  // empty: ConversationIdFor(received)
  int64_t sent_at_ms = 0;       // the sender's timestamp from the envelope, when known
  std::vector<SecretBytes> attachments;

  IncomingDetails Clone() const {
    IncomingDetails c{conversation_id, sent_at_ms, {}};
    for (const auto& a : attachments) c.attachments.push_back(a.Clone());
    return c;
  }
};

struct SweepResult {
  size_t messages = 0;    // expired transcript rows deleted
  size_t dedup_keys = 0;  // expired relay message ids forgotten
};

struct TranscriptOptions {
  Clock* clock = nullptr;    // SystemClock when null
  Random* random = nullptr;  // SystemRandom when null: conversation keys, message ids, nonces
  std::string local_name;    // the sender recorded on outgoing messages
  int64_t dedup_ttl_ms = kDefaultDedupTtlMs;
  // Called with kConversation after a conversation is deleted, to remove the deleted key from the store's
  // files: wire it to SealedStore::PurgeDeleted. Without it the key lingers in files until compaction.
  std::function<Status(session::Table)> purge_deleted;
};

class Transcripts {
 public:
  // kInvalidArgument for a null store or a dedup TTL that is not positive.
  static Result<std::unique_ptr<Transcripts>> New(session::ProtocolStore* store, TranscriptOptions options);
  ~Transcripts();
  Transcripts(const Transcripts&) = delete;
  Transcripts& operator=(const Transcripts&) = delete;

  // "dm:<name>" for a 1:1 conversation, "group:<group id>" for a care-team group.
  static std::string DirectConversationId(std::string_view name);
  static std::string GroupConversationId(std::string_view group_id);
  static std::string ConversationIdFor(const session::Received& received);
  // Non-empty, at most kMaxConversationIdSize bytes, no NUL.
  static bool IsValidConversationId(std::string_view id);

  // --- Conversations ---
  // Creates the conversation (a new key) unless it exists. kInvalidArgument for a bad id.
  Status EnsureConversation(std::string_view conversation_id);
  Result<std::optional<ConversationInfo>> GetConversation(std::string_view conversation_id);
  Result<std::vector<ConversationInfo>> ListConversations();
  // Messages staged after this expire `ms` after they were received (incoming) or sent (outgoing); 0 turns
  // the timer off. Earlier messages keep their expiry. Creates the conversation if needed.
  Status SetDisappearingTimer(std::string_view conversation_id, int64_t ms);
  // Crypto-shreds the conversation: its key, rows and outbox entries are deleted in one batch, then
  // purge_deleted(kConversation) runs. kNotFound when there is no such conversation.
  // `also` commits in the same batch (an erasure's receipt and audit entry: the conversation is then never
  // gone without them, nor they there without it going). With `purged`, the purge's outcome goes there and
  // the result says only whether the deletion committed.
  Status DeleteConversation(std::string_view conversation_id, session::WriteBatch also = {},
                            Status* purged = nullptr);
  // Runs purge_deleted(kConversation) if a deletion's purge did not finish (the app was killed during it, or
  // it failed), and then clears the record that it is due. Ok when none was due; the purge's error when it
  // fails again (it stays due).
  Status FinishPendingPurge();

  // --- Staging (the engine hooks) ---
  // Adds to `batch` the dedup key of `relay_message_id` (expiring after dedup_ttl_ms) and, for a user
  // message (Received::Kind kMessage or kGroupMessage), its transcript row with status kDelivered (and the
  // conversation's key record when the conversation is new). kDuplicate when the relay id was received
  // already; kInvalidArgument for an empty or over-long relay id, an over-long body or attachment list.
  Status StageIncoming(const session::Received& received, std::string_view relay_message_id,
                       session::WriteBatch* batch, const IncomingDetails& details = {},
                       uint64_t* sequence = nullptr);
  // Adds the transcript row (status kQueued) and the outbox entry for `message`, the ciphertext of `body`
  // going to `recipients`.
  Status StageOutgoing(std::string_view conversation_id, std::span<const uint8_t> body,
                       const std::vector<SecretBytes>& attachments,
                       const std::vector<session::Address>& recipients, const session::Ciphertext& message,
                       session::WriteBatch* batch, uint64_t* sequence = nullptr);
  // True while `relay_message_id` is remembered as received (not yet past its expiry).
  Result<bool> IsDuplicate(std::string_view relay_message_id);

  // --- Reading ---
  // kNotFound for no such row, or a row past its expiry (it counts as gone even before the sweeper runs).
  Result<TranscriptMessage> GetMessage(std::string_view conversation_id, uint64_t sequence);
  // The latest `n` messages, oldest first.
  Result<std::vector<TranscriptMessage>> Latest(std::string_view conversation_id, size_t n);
  // Up to `n` messages with a sequence below `before`, oldest first (the page before `before`).
  Result<std::vector<TranscriptMessage>> Before(std::string_view conversation_id, uint64_t before, size_t n);
  // Every live message, oldest first.
  Result<std::vector<TranscriptMessage>> All(std::string_view conversation_id);

  // --- Status and outbox ---
  Status SetStatus(std::string_view conversation_id, uint64_t sequence, MessageStatus status);
  Result<std::vector<OutboxEntry>> PendingOutbox();
  // The relay acknowledged the message: status kSent (unless a receipt already made it kDelivered or kRead,
  // which it keeps) and the outbox entry deleted, in one commit.
  Status MarkSent(std::string_view conversation_id, uint64_t sequence);

  // --- Disappearing messages ---
  // Deletes every transcript row whose expiry is at or before `now_ms`, and forgets expired relay ids.
  Result<SweepResult> SweepExpired(int64_t now_ms);
  Result<SweepResult> SweepExpired();  // now from the Clock

  class Impl;

 private:
  explicit Transcripts(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

std::string_view DirectionName(Direction d);          // "incoming", "outgoing"
std::string_view MessageStatusName(MessageStatus s);  // "queued", "sent", "delivered", "read", "failed"
std::optional<Direction> ParseDirection(std::string_view name);
std::optional<MessageStatus> ParseMessageStatus(std::string_view name);

}  // namespace cw::storage
