#include "relay/store_core.h"

#include <sodium.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

namespace cw::relay::internal {

namespace {

struct ShortHashKey {
  unsigned char key[crypto_shorthash_KEYBYTES];
  ShortHashKey() {
    if (sodium_init() < 0) std::abort();
    randombytes_buf(key, sizeof key);
  }
};

}  // namespace

size_t MessageIdHash::operator()(const MessageId& id) const noexcept {
  static const ShortHashKey k;
  uint64_t h = 0;
  crypto_shorthash(reinterpret_cast<unsigned char*>(&h), id.data(), id.size(), k.key);
  return static_cast<size_t>(h);
}

// Watchers per mailbox. Callbacks are copied out under the registry's lock and run outside it, so a callback
// may destroy its own Watch. A destroyed Watch's callback is never started afterwards; one already running
// finishes (its state is held by a shared_ptr).
//
// Each watcher hears of a mailbox's messages in seq order. A message is announced twice: at once to the
// watchers already registered (Announce), and once durable to those that registered in between (Settle),
// which could not fetch it yet. A watcher that registers while messages are announced but unsettled would
// otherwise hear of a later message before those: so it holds later ones back until the earlier ones are
// settled (or abandoned, when their sync failed) and hands them on in order.
class WatchRegistry {
 public:
  struct Entry {
    MailboxStore::WatchCallback callback;
    uint64_t serial = 0;  // order of registration: Settle skips the watchers that already heard

    // Serializes this watcher's callbacks, so what Release decides is the order it hears in. Held while the
    // callback runs: a callback must not insert into the mailbox it watches.
    std::mutex mu;
    std::atomic<bool> removed{false};  // set by Remove, which cannot take `mu` (a callback may be removing)
    std::set<uint64_t> awaiting;       // announced before this watcher registered, not yet settled
    std::map<uint64_t, StoredMessage> held;  // to hand on once nothing earlier is awaited

    void Offer(const MailboxId& id, const StoredMessage& message, bool settles) {
      std::lock_guard<std::mutex> lock(mu);
      if (settles) awaiting.erase(message.seq);
      if (awaiting.empty() && held.empty()) return Call(id, message);
      held.emplace(message.seq, message);
      Release(id);
    }
    void Forget(const MailboxId& id, uint64_t seq) {
      std::lock_guard<std::mutex> lock(mu);
      if (awaiting.erase(seq) != 0) Release(id);
    }

   private:
    void Release(const MailboxId& id) {
      while (!held.empty() && (awaiting.empty() || held.begin()->first < *awaiting.begin())) {
        auto node = held.extract(held.begin());
        Call(id, node.mapped());
      }
    }
    void Call(const MailboxId& id, const StoredMessage& message) {
      if (removed.load()) return;
      try {
        callback(id, message);
      } catch (...) {
        // A watcher's failure must not fail the deposit.
      }
    }
  };

  class Handle final : public MailboxStore::Watch {
   public:
    Handle(WatchRegistry* registry, MailboxId id, std::shared_ptr<Entry> entry)
        : registry_(registry), id_(id), entry_(std::move(entry)) {}
    ~Handle() override { registry_->Remove(id_, entry_.get()); }

   private:
    WatchRegistry* registry_;
    MailboxId id_;
    std::shared_ptr<Entry> entry_;
  };

  std::unique_ptr<MailboxStore::Watch> Add(const MailboxId& id, MailboxStore::WatchCallback callback) {
    auto entry = std::make_shared<Entry>();
    entry->callback = std::move(callback);
    std::lock_guard<std::mutex> lock(mu_);
    entry->serial = ++last_serial_;
    if (auto u = unsettled_.find(id); u != unsettled_.end()) entry->awaiting = u->second;
    watchers_[id].push_back(entry);
    return std::make_unique<Handle>(this, id, std::move(entry));
  }

  void Remove(const MailboxId& id, Entry* entry) {
    entry->removed.store(true);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = watchers_.find(id);
    if (it == watchers_.end()) return;
    auto& list = it->second;
    list.erase(std::remove_if(list.begin(), list.end(), [&](const auto& e) { return e.get() == entry; }),
               list.end());
    if (list.empty()) watchers_.erase(it);
  }

  // Tells the watchers of `id` of a message just recorded, and returns the last serial handed out, so that
  // Settle reaches exactly the watchers registered since. Every Announce is followed by Settle or Abandon.
  uint64_t Announce(const MailboxId& id, const StoredMessage& message) {
    std::vector<std::shared_ptr<Entry>> targets;
    uint64_t last = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last = last_serial_;
      unsettled_[id].insert(message.seq);
      if (auto it = watchers_.find(id); it != watchers_.end()) targets = it->second;
    }
    for (const auto& t : targets) t->Offer(id, message, false);
    return last;
  }

  // The message is durable: the watchers registered after `announced_serial` hear of it now.
  void Settle(const MailboxId& id, const StoredMessage& message, uint64_t announced_serial) {
    std::vector<std::shared_ptr<Entry>> targets;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Unmark(id, message.seq);
      if (auto it = watchers_.find(id); it != watchers_.end()) {
        for (const auto& e : it->second) {
          if (e->serial > announced_serial) targets.push_back(e);
        }
      }
    }
    for (const auto& t : targets) t->Offer(id, message, true);
  }

  // The message's sync failed: nobody waits for it any longer.
  void Abandon(const MailboxId& id, uint64_t seq) {
    std::vector<std::shared_ptr<Entry>> targets;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Unmark(id, seq);
      if (auto it = watchers_.find(id); it != watchers_.end()) targets = it->second;
    }
    for (const auto& t : targets) t->Forget(id, seq);
  }

 private:
  void Unmark(const MailboxId& id, uint64_t seq) {
    auto u = unsettled_.find(id);
    if (u == unsettled_.end()) return;
    u->second.erase(seq);
    if (u->second.empty()) unsettled_.erase(u);
  }

  std::mutex mu_;
  uint64_t last_serial_ = 0;
  std::unordered_map<MailboxId, std::vector<std::shared_ptr<Entry>>, MailboxIdHash> watchers_;
  // Seqs announced, neither settled nor abandoned.
  std::unordered_map<MailboxId, std::set<uint64_t>, MailboxIdHash> unsettled_;
};

StoreCore::StoreCore() : watches_(std::make_unique<WatchRegistry>()) {}
StoreCore::~StoreCore() = default;

MailboxState* StoreCore::Find(const MailboxId& id) {
  auto it = mailbox_index_.find(id);
  return it == mailbox_index_.end() ? nullptr : it->second;
}

void StoreCore::RebuildDerived() {
  std::lock_guard<std::mutex> lock(mu_);
  owners_.clear();
  mailbox_index_.clear();
  mailbox_index_.reserve(mailboxes_.size());
  total_messages_ = total_bytes_ = total_attachment_bytes_ = announced_attachment_bytes_ = 0;
  for (auto& [id, box] : mailboxes_) {
    mailbox_index_.emplace(id, &box);
    owners_[box.owner].insert(id);
    box.bytes = 0;
    for (const auto& [seq, e] : box.by_seq) {
      box.by_id[e.id] = seq;
      box.bytes += e.size;
    }
    total_messages_ += box.by_seq.size();
    total_bytes_ += box.bytes;
  }
  for (const auto& [id, a] : attachments_) {
    total_attachment_bytes_ += a.written;
    announced_attachment_bytes_ += a.total_size;
  }
}

Status StoreCore::CreateMailbox(const MailboxId& id, const LinkKey& owner) {
  uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    CW_RETURN_IF_ERROR(Health());
    if (mailbox_index_.count(id) != 0) return Status(StatusCode::kAlreadyExists, "mailbox id taken");
    MailboxState& box = mailboxes_[id];
    mailbox_index_.emplace(id, &box);
    box.owner = owner;
    box.seq_limit = box.next_seq + kSeqReserve;
    owners_[owner].insert(id);
    RecordMailbox(id, box);
    ticket = Ticket();
  }
  return WaitDurable(ticket);
}

Result<std::optional<LinkKey>> StoreCore::MailboxOwner(const MailboxId& id) {
  std::lock_guard<std::mutex> lock(mu_);
  const MailboxState* box = Find(id);
  if (box == nullptr) return std::optional<LinkKey>();
  return std::optional<LinkKey>(box->owner);
}

Result<std::vector<MailboxId>> StoreCore::MailboxesOwnedBy(const LinkKey& owner) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = owners_.find(owner);
  if (it == owners_.end()) return std::vector<MailboxId>();
  return std::vector<MailboxId>(it->second.begin(), it->second.end());
}

Status StoreCore::AddDepositToken(const MailboxId& id, const TokenHash& token, size_t max_tokens,
                                  int64_t claim_by_millis) {
  uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    CW_RETURN_IF_ERROR(Health());
    MailboxState* box = Find(id);
    if (box == nullptr) return Status(StatusCode::kNotFound, "no such mailbox");
    if (box->tokens.count(token) == 0) {
      if (box->tokens.size() >= max_tokens) {
        return Status(StatusCode::kResourceExhausted, "mailbox holds its maximum of deposit tokens");
      }
      box->tokens.emplace(token, claim_by_millis);
      RecordToken(id, token, true, claim_by_millis);
    }
    ticket = Ticket();
  }
  return WaitDurable(ticket);
}

Status StoreCore::RemoveDepositToken(const MailboxId& id, const TokenHash& token) {
  uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    CW_RETURN_IF_ERROR(Health());
    MailboxState* box = Find(id);
    if (box == nullptr || box->tokens.erase(token) == 0) return Status(StatusCode::kNotFound, "no such token");
    RecordToken(id, token, false, 0);
    ticket = Ticket();
  }
  return WaitDurable(ticket);
}

namespace {
// A claimable token (claim_by != 0) nobody claimed before claim_by: refused, and forgotten by the purge.
bool Lapsed(int64_t claim_by_millis, int64_t now_millis) { return claim_by_millis != 0 && now_millis >= claim_by_millis; }

// The claim_by (0: claimed) of a token `box` holds and that has not lapsed, else null. The same map lookup
// happens whether or not the mailbox exists (an empty map stands in): both refusals cost about the same.
const int64_t* LiveToken(const MailboxState* box, const TokenHash& token, int64_t now_millis) {
  static const std::map<TokenHash, int64_t> kNone;
  const auto& tokens = box != nullptr ? box->tokens : kNone;
  const auto it = tokens.find(token);
  if (it == tokens.end() || Lapsed(it->second, now_millis)) return nullptr;
  return &it->second;
}
}  // namespace

Result<MailboxStore::Admission> StoreCore::AdmitDeposit(const MailboxId& id, const TokenHash& token,
                                                         int64_t now_millis) {
  std::lock_guard<std::mutex> lock(mu_);
  MailboxState* box = Find(id);
  const int64_t* claim_by = LiveToken(box, token, now_millis);
  if (claim_by == nullptr) return Admission::kRefused;
  if (*claim_by == 0) return Admission::kAdmitted;
  CW_RETURN_IF_ERROR(Health());
  box->tokens[token] = 0;  // claimed by its first deposit
  RecordToken(id, token, true, 0);
  return Admission::kClaimed;
}

void StoreCore::WhenAllDurable(std::function<void(Status)> fn) {
  uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ticket = Ticket();
  }
  WhenDurable(ticket, std::move(fn));
}

Result<bool> StoreCore::HasDepositToken(const MailboxId& id, const TokenHash& token, int64_t now_millis) {
  std::lock_guard<std::mutex> lock(mu_);
  return LiveToken(Find(id), token, now_millis) != nullptr;
}

StoreCore::InsertPlan StoreCore::PlanInsert(const MailboxId& id, const MessageId& message_id, ByteView envelope,
                                            int64_t expires_at_millis, const MessageQuota& quota) {
  InsertPlan plan;
  if (envelope.empty()) {
    plan.refused = Status(StatusCode::kInvalidArgument, "empty envelope");
    return plan;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (Status h = Health(); !h.ok()) {
    plan.refused = std::move(h);
    return plan;
  }
  MailboxState* box = Find(id);
  if (box == nullptr) {
    plan.refused = Status(StatusCode::kNotFound, "no such mailbox");
    return plan;
  }
  // One lookup for the duplicate check and the insert: the index of a mailbox with many messages queued is
  // far out of cache.
  auto [by_id, fresh] = box->by_id.try_emplace(message_id, 0);
  if (!fresh) {
    // Answered only once the original is durable: a retry must not be told "stored" before it is.
    plan.outcome = InsertOutcome::kDuplicate;
    plan.ticket = box->by_seq.at(by_id->second).ticket;
    return plan;
  }
  if (box->by_seq.size() >= quota.max_messages || box->bytes + envelope.size() > quota.max_bytes) {
    box->by_id.erase(by_id);
    plan.refused = Status(StatusCode::kResourceExhausted, "mailbox full");
    return plan;
  }
  if (box->next_seq >= box->seq_limit) {
    // The reserved range is used up: the new limit goes into the same batch as this message, so no seq is
    // ever durable above the durable limit.
    box->seq_limit = box->next_seq + kSeqReserve;
    RecordMailbox(id, *box);
  }
  MessageEntry entry;
  entry.seq = box->next_seq++;
  entry.id = message_id;
  entry.expires_at_millis = expires_at_millis;
  entry.size = static_cast<uint32_t>(envelope.size());
  if (KeepsBodies()) entry.envelope.assign(envelope.begin(), envelope.end());
  RecordMessage(id, entry, envelope);
  entry.ticket = Ticket();
  plan.ticket = entry.ticket;
  plan.announced.seq = entry.seq;
  plan.announced.id = message_id;
  plan.announced.expires_at_millis = expires_at_millis;
  box->bytes += entry.size;
  total_messages_ += 1;
  total_bytes_ += entry.size;
  by_id->second = entry.seq;
  box->by_seq.emplace_hint(box->by_seq.end(), entry.seq, std::move(entry));  // seqs only grow
  return plan;
}

// Watchers hear of a new message as soon as it is recorded, before its sync: only the depositor's answer
// waits for durability. Handing the owner a message the relay may still lose is safe: if the relay dies
// before the sync, the depositor was never answered and deposits again with the same message id, and the
// owner drops the second copy by that id. It takes the relay's fsync off the way from sender to recipient.
// Watchers that register while the sync is under way are told once it is durable (a fetch does not hand
// out undurable messages, so they would otherwise miss it).
Result<InsertOutcome> StoreCore::Insert(const MailboxId& id, const MessageId& message_id, ByteView envelope,
                                        int64_t expires_at_millis, const MessageQuota& quota) {
  InsertPlan plan = PlanInsert(id, message_id, envelope, expires_at_millis, quota);
  if (!plan.refused.ok()) return Error(std::move(plan.refused));
  if (plan.outcome != InsertOutcome::kInserted) {
    CW_RETURN_IF_ERROR(WaitDurable(plan.ticket));
    return plan.outcome;
  }
  plan.announced.envelope.assign(envelope.begin(), envelope.end());
  const uint64_t told = watches_->Announce(id, plan.announced);
  Status durable;
  try {
    durable = WaitDurable(plan.ticket);
  } catch (...) {
    watches_->Abandon(id, plan.announced.seq);
    throw;
  }
  if (!durable.ok()) {
    watches_->Abandon(id, plan.announced.seq);
    return Error(std::move(durable));
  }
  watches_->Settle(id, plan.announced, told);
  return plan.outcome;
}

void StoreCore::InsertAsync(const MailboxId& id, const MessageId& message_id, ByteView envelope,
                            int64_t expires_at_millis, const MessageQuota& quota, InsertDone done) {
  InsertPlan plan = PlanInsert(id, message_id, envelope, expires_at_millis, quota);
  if (!plan.refused.ok()) {
    done(Error(std::move(plan.refused)));
    return;
  }
  const InsertOutcome outcome = plan.outcome;
  const uint64_t ticket = plan.ticket;
  // The caller's envelope may be gone by the time the sync completes: the announcement keeps its own copy.
  uint64_t told = 0;
  const uint64_t seq = plan.announced.seq;
  if (outcome == InsertOutcome::kInserted) {
    plan.announced.envelope.assign(envelope.begin(), envelope.end());
    told = watches_->Announce(id, plan.announced);
  }
  try {
    std::function<void(Status)> settled = [this, id, outcome, told, announced = std::move(plan.announced),
                                           done = std::move(done)](Status durable) mutable {
      if (!durable.ok()) {
        if (outcome == InsertOutcome::kInserted) watches_->Abandon(id, announced.seq);
        done(Error(std::move(durable)));
        return;
      }
      if (outcome == InsertOutcome::kInserted) watches_->Settle(id, announced, told);
      done(outcome);
    };
    if (outcome == InsertOutcome::kInserted) {
      WhenInsertDurable(id, seq, ticket, std::move(settled));
    } else {
      WhenDurable(ticket, std::move(settled));
    }
  } catch (...) {
    // Out of memory before the callback was taken: nothing would settle the announcement, and watchers that
    // registered since would hold later messages back for good.
    if (outcome == InsertOutcome::kInserted) watches_->Abandon(id, seq);
    throw;
  }
}

Result<std::vector<StoredMessage>> StoreCore::FetchAfter(const MailboxId& id, uint64_t after_seq, size_t max_count,
                                                         size_t max_bytes, bool* more) {
  std::vector<StoredMessage> out;
  std::vector<uint64_t> seqs;
  bool has_more = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const MailboxState* box = Find(id);
    if (box == nullptr) return Error(StatusCode::kNotFound, "no such mailbox");
    size_t bytes = 0;
    for (auto it = box->by_seq.upper_bound(after_seq); it != box->by_seq.end(); ++it) {
      const MessageEntry& e = it->second;
      // Stop at the first message not yet durable: later ones wait for the next fetch (or their push), so
      // the caller's after_seq never skips past one.
      if (!Durable(e.ticket)) break;
      if (out.size() >= max_count || (!out.empty() && bytes + e.size > max_bytes)) {
        has_more = true;
        break;
      }
      StoredMessage m;
      m.seq = e.seq;
      m.id = e.id;
      m.expires_at_millis = e.expires_at_millis;
      if (KeepsBodies()) m.envelope = e.envelope;
      bytes += e.size;
      seqs.push_back(e.seq);
      out.push_back(std::move(m));
    }
  }
  if (more != nullptr) *more = has_more;
  if (KeepsBodies() || out.empty()) return out;
  CW_ASSIGN_OR_RETURN(std::vector<Bytes> bodies, ReadEnvelopes(id, seqs));
  // A message acked or purged between the index read and the body read comes back empty: leave it out.
  std::vector<StoredMessage> present;
  for (size_t i = 0; i < out.size() && i < bodies.size(); ++i) {
    if (bodies[i].empty()) continue;
    out[i].envelope = std::move(bodies[i]);
    present.push_back(std::move(out[i]));
  }
  return present;
}

void StoreCore::RemoveMessage(const MailboxId& id, MailboxState& box, uint64_t seq) {
  auto it = box.by_seq.find(seq);
  if (it == box.by_seq.end()) return;
  RecordMessageRemoved(id, it->second);
  box.bytes -= it->second.size;
  total_bytes_ -= it->second.size;
  total_messages_ -= 1;
  box.by_id.erase(it->second.id);
  box.by_seq.erase(it);
}

Result<bool> StoreCore::Ack(const MailboxId& id, const MessageId& message_id) {
  CW_ASSIGN_OR_RETURN(const size_t removed, AckMany(id, std::span<const MessageId>(&message_id, 1)));
  return removed == 1;
}

Result<size_t> StoreCore::PlanAck(const MailboxId& id, std::span<const MessageId> message_ids,
                                  uint64_t* ticket) {
  std::lock_guard<std::mutex> lock(mu_);
  CW_RETURN_IF_ERROR(Health());
  MailboxState* box = Find(id);
  if (box == nullptr) return Error(StatusCode::kNotFound, "no such mailbox");
  size_t removed = 0;
  for (const MessageId& m : message_ids) {
    auto it = box->by_id.find(m);
    if (it == box->by_id.end()) continue;
    RemoveMessage(id, *box, it->second);
    ++removed;
  }
  // Even when every removal only cancelled a deposit never written, the answer waits for what was recorded
  // before it: an earlier copy of the same message id (acknowledged, then deposited again by a retrying
  // sender) may still have its removal pending, and "acked" promises a restart hands out neither.
  *ticket = Ticket();
  return removed;
}

// Runs the insert callbacks that the caller's removals settled however the caller leaves (an error return,
// an exception): a depositor left unanswered would also hold back a late watcher's later messages.
class StoreCore::SettleOnExit {
 public:
  explicit SettleOnExit(StoreCore& store) : store_(store) {}
  SettleOnExit(const SettleOnExit&) = delete;
  SettleOnExit& operator=(const SettleOnExit&) = delete;
  ~SettleOnExit() { store_.RunSettled(); }

 private:
  StoreCore& store_;
};

Result<size_t> StoreCore::AckMany(const MailboxId& id, std::span<const MessageId> message_ids) {
  uint64_t ticket = 0;
  size_t removed = 0;
  {
    SettleOnExit settle(*this);
    CW_ASSIGN_OR_RETURN(removed, PlanAck(id, message_ids, &ticket));
  }
  // One wait for all of them: an acknowledgement of 64 ids holds a worker for one sync, not 64 in a row.
  if (removed > 0) CW_RETURN_IF_ERROR(WaitDurable(ticket));
  return removed;
}

void StoreCore::AckManyAsync(const MailboxId& id, std::span<const MessageId> message_ids, AckDone done) {
  uint64_t ticket = 0;
  Result<size_t> removed = Error(StatusCode::kUnavailable, "out of memory");
  {
    // The depositors of messages dropped before they were written are answered first, and at once.
    SettleOnExit settle(*this);
    try {
      removed = PlanAck(id, message_ids, &ticket);
    } catch (...) {
      // As in AppendAttachmentAsync: answered now rather than never. A retried acknowledgement is harmless.
    }
  }
  if (!removed || *removed == 0) return done(std::move(removed));
  WhenDurable(ticket, [removed = *removed, done = std::move(done)](Status durable) {
    if (!durable.ok()) return done(Error(std::move(durable)));
    done(removed);
  });
}

Result<size_t> StoreCore::PurgeExpired(int64_t now_millis, int64_t unfinished_expiring_by_millis) {
  SettleOnExit settle(*this);  // deposits an expiry cancelled before they were written
  // A few mailboxes (or attachments) per hold of mu_, resuming after the last key seen: deposits take mu_ on
  // the transport's loop thread, and a purge over a large store must not stall it for the whole walk.
  constexpr size_t kPerHold = 64;
  size_t removed = 0;
  std::optional<MailboxId> after_box;
  for (bool done = false; !done;) {
    std::lock_guard<std::mutex> lock(mu_);
    CW_RETURN_IF_ERROR(Health());
    auto it = after_box ? mailboxes_.upper_bound(*after_box) : mailboxes_.begin();
    for (size_t n = 0; n < kPerHold && it != mailboxes_.end(); ++n, ++it) {
      // Named, not bound: clang 14 (the fuzz build) cannot capture a structured binding in a lambda.
      const MailboxId& id = it->first;
      MailboxState& box = it->second;
      std::vector<uint64_t> expired;
      for (const auto& [seq, e] : box.by_seq) {
        if (e.expires_at_millis <= now_millis) expired.push_back(seq);
      }
      for (uint64_t seq : expired) RemoveMessage(id, box, seq);
      removed += expired.size();
      std::erase_if(box.tokens, [&](const auto& t) {
        const bool lapsed = Lapsed(t.second, now_millis);
        if (lapsed) RecordToken(id, t.first, false, 0);
        return lapsed;
      });
      after_box = id;
    }
    done = it == mailboxes_.end();
  }
  std::optional<AttachmentId> after_attachment;
  for (bool done = false; !done;) {
    std::lock_guard<std::mutex> lock(mu_);
    CW_RETURN_IF_ERROR(Health());
    auto it = after_attachment ? attachments_.upper_bound(*after_attachment) : attachments_.begin();
    for (size_t n = 0; n < kPerHold && it != attachments_.end(); ++n) {
      after_attachment = it->first;
      const AttachmentState& a = it->second;
      if (a.expires_at_millis <= now_millis ||
          (a.written < a.total_size && a.expires_at_millis <= unfinished_expiring_by_millis)) {
        RecordAttachmentRemoved(it->first, it->second);
        total_attachment_bytes_ -= it->second.written;
        announced_attachment_bytes_ -= it->second.total_size;
        it = attachments_.erase(it);
        ++removed;
      } else {
        ++it;
      }
    }
    done = it == attachments_.end();
  }
  uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ticket = Ticket();  // covers every removal recorded above
  }
  RunSettled();  // now rather than after the wait (`settle` covers the early returns)
  CW_RETURN_IF_ERROR(WaitDurable(ticket));
  return removed;
}

std::unique_ptr<MailboxStore::Watch> StoreCore::WatchMailbox(const MailboxId& id, WatchCallback callback) {
  return watches_->Add(id, std::move(callback));
}

Result<uint32_t> StoreCore::PutPreKeys(const MailboxId& id, const PreKeySet& keys, size_t max_one_time) {
  uint64_t ticket = 0;
  uint32_t count = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    CW_RETURN_IF_ERROR(Health());
    MailboxState* box = Find(id);
    if (box == nullptr) return Error(StatusCode::kNotFound, "no such mailbox");
    PreKeyState next = box->pre_keys.value_or(PreKeyState{});
    next.registration_id = keys.registration_id;
    next.device_id = keys.device_id;
    next.identity_key = keys.identity_key;
    next.signed_pre_key = keys.signed_pre_key;
    for (const auto& k : keys.one_time_pre_keys) next.one_time[k.id] = k.public_key;
    if (next.one_time.size() > max_one_time) {
      return Error(StatusCode::kResourceExhausted, "too many one-time pre-keys stored");
    }
    box->pre_keys = std::move(next);
    RecordPreKeys(id, *box->pre_keys, keys.one_time_pre_keys);
    count = static_cast<uint32_t>(box->pre_keys->one_time.size());
    ticket = Ticket();
  }
  CW_RETURN_IF_ERROR(WaitDurable(ticket));
  return count;
}

Result<std::optional<TakenBundle>> StoreCore::TakeBundle(const MailboxId& id) {
  uint64_t ticket = 0;
  TakenBundle taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    CW_RETURN_IF_ERROR(Health());
    MailboxState* box = Find(id);
    if (box == nullptr || !box->pre_keys) return std::optional<TakenBundle>();
    PreKeyState& pk = *box->pre_keys;
    taken.bundle.registration_id = pk.registration_id;
    taken.bundle.device_id = pk.device_id;
    taken.bundle.identity_key = pk.identity_key;
    taken.bundle.signed_pre_key = pk.signed_pre_key;
    if (!pk.one_time.empty()) {
      // Removed from the index before the lock is released: no other caller can see this key again, and
      // the removal is durable before the bundle leaves this function.
      auto first = pk.one_time.begin();
      taken.bundle.one_time_pre_key = wire::OneTimePreKeyPublic{first->first, first->second};
      RecordOneTimeRemoved(id, first->first);
      pk.one_time.erase(first);
    }
    taken.one_time_remaining = static_cast<uint32_t>(pk.one_time.size());
    ticket = Ticket();
  }
  CW_RETURN_IF_ERROR(WaitDurable(ticket));
  return std::optional<TakenBundle>(std::move(taken));
}

Result<std::optional<uint32_t>> StoreCore::CountOneTimePreKeys(const MailboxId& id) {
  std::lock_guard<std::mutex> lock(mu_);
  const MailboxState* box = Find(id);
  if (box == nullptr || !box->pre_keys) return std::optional<uint32_t>();
  return std::optional<uint32_t>(static_cast<uint32_t>(box->pre_keys->one_time.size()));
}

Status StoreCore::CreateAttachment(const AttachmentId& id, const LinkKey& uploader, uint64_t total_size,
                                   int64_t expires_at_millis) {
  uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    CW_RETURN_IF_ERROR(Health());
    if (attachments_.count(id) != 0) return Status(StatusCode::kAlreadyExists, "attachment id taken");
    AttachmentState& a = attachments_[id];
    a.uploader = uploader;
    a.total_size = total_size;
    a.expires_at_millis = expires_at_millis;
    announced_attachment_bytes_ += total_size;
    RecordAttachment(id, a);
    ticket = Ticket();
  }
  return WaitDurable(ticket);
}

Result<uint64_t> StoreCore::PlanAppend(const AttachmentId& id, const LinkKey& uploader, uint64_t offset,
                                       ByteView chunk, uint64_t* ticket) {
  if (chunk.empty()) return Error(StatusCode::kInvalidArgument, "empty chunk");
  std::lock_guard<std::mutex> lock(mu_);
  CW_RETURN_IF_ERROR(Health());
  auto it = attachments_.find(id);
  // Another uploader's attachment reads as absent: a link key learns nothing about ids it did not create.
  if (it == attachments_.end() || it->second.uploader != uploader) {
    return Error(StatusCode::kNotFound, "no such attachment");
  }
  AttachmentState& a = it->second;
  if (offset <= a.written && chunk.size() <= a.written - offset) {
    // A retransmission: its answer waits, like the original's, until what it repeats is durable.
    *ticket = Ticket();
    return a.written;
  }
  if (offset != a.written) return Error(StatusCode::kInvalidArgument, "chunk does not continue the upload");
  if (chunk.size() > a.total_size - a.written) {
    return Error(StatusCode::kInvalidArgument, "chunk runs past the declared size");
  }
  CW_RETURN_IF_ERROR(RecordAttachmentChunk(id, offset, chunk));
  if (KeepsBodies()) a.chunks.emplace(offset, Bytes(chunk.begin(), chunk.end()));
  a.written += chunk.size();
  total_attachment_bytes_ += chunk.size();
  RecordAttachment(id, a);
  *ticket = a.ticket = Ticket();
  return a.written;
}

Result<uint64_t> StoreCore::AppendAttachment(const AttachmentId& id, const LinkKey& uploader, uint64_t offset,
                                             ByteView chunk) {
  uint64_t ticket = 0;
  CW_ASSIGN_OR_RETURN(const uint64_t written, PlanAppend(id, uploader, offset, chunk, &ticket));
  CW_RETURN_IF_ERROR(WaitDurable(ticket));
  return written;
}

void StoreCore::AppendAttachmentAsync(const AttachmentId& id, const LinkKey& uploader, uint64_t offset,
                                      ByteView chunk, AppendDone done) {
  uint64_t ticket = 0;
  Result<uint64_t> written = Error(StatusCode::kUnavailable, "out of memory");
  try {
    written = PlanAppend(id, uploader, offset, chunk, &ticket);
  } catch (...) {
    // Allocation failed before the callback was handed over: answer now rather than never (a server waits
    // for every answer before it stops). The chunk may be recorded; the uploader's retry is idempotent.
  }
  if (!written) return done(std::move(written));
  WhenDurable(ticket, [written = *written, done = std::move(done)](Status durable) {
    if (!durable.ok()) return done(Error(std::move(durable)));
    done(written);
  });
}

namespace {
// Copies [offset, offset + len) out of chunks keyed by their start offset.
Bytes CopyRange(const std::map<uint64_t, Bytes>& chunks, uint64_t offset, size_t len) {
  Bytes out;
  out.reserve(len);
  auto it = chunks.upper_bound(offset);
  if (it != chunks.begin()) --it;
  for (; it != chunks.end() && out.size() < len; ++it) {
    const uint64_t start = it->first;
    const Bytes& data = it->second;
    const uint64_t pos = offset + out.size();
    if (start > pos || pos >= start + data.size()) continue;
    const size_t skip = static_cast<size_t>(pos - start);
    const size_t take = std::min(len - out.size(), data.size() - skip);
    out.insert(out.end(), data.begin() + static_cast<ptrdiff_t>(skip),
               data.begin() + static_cast<ptrdiff_t>(skip + take));
  }
  return out;
}
}  // namespace

std::optional<Result<AttachmentChunkRead>> StoreCore::ReadAttachmentVia(const AttachmentId& id,
                                                                        uint64_t offset, size_t max_len,
                                                                        bool without_blocking) {
  AttachmentChunkRead read;
  size_t len = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = attachments_.find(id);
    if (it == attachments_.end() || it->second.written != it->second.total_size ||
        !Durable(it->second.ticket)) {
      return Error(StatusCode::kNotFound, "no such attachment");
    }
    const AttachmentState& a = it->second;
    if (offset > a.total_size) return Error(StatusCode::kInvalidArgument, "offset past the end");
    read.total_size = a.total_size;
    len = static_cast<size_t>(std::min<uint64_t>(max_len, a.total_size - offset));
    if (KeepsBodies()) {
      read.data = CopyRange(a.chunks, offset, len);
      return read;
    }
  }
  if (len == 0) return read;
  std::optional<Result<Bytes>> data;
  if (without_blocking) {
    data = TryReadChunksWithoutBlocking(id, offset, len);
    if (!data) return std::nullopt;
  } else {
    data = ReadChunks(id, offset, len);
  }
  if (!*data) return Error(std::move(*data).error());
  read.data = std::move(**data);
  if (read.data.size() != len) return Error(StatusCode::kNotFound, "no such attachment");  // purged meanwhile
  return read;
}

Result<AttachmentChunkRead> StoreCore::ReadAttachment(const AttachmentId& id, uint64_t offset,
                                                      size_t max_len) {
  return *ReadAttachmentVia(id, offset, max_len, /*without_blocking=*/false);
}

// The index part never waits (it is in memory, under mu_, which loop threads take for every deposit
// already); a store that keeps bodies answers from memory too, and one that does not is asked whether its
// read would wait.
std::optional<Result<AttachmentChunkRead>> StoreCore::TryReadAttachmentWithoutBlocking(const AttachmentId& id,
                                                                                       uint64_t offset,
                                                                                       size_t max_len) {
  return ReadAttachmentVia(id, offset, max_len, /*without_blocking=*/true);
}

Result<StoreStats> StoreCore::Stats() {
  std::lock_guard<std::mutex> lock(mu_);
  StoreStats s;
  s.mailboxes = mailboxes_.size();
  s.messages = total_messages_;
  s.message_bytes = total_bytes_;
  s.attachments = attachments_.size();
  s.attachment_bytes = total_attachment_bytes_;
  s.attachment_bytes_pending = announced_attachment_bytes_ - total_attachment_bytes_;
  s.syncs = SyncCount();
  return s;
}

Result<std::vector<Bytes>> StoreCore::ReadEnvelopes(const MailboxId&, const std::vector<uint64_t>&) {
  return Error(StatusCode::kInternal, "store keeps no bodies elsewhere");
}
Result<Bytes> StoreCore::ReadChunks(const AttachmentId&, uint64_t, size_t) {
  return Error(StatusCode::kInternal, "store keeps no bodies elsewhere");
}
std::optional<Result<Bytes>> StoreCore::TryReadChunksWithoutBlocking(const AttachmentId&, uint64_t, size_t) {
  return std::nullopt;
}

// ---- The in-memory store: the index is everything ----
namespace {
class InMemoryMailboxStore final : public StoreCore {
 protected:
  bool KeepsBodies() const override { return true; }
  Status Health() const override { return Status::Ok(); }
  void RecordMailbox(const MailboxId&, const MailboxState&) override {}
  void RecordToken(const MailboxId&, const TokenHash&, bool, int64_t) override {}
  void RecordMessage(const MailboxId&, const MessageEntry&, ByteView) override {}
  void RecordMessageRemoved(const MailboxId&, const MessageEntry&) override {}
  void RecordPreKeys(const MailboxId&, const PreKeyState&,
                     std::span<const wire::OneTimePreKeyPublic>) override {}
  void RecordOneTimeRemoved(const MailboxId&, uint32_t) override {}
  void RecordAttachment(const AttachmentId&, const AttachmentState&) override {}
  Status RecordAttachmentChunk(const AttachmentId&, uint64_t, ByteView) override { return Status::Ok(); }
  void RecordAttachmentRemoved(const AttachmentId&, const AttachmentState&) override {}
  uint64_t Ticket() override { return 0; }
  Status WaitDurable(uint64_t) override { return Status::Ok(); }
  void WhenDurable(uint64_t, std::function<void(Status)> fn) override { fn(Status::Ok()); }
  uint64_t SyncCount() const override { return 0; }
};
}  // namespace

}  // namespace cw::relay::internal

namespace cw::relay {
std::unique_ptr<MailboxStore> NewInMemoryMailboxStore() {
  return std::make_unique<internal::InMemoryMailboxStore>();
}
}  // namespace cw::relay
