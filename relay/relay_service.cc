#include "relay/relay_service.h"

#include <algorithm>
#include <future>

namespace cw::relay {

namespace {
// Fixed texts. The two refusals a prober could compare are one constant each.
constexpr const char* kDepositRefusedText = "deposit refused";
constexpr const char* kNoMailboxText = "no such mailbox";

Bytes Encode(Response r) { return EncodeServerFrame(ServerFrame(std::move(r))); }
}  // namespace

struct RelayService::Subscriber {
  LinkKey owner{};
  std::shared_ptr<PushSink> sink;
  std::mutex mu;
  bool closed = false;
  std::map<MailboxId, std::unique_ptr<MailboxStore::Watch>> watches;
};

class RelayService::SubscriptionImpl final : public RelayService::Subscription {
 public:
  SubscriptionImpl(RelayService* service, std::shared_ptr<Subscriber> sub)
      : service_(service), sub_(std::move(sub)) {}
  ~SubscriptionImpl() override {
    service_->Unsubscribe(sub_.get());
    std::map<MailboxId, std::unique_ptr<MailboxStore::Watch>> watches;
    {
      std::lock_guard<std::mutex> lock(sub_->mu);
      sub_->closed = true;
      watches.swap(sub_->watches);
    }
    // Watches are destroyed outside the subscriber's lock: destroying one waits for nothing, but a push in
    // flight on another thread may still hold the sink (it holds its own reference).
  }

 private:
  RelayService* service_;
  std::shared_ptr<Subscriber> sub_;
};

RelayService::RelayService(MailboxStore& store, const Clock& clock, Random& random, RelayOptions options,
                           LogSink* log)
    : store_(store),
      clock_(clock),
      random_(random),
      options_(std::move(options)),
      log_(log != nullptr ? log : &null_log_),
      bundle_limiter_(clock, options_.bundle_fetch_limit) {}

RelayService::~RelayService() = default;

template <size_t N>
std::array<uint8_t, N> RelayService::Draw() {
  std::array<uint8_t, N> out;
  std::lock_guard<std::mutex> lock(random_mu_);
  random_.Fill(out.data(), out.size());
  return out;
}

namespace {
// Sealed sender hides who deposits a message; a log line that put the depositor's link key next to a deposit
// would give it back to whoever reads the logs, at any level. Deposits are logged without the client.
std::string ClientTag(const LinkKey& client, uint8_t command) {
  if (command == static_cast<uint8_t>(CommandType::kDeposit)) return "-";
  return LogTag(client);
}
}  // namespace

namespace {
Response Ok(ResponseBody body = NoBody{}) {
  Response r;
  r.body = std::move(body);
  return r;
}
Response Fail(ResponseCode code, std::string message) { return ErrorResponse(0, 0, code, std::move(message)); }
Response StoreFailure(const Status& s) {
  // The store's message may name internals; the client gets a fixed text.
  (void)s;
  return Fail(ResponseCode::kUnavailable, "relay store unavailable; retry later");
}
Response ChunkDataResponse(Result<AttachmentChunkRead> read) {
  if (!read) {
    if (read.error().code() == StatusCode::kNotFound)
      return Fail(ResponseCode::kNotFound, "no such attachment");
    if (read.error().code() == StatusCode::kInvalidArgument) {
      return Fail(ResponseCode::kInvalidRequest, "offset past the end of the attachment");
    }
    return StoreFailure(read.error());
  }
  return Ok(ChunkData{read->total_size, std::move(read->data)});
}
}  // namespace

std::vector<Bytes> RelayService::Handle(const LinkKey& client, ByteView command_frame) {
  commands_.fetch_add(1);
  try {
    auto command = DecodeCommand(command_frame);
    if (!command) return {Refuse(client, command_frame, command.error())};
    return Dispatch(client, *command);
  } catch (...) {
    return {InternalError(client)};
  }
}

bool RelayService::TryHandleWithoutBlocking(const LinkKey& client, ByteView command_frame, const Reply& reply) {
  bool handed_over = false;
  try {
    auto command = DecodeCommand(command_frame);
    if (command && std::holds_alternative<GetAttachmentChunk>(command->body)) {
      // Answered here when the store can read it without waiting for the disk (a download's pieces are
      // in the page cache when it was just uploaded or read): a hop to a worker and back per 64 KiB piece
      // is what held downloads back on a 2-core machine (cw_attachment_bench). Otherwise a worker reads it.
      const auto& c = std::get<GetAttachmentChunk>(command->body);
      auto read = store_.TryReadAttachmentWithoutBlocking(c.id, c.offset, c.max_len);
      if (!read) return false;
      commands_.fetch_add(1);
      std::vector<Bytes> frames = Finish(client, *command, ChunkDataResponse(std::move(*read)), {});
      handed_over = true;
      reply(std::move(frames));
      return true;
    }
    if (command && !std::holds_alternative<Deposit>(command->body) &&
        !std::holds_alternative<PutAttachmentChunk>(command->body) &&
        !std::holds_alternative<Ack>(command->body)) {
      return false;
    }
    commands_.fetch_add(1);
    if (!command) {
      reply({Refuse(client, command_frame, command.error())});
      return true;
    }
    handed_over = true;
    if (std::holds_alternative<Deposit>(command->body)) {
      DepositAsync(client, *command, reply);
    } else if (std::holds_alternative<Ack>(command->body)) {
      AckAsync(client, *command, reply);
    } else {
      PutChunkAsync(client, *command, reply);
    }
  } catch (...) {
    // Once the deposit, acknowledgement or chunk is with the store its callback answers (or an allocation
    // failure there has left nothing sane to answer with); before that, this one request gets an error.
    if (!handed_over) reply({InternalError(client)});
  }
  return true;
}

Bytes RelayService::Refuse(const LinkKey& client, ByteView command_frame, const CommandError& e) {
  errors_.fetch_add(1);
  log_->Log(LogLevel::kInfo, "command_refused",
            {{"client", ClientTag(client, e.command)}, {"code", std::string(ResponseCodeName(e.code))},
             {"command", std::to_string(e.command)}, {"size", std::to_string(command_frame.size())}});
  return Encode(ErrorResponse(e.request_id, e.command, e.code, e.message));
}

Bytes RelayService::InternalError(const LinkKey& client) {
  // Nothing a client sends may take the service down; an allocation failure or a bug answers this one
  // request with an error and the next request is served as usual.
  errors_.fetch_add(1);
  log_->Log(LogLevel::kError, "command_exception", {{"client", LogTag(client)}});
  return Encode(ErrorResponse(0, 0, ResponseCode::kUnavailable, "internal error"));
}

std::vector<Bytes> RelayService::Dispatch(const LinkKey& client, const Command& command) {
  std::vector<Bytes> frames;
  Response r = Execute(client, command, &frames);
  return Finish(client, command, std::move(r), std::move(frames));
}

std::vector<Bytes> RelayService::Finish(const LinkKey& client, const Command& command, Response r,
                                        std::vector<Bytes> frames) {
  r.request_id = command.request_id;
  r.command = static_cast<uint8_t>(TypeOf(command.body));
  if (r.code != ResponseCode::kOk) {
    errors_.fetch_add(1);
    r.body = NoBody{};
  }
  log_->Log(r.code == ResponseCode::kOk ? LogLevel::kDebug : LogLevel::kInfo, "command",
            {{"client", ClientTag(client, r.command)}, {"command", std::to_string(r.command)},
             {"code", std::string(ResponseCodeName(r.code))}});
  frames.push_back(Encode(std::move(r)));
  return frames;
}

void RelayService::DepositAsync(const LinkKey& client, const Command& command, const Reply& reply) {
  const Deposit& c = std::get<Deposit>(command.body);
  bool claimed = false;
  if (Response refused = CheckDeposit(c, &claimed); refused.code != ResponseCode::kOk) {
    reply(Finish(client, command, std::move(refused), {}));
    return;
  }
  // The answer goes out only once the store has synced the message; this thread is free meanwhile. The
  // callback keeps what the answer needs (request id, mailbox) by value: the command is gone by then.
  const uint32_t request_id = command.request_id;
  const MailboxId mailbox = c.mailbox;
  store_.InsertAsync(
      c.mailbox, c.message_id, c.envelope, clock_.NowMillis() + options_.message_ttl_millis, options_.quota,
      [this, client, request_id, mailbox, reply, claimed](Result<InsertOutcome> outcome) {
        std::vector<Bytes> frames = FinishLater(client, request_id, Deposit{mailbox, {}, {}, {}},
                                                [&] { return DepositResponse(mailbox, outcome); });
        if (!claimed) return reply(std::move(frames));
        // A duplicate, refused or cancelled (acknowledged before written) deposit did not wait for the claim
        // it made: its answer does.
        store_.WhenAllDurable([this, request_id, reply, frames = std::move(frames)](Status durable) mutable {
          if (!durable.ok()) {
            errors_.fetch_add(1);
            frames = {Encode(ErrorResponse(request_id, static_cast<uint8_t>(CommandType::kDeposit),
                                           ResponseCode::kUnavailable, "store unavailable"))};
          }
          reply(std::move(frames));
        });
      });
}

void RelayService::PutChunkAsync(const LinkKey& client, const Command& command, const Reply& reply) {
  const PutAttachmentChunk& c = std::get<PutAttachmentChunk>(command.body);
  const uint32_t request_id = command.request_id;
  if (!RoomOnDisk(c.chunk.size())) {
    return reply(FinishLater(client, request_id, PutAttachmentChunk{}, [] { return DiskFull(); }));
  }
  store_.AppendAttachmentAsync(
      c.id, client, c.offset, c.chunk, [this, client, request_id, reply](Result<uint64_t> written) {
        reply(FinishLater(client, request_id, PutAttachmentChunk{}, [&] { return ChunkResponse(written); }));
      });
}

void RelayService::AckAsync(const LinkKey& client, const Command& command, const Reply& reply) {
  const Ack& c = std::get<Ack>(command.body);
  const uint32_t request_id = command.request_id;
  if (!Owns(client, c.mailbox)) {
    return reply(
        FinishLater(client, request_id, Ack{}, [] { return Fail(ResponseCode::kNotFound, kNoMailboxText); }));
  }
  store_.AckManyAsync(c.mailbox, c.message_ids, [this, client, request_id, reply](Result<size_t> removed) {
    reply(FinishLater(client, request_id, Ack{}, [&] { return AckResponse(removed); }));
  });
}

Response RelayService::AckResponse(const Result<size_t>& removed) {
  if (!removed) return StoreFailure(removed.error());
  Acked acked;
  acked.removed = static_cast<decltype(acked.removed)>(*removed);
  return Ok(acked);
}

std::vector<Bytes> RelayService::FinishLater(const LinkKey& client, uint32_t request_id, CommandBody kind,
                                             const std::function<Response()>& response) {
  const auto type = static_cast<uint8_t>(TypeOf(kind));
  try {
    Command header;
    header.request_id = request_id;
    header.body = std::move(kind);
    return Finish(client, header, response(), {});
  } catch (...) {
    errors_.fetch_add(1);
    return {Encode(ErrorResponse(request_id, type, ResponseCode::kUnavailable, "internal error"))};
  }
}

Response RelayService::DiskFull() {
  return Fail(ResponseCode::kUnavailable, "relay storage is full; try again later");
}

Response RelayService::ChunkResponse(const Result<uint64_t>& written) {
  if (written) return Ok(ChunkStored{*written});
  if (written.error().code() == StatusCode::kNotFound) {
    return Fail(ResponseCode::kNotFound, "no such attachment");
  }
  if (written.error().code() == StatusCode::kInvalidArgument) {
    return Fail(ResponseCode::kInvalidRequest, "chunk does not continue the upload");
  }
  return StoreFailure(written.error());
}

Response RelayService::CheckDeposit(const Deposit& c, bool* claimed) {
  // Unknown mailbox and wrong token take the same path (one hash, one map lookup) and give the same answer.
  auto admitted = store_.AdmitDeposit(c.mailbox, HashDepositToken(c.mailbox, c.token), clock_.NowMillis());
  if (!admitted) return StoreFailure(admitted.error());
  if (*admitted == MailboxStore::Admission::kRefused) return Fail(ResponseCode::kDepositRefused, kDepositRefusedText);
  *claimed = *admitted == MailboxStore::Admission::kClaimed;
  return Ok();
}

Response RelayService::DepositResponse(const MailboxId& mailbox, const Result<InsertOutcome>& outcome) {
  if (outcome) return Ok();
  switch (outcome.error().code()) {
    case StatusCode::kResourceExhausted:
      return Fail(ResponseCode::kMailboxFull, "mailbox full; retry later");
    case StatusCode::kNotFound:
      return Fail(ResponseCode::kDepositRefused, kDepositRefusedText);
    default:
      log_->Log(LogLevel::kError, "deposit_store_failure", {{"mailbox", LogTag(mailbox)}});
      return StoreFailure(outcome.error());
  }
}

bool RelayService::RoomOnDisk(uint64_t size) {
  auto free = store_.FreeDiskBytes();
  if (!free) return false;  // cannot tell: refuse rather than risk filling the disk
  return *free >= options_.min_free_disk_bytes && *free - options_.min_free_disk_bytes >= size;
}

bool RelayService::Owns(const LinkKey& client, const MailboxId& mailbox) {
  auto owner = store_.MailboxOwner(mailbox);
  return owner && owner->has_value() && **owner == client;
}


Response RelayService::Execute(const LinkKey& client, const Command& command, std::vector<Bytes>* deliveries) {
  const int64_t now = clock_.NowMillis();
  return std::visit(
      [&](const auto& c) -> Response {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, CreateMailbox>) {
          auto owned = store_.MailboxesOwnedBy(client);
          if (!owned) return StoreFailure(owned.error());
          if (owned->size() >= options_.max_mailboxes_per_key) {
            return Fail(ResponseCode::kLimitExceeded, "too many mailboxes for this link key");
          }
          for (int attempt = 0; attempt < 4; ++attempt) {
            const MailboxId id = Draw<kMailboxIdSize>();
            Status s = store_.CreateMailbox(id, client);
            if (s.code() == StatusCode::kAlreadyExists) continue;
            if (!s.ok()) return StoreFailure(s);
            OnMailboxCreated(client, id);
            log_->Log(LogLevel::kInfo, "mailbox_created", {{"client", LogTag(client)}, {"mailbox", LogTag(id)}});
            return Ok(MailboxCreated{id});
          }
          return Fail(ResponseCode::kUnavailable, "could not draw a free mailbox id");
        } else if constexpr (std::is_same_v<T, UploadPreKeys>) {
          if (!Owns(client, c.mailbox)) return Fail(ResponseCode::kNotFound, kNoMailboxText);
          PreKeySet set;
          set.registration_id = c.registration_id;
          set.device_id = c.device_id;
          set.identity_key = c.identity_key;
          set.signed_pre_key = c.signed_pre_key;
          set.one_time_pre_keys = c.one_time_pre_keys;
          auto count = store_.PutPreKeys(c.mailbox, set, options_.max_one_time_pre_keys);
          if (!count) {
            if (count.error().code() == StatusCode::kResourceExhausted) {
              return Fail(ResponseCode::kLimitExceeded, "too many one-time pre-keys stored");
            }
            if (count.error().code() == StatusCode::kNotFound) return Fail(ResponseCode::kNotFound, kNoMailboxText);
            return StoreFailure(count.error());
          }
          return Ok(PreKeysStored{*count});
        } else if constexpr (std::is_same_v<T, FetchBundle>) {
          // Every attempt costs a token, found or not, so the limit also bounds probing.
          if (!bundle_limiter_.TryTake(client)) return Fail(ResponseCode::kRateLimited, "bundle fetch rate limited");
          auto taken = store_.TakeBundle(c.mailbox);
          if (!taken) return StoreFailure(taken.error());
          if (!taken->has_value()) return Fail(ResponseCode::kNotFound, "no bundle for this address");
          const TakenBundle& t = **taken;
          if (t.one_time_remaining < options_.pre_key_low_water) {
            auto owner = store_.MailboxOwner(c.mailbox);
            if (owner && owner->has_value()) NotifyPreKeysLow(**owner, c.mailbox, t.one_time_remaining);
          }
          return Ok(BundleFound{wire::EncodeBundle(t.bundle)});
        } else if constexpr (std::is_same_v<T, Deposit>) {
          bool claimed = false;
          if (Response refused = CheckDeposit(c, &claimed); refused.code != ResponseCode::kOk) return refused;
          Response r = DepositResponse(c.mailbox, store_.Insert(c.mailbox, c.message_id, c.envelope,
                                                                now + options_.message_ttl_millis, options_.quota));
          if (claimed) {
            std::promise<Status> durable;
            store_.WhenAllDurable([&durable](Status s) { durable.set_value(std::move(s)); });
            if (Status s = durable.get_future().get(); !s.ok()) return StoreFailure(s);
          }
          return r;
        } else if constexpr (std::is_same_v<T, FetchMessages>) {
          if (!Owns(client, c.mailbox)) return Fail(ResponseCode::kNotFound, kNoMailboxText);
          bool more = false;
          auto messages = store_.FetchAfter(c.mailbox, c.after_seq, c.max_count, options_.fetch_max_bytes, &more);
          if (!messages) {
            if (messages.error().code() == StatusCode::kNotFound) return Fail(ResponseCode::kNotFound, kNoMailboxText);
            return StoreFailure(messages.error());
          }
          FetchDone done;
          done.last_seq = c.after_seq;
          done.more = more;
          for (auto& m : *messages) {
            Delivery d;
            d.request_id = command.request_id;
            d.mailbox = c.mailbox;
            d.seq = m.seq;
            d.message_id = m.id;
            d.envelope = std::move(m.envelope);
            deliveries->push_back(EncodeServerFrame(ServerFrame(std::move(d))));
            done.last_seq = m.seq;
            ++done.delivered;
          }
          return Ok(done);
        } else if constexpr (std::is_same_v<T, Ack>) {
          if (!Owns(client, c.mailbox)) return Fail(ResponseCode::kNotFound, kNoMailboxText);
          return AckResponse(store_.AckMany(c.mailbox, c.message_ids));
        } else if constexpr (std::is_same_v<T, IssueDepositToken>) {
          if (!Owns(client, c.mailbox)) return Fail(ResponseCode::kNotFound, kNoMailboxText);
          const DepositToken token = Draw<kDepositTokenSize>();
          // Rounded up to the hour: the stored time then says less about when the invite was made.
          constexpr int64_t kHour = 3600 * 1000;
          const int64_t claim_by =
              c.claim_within_millis == 0
                  ? 0
                  : (now + static_cast<int64_t>(c.claim_within_millis) + kHour - 1) / kHour * kHour;
          Status s = store_.AddDepositToken(c.mailbox, HashDepositToken(c.mailbox, token),
                                            options_.max_tokens_per_mailbox, claim_by);
          if (s.code() == StatusCode::kResourceExhausted) {
            return Fail(ResponseCode::kLimitExceeded, "too many deposit tokens for this mailbox");
          }
          if (!s.ok()) return StoreFailure(s);
          return Ok(TokenIssued{token});
        } else if constexpr (std::is_same_v<T, RevokeDepositToken>) {
          if (!Owns(client, c.mailbox)) return Fail(ResponseCode::kNotFound, kNoMailboxText);
          Status s = store_.RemoveDepositToken(c.mailbox, HashDepositToken(c.mailbox, c.token));
          if (s.code() == StatusCode::kNotFound) return Fail(ResponseCode::kNotFound, "no such deposit token");
          if (!s.ok()) return StoreFailure(s);
          return Ok();
        } else if constexpr (std::is_same_v<T, CreateAttachment>) {
          if (c.total_size > options_.max_attachment_size) {
            return Fail(ResponseCode::kTooLarge, "attachment larger than the relay accepts");
          }
          if (!RoomOnDisk(c.total_size)) {
            return DiskFull();
          }
          for (int attempt = 0; attempt < 4; ++attempt) {
            const AttachmentId id = Draw<kAttachmentIdSize>();
            Status s = store_.CreateAttachment(id, client, c.total_size, now + options_.attachment_ttl_millis);
            if (s.code() == StatusCode::kAlreadyExists) continue;
            if (!s.ok()) return StoreFailure(s);
            return Ok(AttachmentCreated{id});
          }
          return Fail(ResponseCode::kUnavailable, "could not draw a free attachment id");
        } else if constexpr (std::is_same_v<T, PutAttachmentChunk>) {
          if (!RoomOnDisk(c.chunk.size())) return DiskFull();
          return ChunkResponse(store_.AppendAttachment(c.id, client, c.offset, c.chunk));
        } else if constexpr (std::is_same_v<T, GetAttachmentChunk>) {
          return ChunkDataResponse(store_.ReadAttachment(c.id, c.offset, c.max_len));
        } else if constexpr (std::is_same_v<T, GetStats>) {
          if (std::find(options_.stats_keys.begin(), options_.stats_keys.end(), client) ==
              options_.stats_keys.end()) {
            return Fail(ResponseCode::kPermissionDenied, "stats need an operator link key");
          }
          return Ok(Stats());
        }
      },
      command.body);
}

void RelayService::WatchFor(const std::shared_ptr<Subscriber>& sub, const MailboxId& mailbox) {
  std::lock_guard<std::mutex> lock(sub->mu);
  if (sub->closed || sub->watches.count(mailbox) != 0) return;
  std::shared_ptr<PushSink> sink = sub->sink;
  sub->watches[mailbox] = store_.WatchMailbox(mailbox, [sink](const MailboxId& id, const StoredMessage& m) {
    sink->Push(EncodeDeliveryFrame(0, id, m.seq, m.id, m.envelope));
  });
}

std::unique_ptr<RelayService::Subscription> RelayService::Subscribe(const LinkKey& owner,
                                                                   std::shared_ptr<PushSink> sink) {
  auto sub = std::make_shared<Subscriber>();
  sub->owner = owner;
  sub->sink = std::move(sink);
  {
    std::lock_guard<std::mutex> lock(subs_mu_);
    subs_.emplace(owner, sub);
  }
  // Registered before listing, so a mailbox created meanwhile is watched by OnMailboxCreated or here.
  auto owned = store_.MailboxesOwnedBy(owner);
  if (owned) {
    for (const auto& id : *owned) {
      WatchFor(sub, id);
      auto count = store_.CountOneTimePreKeys(id);
      if (count && count->has_value() && **count < options_.pre_key_low_water) {
        sub->sink->Push(EncodeServerFrame(ServerFrame(PreKeysLow{id, **count})));
      }
    }
  }
  return std::make_unique<SubscriptionImpl>(this, std::move(sub));
}

void RelayService::Unsubscribe(const Subscriber* sub) {
  std::lock_guard<std::mutex> lock(subs_mu_);
  auto range = subs_.equal_range(sub->owner);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second.get() == sub) {
      subs_.erase(it);
      return;
    }
  }
}

void RelayService::OnMailboxCreated(const LinkKey& owner, const MailboxId& mailbox) {
  std::vector<std::shared_ptr<Subscriber>> subs;
  {
    std::lock_guard<std::mutex> lock(subs_mu_);
    auto range = subs_.equal_range(owner);
    for (auto it = range.first; it != range.second; ++it) subs.push_back(it->second);
  }
  for (const auto& sub : subs) WatchFor(sub, mailbox);
}

void RelayService::NotifyPreKeysLow(const LinkKey& owner, const MailboxId& mailbox, uint32_t remaining) {
  std::vector<std::shared_ptr<PushSink>> sinks;
  {
    std::lock_guard<std::mutex> lock(subs_mu_);
    auto range = subs_.equal_range(owner);
    for (auto it = range.first; it != range.second; ++it) sinks.push_back(it->second->sink);
  }
  if (sinks.empty()) return;
  const Bytes frame = EncodeServerFrame(ServerFrame(PreKeysLow{mailbox, remaining}));
  for (const auto& s : sinks) s->Push(frame);
}

RelayStatsView RelayService::Stats() {
  RelayStatsView v;
  v.connections = connections_.load();
  v.commands = commands_.load();
  v.errors = errors_.load();
  if (auto s = store_.Stats()) {
    v.mailboxes = s->mailboxes;
    v.queued_messages = s->messages;
    v.queued_bytes = s->message_bytes;
    v.attachments = s->attachments;
    v.attachment_bytes = s->attachment_bytes;
    v.syncs = s->syncs;
  }
  return v;
}

Result<size_t> RelayService::PurgeExpired() {
  // An attachment expires attachment_ttl after its creation, so one created more than
  // unfinished_attachment_ttl ago expires before now + (attachment_ttl - unfinished_attachment_ttl).
  const int64_t now = clock_.NowMillis();
  const int64_t unfinished_by =
      now + std::max<int64_t>(0, options_.attachment_ttl_millis - options_.unfinished_attachment_ttl_millis);
  auto removed = store_.PurgeExpired(now, unfinished_by);
  if (removed && *removed > 0) {
    log_->Log(LogLevel::kInfo, "purged_expired", {{"count", std::to_string(*removed)}});
  }
  return removed;
}

}  // namespace cw::relay
