#include "storage/transcript.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <optional>
#include <set>

#include "storage/transcript_records.h"

namespace cw::storage {
namespace {

using session::Table;
using session::WriteBatch;

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
// Sweeps and deletes commit in batches of this many writes, so one huge conversation does not become one
// huge batch.
constexpr size_t kDeleteBatch = 1000;
// In kMeta while a deletion's purge is due (see FinishPendingPurge).
constexpr std::string_view kPurgeDueKey = "transcripts.purge_due";

session::Write Put(Table t, std::string key, SecretBytes value) {
  return session::Write{t, std::move(key), std::optional<SecretBytes>(std::move(value))};
}
session::Write Del(Table t, std::string key) { return session::Write{t, std::move(key), std::nullopt}; }

Status CheckConversationId(std::string_view id) {
  if (!Transcripts::IsValidConversationId(id))
    return Status(StatusCode::kInvalidArgument, "bad conversation id");
  return Status::Ok();
}

}  // namespace

class Transcripts::Impl {
 public:
  Impl(session::ProtocolStore* store, TranscriptOptions options)
      : store_(store),
        clock_(options.clock ? options.clock : &SystemClock::Default()),
        random_(options.random ? options.random : &SystemRandom::Default()),
        options_(std::move(options)) {}

  // --- conversations ---

  Result<std::optional<internal::ConversationRecord>> LoadConversation(std::string_view id) {
    CW_ASSIGN_OR_RETURN(std::optional<SecretBytes> v, store_->Get(Table::kConversation, id));
    if (!v) return std::optional<internal::ConversationRecord>();
    CW_ASSIGN_OR_RETURN(internal::ConversationRecord c, internal::DecodeConversation(v->reveal()));
    return std::optional<internal::ConversationRecord>(std::move(c));
  }

  // The conversation's record, creating it (staged in `batch`) when it does not exist.
  Result<internal::ConversationRecord> ConversationForStaging(std::string_view id, WriteBatch* batch) {
    CW_RETURN_IF_ERROR(CheckConversationId(id));
    CW_ASSIGN_OR_RETURN(auto existing, LoadConversation(id));
    if (existing) return std::move(*existing);
    internal::ConversationRecord c;
    c.key = SecretBytes(kConversationKeySize);
    random_->Fill(c.key.reveal_mutable().data(), c.key.size());
    c.created_at_ms = clock_->NowMillis();
    batch->writes.push_back(Put(Table::kConversation, std::string(id), internal::EncodeConversation(c)));
    // A new conversation has no rows: start at 1 even if an old one of that id left a cached counter.
    next_sequence_[std::string(id)] = 1;
    return c;
  }

  Result<uint64_t> NextSequence(std::string_view id) {
    auto it = next_sequence_.find(id);
    if (it != next_sequence_.end()) return it->second;
    // First use in this process: one past the last row. Listing a conversation opens no record (the
    // sequence is the plain tail of its keys), and the keys come in sequence order.
    CW_ASSIGN_OR_RETURN(std::vector<std::string> keys, store_->ListKeys(Table::kTranscript, RowPrefix(id)));
    uint64_t next = 1;
    if (!keys.empty()) {
      std::string conv;
      uint64_t seq = 0;
      if (!internal::ParseRowKey(keys.back(), &conv, &seq))
        return Error(StatusCode::kTampered, "bad row key");
      next = seq + 1;
    }
    // Past rows that disappeared too (ConversationRecord::next_sequence): else a late receipt for one of
    // them would land on the new message given its number.
    CW_ASSIGN_OR_RETURN(auto c, LoadConversation(id));
    if (c) next = std::max(next, c->next_sequence);
    next_sequence_.emplace(std::string(id), next);
    return next;
  }

  Status Ensure(std::string_view id) {
    WriteBatch batch;
    CW_ASSIGN_OR_RETURN(auto c, ConversationForStaging(id, &batch));
    (void)c;
    return store_->Commit(std::move(batch));
  }

  Status SetTimer(std::string_view id, int64_t ms) {
    if (ms < 0) return Status(StatusCode::kInvalidArgument, "negative timer");
    WriteBatch batch;
    CW_ASSIGN_OR_RETURN(auto c, ConversationForStaging(id, &batch));
    c.disappearing_ms = ms;
    batch.writes.clear();
    batch.writes.push_back(Put(Table::kConversation, std::string(id), internal::EncodeConversation(c)));
    return store_->Commit(std::move(batch));
  }

  Result<std::optional<ConversationInfo>> Info(std::string_view id) {
    CW_RETURN_IF_ERROR(CheckConversationId(id));
    CW_ASSIGN_OR_RETURN(auto c, LoadConversation(id));
    if (!c) return std::optional<ConversationInfo>();
    return std::optional<ConversationInfo>(
        ConversationInfo{std::string(id), c->disappearing_ms, c->created_at_ms});
  }

  Result<std::vector<ConversationInfo>> List() {
    CW_ASSIGN_OR_RETURN(std::vector<std::string> ids, store_->ListKeys(Table::kConversation, ""));
    std::vector<ConversationInfo> out;
    for (const auto& id : ids) {
      CW_ASSIGN_OR_RETURN(auto info, Info(id));
      if (info) out.push_back(std::move(*info));
    }
    return out;
  }

  Status Delete(std::string_view id, WriteBatch batch, Status* purged) {
    CW_RETURN_IF_ERROR(CheckConversationId(id));
    CW_ASSIGN_OR_RETURN(auto c, LoadConversation(id));
    if (!c) return Status(StatusCode::kNotFound, "no such conversation");
    CW_ASSIGN_OR_RETURN(std::vector<std::string> rows, store_->ListKeys(Table::kTranscript, RowPrefix(id)));
    CW_ASSIGN_OR_RETURN(std::vector<std::string> outbox, store_->ListKeys(Table::kOutbox, RowPrefix(id)));
    // The key, every row and every outbox entry in one batch: a crash leaves the conversation whole or gone,
    // never rows without their key that nothing would ever delete.
    batch.writes.push_back(Del(Table::kConversation, std::string(id)));
    for (auto& k : rows) batch.writes.push_back(Del(Table::kTranscript, std::move(k)));
    for (const auto& k : outbox) batch.writes.push_back(Del(Table::kOutbox, k));
    batch.writes.push_back(Put(Table::kMeta, std::string(kPurgeDueKey), SecretBytes(Bytes{1})));
    CW_RETURN_IF_ERROR(store_->Commit(std::move(batch)));
    if (outbox_keys_) {
      for (const auto& k : outbox) outbox_keys_->erase(k);
    }
    next_sequence_.erase(std::string(id));
    next_due_.erase(std::string(id));
    // The deleted key must not survive in a file: the rows' blobs left in files compaction has not reached
    // yet are readable only with it.
    Status purge = Purge();
    if (purged == nullptr) return purge;
    *purged = std::move(purge);
    return Status::Ok();
  }

  Status FinishPendingPurge() {
    CW_ASSIGN_OR_RETURN(auto due, store_->Get(Table::kMeta, kPurgeDueKey));
    if (!due) return Status::Ok();
    return Purge();
  }

  // Purges deleted conversation keys from the store's files; once that succeeded, no purge is due.
  Status Purge() {
    if (options_.purge_deleted) CW_RETURN_IF_ERROR(options_.purge_deleted(Table::kConversation));
    WriteBatch done;
    done.writes.push_back(Del(Table::kMeta, std::string(kPurgeDueKey)));
    return store_->Commit(std::move(done));
  }

  // --- staging ---

  // Adds the row for `m` (conversation id set; sequence, message id and expiry filled in here).
  Status StageRow(TranscriptMessage& m, WriteBatch* batch, uint64_t* sequence_out) {
    CW_ASSIGN_OR_RETURN(internal::ConversationRecord c, ConversationForStaging(m.conversation_id, batch));
    CW_ASSIGN_OR_RETURN(uint64_t seq, NextSequence(m.conversation_id));
    m.sequence = seq;
    random_->Fill(m.message_id.data(), m.message_id.size());
    const int64_t base = m.direction == Direction::kIncoming ? m.received_at_ms : m.sent_at_ms;
    m.expires_at_ms = c.disappearing_ms > 0 ? base + c.disappearing_ms : 0;
    CW_ASSIGN_OR_RETURN(SecretBytes inner, internal::EncodeInner(m));
    internal::RowRecord row;
    row.status = m.status;
    row.expires_at_ms = m.expires_at_ms;
    row.blob = internal::SealBlob(c.key.reveal(), m.conversation_id, seq, inner.reveal(), *random_);
    batch->writes.push_back(
        Put(Table::kTranscript, internal::RowKey(m.conversation_id, seq), internal::EncodeRow(row)));
    next_sequence_[m.conversation_id] = seq + 1;
    if (m.expires_at_ms != 0) {
      auto [it, inserted] = next_due_.emplace(m.conversation_id, m.expires_at_ms);
      if (!inserted) it->second = std::min(it->second, m.expires_at_ms);
    }
    if (sequence_out) *sequence_out = seq;
    return Status::Ok();
  }

  Status StageIncoming(const session::Received& r, std::string_view relay_id, WriteBatch* batch,
                       const IncomingDetails& details, uint64_t* sequence_out) {
    if (batch == nullptr) return Status(StatusCode::kInvalidArgument, "no batch");
    CW_RETURN_IF_ERROR(CheckRelayId(relay_id));
    // Belt and braces: the runtime checks IsDuplicate before decrypting, and the ratchet refuses a replayed
    // message key, but a repeated relay id must never add a second row whatever the ratchet says.
    CW_ASSIGN_OR_RETURN(bool dup, IsDuplicate(relay_id));
    if (dup) return Status(StatusCode::kDuplicate, "relay message already received");
    const int64_t now = clock_->NowMillis();
    const bool user_message =
        r.kind == session::Received::Kind::kMessage || r.kind == session::Received::Kind::kGroupMessage;
    if (user_message) {
      TranscriptMessage m;
      m.conversation_id =
          details.conversation_id.empty() ? Transcripts::ConversationIdFor(r) : details.conversation_id;
      m.direction = Direction::kIncoming;
      m.sender = r.sender.name;
      m.sender_device = r.sender.device_id;
      m.sent_at_ms = details.sent_at_ms;
      m.received_at_ms = now;
      m.body = r.body.Clone();
      for (const auto& a : details.attachments) m.attachments.push_back(a.Clone());
      m.status = MessageStatus::kDelivered;
      CW_RETURN_IF_ERROR(StageRow(m, batch, sequence_out));
    }
    batch->writes.push_back(
        Put(Table::kInboundDedup, std::string(relay_id),
            SecretBytes(AsBytes(internal::BigEndian64(static_cast<uint64_t>(now + options_.dedup_ttl_ms))))));
    return Status::Ok();
  }

  Status StageOutgoing(std::string_view conversation_id, std::span<const uint8_t> body,
                       const std::vector<SecretBytes>& attachments,
                       const std::vector<session::Address>& recipients, const session::Ciphertext& message,
                       WriteBatch* batch, uint64_t* sequence_out) {
    if (batch == nullptr) return Status(StatusCode::kInvalidArgument, "no batch");
    TranscriptMessage m;
    m.conversation_id = std::string(conversation_id);
    m.direction = Direction::kOutgoing;
    m.sender = options_.local_name;
    m.sent_at_ms = clock_->NowMillis();
    m.body = SecretBytes(body);
    for (const auto& a : attachments) m.attachments.push_back(a.Clone());
    m.status = MessageStatus::kQueued;
    uint64_t seq = 0;
    CW_RETURN_IF_ERROR(StageRow(m, batch, &seq));
    OutboxEntry e;
    e.conversation_id = m.conversation_id;
    e.sequence = seq;
    e.recipients = recipients;
    e.message = message;
    CW_ASSIGN_OR_RETURN(SecretBytes encoded, internal::EncodeOutbox(e));
    std::string key = internal::RowKey(conversation_id, seq);
    if (outbox_keys_) outbox_keys_->insert(key);
    batch->writes.push_back(Put(Table::kOutbox, std::move(key), std::move(encoded)));
    if (sequence_out) *sequence_out = seq;
    return Status::Ok();
  }

  Result<bool> IsDuplicate(std::string_view relay_id) {
    CW_RETURN_IF_ERROR(CheckRelayId(relay_id));
    CW_ASSIGN_OR_RETURN(std::optional<SecretBytes> v, store_->Get(Table::kInboundDedup, relay_id));
    if (!v) return false;
    if (v->size() != 8) return Error(StatusCode::kMalformed, "dedup record is malformed");
    const auto expiry = static_cast<int64_t>(internal::ReadBigEndian64(v->reveal()));
    return expiry > clock_->NowMillis();
  }

  // --- reading ---

  Result<std::optional<TranscriptMessage>> Read(std::string_view id, uint64_t seq,
                                                const internal::ConversationRecord& c, int64_t now) {
    CW_ASSIGN_OR_RETURN(std::optional<SecretBytes> v,
                        store_->Get(Table::kTranscript, internal::RowKey(id, seq)));
    if (!v) return std::optional<TranscriptMessage>();
    CW_ASSIGN_OR_RETURN(internal::RowRecord row, internal::DecodeRow(v->reveal()));
    if (row.expires_at_ms != 0 && row.expires_at_ms <= now) return std::optional<TranscriptMessage>();
    CW_ASSIGN_OR_RETURN(SecretBytes inner, internal::OpenBlob(c.key.reveal(), id, seq, row.blob));
    TranscriptMessage m;
    CW_RETURN_IF_ERROR(internal::DecodeInner(inner.reveal(), &m));
    m.conversation_id = std::string(id);
    m.sequence = seq;
    m.status = row.status;
    m.expires_at_ms = row.expires_at_ms;
    return std::optional<TranscriptMessage>(std::move(m));
  }

  Result<TranscriptMessage> GetMessage(std::string_view id, uint64_t seq) {
    CW_RETURN_IF_ERROR(CheckConversationId(id));
    CW_ASSIGN_OR_RETURN(auto c, LoadConversation(id));
    if (!c) return Error(StatusCode::kNotFound, "no such conversation");
    CW_ASSIGN_OR_RETURN(auto m, Read(id, seq, *c, clock_->NowMillis()));
    if (!m) return Error(StatusCode::kNotFound, "no such message");
    return std::move(*m);
  }

  // Up to `n` live messages with sequence < before, oldest first.
  Result<std::vector<TranscriptMessage>> Page(std::string_view id, uint64_t before, size_t n) {
    CW_RETURN_IF_ERROR(CheckConversationId(id));
    std::vector<TranscriptMessage> out;
    CW_ASSIGN_OR_RETURN(auto c, LoadConversation(id));
    if (!c || n == 0) return out;
    CW_ASSIGN_OR_RETURN(std::vector<std::string> keys, store_->ListKeys(Table::kTranscript, RowPrefix(id)));
    const int64_t now = clock_->NowMillis();
    // Newest first from the key before `before`; expired rows are skipped, so a page stays full.
    auto end = std::lower_bound(keys.begin(), keys.end(), internal::RowKey(id, before));
    for (auto it = end; it != keys.begin() && out.size() < n;) {
      --it;
      std::string conv;
      uint64_t seq = 0;
      if (!internal::ParseRowKey(*it, &conv, &seq) || conv != id)
        return Error(StatusCode::kTampered, "bad row key");
      CW_ASSIGN_OR_RETURN(auto m, Read(id, seq, *c, now));
      if (m) out.push_back(std::move(*m));
    }
    std::reverse(out.begin(), out.end());
    return out;
  }

  // --- status and outbox ---

  Status SetStatus(std::string_view id, uint64_t seq, MessageStatus status, bool drop_outbox) {
    CW_RETURN_IF_ERROR(CheckConversationId(id));
    if (static_cast<uint8_t>(status) < 1 || static_cast<uint8_t>(status) > 5) {
      return Status(StatusCode::kInvalidArgument, "unknown status");
    }
    const std::string key = internal::RowKey(id, seq);
    CW_ASSIGN_OR_RETURN(std::optional<SecretBytes> v, store_->Get(Table::kTranscript, key));
    if (!v) return Status(StatusCode::kNotFound, "no such message");
    CW_ASSIGN_OR_RETURN(internal::RowRecord row, internal::DecodeRow(v->reveal()));
    // The relay's answer to a deposit can come after the recipient's delivery or read receipt (the relay
    // pushes a message before its deposit is synced and answered; a direct link acks on its own): marking
    // it sent then must not take its status backwards.
    const bool receipted = row.status == MessageStatus::kDelivered || row.status == MessageStatus::kRead;
    if (!(drop_outbox && receipted)) row.status = status;
    WriteBatch batch;
    batch.writes.push_back(Put(Table::kTranscript, key, internal::EncodeRow(row)));
    if (drop_outbox) batch.writes.push_back(Del(Table::kOutbox, key));
    CW_RETURN_IF_ERROR(store_->Commit(std::move(batch)));
    if (drop_outbox && outbox_keys_) outbox_keys_->erase(key);
    return Status::Ok();
  }

  Result<std::vector<OutboxEntry>> Outbox() {
    if (!outbox_keys_) {
      CW_ASSIGN_OR_RETURN(std::vector<std::string> keys, store_->ListKeys(Table::kOutbox, ""));
      outbox_keys_.emplace(std::make_move_iterator(keys.begin()), std::make_move_iterator(keys.end()));
    }
    std::vector<OutboxEntry> out;
    for (auto it = outbox_keys_->begin(); it != outbox_keys_->end();) {
      OutboxEntry e;
      if (!internal::ParseRowKey(*it, &e.conversation_id, &e.sequence)) {
        return Error(StatusCode::kTampered, "bad outbox key");
      }
      CW_ASSIGN_OR_RETURN(std::optional<SecretBytes> v, store_->Get(Table::kOutbox, *it));
      if (!v) {
        it = outbox_keys_->erase(it);
        continue;
      }
      CW_RETURN_IF_ERROR(internal::DecodeOutbox(v->reveal(), &e));
      out.push_back(std::move(e));
      ++it;
    }
    return out;
  }

  // --- sweeping ---

  Result<SweepResult> Sweep(int64_t now) {
    SweepResult result;
    CW_ASSIGN_OR_RETURN(std::vector<std::string> ids, store_->ListKeys(Table::kConversation, ""));
    for (const auto& id : ids) {
      auto due = next_due_.find(id);
      if (due != next_due_.end() && due->second > now) continue;
      // Unknown (first sweep in this process) or due: read the rows' expiries (outside the sealed blob, so
      // no conversation key is needed) and delete the expired ones.
      CW_ASSIGN_OR_RETURN(std::vector<std::string> keys, store_->ListKeys(Table::kTranscript, RowPrefix(id)));
      int64_t next = kNever;
      WriteBatch batch;
      for (size_t i = 0; i < keys.size(); ++i) {
        std::string& k = keys[i];
        CW_ASSIGN_OR_RETURN(std::optional<SecretBytes> v, store_->Get(Table::kTranscript, k));
        if (!v) continue;
        CW_ASSIGN_OR_RETURN(internal::RowRecord row, internal::DecodeRow(v->reveal()));
        if (row.expires_at_ms == 0) continue;
        if (row.expires_at_ms <= now) {
          if (i + 1 == keys.size()) {
            // The newest row goes: its number stays taken, recorded in the batch that deletes it.
            std::string conv;
            uint64_t seq = 0;
            if (!internal::ParseRowKey(k, &conv, &seq)) return Error(StatusCode::kTampered, "bad row key");
            CW_ASSIGN_OR_RETURN(auto c, LoadConversation(id));
            if (c) {
              c->next_sequence = std::max(c->next_sequence, seq + 1);
              batch.writes.push_back(Put(Table::kConversation, id, internal::EncodeConversation(*c)));
            }
          }
          batch.writes.push_back(Del(Table::kTranscript, k));
          batch.writes.push_back(Del(Table::kOutbox, std::move(k)));
          ++result.messages;
          if (batch.writes.size() >= kDeleteBatch) {
            CW_RETURN_IF_ERROR(store_->Commit(std::move(batch)));
            batch = WriteBatch();
          }
        } else {
          next = std::min(next, row.expires_at_ms);
        }
      }
      CW_RETURN_IF_ERROR(store_->Commit(std::move(batch)));
      next_due_[id] = next;
    }

    CW_ASSIGN_OR_RETURN(std::vector<std::string> relay_ids, store_->ListKeys(Table::kInboundDedup, ""));
    WriteBatch batch;
    for (auto& k : relay_ids) {
      CW_ASSIGN_OR_RETURN(std::optional<SecretBytes> v, store_->Get(Table::kInboundDedup, k));
      if (!v || v->size() != 8) continue;
      if (static_cast<int64_t>(internal::ReadBigEndian64(v->reveal())) > now) continue;
      batch.writes.push_back(Del(Table::kInboundDedup, std::move(k)));
      ++result.dedup_keys;
      if (batch.writes.size() >= kDeleteBatch) {
        CW_RETURN_IF_ERROR(store_->Commit(std::move(batch)));
        batch = WriteBatch();
      }
    }
    CW_RETURN_IF_ERROR(store_->Commit(std::move(batch)));
    return result;
  }

  Clock& clock() { return *clock_; }

 private:
  static std::string RowPrefix(std::string_view id) {
    std::string p(id);
    p.push_back('\0');
    return p;
  }
  static Status CheckRelayId(std::string_view relay_id) {
    if (relay_id.empty() || relay_id.size() > kMaxRelayMessageIdSize) {
      return Status(StatusCode::kInvalidArgument, "bad relay message id");
    }
    return Status::Ok();
  }

  session::ProtocolStore* const store_;
  Clock* const clock_;
  Random* const random_;
  TranscriptOptions options_;
  std::map<std::string, uint64_t, std::less<>> next_sequence_;  // next sequence to stage, per conversation
  std::map<std::string, int64_t, std::less<>> next_due_;        // earliest row expiry known, per conversation
  // The keys of the outbox entries that may be pending, in key order: listed from the store by the first
  // Outbox(), then kept by this object, the outbox's one writer (as next_sequence_ is). Listing the table
  // for every flush instead walked a RocksDB iterator over every entry deleted since the last compaction:
  // after n messages, n tombstones between a message's sync and its deposit. It may hold keys that are gone
  // (a staged batch that was dropped, a sweep): Outbox() reads each key and forgets those.
  std::optional<std::set<std::string>> outbox_keys_;
};

Transcripts::Transcripts(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Transcripts::~Transcripts() = default;

Result<std::unique_ptr<Transcripts>> Transcripts::New(session::ProtocolStore* store,
                                                      TranscriptOptions options) {
  if (store == nullptr) return Error(StatusCode::kInvalidArgument, "no store");
  if (options.dedup_ttl_ms <= 0) return Error(StatusCode::kInvalidArgument, "dedup TTL must be positive");
  if (sodium_init() < 0) return Error(StatusCode::kInternal, "libsodium failed to initialise");
  return std::unique_ptr<Transcripts>(new Transcripts(std::make_unique<Impl>(store, std::move(options))));
}

std::string Transcripts::DirectConversationId(std::string_view name) { return "dm:" + std::string(name); }
std::string Transcripts::GroupConversationId(std::string_view group_id) {
  return "group:" + std::string(group_id);
}
std::string Transcripts::ConversationIdFor(const session::Received& r) {
  if (r.kind == session::Received::Kind::kMessage) return DirectConversationId(r.sender.name);
  return GroupConversationId(r.group_id);
}
bool Transcripts::IsValidConversationId(std::string_view id) {
  return !id.empty() && id.size() <= kMaxConversationIdSize && id.find('\0') == std::string_view::npos;
}

Status Transcripts::EnsureConversation(std::string_view id) { return impl_->Ensure(id); }
Result<std::optional<ConversationInfo>> Transcripts::GetConversation(std::string_view id) {
  return impl_->Info(id);
}
Result<std::vector<ConversationInfo>> Transcripts::ListConversations() { return impl_->List(); }
Status Transcripts::SetDisappearingTimer(std::string_view id, int64_t ms) { return impl_->SetTimer(id, ms); }
Status Transcripts::DeleteConversation(std::string_view id, session::WriteBatch also, Status* purged) {
  return impl_->Delete(id, std::move(also), purged);
}
Status Transcripts::FinishPendingPurge() { return impl_->FinishPendingPurge(); }

Status Transcripts::StageIncoming(const session::Received& received, std::string_view relay_message_id,
                                  session::WriteBatch* batch, const IncomingDetails& details,
                                  uint64_t* sequence) {
  return impl_->StageIncoming(received, relay_message_id, batch, details, sequence);
}
Status Transcripts::StageOutgoing(std::string_view conversation_id, std::span<const uint8_t> body,
                                  const std::vector<SecretBytes>& attachments,
                                  const std::vector<session::Address>& recipients,
                                  const session::Ciphertext& message, session::WriteBatch* batch,
                                  uint64_t* sequence) {
  return impl_->StageOutgoing(conversation_id, body, attachments, recipients, message, batch, sequence);
}
Result<bool> Transcripts::IsDuplicate(std::string_view relay_message_id) {
  return impl_->IsDuplicate(relay_message_id);
}

Result<TranscriptMessage> Transcripts::GetMessage(std::string_view id, uint64_t sequence) {
  return impl_->GetMessage(id, sequence);
}
Result<std::vector<TranscriptMessage>> Transcripts::Latest(std::string_view id, size_t n) {
  return impl_->Page(id, std::numeric_limits<uint64_t>::max(), n);
}
Result<std::vector<TranscriptMessage>> Transcripts::Before(std::string_view id, uint64_t before, size_t n) {
  return impl_->Page(id, before, n);
}
Result<std::vector<TranscriptMessage>> Transcripts::All(std::string_view id) {
  return impl_->Page(id, std::numeric_limits<uint64_t>::max(), std::numeric_limits<size_t>::max());
}
Status Transcripts::SetStatus(std::string_view id, uint64_t sequence, MessageStatus status) {
  return impl_->SetStatus(id, sequence, status, /*drop_outbox=*/false);
}
Result<std::vector<OutboxEntry>> Transcripts::PendingOutbox() { return impl_->Outbox(); }
Status Transcripts::MarkSent(std::string_view id, uint64_t sequence) {
  return impl_->SetStatus(id, sequence, MessageStatus::kSent, /*drop_outbox=*/true);
}
Result<SweepResult> Transcripts::SweepExpired(int64_t now_ms) { return impl_->Sweep(now_ms); }
Result<SweepResult> Transcripts::SweepExpired() { return impl_->Sweep(impl_->clock().NowMillis()); }

std::string_view DirectionName(Direction d) { return d == Direction::kOutgoing ? "outgoing" : "incoming"; }
std::string_view MessageStatusName(MessageStatus s) {
  switch (s) {
    case MessageStatus::kQueued:
      return "queued";
    case MessageStatus::kSent:
      return "sent";
    case MessageStatus::kDelivered:
      return "delivered";
    case MessageStatus::kRead:
      return "read";
    case MessageStatus::kFailed:
      return "failed";
  }
  return "unknown";
}
std::optional<Direction> ParseDirection(std::string_view name) {
  if (name == "incoming") return Direction::kIncoming;
  if (name == "outgoing") return Direction::kOutgoing;
  return std::nullopt;
}
std::optional<MessageStatus> ParseMessageStatus(std::string_view name) {
  for (auto s : {MessageStatus::kQueued, MessageStatus::kSent, MessageStatus::kDelivered,
                 MessageStatus::kRead, MessageStatus::kFailed}) {
    if (MessageStatusName(s) == name) return s;
  }
  return std::nullopt;
}

}  // namespace cw::storage
