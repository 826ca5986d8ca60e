// The seeded in-memory network. One event queue ordered by (fake time, sequence number) holds every
// delivery, handshake step, timer and posted function, so a run depends only on the seed and the test's
// calls. Events hold weak references: a connection or node that is gone by then makes the event a no-op.
#include "transport/in_memory.h"

#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "core/base/random.h"
#include "core/crypto/crypto.h"
#include "transport/frame.h"

namespace cw::transport {
namespace {

template <typename F>
bool CallApp(F&& f) noexcept {
  try {
    f();
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

struct InMemoryNetwork::Impl {
  class Node;
  class Conn;
  class MemListener;

  Impl(uint64_t seed, FakeClock& c, Faults f)
      : clock(c), rng(seed), faults(f), creator(std::this_thread::get_id()) {}

  FakeClock& clock;
  SeededRandom rng;
  Faults faults;
  NetworkStats stats;
  std::thread::id creator;
  uint64_t next_seq = 0;
  std::map<std::pair<int64_t, uint64_t>, std::function<void()>> events;
  std::map<std::string, std::shared_ptr<Node>> nodes;
  std::mutex post_mu;
  std::vector<std::function<void()>> posted;

  int64_t now() const { return clock.NowMillis(); }
  uint64_t At(int64_t when, std::function<void()> fn) {
    const uint64_t seq = next_seq++;
    events.emplace(std::make_pair(when, seq), std::move(fn));
    return seq;
  }
  bool Chance(double p) {
    if (p <= 0) return false;
    if (p >= 1) return true;
    return rng.Uniform(1'000'000) < static_cast<uint32_t>(p * 1'000'000);
  }
  int64_t Latency() {
    int64_t d = std::max<int64_t>(0, faults.latency_millis);
    if (faults.jitter_millis > 0) d += rng.Uniform(static_cast<uint32_t>(faults.jitter_millis) + 1);
    return d;
  }
  std::shared_ptr<Node> FindNode(const std::string& name) {
    auto it = nodes.find(name);
    return it == nodes.end() ? nullptr : it->second;
  }
};

// Shared by the two ends of one link: false once the link broke (in-flight frames are then lost).
struct LinkState {
  bool alive = true;
};

class InMemoryNetwork::Impl::Conn final : public Connection, public std::enable_shared_from_this<Conn> {
 public:
  Conn(Impl* net, std::weak_ptr<Node> node, size_t max_frame, size_t high, size_t low)
      : net_(net), node_(std::move(node)), max_frame_(max_frame), high_(high), low_(low) {}

  void SetCallbacks(ConnectionCallbacks callbacks) override { callbacks_ = std::move(callbacks); }

  Status Send(ByteView frame) override {
    if (!open_) return Status(StatusCode::kUnavailable, "connection is closed");
    if (frame.empty()) return Status(StatusCode::kInvalidArgument, "empty frame");
    if (frame.size() > max_frame_) {
      return Status(StatusCode::kInvalidArgument, "frame of " + std::to_string(frame.size()) +
                                                      " bytes exceeds the maximum of " +
                                                      std::to_string(max_frame_));
    }
    if (queued_ >= high_) {
      want_writable_ = true;
      return Status(StatusCode::kResourceExhausted, "send queue full");
    }
    const size_t cost = kFrameHeaderSize + frame.size();
    queued_ += cost;
    ++net_->stats.frames_sent;
    auto payload = std::make_shared<Bytes>(frame.begin(), frame.end());
    const bool dropped = net_->Chance(net_->faults.drop_probability);
    const int64_t when = net_->now() + net_->Latency();
    last_delivery_ = std::max(last_delivery_, when);
    std::weak_ptr<Conn> self = shared_from_this();
    std::weak_ptr<Conn> peer = peer_;
    auto link = link_;
    net_->At(when, [self, peer, link, payload, dropped, cost, net = net_] {
      if (auto s = self.lock()) s->Drained(cost);
      if (dropped || !link->alive) {
        ++net->stats.frames_dropped;
        return;
      }
      if (auto p = peer.lock()) p->Deliver(*payload);
    });
    if (!dropped && net_->Chance(net_->faults.duplicate_probability)) {
      ++net_->stats.frames_duplicated;
      const int64_t again = net_->now() + net_->Latency();
      last_delivery_ = std::max(last_delivery_, again);
      net_->At(again, [peer, link, payload] {
        if (!link->alive) return;
        if (auto p = peer.lock()) p->Deliver(*payload);
      });
    }
    return Status::Ok();
  }

  void Close(Status reason) override {
    if (!open_) return;
    open_ = false;
    // The peer hears of it after every frame already on the wire, as a TCP FIN follows the data.
    const int64_t when = std::max(last_delivery_, net_->now() + net_->Latency());
    std::weak_ptr<Conn> peer = peer_;
    auto link = link_;
    net_->At(when, [peer, link] {
      link->alive = false;
      if (auto p = peer.lock()) p->ClosedBy(Status(StatusCode::kUnavailable, "connection closed by peer"));
    });
    FinishLocally(std::move(reason));
  }

  // No descriptors here: the peer hears of it as of a Close.
  void Abort(Status reason) override { Close(std::move(reason)); }

  const PublicKey& remote_static_key() const override { return remote_key_; }
  const std::string& peer_address() const override { return peer_address_; }
  size_t queued_bytes() const override { return queued_; }
  bool is_open() const override { return open_; }

  // Network side.
  void Deliver(const Bytes& payload) {
    if (!open_) return;
    ++net_->stats.frames_delivered;
    if (callbacks_.on_frame && !CallApp([&] { callbacks_.on_frame(payload); })) {
      Close(Status(StatusCode::kInternal, "on_frame threw"));
    }
  }
  void Drained(size_t cost) {
    queued_ -= std::min(queued_, cost);
    if (open_ && want_writable_ && queued_ <= low_) {
      want_writable_ = false;
      if (callbacks_.on_writable && !CallApp([&] { callbacks_.on_writable(); })) {
        Close(Status(StatusCode::kInternal, "on_writable threw"));
      }
    }
  }
  // The other end closed or the link broke: close here without notifying back.
  void ClosedBy(Status reason) {
    if (!open_) return;
    open_ = false;
    FinishLocally(std::move(reason));
  }
  // Link failure: both ends learn of it; in-flight frames are lost.
  void Break(Status local_reason) {
    if (!open_) return;
    open_ = false;
    link_->alive = false;
    std::weak_ptr<Conn> peer = peer_;
    net_->At(net_->now() + net_->Latency(), [peer] {
      if (auto p = peer.lock()) p->ClosedBy(Status(StatusCode::kUnavailable, "connection lost"));
    });
    FinishLocally(std::move(local_reason));
  }

  Impl* net_;
  std::weak_ptr<Node> node_;
  std::weak_ptr<Conn> peer_;
  std::shared_ptr<LinkState> link_;
  ConnectionCallbacks callbacks_;
  PublicKey remote_key_{};
  std::string peer_address_;
  bool open_ = true;

 private:
  void FinishLocally(Status reason);

  size_t max_frame_, high_, low_;
  size_t queued_ = 0;
  bool want_writable_ = false;
  int64_t last_delivery_ = 0;
};

class InMemoryNetwork::Impl::MemListener final : public Listener {
 public:
  const Endpoint& endpoint() const override { return endpoint_; }
  void Close() override { closed_ = true; }
  Endpoint endpoint_;
  AcceptFn on_accept_;
  ListenOptions options_;
  bool closed_ = false;
};

class InMemoryNetwork::Impl::Node final : public Transport, public std::enable_shared_from_this<Node> {
 public:
  Node(Impl* net, std::string name, StaticKeyPair key, TransportOptions options)
      : net_(net), name_(std::move(name)), key_(std::move(key)), options_(std::move(options)) {}

  const PublicKey& local_static_key() const override { return key_.public_key(); }
  const TransportOptions& options() const override { return options_; }

  Result<std::shared_ptr<Listener>> Listen(const Endpoint& local, AcceptFn on_accept,
                                           ListenOptions options) override {
    if (removed_) return Error(StatusCode::kUnavailable, "node removed");
    if (!on_accept) return Error(StatusCode::kInvalidArgument, "Listen needs on_accept");
    if (local.host != name_)
      return Error(StatusCode::kInvalidArgument, "in-memory Listen: host must be the node's name");
    uint16_t port = local.port;
    if (port == 0) {
      port = next_port_++;
    }
    auto it = listeners_.find(port);
    if (it != listeners_.end() && !it->second->closed_) {
      return Error(StatusCode::kUnavailable, "listen on " + local.ToString() + ": address already in use");
    }
    auto l = std::make_shared<MemListener>();
    l->endpoint_ = Endpoint{name_, port, key_.public_key()};
    l->on_accept_ = std::move(on_accept);
    l->options_ = std::move(options);
    listeners_[port] = l;
    return std::shared_ptr<Listener>(l);
  }

  Status Connect(const Endpoint& remote, ConnectionCallbacks callbacks, ConnectFn on_connected) override;

  Status Post(std::function<void()> fn) override {
    if (removed_) return Status(StatusCode::kUnavailable, "node removed");
    std::lock_guard<std::mutex> lock(net_->post_mu);
    net_->posted.push_back(std::move(fn));
    return Status::Ok();
  }
  bool IsLoopThread() const override { return std::this_thread::get_id() == net_->creator; }

  TimerId ScheduleAfter(int64_t delay_millis, std::function<void()> fn) override {
    const TimerId id = next_timer_++;
    std::weak_ptr<Node> self = shared_from_this();
    timers_.insert(id);
    net_->At(net_->now() + std::max<int64_t>(0, delay_millis), [self, id, fn = std::move(fn)] {
      auto n = self.lock();
      if (!n || n->removed_ || n->timers_.erase(id) == 0) return;
      CallApp(fn);
    });
    return id;
  }
  void CancelTimer(TimerId id) override { timers_.erase(id); }

  std::shared_ptr<Conn> NewConn() {
    auto c = std::make_shared<Conn>(net_, weak_from_this(), options_.max_frame_size, options_.send_high_water,
                                    options_.send_low_water);
    conns_.insert(c);
    return c;
  }

  Impl* net_;
  std::string name_;
  StaticKeyPair key_;
  TransportOptions options_;
  std::map<uint16_t, std::shared_ptr<MemListener>> listeners_;
  std::set<std::shared_ptr<Conn>> conns_;  // open connections handed to the application
  std::set<TimerId> timers_;
  TimerId next_timer_ = 1;
  uint16_t next_port_ = 40000;
  bool removed_ = false;
};

void InMemoryNetwork::Impl::Conn::FinishLocally(Status reason) {
  auto self = shared_from_this();
  std::weak_ptr<Conn> weak = self;
  // on_closed never fires inside the call that caused it.
  net_->At(net_->now(), [weak, reason = std::move(reason)] {
    auto c = weak.lock();
    if (!c) return;
    auto cb = std::move(c->callbacks_.on_closed);
    c->callbacks_ = {};
    if (cb) CallApp([&] { cb(reason); });
    if (auto n = c->node_.lock()) n->conns_.erase(c);
  });
}

Status InMemoryNetwork::Impl::Node::Connect(const Endpoint& remote, ConnectionCallbacks callbacks,
                                            ConnectFn on_connected) {
  if (removed_) return Status(StatusCode::kUnavailable, "node removed");
  if (!remote.static_key) {
    return Status(StatusCode::kInvalidArgument, "Connect needs the server key pinned: cw://<key>@host:port");
  }
  if (!on_connected) return Status(StatusCode::kInvalidArgument, "Connect needs on_connected");
  Impl* net = net_;
  std::weak_ptr<Node> self = shared_from_this();
  auto cbs = std::make_shared<ConnectionCallbacks>(std::move(callbacks));
  auto done = std::make_shared<ConnectFn>(std::move(on_connected));
  auto fail = [self, done](Status s) {
    auto n = self.lock();
    if (!n || n->removed_) return;
    CallApp([&] { (*done)(Error(std::move(s))); });
  };
  if (net->Chance(net->faults.drop_probability)) {
    // The first handshake message is lost; the initiator gives up at its handshake timeout.
    net->At(net->now() + options_.handshake_timeout_millis,
            [fail] { fail(Status(StatusCode::kUnavailable, "handshake timed out")); });
    return Status::Ok();
  }
  const Endpoint target = remote;
  // Message 1 reaches the server.
  net->At(net->now() + net->Latency(), [net, self, target, cbs, done, fail] {
    auto client = self.lock();
    if (!client || client->removed_) return;
    auto server = net->FindNode(target.host);
    std::shared_ptr<MemListener> listener;
    if (server && !server->removed_) {
      auto it = server->listeners_.find(target.port);
      if (it != server->listeners_.end() && !it->second->closed_) listener = it->second;
    }
    if (!listener) {
      fail(Status(StatusCode::kUnavailable, "connect to " + target.ToString() + ": connection refused"));
      return;
    }
    if (!ConstantTimeEquals(*target.static_key, server->key_.public_key())) {
      if (listener->options_.on_rejected) {
        CallApp([&] {
          listener->options_.on_rejected(
              client->name_, Status(StatusCode::kPermissionDenied,
                                    "handshake: the client's message did not authenticate (not for "
                                    "this server's key)"));
        });
      }
      net->At(net->now() + net->Latency(), [fail] {
        fail(
            Status(StatusCode::kPermissionDenied,
                   "handshake: the server closed the connection; it could not prove the static key pinned in "
                   "the address (wrong key, or not a Cipherward server)"));
      });
      return;
    }
    std::weak_ptr<Node> server_weak = server;
    std::weak_ptr<MemListener> listener_weak = listener;
    // Message 2 reaches the client: the client's handshake is complete.
    net->At(net->now() + net->Latency(), [net, self, server_weak, listener_weak, cbs, done] {
      auto client = self.lock();
      auto server = server_weak.lock();
      if (!client || client->removed_) return;
      if (!server || server->removed_) {
        CallApp([&] { (*done)(Error(StatusCode::kUnavailable, "handshake: peer closed the connection")); });
        return;
      }
      auto c = client->NewConn();
      auto s = server->NewConn();
      auto link = std::make_shared<LinkState>();
      c->peer_ = s;
      s->peer_ = c;
      c->link_ = link;
      s->link_ = link;
      c->remote_key_ = server->key_.public_key();
      s->remote_key_ = client->key_.public_key();
      c->peer_address_ = server->name_;
      s->peer_address_ = client->name_;
      c->callbacks_ = std::move(*cbs);
      // Message 3 reaches the server; scheduled before anything the client sends from on_connected.
      std::weak_ptr<Conn> sw = s;
      net->At(net->now() + net->Latency(), [listener_weak, sw] {
        auto s = sw.lock();
        if (!s || !s->open_) return;
        auto l = listener_weak.lock();
        if (!l || l->closed_) {
          s->Break(Status(StatusCode::kUnavailable, "listener closed during the handshake"));
          return;
        }
        if (!CallApp([&] { l->on_accept_(s); })) s->Close(Status(StatusCode::kInternal, "on_accept threw"));
      });
      if (!CallApp([&] { (*done)(std::shared_ptr<Connection>(c)); })) {
        c->Close(Status(StatusCode::kInternal, "on_connected threw"));
      }
    });
  });
  return Status::Ok();
}

InMemoryNetwork::InMemoryNetwork(uint64_t seed, FakeClock& clock, Faults faults)
    : impl_(std::make_unique<Impl>(seed, clock, faults)) {
  (void)crypto::Init();
}

InMemoryNetwork::~InMemoryNetwork() {
  for (auto& [name, node] : impl_->nodes) node->removed_ = true;
  impl_->events.clear();
}

Result<Transport*> InMemoryNetwork::AddNode(const std::string& name, StaticKeyPair key,
                                            TransportOptions options) {
  if (impl_->nodes.count(name) != 0) return Error(StatusCode::kAlreadyExists, "node name taken");
  if (options.max_frame_size == 0 || options.send_low_water >= options.send_high_water) {
    return Error(StatusCode::kInvalidArgument, "bad transport options");
  }
  auto node = std::make_shared<Impl::Node>(impl_.get(), name, std::move(key), std::move(options));
  impl_->nodes[name] = node;
  return static_cast<Transport*>(node.get());
}

void InMemoryNetwork::BreakConnections(const std::string& name, Status reason) {
  auto node = impl_->FindNode(name);
  if (!node) return;
  std::vector<std::shared_ptr<Impl::Conn>> conns(node->conns_.begin(), node->conns_.end());
  for (auto& c : conns) c->Break(reason);
}

void InMemoryNetwork::RemoveNode(const std::string& name) {
  auto node = impl_->FindNode(name);
  if (!node) return;
  BreakConnections(name, Status(StatusCode::kUnavailable, "node removed"));
  for (auto& [port, l] : node->listeners_) l->closed_ = true;
  // Its own on_closed callbacks are due now; run them before the node goes.
  RunUntilIdle();
  node->removed_ = true;
  node->timers_.clear();
  impl_->nodes.erase(name);
}

void InMemoryNetwork::set_faults(Faults faults) { impl_->faults = faults; }
const Faults& InMemoryNetwork::faults() const { return impl_->faults; }
const NetworkStats& InMemoryNetwork::stats() const { return impl_->stats; }

void InMemoryNetwork::RunUntilIdle() {
  for (;;) {
    std::vector<std::function<void()>> posted;
    {
      std::lock_guard<std::mutex> lock(impl_->post_mu);
      posted.swap(impl_->posted);
    }
    for (auto& fn : posted) impl_->At(impl_->now(), std::move(fn));
    if (impl_->events.empty() || impl_->events.begin()->first.first > impl_->now()) {
      std::lock_guard<std::mutex> lock(impl_->post_mu);
      if (impl_->posted.empty()) return;
      continue;
    }
    auto node = impl_->events.extract(impl_->events.begin());
    CallApp(node.mapped());
  }
}

bool InMemoryNetwork::NextEventTime(int64_t* when) const {
  if (impl_->events.empty()) return false;
  *when = impl_->events.begin()->first.first;
  return true;
}

void InMemoryNetwork::Advance(int64_t millis) {
  const int64_t target = impl_->now() + std::max<int64_t>(0, millis);
  for (;;) {
    RunUntilIdle();
    int64_t next;
    if (!NextEventTime(&next) || next > target) break;
    impl_->clock.Set(std::max(next, impl_->now()));
  }
  impl_->clock.Set(target);
  RunUntilIdle();
}

}  // namespace cw::transport
