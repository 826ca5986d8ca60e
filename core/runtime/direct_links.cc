#include "core/runtime/direct_links.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace cw::runtime {

namespace {

using json = nlohmann::json;
using session::Table;

// Every contact's announcement and what we last announced, in one sealed record under a fixed name: one key
// per contact would put contact names in the store's (plain) keys.
constexpr std::string_view kDirectKey = "runtime.direct";

std::string HostPort(const std::string& host, uint16_t port) {
  return host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port)
                                              : host + ":" + std::to_string(port);
}

}  // namespace

DirectLinks::DirectLinks(Deps deps, Options options) : deps_(std::move(deps)), options_(std::move(options)) {}

DirectLinks::~DirectLinks() = default;

// ---------------------------------------------------------------- the sealed record

Status DirectLinks::EnsureLoaded() {
  if (loaded_) return Status::Ok();
  CW_ASSIGN_OR_RETURN(auto rec, deps_.store->Get(Table::kMeta, kDirectKey));
  peers_.clear();
  self_announced_.clear();
  if (rec) {
    const auto bad = [] { return Status(StatusCode::kMalformed, "direct link record is malformed"); };
    json j = json::parse(rec->reveal().begin(), rec->reveal().end(), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return bad();
    try {
      if (j.value("v", 0) != 1) return bad();  // value() throws on a "v" that is not a number
      self_announced_ = j.at("self").get<std::string>();
      for (const auto& [name, p] : j.at("peers").items()) {
        Bytes raw;
        if (!FromHex(p.at("endpoint").get<std::string>(), &raw)) return bad();
        // Stored in the announcement's own encoding: the same checks as when it arrived.
        auto e = wire::DecodeDirectEndpoint(raw);
        if (!e) return bad();
        peers_[name].announced = std::move(*e);
      }
    } catch (...) {
      return bad();
    }
  }
  loaded_ = true;
  return Status::Ok();
}

Status DirectLinks::Save() {
  json peers = json::object();
  for (const auto& [name, p] : peers_) {
    if (!p.announced) continue;
    CW_ASSIGN_OR_RETURN(Bytes enc, wire::EncodeDirectEndpoint(*p.announced));
    peers[name] = json{{"endpoint", ToHex(enc)}};
  }
  json j{{"v", 1}, {"self", self_announced_}, {"peers", peers}};
  std::string text = j.dump();
  SecretBytes value(AsBytes(text));
  sodium_memzero(text.data(), text.size());  // contacts' addresses
  session::WriteBatch b;
  b.writes.push_back({Table::kMeta, std::string(kDirectKey), std::move(value)});
  return deps_.store->Commit(std::move(b));
}

// ---------------------------------------------------------------- start and stop

namespace {

enum class AddressKind { kLoopback, kDialable, kRefused };

// What an announced host is. A contact chooses it, and this device dials it for as long as it runs, so it
// must not be a way to make the device knock on addresses of its own choosing: the unspecified address,
// multicast, broadcast and link-local ones (169.254.169.254 is a cloud's metadata service) are refused, and
// a loopback one is for a device that listens on loopback itself (both ends on one machine). A host that is
// no IP literal is left to the transport (TCP dials IP literals only; the in-memory network names nodes).
AddressKind Classify(const std::string& host) {
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
      char text[INET_ADDRSTRLEN] = {};
      ::inet_ntop(AF_INET, &v6.s6_addr[12], text, sizeof text);
      return Classify(text);
    }
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return AddressKind::kLoopback;
    if (IN6_IS_ADDR_UNSPECIFIED(&v6) || IN6_IS_ADDR_MULTICAST(&v6) || IN6_IS_ADDR_LINKLOCAL(&v6)) {
      return AddressKind::kRefused;
    }
    return AddressKind::kDialable;
  }
  if (::inet_pton(AF_INET, host.c_str(), &v4) != 1) return AddressKind::kDialable;
  const uint32_t a = ntohl(v4.s_addr);
  if ((a >> 24) == 127) return AddressKind::kLoopback;
  if ((a >> 24) == 0 || a == 0xffffffffu || (a >> 28) == 0xe || (a >> 16) == 0xa9fe)
    return AddressKind::kRefused;
  return AddressKind::kDialable;
}

bool IsUnspecified(const std::string& host) {
  in6_addr v6{};
  in_addr v4{};
  if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_UNSPECIFIED(&v6);
  return ::inet_pton(AF_INET, host.c_str(), &v4) == 1 && v4.s_addr == 0;
}

}  // namespace

Status DirectLinks::Start() {
  if (started_) return Status::Ok();
  CW_RETURN_IF_ERROR(EnsureLoaded());
  started_ = true;
  if (!enabled()) {
    // Contacts made while off are not told anything: forget what was last announced, so the next start
    // with direct links on announces to every contact again, even on the same fixed port.
    if (self_announced_.empty()) return Status::Ok();
    self_announced_.clear();
    return Save();
  }
  CW_ASSIGN_OR_RETURN(transport::Endpoint local, transport::Endpoint::Parse(options_.listen));
  if (local.static_key) return Status(StatusCode::kInvalidArgument, "the direct listen address takes no key");
  if (IsUnspecified(local.host)) {
    // The bound address is what contacts are told to dial: 0.0.0.0 would send them to their own machine.
    return Status(StatusCode::kInvalidArgument,
                  "listen for direct links on the address contacts will dial (not 0.0.0.0 or ::)");
  }
  const uint64_t epoch = epoch_;
  auto on_accept = [this, epoch](std::shared_ptr<transport::Connection> c) {
    if (epoch != epoch_) return c->Close(Status(StatusCode::kAborted, "direct links stopped"));
    OnAccept(std::move(c));
  };
  Result<std::shared_ptr<transport::Listener>> l = Error(StatusCode::kUnavailable, "not tried");
  if (local.port == 0 && last_port_ != 0) {
    // After an Unlock: the same port when still free, so contacts need no new announcement.
    transport::Endpoint again = local;
    again.port = last_port_;
    l = deps_.transport->Listen(again, on_accept);
  }
  if (!l) l = deps_.transport->Listen(local, on_accept);
  if (!l) {
    started_ = false;
    return Status(l.error().code(), "direct listen: " + l.error().message());
  }
  listener_ = *l;
  last_port_ = listener_->endpoint().port;
  for (auto& [name, p] : peers_) {
    if (p.announced && p.announced->listens()) Connect(name);
  }
  const std::string here = endpoint();
  if (here != self_announced_) {
    self_announced_ = here;
    if (Status s = Save(); !s.ok()) return s;
    for (const auto& c : deps_.contacts()) Announce(c);
  }
  return Status::Ok();
}

void DirectLinks::Stop() {
  ++epoch_;
  const bool was = started_ || loaded_;
  started_ = false;
  loaded_ = false;
  if (!was) return;
  if (listener_) listener_->Close();
  listener_.reset();
  const Status why(StatusCode::kAborted, "direct links stopped");
  auto peers = std::move(peers_);
  peers_.clear();
  for (auto& [name, p] : peers) {
    if (p.reconnect_timer) deps_.transport->CancelTimer(*p.reconnect_timer);
    if (p.out) p.out->Close(why);
    for (auto& [id, pending] : p.pending) {
      deps_.transport->CancelTimer(pending.timer);
      pending.done(why);
    }
  }
  auto inbound = std::move(inbound_);
  inbound_.clear();
  for (auto& [raw, in] : inbound) in.conn->Close(why);
  self_announced_.clear();
}

std::string DirectLinks::endpoint() const {
  if (!listener_) return "";
  const auto& ep = listener_->endpoint();
  return HostPort(ep.host, ep.port);
}

// ---------------------------------------------------------------- announcements

void DirectLinks::Announce(const std::string& contact) {
  wire::DirectEndpoint e;
  e.link_key = deps_.transport->local_static_key();
  if (listener_) {
    e.host = listener_->endpoint().host;
    e.port = listener_->endpoint().port;
  }
  auto enc = wire::EncodeDirectEndpoint(e);
  if (!enc) return deps_.report(enc.error());
  wire::AppMessage m;
  m.kind = wire::AppKind::kDirectEndpoint;
  m.payload = SecretBytes(*enc);
  if (Status s = deps_.send(contact, m); !s.ok()) {
    deps_.report(Status(s.code(), "a direct endpoint announcement could not be queued: " + s.message()));
  }
}

Status DirectLinks::ForgetContact(const std::string& contact) {
  CW_RETURN_IF_ERROR(EnsureLoaded());
  const Status why(StatusCode::kPermissionDenied, "contact revoked");
  CloseInbound(contact, why);
  auto it = peers_.find(contact);
  if (it == peers_.end()) return Status::Ok();
  if (it->second.reconnect_timer) deps_.transport->CancelTimer(*it->second.reconnect_timer);
  Peer gone = std::move(it->second);
  peers_.erase(it);
  DropOutgoing(contact, gone, why);
  return Save();
}

void DirectLinks::OnNewContact(const std::string& contact) {
  if (started_ && enabled()) Announce(contact);
}

Status DirectLinks::OnAnnouncement(const std::string& contact, ByteView payload) {
  CW_ASSIGN_OR_RETURN(wire::DirectEndpoint e, wire::DecodeDirectEndpoint(payload));
  CW_RETURN_IF_ERROR(EnsureLoaded());
  Peer& p = peers_[contact];
  if (p.announced && *p.announced == e) return Status::Ok();
  const bool key_changed = p.announced && p.announced->link_key != e.link_key;
  p.announced = e;
  p.failures = 0;  // a new announcement is worth trying afresh
  CW_RETURN_IF_ERROR(Save());
  // Links made under the old announcement no longer speak for this contact.
  // kUnavailable, not kAborted: what waited goes to the relay (kAborted is Stop's, and ends the flush).
  DropOutgoing(contact, p, Status(StatusCode::kUnavailable, "direct endpoint changed"));
  if (key_changed) {
    CloseInbound(contact, Status(StatusCode::kAborted, "direct endpoint changed"));
  }
  p.backoff_ms = 0;
  p.ack_timed_out = false;
  if (started_ && enabled() && e.listens()) Connect(contact);
  return Status::Ok();
}

// ---------------------------------------------------------------- outgoing links

void DirectLinks::Connect(const std::string& contact) {
  auto it = peers_.find(contact);
  if (it == peers_.end() || !started_ || !enabled()) return;
  Peer& p = it->second;
  if (p.out || p.connecting || !p.announced || !p.announced->listens()) return;
  const AddressKind kind = Classify(p.announced->host);
  const bool we_are_local = listener_ && Classify(listener_->endpoint().host) == AddressKind::kLoopback;
  if (kind == AddressKind::kRefused || (kind == AddressKind::kLoopback && !we_are_local) ||
      p.announced->port < 1024) {
    // Never dialled; its messages come by the relay. The address is not reported (it would identify).
    deps_.report(Status(StatusCode::kPermissionDenied,
                        "a contact announced a direct endpoint this device will not dial"));
    return;
  }
  if (p.failures >= kDirectMaxConnectFailures) return;
  transport::Endpoint remote;
  remote.host = p.announced->host;
  remote.port = p.announced->port;
  remote.static_key = p.announced->link_key;  // Noise XK: the peer must prove the announced key
  const uint64_t epoch = epoch_;
  const uint64_t attempt = ++p.attempt;
  auto holder = std::make_shared<std::weak_ptr<transport::Connection>>();
  const auto current = [this, epoch, contact, attempt]() -> Peer* {
    if (epoch != epoch_) return nullptr;
    auto f = peers_.find(contact);
    return f != peers_.end() && f->second.attempt == attempt ? &f->second : nullptr;
  };
  transport::ConnectionCallbacks cbs;
  cbs.on_frame = [this, current, contact, holder](ByteView f) {
    if (current()) OnFrame(contact, *holder, f);
  };
  cbs.on_closed = [this, current, contact](Status why) {
    Peer* peer = current();
    if (!peer) return;
    DropOutgoing(contact, *peer, why);
    ScheduleReconnect(contact);
  };
  p.connecting = true;
  Status s = deps_.transport->Connect(remote, std::move(cbs),
                                      [this, current, contact, holder](Result<std::shared_ptr<transport::Connection>> c) {
                                        Peer* peer = current();
                                        if (!peer) {
                                          if (c) (*c)->Close(Status(StatusCode::kAborted, "direct links stopped"));
                                          return;
                                        }
                                        peer->connecting = false;
                                        if (!c) {
                                          ++peer->failures;
                                          return ScheduleReconnect(contact);
                                        }
                                        peer->failures = 0;
                                        *holder = *c;
                                        peer->out = *c;
                                        // A peer whose last link timed out waiting for an ack keeps its
                                        // backoff until it acks: the outbox is one queue, so a peer that
                                        // accepts links and never acks would otherwise stall everyone's
                                        // messages for an ack timeout at every reconnect.
                                        if (!peer->ack_timed_out) peer->backoff_ms = 0;
                                        deps_.link_up(contact);
                                      });
  if (!s.ok()) {
    p.connecting = false;
    deps_.report(Status(s.code(), "a contact's direct endpoint cannot be used"));
  }
}

void DirectLinks::ScheduleReconnect(const std::string& contact) {
  auto it = peers_.find(contact);
  if (it == peers_.end() || !started_) return;
  Peer& p = it->second;
  if (p.reconnect_timer || p.out || p.connecting) return;
  if (p.failures >= kDirectMaxConnectFailures) {
    // Until it announces again or links to us: its messages go by the relay meanwhile.
    deps_.report(
        Status(StatusCode::kUnavailable, "a contact's direct endpoint stopped answering; using the relay"));
    return;
  }
  p.backoff_ms = p.backoff_ms == 0 ? options_.reconnect_min_ms : std::min(p.backoff_ms * 2, options_.reconnect_max_ms);
  const uint64_t epoch = epoch_;
  p.reconnect_timer = deps_.transport->ScheduleAfter(p.backoff_ms, [this, epoch, contact] {
    if (epoch != epoch_) return;
    auto f = peers_.find(contact);
    if (f == peers_.end()) return;
    f->second.reconnect_timer.reset();
    Connect(contact);
  });
}

// Forgets the outgoing link (closing it) and fails what waited on it; the callbacks of that attempt are
// disowned by bumping the attempt.
void DirectLinks::DropOutgoing(const std::string& contact, Peer& p, const Status& why) {
  (void)contact;
  ++p.attempt;
  p.connecting = false;
  if (p.out) p.out->Close(why);
  p.out.reset();
  auto pending = std::move(p.pending);
  p.pending.clear();
  for (auto& [id, w] : pending) {
    deps_.transport->CancelTimer(w.timer);
    w.done(Status(why.code() == StatusCode::kAborted ? StatusCode::kAborted : StatusCode::kUnavailable,
                  "direct link closed"));
  }
}

bool DirectLinks::IsUp(const std::string& contact) const {
  auto it = peers_.find(contact);
  return started_ && it != peers_.end() && it->second.out && it->second.out->is_open();
}

void DirectLinks::Send(const std::string& contact, const MessageId& id, ByteView envelope,
                       std::function<void(Status)> done) {
  auto it = peers_.find(contact);
  if (!started_ || it == peers_.end() || !it->second.out) {
    return done(Status(StatusCode::kUnavailable, "no direct link"));
  }
  Peer& p = it->second;
  if (p.pending.count(id)) return done(Status(StatusCode::kUnavailable, "already in flight on the direct link"));
  wire::DirectFrame f;
  f.type = wire::DirectFrameType::kDeliver;
  f.id = id;
  f.envelope.assign(envelope.begin(), envelope.end());
  auto frame = wire::EncodeDirectFrame(f);
  if (!frame) return done(Status(StatusCode::kUnavailable, "not sendable directly: " + frame.error().message()));
  if (Status s = p.out->Send(*frame); !s.ok()) return done(Status(StatusCode::kUnavailable, "direct link: " + s.message()));
  const uint64_t epoch = epoch_;
  const uint64_t attempt = p.attempt;
  const auto timer = deps_.transport->ScheduleAfter(options_.ack_timeout_ms, [this, epoch, attempt, contact] {
    if (epoch != epoch_) return;
    auto f = peers_.find(contact);
    if (f == peers_.end() || f->second.attempt != attempt) return;
    // A peer that does not answer in time is treated as gone: everything waiting goes to the relay, and the
    // link is made again (at once if the peer is only slow).
    f->second.ack_timed_out = true;
    DropOutgoing(contact, f->second, Status(StatusCode::kUnavailable, "no direct ack in time"));
    ScheduleReconnect(contact);
  });
  p.pending[id] = Pending{std::move(done), timer};
}

void DirectLinks::Resolve(const std::string& contact, const MessageId& id, Status result) {
  auto it = peers_.find(contact);
  if (it == peers_.end()) return;
  auto w = it->second.pending.find(id);
  if (w == it->second.pending.end()) return;  // late or unasked-for: nothing to do
  Pending pending = std::move(w->second);
  it->second.pending.erase(w);
  deps_.transport->CancelTimer(pending.timer);
  if (result.ok()) {
    ++stats_.delivered;
    it->second.ack_timed_out = false;
    it->second.backoff_ms = 0;
  }
  pending.done(std::move(result));
}

// ---------------------------------------------------------------- incoming links and frames

void DirectLinks::OnAccept(std::shared_ptr<transport::Connection> conn) {
  const auto& key = conn->remote_static_key();
  std::string contact;
  size_t matches = 0;
  for (const auto& [name, p] : peers_) {
    if (p.announced && sodium_memcmp(p.announced->link_key.data(), key.data(), key.size()) == 0) {
      contact = name;
      ++matches;
    }
  }
  if (matches != 1) {
    // Not a key any contact announced: closed before any frame is read. Nothing about it is reported (the
    // address and key would identify whoever probed).
    // A key two contacts announced: one of them announced the other's (a link key is no secret), and the
    // link cannot be told to speak for either, so it is refused too (that contact then uses the relay).
    ++stats_.refused;
    if (matches > 1) deps_.report(Status(StatusCode::kPermissionDenied, "a direct link key was announced twice"));
    conn->Close(Status(StatusCode::kPermissionDenied, "not one contact's link key"));
    return;
  }
  // One incoming link per contact (a contact opens one link to us at a time; a new one replaces the old):
  // a contact cannot pile up connections.
  CloseInbound(contact, Status(StatusCode::kAborted, "replaced by a newer direct link"));
  const uint64_t epoch = epoch_;
  std::weak_ptr<transport::Connection> weak = conn;
  transport::Connection* raw = conn.get();
  conn->SetCallbacks(transport::ConnectionCallbacks{
      [this, epoch, contact, weak](ByteView f) {
        if (epoch == epoch_) OnFrame(contact, weak, f);
      },
      nullptr,
      [this, epoch, raw](Status) {
        if (epoch == epoch_) inbound_.erase(raw);
      }});
  inbound_[raw] = Inbound{contact, std::move(conn)};
  // The contact is up: a link to it that was given up is tried again.
  auto peer = peers_.find(contact);
  if (peer != peers_.end() && peer->second.failures >= kDirectMaxConnectFailures) {
    peer->second.failures = 0;
    peer->second.backoff_ms = 0;
    Connect(contact);
  }
}

void DirectLinks::CloseInbound(const std::string& contact, const Status& why) {
  for (auto it = inbound_.begin(); it != inbound_.end();) {
    if (it->second.contact != contact) {
      ++it;
      continue;
    }
    it->second.conn->Close(why);
    it = inbound_.erase(it);
  }
}

void DirectLinks::OnFrame(const std::string& contact, const std::weak_ptr<transport::Connection>& conn,
                          ByteView bytes) {
  auto frame = wire::DecodeDirectFrame(bytes);
  if (!frame) {
    if (auto c = conn.lock()) c->Close(Status(StatusCode::kMalformed, "direct frame"));
    deps_.report(Status(StatusCode::kMalformed, "a contact's direct link sent a malformed frame"));
    return;
  }
  if (frame->type == wire::DirectFrameType::kAck) return Resolve(contact, frame->id, Status::Ok());
  ++stats_.received;
  const uint64_t epoch = epoch_;
  AckFn ack = [this, epoch, conn, id = frame->id] {
    if (epoch != epoch_) return;
    auto c = conn.lock();
    if (!c || !c->is_open()) return;  // the sender times out and deposits at the relay: deduplicated here
    wire::DirectFrame a;
    a.type = wire::DirectFrameType::kAck;
    a.id = id;
    if (auto enc = wire::EncodeDirectFrame(a)) (void)c->Send(*enc);
  };
  deps_.deliver(contact, frame->id, std::move(frame->envelope), std::move(ack));
}

}  // namespace cw::runtime
