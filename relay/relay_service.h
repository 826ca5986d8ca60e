// RelayService: the relay's core, independent of sockets. A transport hands it each command frame together
// with the authenticated static key of the link it arrived on, and sends back the frames it returns; a
// connected mailbox owner subscribes to pushes.
//
// Rules it enforces (issue 4):
// - A mailbox is bound to the link key that created it; only that key uploads its pre-keys, reads, acks and
//   issues or revokes its deposit tokens. Anyone else gets the same kNotFound as for a mailbox that does
//   not exist.
// - Deposits need a valid deposit token; an unknown mailbox and a wrong or revoked token get the same code
//   and message (kDepositRefused). The relay keeps the opaque envelope, mailbox id, message id and an
//   expiry; nothing about the sender. A retried message id is stored once. Over quota: kMailboxFull.
// - Bundle fetches are rate-limited per requester link key (token bucket); each consumes one one-time
//   pre-key, never the same twice; the owner hears (PreKeysLow push) when fewer than the low-water mark
//   remain. A bundle without a one-time pre-key is still served.
// - Attachments: opaque blobs by relay-drawn random id, uploaded by one link key in order, at most
//   max_attachment_size, expiring after attachment_ttl (after unfinished_attachment_ttl while the upload is
//   unfinished).
// - Malformed, oversized and unknown commands get an error response; nothing a client sends can stop the
//   service serving others.
//
// Thread rules: Handle, Subscribe, Stats and PurgeExpired are safe from any thread, concurrently.
// Pushes reach a PushSink on the thread that completes the deposit: the caller's for Handle, the store's
// (after the synced write) for TryHandleWithoutBlocking.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/clock.h"
#include "core/base/random.h"
#include "relay/log.h"
#include "relay/mailbox_store.h"
#include "relay/protocol.h"
#include "relay/rate_limiter.h"
#include "relay/types.h"

namespace cw::relay {

struct RelayOptions {
  int64_t message_ttl_millis = 30ll * 24 * 3600 * 1000;
  MessageQuota quota;
  uint64_t max_attachment_size = 100ull << 20;
  // A new attachment, or a chunk of one, is refused ("relay storage is full; try again later") when the
  // store's disk would keep less than this free after it: the room left is for deposits, which are small
  // and not weighed (a disk that fills up stops the store until restarted).
  uint64_t min_free_disk_bytes = 1ull << 30;
  int64_t attachment_ttl_millis = 30ll * 24 * 3600 * 1000;
  // An upload still unfinished this long after its attachment was created is given up: the attachment and
  // what was uploaded of it are removed at the next purge, so abandoned uploads cannot hold the disk (and,
  // past min_free_disk_bytes, keep everyone's attachments out) for attachment_ttl. A client that comes back
  // later sends the file again. At least attachment_ttl means no earlier removal.
  int64_t unfinished_attachment_ttl_millis = 24ll * 3600 * 1000;
  TokenBucketLimiter::Options bundle_fetch_limit;  // 6, then one per 10 minutes
  uint32_t pre_key_low_water = 10;
  size_t max_one_time_pre_keys = 1000;  // stored per mailbox
  size_t max_tokens_per_mailbox = 1000;
  size_t max_mailboxes_per_key = 16;
  size_t fetch_max_bytes = 512 * 1024;  // envelope bytes per fetch (at least one message always)
  std::vector<LinkKey> stats_keys;      // link keys allowed the stats command
};

// Where pushes for one connected owner go. Push may be called from any thread, concurrently; it must not
// block for long and must not call back into the RelayService.
class PushSink {
 public:
  virtual ~PushSink() = default;
  virtual void Push(Bytes frame) = 0;
};

class RelayService {
 public:
  // `store`, `clock`, `random` and `log` must outlive the service. `random` is only used under a lock.
  RelayService(MailboxStore& store, const Clock& clock, Random& random, RelayOptions options = {},
               LogSink* log = nullptr);
  ~RelayService();
  RelayService(const RelayService&) = delete;
  RelayService& operator=(const RelayService&) = delete;

  // Handles one command frame from the link whose static key is `client`. Returns the frames to send back
  // in order: for a fetch, one delivery frame per message and then the response; otherwise one response.
  std::vector<Bytes> Handle(const LinkKey& client, ByteView command_frame);

  // For a thread that must not block (a transport's loop thread). Handles the frame when that needs no
  // waiting beyond short in-memory locks (and, for an attachment chunk, a write into the page cache), and
  // returns true: a deposit, an attachment chunk or an acknowledgement, answered through `reply` once the
  // store has synced it (on the store's thread; at once, on this thread, when refused or when it removed
  // nothing); a download of a piece the store can read without waiting for the disk
  // (MailboxStore::TryReadAttachmentWithoutBlocking), answered at once;
  // or a frame that does not decode, answered at once. Chunks taken here in the order they arrive are
  // appended in that order. Returns false, having done nothing, for every other command (and a download
  // the store would wait for): run Handle for it on a thread that may block. After true,
  // `reply` runs exactly once, with the frames Handle would have returned; it must not block and must not
  // call back into the service or the store. REQUIRES: the service and the store outlive every pending reply
  // (a server waits for its replies before it lets go of them).
  using Reply = std::function<void(std::vector<Bytes>)>;
  bool TryHandleWithoutBlocking(const LinkKey& client, ByteView command_frame, const Reply& reply);

  // While the returned object lives, messages deposited into any mailbox `owner` owns (now or created
  // later) are pushed to `sink` as delivery frames with request id 0, and PreKeysLow frames announce a
  // pre-key pool below the low-water mark (once at subscription, and after each fetch that leaves it low).
  // REQUIRES: the Subscription is destroyed before the service.
  class Subscription {
   public:
    virtual ~Subscription() = default;
  };
  std::unique_ptr<Subscription> Subscribe(const LinkKey& owner, std::shared_ptr<PushSink> sink);

  // The transport reports its connection count here, for Stats.
  void SetConnectionCount(uint64_t connections) { connections_.store(connections); }
  RelayStatsView Stats();
  // Removes expired messages and attachments; the server calls it periodically.
  Result<size_t> PurgeExpired();

 private:
  struct Subscriber;
  class SubscriptionImpl;

  Bytes Refuse(const LinkKey& client, ByteView command_frame, const CommandError& error);
  Bytes InternalError(const LinkKey& client);
  void DepositAsync(const LinkKey& client, const Command& command, const Reply& reply);
  void PutChunkAsync(const LinkKey& client, const Command& command, const Reply& reply);
  void AckAsync(const LinkKey& client, const Command& command, const Reply& reply);
  std::vector<Bytes> Dispatch(const LinkKey& client, const Command& command);
  // Stamps the response with the command's request id and type, counts and logs it, appends it to frames.
  std::vector<Bytes> Finish(const LinkKey& client, const Command& command, Response r, std::vector<Bytes> frames);
  // Finish for a command answered on a store's thread, where the command is gone: `kind` names its type,
  // and an allocation failure answers it with an error rather than leaving it unanswered.
  std::vector<Bytes> FinishLater(const LinkKey& client, uint32_t request_id, CommandBody kind,
                                 const std::function<Response()>& response);
  // The token check; kOk when the deposit may go in. *claimed: it claimed an invite's token, so its answer
  // waits for the claim to be durable as well (MailboxStore::AdmitDeposit).
  Response CheckDeposit(const Deposit& deposit, bool* claimed);
  Response DepositResponse(const MailboxId& mailbox, const Result<InsertOutcome>& outcome);
  Response ChunkResponse(const Result<uint64_t>& written);
  Response AckResponse(const Result<size_t>& removed);
  static Response DiskFull();
  Response Execute(const LinkKey& client, const Command& command, std::vector<Bytes>* deliveries);
  bool Owns(const LinkKey& client, const MailboxId& mailbox);
  // Whether the disk keeps min_free_disk_bytes once `size` more bytes are written. Checked for each chunk
  // (what takes the space) and, as an early answer, for a whole new attachment; nothing is reserved, so
  // announcing uploads that never come takes no room from anyone.
  bool RoomOnDisk(uint64_t size);
  void WatchFor(const std::shared_ptr<Subscriber>& sub, const MailboxId& mailbox);
  void OnMailboxCreated(const LinkKey& owner, const MailboxId& mailbox);
  void NotifyPreKeysLow(const LinkKey& owner, const MailboxId& mailbox, uint32_t remaining);
  void Unsubscribe(const Subscriber* sub);
  template <size_t N>
  std::array<uint8_t, N> Draw();

  MailboxStore& store_;
  const Clock& clock_;
  Random& random_;
  const RelayOptions options_;
  LogSink* log_;
  NullLogSink null_log_;
  TokenBucketLimiter bundle_limiter_;

  std::mutex random_mu_;
  std::mutex subs_mu_;
  std::multimap<LinkKey, std::shared_ptr<Subscriber>> subs_;

  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> commands_{0};
  std::atomic<uint64_t> errors_{0};
};

}  // namespace cw::relay
