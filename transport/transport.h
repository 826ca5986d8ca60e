// Transport: the pluggable link layer. A Transport listens for and opens Connections that carry frames
// (opaque byte strings of 1..max_frame_size bytes) in order, over a link authenticated and encrypted with
// Noise_XK_25519_ChaChaPoly_BLAKE2b (transport/noise.h). There is no unauthenticated mode: every Connection
// knows the static key its peer proved, remote_static_key().
//
// Implementations:
//   TcpTransport        transport/tcp_transport.h   libuv TCP, its own event-loop thread
//   InMemoryNetwork     transport/in_memory.h       a seeded simulated network for deterministic tests; each
//                                                   node is a Transport; a FakeClock drives its timers
//
// Addresses. A client pins the server's static key in the address: `cw://<key>@host:port`, where <key> is
// the 32-byte X25519 public key as 64 hex digits or 43 unpadded base64url characters. Connect refuses an
// Endpoint without a key. Listen takes `host:port` (port 0 picks an ephemeral port; Listener::endpoint()
// then reports the bound port and this transport's key, ready to hand to clients).
//
// Threading model (libuv's):
//   - Each Transport has one event-loop thread. Every method of Transport, Listener and Connection must be
//     called on that thread, except Transport::Post and Transport::IsLoopThread, which are safe from any
//     thread. From other threads, Post the work (RunSync below wraps Post for a blocking call).
//   - Every callback (on_accept, on_connected, on_frame, on_writable, on_closed, timers, posted functions)
//     runs on the loop thread. Callbacks may call back into the transport (Send, Close, Connect...).
//   - A call that fails never fires its callback: if Connect returns an error, on_connected never runs; if
//     Post returns an error, the function never runs.
//   - Callbacks never fire from inside the call that caused them: Close() returns before on_closed runs;
//     Connect() returns before on_connected runs.
//
// Time: timeouts (handshake, timers) are measured on the Clock injected into the transport. TcpTransport
// checks deadlines on a periodic tick (TransportOptions::tick_millis), so a timer fires within one tick of
// its deadline; InMemoryNetwork fires them as the test advances its FakeClock.
//
// Ownership: connections and listeners are shared_ptr. The transport keeps its own reference to a
// Connection until on_closed has run, so a caller may drop its pointer at any time; the underlying handles
// are freed only in their close callbacks. After on_closed, Send returns kUnavailable and Close is a no-op.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/base/status.h"

namespace cw::transport {

// Named limits.
inline constexpr size_t kKeySize = 32;                        // X25519 public and private keys
inline constexpr size_t kDefaultMaxFrameSize = 128 * 1024;    // one application frame
inline constexpr size_t kFrameHeaderSize = 4;                 // big-endian length before every frame
inline constexpr size_t kNoiseMaxMessageSize = 65535;         // Noise spec, section 3
inline constexpr size_t kDefaultSendHighWater = 1024 * 1024;  // Send refuses once this much is queued
inline constexpr size_t kDefaultSendLowWater = 256 * 1024;    // on_writable once drained to this
inline constexpr int64_t kDefaultHandshakeTimeoutMillis = 10'000;
inline constexpr int64_t kDefaultTickMillis = 20;
inline constexpr int kDefaultKeepaliveIdleSeconds = 60;
inline constexpr size_t kDefaultMaxHandshaking = 1024;  // per listener, handshakes in progress
inline constexpr size_t kDefaultMaxHandshakingPerAddress = 16;  // of those, from one AddressGroup

using PublicKey = std::array<uint8_t, kKeySize>;

// An X25519 static key pair: a device's or relay's link key. Move-only; the private half is heap-held and
// wiped on free (SecretBytes). Thread rules: a value type.
class StaticKeyPair {
 public:
  // Draws the private key from `random` (SystemRandom::Default() in production).
  static StaticKeyPair Generate(Random& random);
  // REQUIRES: private_key is kKeySize bytes; otherwise kInvalidArgument.
  static Result<StaticKeyPair> FromPrivateKey(std::span<const uint8_t> private_key);

  StaticKeyPair(StaticKeyPair&&) noexcept = default;
  StaticKeyPair& operator=(StaticKeyPair&&) noexcept = default;

  const PublicKey& public_key() const { return public_; }
  // The one accessor to the private bytes (through SecretBytes::reveal()).
  const SecretBytes& private_key() const { return private_; }
  StaticKeyPair Clone() const;

 private:
  StaticKeyPair() = default;
  SecretBytes private_;
  PublicKey public_{};
};

// Where to listen or connect. For the in-memory network, host is a node name.
struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::optional<PublicKey> static_key;  // the pinned key of the server; required by Connect

  // Parses "cw://<key>@host:port" or "host:port". IPv6 hosts go in brackets: "cw://<key>@[::1]:443".
  // kInvalidArgument, naming the part that is wrong, on anything else.
  static Result<Endpoint> Parse(std::string_view text);
  // "cw://<hex key>@host:port", or "host:port" without a key.
  std::string ToString() const;
};

// Public keys in addresses and logs. A public key is not secret.
std::string KeyToHex(const PublicKey& key);
std::string KeyToBase64Url(const PublicKey& key);
// Accepts 64 hex digits or 43 unpadded base64url characters; kInvalidArgument otherwise.
Result<PublicKey> ParseKey(std::string_view text);

// The unit a server limits per "address": an IPv4 address as it is; an IPv6 address by its /64 prefix
// ("2001:db8:1:2::/64"), since one subscriber is routinely handed a whole /64 and could otherwise take a
// fresh address for every connection; an IPv4-mapped IPv6 address as the IPv4 address. Anything that does
// not parse as an address comes back unchanged.
std::string AddressGroup(std::string_view peer_address);

struct TransportOptions {
  size_t max_frame_size = kDefaultMaxFrameSize;  // both directions; see "Frame size" in transport/frame.h
  size_t send_high_water = kDefaultSendHighWater;
  size_t send_low_water = kDefaultSendLowWater;  // REQUIRES: < send_high_water
  // A connection (either side) that has not completed the Noise handshake this long after the TCP
  // connection was made is closed: on the server side silently (ListenOptions::on_rejected hears of it),
  // on the client side with on_connected(kUnavailable "handshake timed out").
  int64_t handshake_timeout_millis = kDefaultHandshakeTimeoutMillis;
  int64_t tick_millis = kDefaultTickMillis;  // TcpTransport: how often deadlines are checked
  // TcpTransport, both sides: TCP keepalive after this many idle seconds, then a probe every 10 s, and the
  // connection closed (kUnavailable) after 6 unanswered probes or data unacknowledged that long. A peer
  // that vanished (power loss, a NAT that forgot the mapping) otherwise holds its connection, and a relay's
  // slot, for ever. 0: off.
  int keepalive_idle_seconds = kDefaultKeepaliveIdleSeconds;
  // Noise prologue, mixed into the handshake hash: both sides must use the same.
  std::string prologue = "cipherward-link-v1";
};

struct ConnectionCallbacks {
  // A whole frame, in order. The bytes are valid only during the call.
  std::function<void(ByteView frame)> on_frame;
  // After Send returned kResourceExhausted: the send queue has drained to send_low_water or below.
  std::function<void()> on_writable;
  // Exactly once per Connection handed to the application, last of all its callbacks. `reason` is the
  // Status passed to Close(), or why the transport closed it:
  //   kUnavailable        the peer closed the link, a socket error, or the transport shut down
  //   kMalformed          the peer sent bytes that are not a frame (zero or over max_frame_size length)
  //   kTampered           a Noise transport message failed to decrypt
  std::function<void(Status reason)> on_closed;
};

// One authenticated link. Created by the transport; see the file comment for threads and ownership.
class Connection {
 public:
  virtual ~Connection() = default;

  // Installs the callbacks. For an accepted Connection, call it inside on_accept: no frame is delivered
  // before on_accept returns, and frames arriving with no on_frame installed are dropped. For a Connection
  // from Connect, the callbacks given to Connect are installed already; this replaces them.
  virtual void SetCallbacks(ConnectionCallbacks callbacks) = 0;

  // Queues one frame; it is sent whole, in order, after every frame queued before it. The bytes are copied.
  //   kInvalidArgument    frame is empty or longer than max_frame_size
  //   kResourceExhausted  queued_bytes() >= send_high_water: not queued; on_writable will fire
  //   kUnavailable        the connection is closing or closed
  virtual Status Send(ByteView frame) = 0;

  // Starts a graceful close: stops delivering frames, flushes the frames queued so far, shuts the link down
  // and waits for the peer to close its side (at most handshake_timeout_millis in all), then calls
  // on_closed(reason). Idempotent: later calls (and later errors) do not change the reason.
  virtual void Close(Status reason) = 0;
  // Closes at once, without sending what is queued or waiting for the peer; on_closed(reason) follows. For a
  // connection a server refuses right after its handshake: its descriptor goes with the refusal, where a
  // graceful close would keep it until the peer closes too (a peer that never does would hold it for the
  // close's whole timeout, and a flood of them every descriptor the server has).
  virtual void Abort(Status reason) = 0;

  // The X25519 static key the peer proved in the Noise handshake (for a relay: the mailbox owner's link key).
  virtual const PublicKey& remote_static_key() const = 0;
  // The peer's network address without the port ("127.0.0.1", "::1", or an in-memory node name), for
  // per-address limits and logs.
  virtual const std::string& peer_address() const = 0;
  // Frame bytes accepted by Send and not yet handed to the operating system.
  virtual size_t queued_bytes() const = 0;
  virtual bool is_open() const = 0;
};

class Listener {
 public:
  virtual ~Listener() = default;
  // The bound address (with the real port when 0 was asked for) and this transport's public key.
  virtual const Endpoint& endpoint() const = 0;
  // Stops accepting. Connections already accepted stay open. Idempotent. Dropping the last shared_ptr does
  // NOT close a listener: the transport holds it until Close() or Shutdown().
  virtual void Close() = 0;
};

using AcceptFn = std::function<void(std::shared_ptr<Connection>)>;
using ConnectFn = std::function<void(Result<std::shared_ptr<Connection>>)>;

struct ListenOptions {
  size_t max_handshaking = kDefaultMaxHandshaking;  // further TCP connections are closed at once
  // Of those, at most this many from one AddressGroup: without it one address could hold every slot with
  // connections that never speak, and every other client would be turned away until they time out.
  size_t max_handshaking_per_address = kDefaultMaxHandshakingPerAddress;
  // Optional: a connection that did not become a Connection (handshake failed or timed out, limit reached),
  // with why. For logs and stats; no key or payload in the message.
  std::function<void(const std::string& peer_address, const Status& why)> on_rejected;
};

class Transport {
 public:
  virtual ~Transport() = default;

  // The static key pair this transport proves in every handshake (given when it was created).
  virtual const PublicKey& local_static_key() const = 0;
  virtual const TransportOptions& options() const = 0;

  // Binds and listens. on_accept runs for every connection whose handshake completed; the Connection's
  // remote_static_key() is authenticated. kInvalidArgument (bad address), kUnavailable (bind failed:
  // address in use, ...).
  virtual Result<std::shared_ptr<Listener>> Listen(const Endpoint& local, AcceptFn on_accept,
                                                   ListenOptions options = {}) = 0;

  // Connects and runs the handshake as Noise initiator against the key pinned in `remote`. If this returns
  // ok, on_connected fires exactly once, with either the open Connection (callbacks installed) or:
  //   kUnavailable        connection refused, network error, the handshake timed out, transport shutting down
  //   kPermissionDenied   the server did not prove the pinned static key (it closed during the handshake or
  //                       its handshake message did not authenticate): wrong key in the address or an
  //                       impostor
  //   kMalformed          the server sent bytes that are not a handshake message
  // Returns kInvalidArgument (no key pinned, bad host) without calling on_connected.
  virtual Status Connect(const Endpoint& remote, ConnectionCallbacks callbacks, ConnectFn on_connected) = 0;

  // Runs fn on the loop thread, soon. Safe from any thread, including the loop thread (then fn runs later,
  // never inside Post). kUnavailable once the transport is shutting down; then fn never runs.
  virtual Status Post(std::function<void()> fn) = 0;
  virtual bool IsLoopThread() const = 0;

  // One-shot timers on the injected Clock; fn runs on the loop thread once the clock reaches now + delay.
  // Cancel of an unknown or fired id is a no-op. Pending timers are dropped at Shutdown.
  using TimerId = uint64_t;
  virtual TimerId ScheduleAfter(int64_t delay_millis, std::function<void()> fn) = 0;
  virtual void CancelTimer(TimerId id) = 0;
};

// Runs fn on t's loop thread and waits for its result. REQUIRES: not called on t's loop thread. If Post
// fails (shutting down), returns that Status (fn's return type must be constructible from a Status:
// Status or Result<T>).
template <typename Fn>
auto RunSync(Transport& t, Fn fn) -> std::invoke_result_t<Fn> {
  using R = std::invoke_result_t<Fn>;
  auto promise = std::make_shared<std::promise<R>>();
  auto future = promise->get_future();
  Status posted = t.Post([promise, fn = std::move(fn)]() mutable { promise->set_value(fn()); });
  if (!posted.ok()) {
    if constexpr (std::is_same_v<R, Status>) {
      return posted;
    } else {
      return R(Error(std::move(posted)));
    }
  }
  return future.get();
}

}  // namespace cw::transport
