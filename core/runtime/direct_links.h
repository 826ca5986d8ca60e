// DirectLinks: direct peer-to-peer links between a client and its contacts (issues #4 and #5), next to the
// relay link. The Client (core/runtime/client.cc) owns one and calls it through this narrow interface.
//
// How two devices find and trust each other: each announces to each contact, inside their end-to-end Signal
// session, a kDirectEndpoint AppMessage (core/wire/direct.h) with its transport link key and, when it listens,
// its host and port. The session authenticates the sender, so the announced link key is bound to the
// contact's identity key. The receiver keeps every contact's announcement sealed in the store (one record in
// the kMeta table, under a fixed name that names nobody) so it survives restarts.
//   - Outgoing: a link to a contact's announced endpoint is opened with Noise XK pinning the announced key, so
//     the listener must prove it (an announcement whose key does not match fails the handshake).
//   - Incoming: an accepted link whose proven static key is not a key announced by exactly one contact is
//     closed at once (nothing read from it); a contact keeps one incoming link, its newest.
// Each side sends on the link it opened and answers (acks) on the link a message came in on, so two clients
// that both listen hold two links, one per direction; no tie-break is needed.
//
// What it carries: deliver {message id, envelope} and ack {message id} frames. The client hands over an
// outbox entry only once its commit is durable, waits for the ack (Options::ack_timeout_ms) and otherwise
// deposits it at the relay; on the receiving side a deliver frame goes through the same path as a relay push
// and is acked once the commit holding it is durable.
//
// Opt-in: listening, announcing and connecting happen only when Options::listen is set (a listening port
// reveals the device's address to its contacts). Announcements received are kept either way.
// Lock: Stop() closes every link and the listener and forgets what it loaded; Start() after Unlock listens
// again (on the port it had, when the configured port is 0 and that port is still free).
//
// Thread rules: every method on the transport's loop thread (the engine's owner thread); every Deps callback
// runs there too. Ownership: the transport and the store are not owned and must outlive this object; the
// transport's callbacks it registers check an epoch, so none touches it after Stop().
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/status.h"
#include "core/session/store.h"
#include "core/wire/app_message.h"
#include "core/wire/direct.h"
#include "transport/transport.h"

namespace cw::runtime {

inline constexpr int64_t kDirectAckTimeoutMs = 3'000;
inline constexpr int64_t kDirectReconnectMinMs = 200;
inline constexpr int64_t kDirectReconnectMaxMs = 30'000;
// Connects in a row that fail before the link to a contact is given up, until the contact announces again
// or opens a link to us (it is back), or direct links start again (an unlock, a restart).
inline constexpr int kDirectMaxConnectFailures = 10;

struct DirectLinkStats {
  uint64_t delivered = 0;  // outbox entries a contact acknowledged over a direct link
  uint64_t received = 0;   // deliver frames handed to the client
  uint64_t refused = 0;    // accepted links closed because their key was no contact's
};

class DirectLinks {
 public:
  using MessageId = wire::DirectMessageId;
  using AckFn = std::function<void()>;

  struct Deps {
    transport::Transport* transport = nullptr;
    session::ProtocolStore* store = nullptr;
    // Queues a control AppMessage (the announcement) for `contact` through the outbox.
    std::function<Status(const std::string& contact, const wire::AppMessage&)> send;
    // The contacts this device can write to now (a session and a mailbox).
    std::function<std::vector<std::string>()> contacts;
    // A deliver frame from `contact`'s link: handled like a relay push; `ack` (callable once, loop thread)
    // answers the sender, to be called only once the message's commit is durable.
    std::function<void(const std::string& contact, const MessageId& id, Bytes envelope, AckFn ack)> deliver;
    // An outgoing link to `contact` came up (the outbox may have something for it).
    std::function<void(const std::string& contact)> link_up;
    // Background problems; never a name, key or address.
    std::function<void(const Status&)> report;
  };

  struct Options {
    std::string listen;  // "host:port" (port 0: any); empty: direct links off
    int64_t ack_timeout_ms = kDirectAckTimeoutMs;
    int64_t reconnect_min_ms = kDirectReconnectMinMs;
    int64_t reconnect_max_ms = kDirectReconnectMaxMs;
  };

  DirectLinks(Deps deps, Options options);
  ~DirectLinks();
  DirectLinks(const DirectLinks&) = delete;
  DirectLinks& operator=(const DirectLinks&) = delete;

  bool enabled() const { return !options_.listen.empty(); }

  // When enabled: listens, connects to every stored endpoint and, when the bound endpoint is not the one last
  // announced, announces it to every contact. REQUIRES: the store is unlocked. kInvalidArgument for a bad
  // listen address, kUnavailable when it cannot be bound. Idempotent while started.
  Status Start();
  // Closes every link and the listener; sends waiting for an ack fail with kAborted. Idempotent.
  void Stop();

  // A contact was just made (invite accepted, first message from them): announce ourselves to it.
  void OnNewContact(const std::string& contact);
  // A kDirectEndpoint payload from `contact` (through the compliance inbox): stored sealed, and the link to it
  // (re)made. kMalformed for a payload that does not decode.
  Status OnAnnouncement(const std::string& contact, ByteView payload);
  // `contact` was revoked or removed: what it announced is forgotten (and the record saved), our link to it
  // and its link to us are closed, and a link it opens later is refused as a stranger's. Sends waiting on
  // our link fail with kUnavailable (they go by the relay).
  Status ForgetContact(const std::string& contact);

  // Whether an outgoing link to `contact` is up now.
  bool IsUp(const std::string& contact) const;
  // Sends `envelope` under `id` on the link to `contact`; `done` runs once, on the loop thread: Ok when the
  // contact acked; kUnavailable (no link, link closed, no ack in time: the link is then closed and remade) or
  // kAborted (Stop) otherwise. A call that fails at once calls `done` before returning.
  void Send(const std::string& contact, const MessageId& id, ByteView envelope, std::function<void(Status)> done);

  // "host:port" we listen on, or empty.
  std::string endpoint() const;
  DirectLinkStats stats() const { return stats_; }

 private:
  struct Pending {
    std::function<void(Status)> done;
    transport::Transport::TimerId timer = 0;
  };
  struct Peer {
    std::optional<wire::DirectEndpoint> announced;
    std::shared_ptr<transport::Connection> out;  // the link we opened, once up
    bool connecting = false;
    uint64_t attempt = 0;  // which connect attempt the callbacks belong to
    int64_t backoff_ms = 0;
    int failures = 0;            // connects in a row that failed (see kDirectMaxConnectFailures)
    bool ack_timed_out = false;  // the last link went down waiting for an ack; cleared by an ack
    std::optional<transport::Transport::TimerId> reconnect_timer;
    std::map<MessageId, Pending> pending;  // sent on `out`, awaiting the ack
  };

  Status EnsureLoaded();
  Status Save();
  void Announce(const std::string& contact);
  void Connect(const std::string& contact);
  void ScheduleReconnect(const std::string& contact);
  void DropOutgoing(const std::string& contact, Peer& peer, const Status& why);
  void Resolve(const std::string& contact, const MessageId& id, Status result);
  void OnAccept(std::shared_ptr<transport::Connection> conn);
  // Closes and forgets every link `contact` opened to us.
  void CloseInbound(const std::string& contact, const Status& why);
  void OnFrame(const std::string& contact, const std::weak_ptr<transport::Connection>& conn, ByteView frame);

  Deps deps_;
  Options options_;
  uint64_t epoch_ = 0;  // bumped by Stop: callbacks of earlier links and timers do nothing
  bool started_ = false;
  bool loaded_ = false;
  std::map<std::string, Peer> peers_;  // by contact name
  std::string self_announced_;         // the endpoint last announced to every contact ("" before any)
  std::shared_ptr<transport::Listener> listener_;
  uint16_t last_port_ = 0;  // the port bound last time, tried first when the configured port is 0
  struct Inbound {
    std::string contact;
    std::shared_ptr<transport::Connection> conn;
  };
  std::map<transport::Connection*, Inbound> inbound_;  // accepted links, by their connection
  DirectLinkStats stats_;
};

}  // namespace cw::runtime
