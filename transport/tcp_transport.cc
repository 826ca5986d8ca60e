// TcpTransport on libuv. Handles (the loop's async and tick timer, listeners, connections) are heap objects
// freed only in their close callbacks; requests (connect, write, shutdown) hold a shared_ptr to their
// connection so it outlives them. Every call into application code is wrapped: an exception closes the
// connection with kInternal and never reaches libuv.
#include "transport/tcp_transport.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <uv.h>

#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/crypto/crypto.h"
#include "transport/frame.h"
#include "transport/link.h"

namespace cw::transport {
namespace {

constexpr size_t kReadBufferSize = 64 * 1024;
constexpr size_t kMaxConfigurableFrame = 16 * 1024 * 1024;

Status UvStatus(StatusCode code, std::string_view what, int err) {
  return Status(code, std::string(what) + ": " + uv_strerror(err));
}

template <typename F>
bool CallApp(F&& f) noexcept {
  try {
    f();
    return true;
  } catch (...) {
    return false;
  }
}

Status ResolveHost(const std::string& host, uint16_t port, sockaddr_storage* out) {
  const std::string literal = host == "localhost" ? "127.0.0.1" : host;
  if (uv_ip4_addr(literal.c_str(), port, reinterpret_cast<sockaddr_in*>(out)) == 0) return Status::Ok();
  if (uv_ip6_addr(literal.c_str(), port, reinterpret_cast<sockaddr_in6*>(out)) == 0) return Status::Ok();
  return Status(StatusCode::kInvalidArgument, "address: host must be an IP literal or localhost");
}

std::string AddressString(const sockaddr_storage& addr, uint16_t* port) {
  char name[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    uv_ip6_name(a, name, sizeof name);
    if (port) *port = ntohs(a->sin6_port);
  } else {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    uv_ip4_name(a, name, sizeof name);
    if (port) *port = ntohs(a->sin_port);
  }
  return name;
}

// A write to a connection the peer already closed raises SIGPIPE, whose default action kills the process;
// libuv leaves it to the application. A peer must not be able to kill the relay, so SIGPIPE is ignored
// (the write then fails with EPIPE and that connection closes), unless the application installed a handler.
void IgnoreSigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  });
}

class TcpTransportImpl;
class TcpConnection;

class TcpListener final : public Listener {
 public:
  TcpListener(TcpTransportImpl* t, AcceptFn on_accept, ListenOptions options)
      : transport_(t), on_accept_(std::move(on_accept)), options_(std::move(options)) {}
  const Endpoint& endpoint() const override { return endpoint_; }
  void Close() override;

  TcpTransportImpl* transport_;
  AcceptFn on_accept_;
  ListenOptions options_;
  Endpoint endpoint_;
  // A handshake from `group` began; false when that is past either limit (the caller aborts the connection,
  // whose HandshakeEnded still follows).
  bool HandshakeStarted(const std::string& group) {
    ++handshaking_;
    const size_t from_group = ++handshaking_by_group_[group];
    return handshaking_ <= options_.max_handshaking && from_group <= options_.max_handshaking_per_address;
  }
  void HandshakeEnded(const std::string& group) {
    --handshaking_;
    auto it = handshaking_by_group_.find(group);
    if (it != handshaking_by_group_.end() && --it->second == 0) handshaking_by_group_.erase(it);
  }

  uv_tcp_t* handle_ = nullptr;
  size_t handshaking_ = 0;
  std::unordered_map<std::string, size_t> handshaking_by_group_;  // AddressGroup -> handshakes in progress
  bool closed_ = false;
  uint64_t accept_failures_ = 0;    // since the last report to on_rejected
  int64_t next_accept_report_ = 0;  // loop clock, ms
};

class TcpConnection final : public Connection, public std::enable_shared_from_this<TcpConnection> {
 public:
  enum class State { kConnecting, kHandshaking, kOpen, kClosing, kClosed };

  TcpConnection(TcpTransportImpl* t, bool is_client) : transport_(t), is_client_(is_client) {}

  // Connection
  void SetCallbacks(ConnectionCallbacks callbacks) override { callbacks_ = std::move(callbacks); }
  Status Send(ByteView frame) override;
  void Close(Status reason) override;
  void Abort(Status reason) override;
  const PublicKey& remote_static_key() const override { return remote_key_; }
  const std::string& peer_address() const override { return peer_address_; }
  size_t queued_bytes() const override { return queued_; }
  bool is_open() const override { return state_ == State::kOpen; }

  // Transport side.
  bool Init(uv_loop_t* loop);  // creates the handle; false if libuv refused
  void Flush();
  void StartReading();
  void OnConnected(int status);
  void OnRead(ssize_t nread, const uv_buf_t* buf);
  void OnWriteDone(size_t frame_bytes, int status);
  void CheckDeadline(int64_t now);
  void ReadPeerAddress();

  TcpTransportImpl* transport_;
  const bool is_client_;
  State state_ = State::kConnecting;
  uv_tcp_t* handle_ = nullptr;
  bool handle_closing_ = false;
  std::unique_ptr<NoiseLink> link_;
  ConnectionCallbacks callbacks_;
  ConnectFn on_connected_;                 // client, until the handshake ends
  std::shared_ptr<TcpListener> listener_;  // server, until the handshake ends
  bool app_owned_ = false;                 // handed to the application: on_closed owed
  Status close_reason_;
  PublicKey remote_key_{};
  std::string peer_address_;
  std::string address_group_;  // server side: AddressGroup(peer_address_), what the listener counts
  int64_t deadline_ = 0;  // handshake or graceful-close deadline on the injected clock
  Bytes pending_;         // frame stream not yet sealed
  bool flush_due_ = false;  // in the transport's list of connections to flush at the end of this loop turn
  size_t queued_ = 0;
  int frame_writes_in_flight_ = 0;
  bool want_writable_ = false;
  std::array<uint8_t, kReadBufferSize> read_buffer_;

 private:
  void WriteRaw(Bytes data, size_t frame_bytes);
  void HandshakeComplete();
  void StartShutdown();
  void CloseHandle();
  void OnHandleClosed();
  Status HandshakeError(const Status& s) const;
};

struct WriteReq {
  uv_write_t req;
  Bytes data;
  size_t frame_bytes;
  std::shared_ptr<TcpConnection> conn;
};
struct ConnectReq {
  uv_connect_t req;
  std::shared_ptr<TcpConnection> conn;
};
struct ShutdownReq {
  uv_shutdown_t req;
  std::shared_ptr<TcpConnection> conn;
};

class TcpTransportImpl final : public TcpTransport {
 public:
  TcpTransportImpl(StaticKeyPair key, TransportOptions options, const Clock& clock)
      : key_(std::move(key)), options_(std::move(options)), clock_(clock) {}
  ~TcpTransportImpl() override { (void)Shutdown(); }

  Status Start();

  // Transport
  const PublicKey& local_static_key() const override { return key_.public_key(); }
  const TransportOptions& options() const override { return options_; }
  Result<std::shared_ptr<Listener>> Listen(const Endpoint& local, AcceptFn on_accept,
                                           ListenOptions options) override;
  Status Connect(const Endpoint& remote, ConnectionCallbacks callbacks, ConnectFn on_connected) override;
  Status Post(std::function<void()> fn) override;
  bool IsLoopThread() const override { return std::this_thread::get_id() == loop_thread_id_; }
  TimerId ScheduleAfter(int64_t delay_millis, std::function<void()> fn) override;
  void CancelTimer(TimerId id) override;
  Status Shutdown() override;

  std::unique_ptr<NoiseLink> NewLink(noise::Role role, const std::optional<PublicKey>& remote) {
    NoiseLink::Config c;
    c.role = role;
    c.local_static = &key_;
    c.remote_static = remote;
    c.prologue = AsBytes(options_.prologue);
    c.max_frame_size = options_.max_frame_size;
    c.random = &SystemRandom::Default();
    auto link = NoiseLink::New(c);
    return link ? std::move(*link) : nullptr;
  }

  void OnNewConnection(TcpListener* listener, int status);
  void ConnectionClosed(TcpConnection* c);
  // Flushes `c` once this loop turn's callbacks have run, together with every other connection that queued
  // frames in the turn: a burst of sends costs one seal and one write per connection, not one per frame.
  void ScheduleFlush(std::shared_ptr<TcpConnection> c);
  void ListenerClosed(TcpListener* l);
  int64_t Now() const { return clock_.NowMillis(); }
  uv_loop_t* loop() { return &loop_; }
  bool shutting_down() const { return shutting_down_; }

 private:
  void OnAsync();
  void OnTick();
  void OnFlushCheck();
  void ShutdownOnLoop();

  StaticKeyPair key_;
  TransportOptions options_;
  const Clock& clock_;

  uv_loop_t loop_{};
  uv_async_t* async_ = nullptr;
  uv_timer_t* tick_ = nullptr;
  // The end-of-turn flush: the check handle runs after the poll phase; the idle handle, active while a flush
  // is due, keeps that poll from blocking (frames queued by a timer, before the poll, go out at once).
  uv_check_t* flush_check_ = nullptr;
  uv_idle_t* flush_idle_ = nullptr;
  std::vector<std::shared_ptr<TcpConnection>> flush_due_;  // loop thread only
  std::thread thread_;
  std::thread::id loop_thread_id_;

  std::mutex mu_;  // guards posted_, accepting_posts_, shutdown_requested_
  std::deque<std::function<void()>> posted_;
  bool accepting_posts_ = false;
  bool shutdown_requested_ = false;

  std::mutex shutdown_mu_;  // serialises Shutdown callers
  bool shut_down_ = false;
  Status shutdown_status_;

  // Loop thread only.
  bool shutting_down_ = false;
  std::unordered_set<std::shared_ptr<TcpConnection>> connections_;
  std::set<std::shared_ptr<TcpListener>> listeners_;
  TimerId next_timer_id_ = 1;
  std::map<std::pair<int64_t, TimerId>, std::function<void()>> timers_;
  std::map<TimerId, int64_t> timer_deadlines_;
};

// ---------------------------------------------------------------------------------------------- listener

void TcpListener::Close() {
  if (closed_) return;
  closed_ = true;
  // Connections still handshaking end later (a timeout, the transport's shutdown): the app that listened may
  // be gone by then, and nothing of theirs is its business any more.
  options_.on_rejected = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) {
    auto* self = static_cast<TcpListener*>(h->data);
    delete reinterpret_cast<uv_tcp_t*>(h);
    self->transport_->ListenerClosed(self);
  });
}

// Keepalive probes, and a bound on unacknowledged data, on a connected socket (see
// TransportOptions::keepalive_idle_seconds). Best effort: a socket option refused changes nothing else.
void EnableKeepalive(uv_tcp_t* handle, int idle_seconds) {
  uv_os_fd_t fd;
  if (idle_seconds <= 0 || uv_fileno(reinterpret_cast<uv_handle_t*>(handle), &fd) != 0) return;
  constexpr int kIntervalSeconds = 10;
  constexpr int kProbes = 6;
  const int on = 1;
  const unsigned user_timeout_ms = static_cast<unsigned>(idle_seconds + kIntervalSeconds * kProbes) * 1000u;
  (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_seconds, sizeof idle_seconds);
  (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kIntervalSeconds, sizeof kIntervalSeconds);
  (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kProbes, sizeof kProbes);
  // With keepalive on, this is also what decides that the probes went unanswered.
  (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

// -------------------------------------------------------------------------------------------- connection

bool TcpConnection::Init(uv_loop_t* loop) {
  handle_ = new uv_tcp_t;
  if (uv_tcp_init(loop, handle_) != 0) {
    delete handle_;
    handle_ = nullptr;
    return false;
  }
  handle_->data = this;
  uv_tcp_nodelay(handle_, 1);
  return true;
}

void TcpConnection::ReadPeerAddress() {
  sockaddr_storage addr{};
  int len = sizeof addr;
  if (uv_tcp_getpeername(handle_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    peer_address_ = AddressString(addr, nullptr);
  }
}

void TcpConnection::StartReading() {
  const int r = uv_read_start(
      reinterpret_cast<uv_stream_t*>(handle_),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* self = static_cast<TcpConnection*>(h->data);
        *buf = uv_buf_init(reinterpret_cast<char*>(self->read_buffer_.data()), kReadBufferSize);
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto self = static_cast<TcpConnection*>(s->data)->shared_from_this();
        self->OnRead(nread, buf);
      });
  if (r != 0) Abort(UvStatus(StatusCode::kUnavailable, "read", r));
}

void TcpConnection::OnConnected(int status) {
  if (handle_closing_) return;
  if (status != 0) {
    Abort(UvStatus(StatusCode::kUnavailable, "connect", status));
    return;
  }
  state_ = State::kHandshaking;
  ReadPeerAddress();
  EnableKeepalive(handle_, transport_->options().keepalive_idle_seconds);
  Bytes out;
  Status s = link_->Start(&out);
  if (!s.ok()) {
    Abort(s);
    return;
  }
  WriteRaw(std::move(out), 0);
  if (!handle_closing_) StartReading();
}

// The Status a handshake failure is reported with. Mapped once here: a message that does not authenticate
// means the other side does not hold the key we expect (the pinned key for a client).
Status TcpConnection::HandshakeError(const Status& s) const {
  if (s.code() == StatusCode::kTampered) {
    return is_client_
               ? Status(StatusCode::kPermissionDenied,
                        "handshake: the server did not prove the static key pinned in the address")
               : Status(StatusCode::kPermissionDenied,
                        "handshake: the client's message did not authenticate (not for this server's key)");
  }
  return Status(s.code(), "handshake: " + s.message());
}

void TcpConnection::OnRead(ssize_t nread, const uv_buf_t*) {
  if (handle_closing_ || nread == 0) return;
  if (state_ == State::kClosing) {
    // Lingering close: what the peer still sends is read and dropped until its end of stream. Closing the
    // socket with unread bytes (or while bytes still arrive) makes the kernel send a reset, and a reset
    // makes the peer's kernel discard what it had not yet read: the frames we just flushed.
    if (nread < 0) CloseHandle();
    return;
  }
  if (nread < 0) {
    if (state_ == State::kOpen) {
      Abort(nread == UV_EOF ? Status(StatusCode::kUnavailable, "connection closed by peer")
                            : UvStatus(StatusCode::kUnavailable, "read", static_cast<int>(nread)));
    } else if (is_client_ && link_->handshake_messages_sent() > 0) {
      // The server hung up on our first message: the one thing XK lets it do when that message was not
      // encrypted to its static key.
      Abort(Status(StatusCode::kPermissionDenied,
                   "handshake: the server closed the connection; it could not prove the static key pinned in "
                   "the address (wrong key, or not a Cipherward server)"));
    } else {
      Abort(Status(StatusCode::kUnavailable, "handshake: peer closed the connection"));
    }
    return;
  }
  Status s = link_->Feed(ByteView(read_buffer_.data(), static_cast<size_t>(nread)));
  for (;;) {
    if (!s.ok()) {
      Abort(state_ == State::kOpen ? s : HandshakeError(s));
      return;
    }
    Bytes out;
    auto ev = link_->Next(&out);
    if (!out.empty()) WriteRaw(std::move(out), 0);
    if (!ev) {
      s = ev.error();
      continue;
    }
    if (handle_closing_) return;
    switch (ev->kind) {
      case NoiseLink::EventKind::kNeedMore:
        return;
      case NoiseLink::EventKind::kHandshakeComplete:
        HandshakeComplete();
        break;
      case NoiseLink::EventKind::kFrame:
        if (callbacks_.on_frame && !CallApp([&] { callbacks_.on_frame(ev->frame); })) {
          Abort(Status(StatusCode::kInternal, "on_frame threw"));
        }
        break;
    }
    if (state_ != State::kOpen) return;
  }
}

void TcpConnection::HandshakeComplete() {
  remote_key_ = *link_->remote_static();
  deadline_ = 0;
  if (is_client_) {
    state_ = State::kOpen;
    app_owned_ = true;
    ConnectFn cb = std::move(on_connected_);
    on_connected_ = nullptr;
    if (!CallApp([&] { cb(std::shared_ptr<Connection>(shared_from_this())); })) {
      Abort(Status(StatusCode::kInternal, "on_connected threw"));
    }
    return;
  }
  auto listener = std::move(listener_);
  listener_.reset();
  listener->HandshakeEnded(address_group_);
  if (listener->closed_ || transport_->shutting_down()) {
    Abort(Status(StatusCode::kUnavailable, "listener closed during the handshake"));
    return;
  }
  state_ = State::kOpen;
  app_owned_ = true;
  if (!CallApp([&] { listener->on_accept_(shared_from_this()); })) {
    Abort(Status(StatusCode::kInternal, "on_accept threw"));
  }
}

Status TcpConnection::Send(ByteView frame) {
  if (state_ != State::kOpen) return Status(StatusCode::kUnavailable, "connection is closed");
  if (frame.empty()) return Status(StatusCode::kInvalidArgument, "empty frame");
  const size_t max = transport_->options().max_frame_size;
  if (frame.size() > max) {
    return Status(StatusCode::kInvalidArgument, "frame of " + std::to_string(frame.size()) +
                                                    " bytes exceeds the maximum of " + std::to_string(max));
  }
  if (queued_ >= transport_->options().send_high_water) {
    want_writable_ = true;
    return Status(StatusCode::kResourceExhausted, "send queue full");
  }
  CW_RETURN_IF_ERROR(AppendFrame(frame, max, &pending_));
  queued_ += kFrameHeaderSize + frame.size();
  if (!flush_due_) {
    flush_due_ = true;
    transport_->ScheduleFlush(shared_from_this());
  }
  return Status::Ok();
}

// Seals everything queued into one write, unless a batch is already on its way: then the frames wait and go
// together when it completes (batching under load). Called at the end of the loop turn that queued frames,
// so a lone frame waits only for the rest of its turn.
void TcpConnection::Flush() {
  if (handle_closing_ || frame_writes_in_flight_ > 0 || pending_.empty()) return;
  Bytes sealed;
  Status s = link_->SealFrames(pending_, &sealed);
  const size_t frame_bytes = pending_.size();
  pending_.clear();
  if (!s.ok()) {
    Abort(s);
    return;
  }
  WriteRaw(std::move(sealed), frame_bytes);
}

void TcpConnection::WriteRaw(Bytes data, size_t frame_bytes) {
  if (handle_closing_) return;
  auto* req = new WriteReq{{}, std::move(data), frame_bytes, shared_from_this()};
  uv_buf_t buf =
      uv_buf_init(reinterpret_cast<char*>(req->data.data()), static_cast<unsigned>(req->data.size()));
  const int r =
      uv_write(&req->req, reinterpret_cast<uv_stream_t*>(handle_), &buf, 1, [](uv_write_t* w, int status) {
        std::unique_ptr<WriteReq> owned(reinterpret_cast<WriteReq*>(w));
        auto conn = owned->conn;
        conn->OnWriteDone(owned->frame_bytes, status);
      });
  if (r != 0) {
    delete req;
    if (frame_bytes > 0) queued_ -= frame_bytes;
    Abort(UvStatus(StatusCode::kUnavailable, "write", r));
    return;
  }
  if (frame_bytes > 0) ++frame_writes_in_flight_;
}

void TcpConnection::OnWriteDone(size_t frame_bytes, int status) {
  if (frame_bytes > 0) {
    --frame_writes_in_flight_;
    queued_ -= frame_bytes;
  }
  if (handle_closing_) return;
  if (status != 0) {
    Abort(UvStatus(StatusCode::kUnavailable, "write", status));
    return;
  }
  Flush();
  if (state_ == State::kOpen && want_writable_ && queued_ <= transport_->options().send_low_water) {
    want_writable_ = false;
    if (callbacks_.on_writable && !CallApp([&] { callbacks_.on_writable(); })) {
      Abort(Status(StatusCode::kInternal, "on_writable threw"));
    }
  }
  if (state_ == State::kClosing && frame_writes_in_flight_ == 0 && pending_.empty()) StartShutdown();
}

void TcpConnection::Close(Status reason) {
  if (state_ == State::kClosing || state_ == State::kClosed || handle_closing_) return;
  if (state_ != State::kOpen) {  // not reachable by the application; transport-internal use
    Abort(std::move(reason));
    return;
  }
  close_reason_ = std::move(reason);
  state_ = State::kClosing;
  // A peer that never reads must not keep the connection forever: the flush gets the handshake timeout.
  deadline_ = transport_->Now() + transport_->options().handshake_timeout_millis;
  Flush();
  if (!handle_closing_ && frame_writes_in_flight_ == 0 && pending_.empty()) StartShutdown();
}

void TcpConnection::StartShutdown() {
  if (handle_closing_) return;
  auto* req = new ShutdownReq{{}, shared_from_this()};
  // After our FIN the handle stays open until the peer's end of stream (OnRead) or the close deadline.
  const int r =
      uv_shutdown(&req->req, reinterpret_cast<uv_stream_t*>(handle_), [](uv_shutdown_t* s, int status) {
        std::unique_ptr<ShutdownReq> owned(reinterpret_cast<ShutdownReq*>(s));
        if (status != 0) owned->conn->CloseHandle();
      });
  if (r != 0) {
    delete req;
    CloseHandle();
  }
}

void TcpConnection::Abort(Status reason) {
  if (handle_closing_) return;
  if (state_ != State::kClosing) close_reason_ = std::move(reason);  // a graceful close keeps its reason
  CloseHandle();
}

void TcpConnection::CloseHandle() {
  if (handle_closing_) return;
  handle_closing_ = true;
  state_ = State::kClosed;
  uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) {
    auto* self = static_cast<TcpConnection*>(h->data);
    delete reinterpret_cast<uv_tcp_t*>(h);
    self->OnHandleClosed();
  });
}

void TcpConnection::OnHandleClosed() {
  auto self = shared_from_this();  // the transport's reference goes below; keep this alive to the end
  handle_ = nullptr;
  link_.reset();
  pending_.clear();
  if (app_owned_) {
    if (callbacks_.on_closed) CallApp([&] { callbacks_.on_closed(close_reason_); });
  } else if (is_client_) {
    ConnectFn cb = std::move(on_connected_);
    on_connected_ = nullptr;
    if (cb) CallApp([&] { cb(Error(close_reason_)); });
  } else if (listener_) {
    auto listener = std::move(listener_);
    listener_.reset();
    listener->HandshakeEnded(address_group_);
    if (listener->options_.on_rejected) {
      CallApp([&] { listener->options_.on_rejected(peer_address_, close_reason_); });
    }
  }
  callbacks_ = {};
  transport_->ConnectionClosed(this);
}

void TcpConnection::CheckDeadline(int64_t now) {
  if (handle_closing_ || deadline_ == 0 || now < deadline_) return;
  if (state_ == State::kClosing) {
    Abort(close_reason_);
  } else if (state_ != State::kOpen) {
    Abort(Status(StatusCode::kUnavailable, "handshake timed out"));
  }
}

// --------------------------------------------------------------------------------------------- transport

Status TcpTransportImpl::Start() {
  if (uv_loop_init(&loop_) != 0) return Status(StatusCode::kInternal, "uv_loop_init failed");
  async_ = new uv_async_t;
  async_->data = this;
  uv_async_init(&loop_, async_, [](uv_async_t* a) { static_cast<TcpTransportImpl*>(a->data)->OnAsync(); });
  tick_ = new uv_timer_t;
  tick_->data = this;
  uv_timer_init(&loop_, tick_);
  flush_check_ = new uv_check_t;
  flush_check_->data = this;
  uv_check_init(&loop_, flush_check_);
  flush_idle_ = new uv_idle_t;
  flush_idle_->data = this;
  uv_idle_init(&loop_, flush_idle_);
  const uint64_t tick = static_cast<uint64_t>(std::max<int64_t>(1, options_.tick_millis));
  uv_timer_start(
      tick_, [](uv_timer_t* t) { static_cast<TcpTransportImpl*>(t->data)->OnTick(); }, tick, tick);
  {
    std::lock_guard<std::mutex> lock(mu_);
    accepting_posts_ = true;
  }
  thread_ = std::thread([this] { uv_run(&loop_, UV_RUN_DEFAULT); });
  loop_thread_id_ = thread_.get_id();
  return Status::Ok();
}

Status TcpTransportImpl::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_posts_) return Status(StatusCode::kUnavailable, "transport shutting down");
    posted_.push_back(std::move(fn));
    uv_async_send(async_);  // under the lock: the loop closes async_ only after accepting_posts_ is false
  }
  return Status::Ok();
}

void TcpTransportImpl::OnAsync() {
  for (;;) {
    std::deque<std::function<void()>> work;
    bool stop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      work.swap(posted_);
      stop = shutdown_requested_;
      if (stop && work.empty()) accepting_posts_ = false;
    }
    if (work.empty()) {
      if (stop) ShutdownOnLoop();
      return;
    }
    for (auto& fn : work) CallApp(fn);
    if (!stop) return;  // more posts wake the loop again through uv_async_send
  }
}

void TcpTransportImpl::ScheduleFlush(std::shared_ptr<TcpConnection> c) {
  if (flush_due_.empty()) {
    uv_check_start(flush_check_, [](uv_check_t* h) { static_cast<TcpTransportImpl*>(h->data)->OnFlushCheck(); });
    uv_idle_start(flush_idle_, [](uv_idle_t*) {});
  }
  flush_due_.push_back(std::move(c));
}

void TcpTransportImpl::OnFlushCheck() {
  std::vector<std::shared_ptr<TcpConnection>> due;
  due.swap(flush_due_);
  for (auto& c : due) {
    c->flush_due_ = false;
    c->Flush();
  }
  if (!flush_due_.empty()) return;  // scheduled meanwhile: the handles stay on for the next turn
  due.clear();
  flush_due_.swap(due);  // keeps the list's storage for the next turn
  uv_check_stop(flush_check_);
  uv_idle_stop(flush_idle_);
}

void TcpTransportImpl::OnTick() {
  const int64_t now = Now();
  std::vector<std::shared_ptr<TcpConnection>> conns(connections_.begin(), connections_.end());
  for (auto& c : conns) c->CheckDeadline(now);
  while (!timers_.empty() && timers_.begin()->first.first <= now && !shutting_down_) {
    auto node = timers_.extract(timers_.begin());
    timer_deadlines_.erase(node.key().second);
    CallApp(node.mapped());
  }
}

Transport::TimerId TcpTransportImpl::ScheduleAfter(int64_t delay_millis, std::function<void()> fn) {
  const TimerId id = next_timer_id_++;
  const int64_t when = Now() + std::max<int64_t>(0, delay_millis);
  timers_.emplace(std::make_pair(when, id), std::move(fn));
  timer_deadlines_[id] = when;
  return id;
}

void TcpTransportImpl::CancelTimer(TimerId id) {
  auto it = timer_deadlines_.find(id);
  if (it == timer_deadlines_.end()) return;
  timers_.erase(std::make_pair(it->second, id));
  timer_deadlines_.erase(it);
}

void TcpTransportImpl::ShutdownOnLoop() {
  shutting_down_ = true;
  timers_.clear();
  timer_deadlines_.clear();
  std::vector<std::shared_ptr<TcpListener>> listeners(listeners_.begin(), listeners_.end());
  for (auto& l : listeners) l->Close();
  std::vector<std::shared_ptr<TcpConnection>> conns(connections_.begin(), connections_.end());
  for (auto& c : conns) c->Abort(Status(StatusCode::kUnavailable, "transport shutting down"));
  uv_close(reinterpret_cast<uv_handle_t*>(tick_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  flush_due_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(flush_check_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
  uv_close(reinterpret_cast<uv_handle_t*>(flush_idle_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
  uv_close(reinterpret_cast<uv_handle_t*>(async_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
}

Status TcpTransportImpl::Shutdown() {
  std::lock_guard<std::mutex> guard(shutdown_mu_);
  if (shut_down_) return shutdown_status_;
  if (IsLoopThread()) return Status(StatusCode::kInvalidArgument, "Shutdown called on the loop thread");
  shut_down_ = true;
  if (!thread_.joinable()) {  // Start failed before the thread began
    shutdown_status_ =
        uv_loop_close(&loop_) == 0 ? Status::Ok() : Status(StatusCode::kInternal, "loop not closed");
    return shutdown_status_;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_requested_ = true;
    uv_async_send(async_);
  }
  thread_.join();
  const int r = uv_loop_close(&loop_);
  shutdown_status_ = r == 0 ? Status::Ok() : UvStatus(StatusCode::kInternal, "loop did not close cleanly", r);
  return shutdown_status_;
}

Result<std::shared_ptr<Listener>> TcpTransportImpl::Listen(const Endpoint& local, AcceptFn on_accept,
                                                           ListenOptions options) {
  if (shutting_down_) return Error(StatusCode::kUnavailable, "transport shutting down");
  if (!on_accept) return Error(StatusCode::kInvalidArgument, "Listen needs on_accept");
  sockaddr_storage addr{};
  CW_RETURN_IF_ERROR(ResolveHost(local.host, local.port, &addr));
  auto listener = std::make_shared<TcpListener>(this, std::move(on_accept), std::move(options));
  listener->handle_ = new uv_tcp_t;
  uv_tcp_init(&loop_, listener->handle_);
  listener->handle_->data = listener.get();
  listeners_.insert(listener);
  int r = uv_tcp_bind(listener->handle_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (r == 0) {
    r = uv_listen(reinterpret_cast<uv_stream_t*>(listener->handle_), 511, [](uv_stream_t* s, int status) {
      auto* l = static_cast<TcpListener*>(s->data);
      l->transport_->OnNewConnection(l, status);
    });
  }
  if (r != 0) {
    listener->Close();
    return Error(UvStatus(StatusCode::kUnavailable, "listen on " + local.ToString(), r));
  }
  sockaddr_storage bound{};
  int len = sizeof bound;
  uv_tcp_getsockname(listener->handle_, reinterpret_cast<sockaddr*>(&bound), &len);
  uint16_t port = 0;
  listener->endpoint_.host = AddressString(bound, &port);
  listener->endpoint_.port = port;
  listener->endpoint_.static_key = key_.public_key();
  return std::shared_ptr<Listener>(listener);
}

void TcpTransportImpl::OnNewConnection(TcpListener* listener, int status) {
  if (listener->closed_ || shutting_down_) return;
  if (status != 0) {
    // Out of descriptors, most often. libuv sheds such connections itself while it holds a spare descriptor,
    // silently; past that it calls here for every connection it cannot take, as fast as they come. The
    // operator hears of it at most once a second, with the count.
    ++listener->accept_failures_;
    const int64_t now = Now();
    if (listener->options_.on_rejected && now >= listener->next_accept_report_) {
      listener->next_accept_report_ = now + 1000;
      const uint64_t failures = std::exchange(listener->accept_failures_, 0);
      const Status why(status == UV_EMFILE || status == UV_ENFILE ? StatusCode::kResourceExhausted
                                                                  : StatusCode::kUnavailable,
                       std::string("accept failed: ") + uv_strerror(status) + " (" +
                           std::to_string(failures) + " since the last report)");
      CallApp([&] { listener->options_.on_rejected("", why); });
    }
    return;
  }
  auto conn = std::make_shared<TcpConnection>(this, /*is_client=*/false);
  if (!conn->Init(&loop_)) return;
  connections_.insert(conn);
  conn->state_ = TcpConnection::State::kHandshaking;
  if (uv_accept(reinterpret_cast<uv_stream_t*>(listener->handle_),
                reinterpret_cast<uv_stream_t*>(conn->handle_)) != 0) {
    conn->Abort(Status(StatusCode::kUnavailable, "accept failed"));  // no listener_: nobody is told
    return;
  }
  conn->ReadPeerAddress();
  EnableKeepalive(conn->handle_, options_.keepalive_idle_seconds);
  for (auto& l : listeners_) {
    if (l.get() == listener) conn->listener_ = l;
  }
  conn->address_group_ = AddressGroup(conn->peer_address_);
  if (!listener->HandshakeStarted(conn->address_group_)) {
    conn->Abort(Status(StatusCode::kResourceExhausted, "too many handshakes in progress"));
    return;
  }
  conn->link_ = NewLink(noise::Role::kResponder, std::nullopt);
  if (!conn->link_) {
    conn->Abort(Status(StatusCode::kInternal, "Noise responder set-up failed"));
    return;
  }
  conn->deadline_ = Now() + options_.handshake_timeout_millis;
  conn->StartReading();
}

Status TcpTransportImpl::Connect(const Endpoint& remote, ConnectionCallbacks callbacks,
                                 ConnectFn on_connected) {
  if (shutting_down_) return Status(StatusCode::kUnavailable, "transport shutting down");
  if (!remote.static_key)
    return Status(StatusCode::kInvalidArgument, "Connect needs the server key pinned: cw://<key>@host:port");
  if (!on_connected) return Status(StatusCode::kInvalidArgument, "Connect needs on_connected");
  sockaddr_storage addr{};
  CW_RETURN_IF_ERROR(ResolveHost(remote.host, remote.port, &addr));
  auto conn = std::make_shared<TcpConnection>(this, /*is_client=*/true);
  conn->link_ = NewLink(noise::Role::kInitiator, remote.static_key);
  if (!conn->link_) return Status(StatusCode::kInternal, "Noise initiator set-up failed");
  if (!conn->Init(&loop_)) return Status(StatusCode::kInternal, "uv_tcp_init failed");
  connections_.insert(conn);
  auto* req = new ConnectReq{{}, conn};
  const int r = uv_tcp_connect(&req->req, conn->handle_, reinterpret_cast<const sockaddr*>(&addr),
                               [](uv_connect_t* c, int status) {
                                 std::unique_ptr<ConnectReq> owned(reinterpret_cast<ConnectReq*>(c));
                                 owned->conn->OnConnected(status);
                               });
  if (r != 0) {
    delete req;
    conn->Abort(UvStatus(StatusCode::kUnavailable, "connect", r));  // on_connected not yet set: never fires
    return UvStatus(StatusCode::kUnavailable, "connect to " + remote.ToString(), r);
  }
  conn->callbacks_ = std::move(callbacks);
  conn->on_connected_ = std::move(on_connected);
  conn->peer_address_ = remote.host;
  conn->deadline_ = Now() + options_.handshake_timeout_millis;
  return Status::Ok();
}

void TcpTransportImpl::ConnectionClosed(TcpConnection* c) {
  for (auto it = connections_.begin(); it != connections_.end(); ++it) {
    if (it->get() == c) {
      connections_.erase(it);
      return;
    }
  }
}

void TcpTransportImpl::ListenerClosed(TcpListener* l) {
  for (auto it = listeners_.begin(); it != listeners_.end(); ++it) {
    if (it->get() == l) {
      listeners_.erase(it);
      return;
    }
  }
}

}  // namespace

Status CheckDialableHost(const std::string& host) {
  sockaddr_storage unused{};
  return ResolveHost(host, 0, &unused);
}

Result<std::unique_ptr<TcpTransport>> TcpTransport::New(StaticKeyPair local_static, TransportOptions options,
                                                        const Clock& clock) {
  CW_RETURN_IF_ERROR(crypto::Init());
  IgnoreSigpipe();
  if (options.max_frame_size == 0 || options.max_frame_size > kMaxConfigurableFrame) {
    return Error(StatusCode::kInvalidArgument, "max_frame_size must be in 1..16 MiB");
  }
  if (options.send_low_water >= options.send_high_water) {
    return Error(StatusCode::kInvalidArgument, "send_low_water must be below send_high_water");
  }
  auto t = std::make_unique<TcpTransportImpl>(std::move(local_static), std::move(options), clock);
  CW_RETURN_IF_ERROR(t->Start());
  return std::unique_ptr<TcpTransport>(std::move(t));
}

}  // namespace cw::transport
