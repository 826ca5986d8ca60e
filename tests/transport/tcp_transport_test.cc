// TcpTransport over 127.0.0.1 with ephemeral ports. Every test ends with Shutdown() returning ok: each loop
// closed with no handle left open. Timeouts run on a ManualClock the test advances; nothing asserts on
// wall-clock time.
#include "transport/tcp_transport.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <set>
#include <vector>

#include "tests/transport/transport_test_util.h"

namespace cw::transport {
namespace {

using testing::Eventually;
using testing::ManualClock;

struct Collected {
  std::mutex mu;
  std::vector<Bytes> frames;
  std::vector<Status> closed;
  std::vector<Status> rejected;
  std::vector<PublicKey> accepted_keys;
  std::vector<std::string> accepted_addresses;
  std::vector<std::shared_ptr<Connection>> conns;
  std::atomic<bool> loop_thread_only{true};

  size_t frame_count() {
    std::lock_guard<std::mutex> l(mu);
    return frames.size();
  }
  size_t closed_count() {
    std::lock_guard<std::mutex> l(mu);
    return closed.size();
  }
  size_t rejected_count() {
    std::lock_guard<std::mutex> l(mu);
    return rejected.size();
  }
};

class TcpTransportTest : public ::testing::Test {
 protected:
  std::unique_ptr<TcpTransport> NewTransport(uint64_t seed, TransportOptions options = {}) {
    options.tick_millis = 5;
    options.handshake_timeout_millis = 1000;  // on the ManualClock
    SeededRandom rng(seed);
    auto t = TcpTransport::New(StaticKeyPair::Generate(rng), options, clock_);
    EXPECT_TRUE(t.has_value());
    return t ? std::move(*t) : nullptr;
  }

  // An echo server: every frame comes back on the same connection.
  std::shared_ptr<Listener> ListenEcho(Transport& t, Collected& c, ListenOptions lo = {}) {
    lo.on_rejected = [&c](const std::string&, const Status& why) {
      std::lock_guard<std::mutex> l(c.mu);
      c.rejected.push_back(why);
    };
    auto listener = RunSync(t, [&]() -> Result<std::shared_ptr<Listener>> {
      return t.Listen(
          *Endpoint::Parse("127.0.0.1:0"),
          [&c, &t](std::shared_ptr<Connection> conn) {
            if (!t.IsLoopThread()) c.loop_thread_only = false;
            std::weak_ptr<Connection> weak = conn;
            conn->SetCallbacks({.on_frame =
                                    [weak, &c](ByteView f) {
                                      if (auto s = weak.lock()) (void)s->Send(f);
                                      std::lock_guard<std::mutex> l(c.mu);
                                      c.frames.emplace_back(f.begin(), f.end());
                                    },
                                .on_writable = nullptr,
                                .on_closed =
                                    [&c](Status why) {
                                      std::lock_guard<std::mutex> l(c.mu);
                                      c.closed.push_back(why);
                                    }});
            std::lock_guard<std::mutex> l(c.mu);
            c.accepted_keys.push_back(conn->remote_static_key());
            c.accepted_addresses.push_back(conn->peer_address());
            c.conns.push_back(conn);
          },
          lo);
    });
    EXPECT_TRUE(listener.has_value()) << listener.error().ToString();
    return listener ? *listener : nullptr;
  }

  // Connects; returns the connection (or the error) once on_connected ran.
  Result<std::shared_ptr<Connection>> ConnectTo(Transport& t, const Endpoint& ep, Collected& c) {
    auto promise = std::make_shared<std::promise<Result<std::shared_ptr<Connection>>>>();
    auto future = promise->get_future();
    Status s = RunSync(t, [&]() {
      return t.Connect(
          ep,
          {.on_frame =
               [&c](ByteView f) {
                 std::lock_guard<std::mutex> l(c.mu);
                 c.frames.emplace_back(f.begin(), f.end());
               },
           .on_writable = nullptr,
           .on_closed =
               [&c](Status why) {
                 std::lock_guard<std::mutex> l(c.mu);
                 c.closed.push_back(why);
               }},
          [promise](Result<std::shared_ptr<Connection>> r) { promise->set_value(std::move(r)); });
    });
    if (!s.ok()) return Error(s);
    return future.get();
  }

  ManualClock clock_;
};

TEST_F(TcpTransportTest, HandshakeAndEcho) {
  auto server = NewTransport(1);
  auto client = NewTransport(2);
  Collected sc, cc;
  auto listener = ListenEcho(*server, sc);
  ASSERT_NE(listener, nullptr);
  // The address a relay would print, parsed back as a client would.
  const std::string address = listener->endpoint().ToString();
  ASSERT_EQ(address.rfind("cw://", 0), 0u) << address;
  auto ep = Endpoint::Parse(address);
  ASSERT_TRUE(ep.has_value());

  auto conn = ConnectTo(*client, *ep, cc);
  ASSERT_TRUE(conn.has_value()) << conn.error().ToString();
  EXPECT_EQ((*conn)->remote_static_key(), server->local_static_key());
  EXPECT_EQ((*conn)->peer_address(), "127.0.0.1");

  std::vector<Bytes> sent;
  SeededRandom rng(3);
  for (size_t size : {1, 2, 100, 4096, 65519, 65520, 131072, 7}) {
    Bytes f(size);
    rng.Fill(f.data(), f.size());
    sent.push_back(f);
  }
  ASSERT_TRUE(RunSync(*client, [&]() -> Status {
                for (auto& f : sent) CW_RETURN_IF_ERROR((*conn)->Send(f));
                return Status::Ok();
              }).ok());
  ASSERT_TRUE(Eventually([&] { return cc.frame_count() == sent.size(); }));
  {
    std::lock_guard<std::mutex> l(cc.mu);
    EXPECT_EQ(cc.frames, sent);
  }
  {
    std::lock_guard<std::mutex> l(sc.mu);
    ASSERT_EQ(sc.accepted_keys.size(), 1u);
    EXPECT_EQ(sc.accepted_keys[0], client->local_static_key()) << "XK authenticated the client's static key";
    EXPECT_EQ(sc.accepted_addresses[0], "127.0.0.1");
  }
  EXPECT_TRUE(sc.loop_thread_only);

  // Graceful close from the client: both sides hear of it, each exactly once.
  RunSync(*client, [&] {
    (*conn)->Close(Status(StatusCode::kOk, "done"));
    return Status::Ok();
  }).ok();
  ASSERT_TRUE(Eventually([&] { return cc.closed_count() == 1 && sc.closed_count() == 1; }));
  {
    std::lock_guard<std::mutex> l(sc.mu);
    EXPECT_EQ(sc.closed[0].code(), StatusCode::kUnavailable);
    EXPECT_EQ(sc.closed[0].message(), "connection closed by peer");
  }
  EXPECT_EQ(RunSync(*client, [&] { return (*conn)->Send(ToBytes("late")); }).code(),
            StatusCode::kUnavailable);
  EXPECT_TRUE(client->Shutdown().ok());
  EXPECT_TRUE(server->Shutdown().ok());
  EXPECT_EQ(cc.closed_count(), 1u);
  EXPECT_EQ(sc.closed_count(), 1u);
}

TEST_F(TcpTransportTest, PinnedKeyMismatchIsRefusedWithAClearError) {
  auto server = NewTransport(1);
  auto client = NewTransport(2);
  Collected sc, cc;
  auto listener = ListenEcho(*server, sc);
  Endpoint ep = listener->endpoint();
  SeededRandom rng(99);
  ep.static_key = StaticKeyPair::Generate(rng).public_key();  // an impostor's key, or a typo
  auto conn = ConnectTo(*client, ep, cc);
  ASSERT_FALSE(conn.has_value());
  EXPECT_EQ(conn.error().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(conn.error().message().find("pinned"), std::string::npos) << conn.error().message();
  ASSERT_TRUE(Eventually([&] { return sc.rejected_count() == 1; }));
  {
    std::lock_guard<std::mutex> l(sc.mu);
    EXPECT_EQ(sc.rejected[0].code(), StatusCode::kPermissionDenied);
    EXPECT_TRUE(sc.conns.empty()) << "on_accept never ran";
  }
  EXPECT_EQ(cc.closed_count(), 0u) << "on_closed is only for connections that were handed out";
  EXPECT_TRUE(client->Shutdown().ok());
  EXPECT_TRUE(server->Shutdown().ok());
}

TEST_F(TcpTransportTest, ConnectWithoutPinnedKeyFailsSynchronouslyAndNeverCallsBack) {
  auto client = NewTransport(2);
  std::atomic<int> called{0};
  Status s = RunSync(
      *client, [&] { return client->Connect(*Endpoint::Parse("127.0.0.1:1"), {}, [&](auto) { ++called; }); });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(client->Shutdown().ok());
  EXPECT_EQ(called, 0);
}

TEST_F(TcpTransportTest, ConnectionRefused) {
  auto client = NewTransport(2);
  // A port with nothing listening: bind one, note it, close it.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  Endpoint ep{"127.0.0.1", ntohs(a.sin_port), client->local_static_key()};
  Collected cc;
  auto conn = ConnectTo(*client, ep, cc);
  ASSERT_FALSE(conn.has_value());
  EXPECT_EQ(conn.error().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(client->Shutdown().ok());
}

TEST_F(TcpTransportTest, OversizedFrameClosesTheConnectionWithAReason) {
  auto server = NewTransport(1);  // default max: 128 KiB
  TransportOptions big;
  big.max_frame_size = 1024 * 1024;
  auto client = NewTransport(2, big);
  Collected sc, cc;
  auto listener = ListenEcho(*server, sc);
  auto conn = ConnectTo(*client, listener->endpoint(), cc);
  ASSERT_TRUE(conn.has_value());
  ASSERT_TRUE(RunSync(*client, [&] { return (*conn)->Send(Bytes(200 * 1024, 1)); }).ok());
  ASSERT_TRUE(Eventually([&] { return sc.closed_count() == 1 && cc.closed_count() == 1; }));
  {
    std::lock_guard<std::mutex> l(sc.mu);
    EXPECT_EQ(sc.closed[0].code(), StatusCode::kMalformed);
    EXPECT_NE(sc.closed[0].message().find("exceeds the maximum of 131072"), std::string::npos)
        << sc.closed[0].message();
    EXPECT_TRUE(sc.frames.empty());
  }
  EXPECT_EQ(RunSync(*server, [&] { return sc.conns[0]->Send(ToBytes("x")); }).code(),
            StatusCode::kUnavailable);
  EXPECT_TRUE(client->Shutdown().ok());
  EXPECT_TRUE(server->Shutdown().ok());
}

TEST_F(TcpTransportTest, SendRefusesEmptyAndOversizedFrames) {
  auto server = NewTransport(1);
  auto client = NewTransport(2);
  Collected sc, cc;
  auto listener = ListenEcho(*server, sc);
  auto conn = ConnectTo(*client, listener->endpoint(), cc);
  ASSERT_TRUE(conn.has_value());
  EXPECT_EQ(RunSync(*client, [&] { return (*conn)->Send({}); }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(RunSync(*client, [&] { return (*conn)->Send(Bytes(kDefaultMaxFrameSize + 1)); }).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(RunSync(*client, [&] { return (*conn)->Send(Bytes(kDefaultMaxFrameSize)); }).ok());
  ASSERT_TRUE(Eventually([&] { return cc.frame_count() == 1; }));
  EXPECT_TRUE(client->Shutdown().ok());
  EXPECT_TRUE(server->Shutdown().ok());
  // Shutdown closed the connections that were open, with a reason.
  std::lock_guard<std::mutex> l(cc.mu);
  ASSERT_EQ(cc.closed.size(), 1u);
  EXPECT_EQ(cc.closed[0].message(), "transport shutting down");
}

// A plain TCP connection to 127.0.0.1:port, from `source` (another loopback address stands for another
// client address).
int RawConnect(uint16_t port, const char* source = nullptr) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (source != nullptr) {
    sockaddr_in from{};
    from.sin_family = AF_INET;
    inet_pton(AF_INET, source, &from.sin_addr);
    if (bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0) {
      close(fd);
      return -1;
    }
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// True once the server closed its end (recv sees end of stream or a reset).
bool ClosedByServer(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  char buf[256];
  const ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

TEST_F(TcpTransportTest, ClientThatNeverHandshakesIsClosedAfterTheTimeout) {
  auto server = NewTransport(1);
  Collected sc;
  auto listener = ListenEcho(*server, sc);
  const int silent = RawConnect(listener->endpoint().port);
  const int half = RawConnect(listener->endpoint().port);
  ASSERT_GE(silent, 0);
  ASSERT_GE(half, 0);
  // Half a first handshake record, then nothing: a slowloris.
  const uint8_t partial[] = {0, 48, 1, 2, 3, 4, 5};
  ASSERT_EQ(send(half, partial, sizeof partial, 0), static_cast<ssize_t>(sizeof partial));
  // Time passes on the injected clock until both are closed.
  ASSERT_TRUE(Eventually([&] { return ClosedByServer(silent) && ClosedByServer(half); },
                         [&] { clock_.Advance(200); }));
  ASSERT_TRUE(Eventually([&] { return sc.rejected_count() == 2; }));
  {
    std::lock_guard<std::mutex> l(sc.mu);
    for (const auto& why : sc.rejected) EXPECT_EQ(why.message(), "handshake timed out");
    EXPECT_TRUE(sc.conns.empty());
  }
  close(silent);
  close(half);
  EXPECT_TRUE(server->Shutdown().ok());
}

// Connections that never speak hold handshake slots until they time out. One address gets at most
// max_handshaking_per_address of them, so it cannot take every slot and lock everyone else out (here the
// listener has 8 slots, and the silent address opens 10 connections).
TEST_F(TcpTransportTest, OneAddressCannotHoldEveryHandshakeSlot) {
  auto server = NewTransport(1);
  Collected sc;
  ListenOptions lo;
  lo.max_handshaking = 8;
  lo.max_handshaking_per_address = 4;
  auto listener = ListenEcho(*server, sc, lo);
  ASSERT_TRUE(listener);
  const uint16_t port = listener->endpoint().port;
  std::vector<int> silent;
  for (int i = 0; i < 10; ++i) {
    const int fd = RawConnect(port, "127.0.0.2");
    ASSERT_GE(fd, 0) << "cannot connect from 127.0.0.2";
    silent.push_back(fd);
  }
  // The six past the address's share are closed at once (no clock advance: not a timeout).
  ASSERT_TRUE(Eventually([&] { return sc.rejected_count() == 6; }));
  size_t closed = 0;
  for (int fd : silent) closed += ClosedByServer(fd) ? 1 : 0;
  EXPECT_EQ(closed, 6u);
  {
    std::lock_guard<std::mutex> l(sc.mu);
    for (const auto& why : sc.rejected) EXPECT_EQ(why.code(), StatusCode::kResourceExhausted);
  }
  // Another address still completes a handshake.
  auto client = NewTransport(2);
  Collected cc;
  auto conn = ConnectTo(*client, listener->endpoint(), cc);
  ASSERT_TRUE(conn.has_value()) << conn.error().ToString();
  ASSERT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> l(sc.mu);
    return sc.conns.size() == 1;
  }));
  for (int fd : silent) close(fd);
  EXPECT_TRUE(client->Shutdown().ok());
  EXPECT_TRUE(server->Shutdown().ok());
}

TEST(AddressGroupTest, IPv6CountsByItsSlash64AndIPv4AsItIs) {
  EXPECT_EQ(AddressGroup("192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(AddressGroup("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::/64");
  EXPECT_EQ(AddressGroup("2001:db8:1:2::1"), AddressGroup("2001:db8:1:2:ffff::9"));
  EXPECT_NE(AddressGroup("2001:db8:1:2::1"), AddressGroup("2001:db8:1:3::1"));
  EXPECT_EQ(AddressGroup("::ffff:192.0.2.7"), "192.0.2.7");
  EXPECT_EQ(AddressGroup("not an address"), "not an address");
}

// The kernel's timer kind ("tr" in /proc/net/tcp: 2 is keepalive) of each established IPv4 socket with
// `port` at the given end.
std::vector<int> TimerKindsOfSockets(uint16_t port, bool local_end) {
  std::vector<int> kinds;
  std::FILE* f = std::fopen("/proc/net/tcp", "r");
  if (f == nullptr) return kinds;
  char line[512];
  (void)std::fgets(line, sizeof line, f);  // header
  while (std::fgets(line, sizeof line, f) != nullptr) {
    unsigned local_port = 0, remote_port = 0, state = 0;
    int timer = -1;
    if (std::sscanf(line, " %*d: %*8[0-9A-Fa-f]:%x %*8[0-9A-Fa-f]:%x %x %*x:%*x %x:", &local_port,
                    &remote_port, &state, &timer) != 4) {
      continue;
    }
    if (state == 1 && (local_end ? local_port : remote_port) == port) kinds.push_back(timer);
  }
  std::fclose(f);
  return kinds;
}

// Both ends of a link turn TCP keepalive on, so a peer that vanished without closing (power loss, a NAT that
// dropped the mapping) is noticed and its connection closed instead of held for ever.
TEST_F(TcpTransportTest, BothEndsOfALinkKeepItAlive) {
  auto server = NewTransport(1);
  auto client = NewTransport(2);
  Collected sc, cc;
  auto listener = ListenEcho(*server, sc);
  auto conn = ConnectTo(*client, listener->endpoint(), cc);
  ASSERT_TRUE(conn.has_value()) << conn.error().ToString();
  ASSERT_TRUE(Eventually([&] {
    std::lock_guard<std::mutex> l(sc.mu);
    return sc.accepted_keys.size() == 1;
  }));
  const uint16_t port = listener->endpoint().port;
  // Idle once the handshake's last bytes are acknowledged: the pending timer is then the keepalive one.
  ASSERT_TRUE(Eventually([&] {
    const auto server_side = TimerKindsOfSockets(port, /*local_end=*/true);
    const auto client_side = TimerKindsOfSockets(port, /*local_end=*/false);
    return server_side == std::vector<int>{2} && client_side == std::vector<int>{2};
  })) << "no keepalive timer on an idle link";
  EXPECT_TRUE(client->Shutdown().ok());
  EXPECT_TRUE(server->Shutdown().ok());
}

TEST_F(TcpTransportTest, ServerThatNeverAnswersTimesOutTheClient) {
  auto client = NewTransport(2);
  // A TCP listener that accepts (the kernel does) and never speaks.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  Endpoint ep{"127.0.0.1", ntohs(a.sin_port), client->local_static_key()};
  std::atomic<bool> done{false};
  Status result;
  ASSERT_TRUE(RunSync(*client, [&]() -> Status {
                return client->Connect(ep, {}, [&](Result<std::shared_ptr<Connection>> r) {
                  result = r ? Status::Ok() : r.error();
                  done = true;
                });
              }).ok());
  ASSERT_TRUE(Eventually([&] { return done.load(); }, [&] { clock_.Advance(200); }));
  EXPECT_EQ(result.code(), StatusCode::kUnavailable);
  EXPECT_EQ(result.message(), "handshake timed out");
  close(fd);
  EXPECT_TRUE(client->Shutdown().ok());
}

TEST_F(TcpTransportTest, GarbageInsteadOfAHandshakeIsRejected) {
  auto server = NewTransport(1);
  Collected sc;
  auto listener = ListenEcho(*server, sc);
  const int fd = RawConnect(listener->endpoint().port);
  Bytes garbage(2 + 80, 0x41);
  garbage[0] = 0;
  garbage[1] = 80;
  ASSERT_EQ(send(fd, garbage.data(), garbage.size(), 0), static_cast<ssize_t>(garbage.size()));
  ASSERT_TRUE(Eventually([&] { return ClosedByServer(fd); }));
  ASSERT_TRUE(Eventually([&] { return sc.rejected_count() == 1; }));
  {
    std::lock_guard<std::mutex> l(sc.mu);
    EXPECT_EQ(sc.rejected[0].code(), StatusCode::kPermissionDenied);
  }
  close(fd);
  EXPECT_TRUE(server->Shutdown().ok());
}

TEST_F(TcpTransportTest, BackpressureRefusesPastHighWaterAndSignalsWritable) {
  TransportOptions opts;
  opts.send_high_water = 64 * 1024;
  opts.send_low_water = 16 * 1024;
  auto server = NewTransport(1);
  auto client = NewTransport(2, opts);
  Collected sc;
  auto listener = ListenEcho(*server, sc);

  constexpr uint32_t kFrames = 2000;
  constexpr size_t kFrameSize = 4096;
  struct Sender {
    std::shared_ptr<Connection> conn;
    uint32_t next = 0;
    std::atomic<int> refusals{0};
    std::atomic<int> writable{0};
    std::atomic<bool> done{false};
    std::atomic<size_t> max_queued{0};
    void Pump() {
      while (next < kFrames) {
        Bytes f(kFrameSize, 0);
        std::memcpy(f.data(), &next, sizeof next);
        Status s = conn->Send(f);
        if (s.code() == StatusCode::kResourceExhausted) {
          ++refusals;
          return;  // on_writable will call Pump again
        }
        if (!s.ok()) return;
        max_queued = std::max(max_queued.load(), conn->queued_bytes());
        ++next;
      }
      done = true;
    }
  };
  auto sender = std::make_shared<Sender>();
  std::atomic<bool> connected{false};
  ASSERT_TRUE(RunSync(*client, [&]() -> Status {
                return client->Connect(listener->endpoint(),
                                       {.on_frame = nullptr,
                                        .on_writable =
                                            [sender] {
                                              ++sender->writable;
                                              sender->Pump();
                                            },
                                        .on_closed = nullptr},
                                       [sender, &connected](Result<std::shared_ptr<Connection>> r) {
                                         ASSERT_TRUE(r.has_value());
                                         sender->conn = *r;
                                         connected = true;
                                         sender->Pump();
                                       });
              }).ok());
  ASSERT_TRUE(Eventually([&] { return sender->done.load(); }));
  ASSERT_TRUE(Eventually([&] { return sc.frame_count() == kFrames; }));
  EXPECT_GT(sender->refusals.load(), 0) << "the queue never reached the high-water mark";
  EXPECT_EQ(sender->writable.load(), sender->refusals.load()) << "one on_writable per refusal";
  EXPECT_LT(sender->max_queued.load(), opts.send_high_water + kFrameSize + kFrameHeaderSize);
  {
    std::lock_guard<std::mutex> l(sc.mu);
    for (uint32_t i = 0; i < kFrames; ++i) {
      uint32_t seq;
      std::memcpy(&seq, sc.frames[i].data(), sizeof seq);
      ASSERT_EQ(seq, i) << "frames arrive whole and in order";
    }
  }
  sender->conn.reset();
  EXPECT_TRUE(client->Shutdown().ok());
  EXPECT_TRUE(server->Shutdown().ok());
}

TEST_F(TcpTransportTest, GracefulCloseFlushesQueuedFrames) {
  auto server = NewTransport(1);
  auto client = NewTransport(2);
  Collected sc, cc;
  auto listener = ListenEcho(*server, sc);
  auto conn = ConnectTo(*client, listener->endpoint(), cc);
  ASSERT_TRUE(conn.has_value());
  ASSERT_TRUE(RunSync(*client, [&]() -> Status {
                for (int i = 0; i < 50; ++i)
                  CW_RETURN_IF_ERROR((*conn)->Send(Bytes(10000, static_cast<uint8_t>(i))));
                (*conn)->Close(Status(StatusCode::kOk, "bye"));
                return Status::Ok();
              }).ok());
  ASSERT_TRUE(Eventually([&] { return sc.closed_count() == 1; }));
  EXPECT_EQ(sc.frame_count(), 50u) << "every frame queued before Close arrived before the close";
  ASSERT_TRUE(Eventually([&] { return cc.closed_count() == 1; }));
  {
    std::lock_guard<std::mutex> l(cc.mu);
    EXPECT_EQ(cc.closed[0].message(), "bye") << "the reason given to Close";
  }
  EXPECT_TRUE(client->Shutdown().ok());
  EXPECT_TRUE(server->Shutdown().ok());
}

TEST_F(TcpTransportTest, PostAndTimersRunOnTheLoopThread) {
  auto t = NewTransport(1);
  std::atomic<int> posted{0};
  std::atomic<bool> on_loop{true};
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(t->Post([&] {
                   if (!t->IsLoopThread()) on_loop = false;
                   ++posted;
                 }).ok());
  }
  EXPECT_FALSE(t->IsLoopThread());
  ASSERT_TRUE(Eventually([&] { return posted.load() == 100; }));
  std::atomic<int> fired{0};
  Transport::TimerId cancelled = 0;
  ASSERT_TRUE(RunSync(*t, [&] {
                t->ScheduleAfter(500, [&] { fired += 1; });
                cancelled = t->ScheduleAfter(500, [&] { fired += 100; });
                t->CancelTimer(cancelled);
                return Status::Ok();
              }).ok());
  clock_.Advance(500);
  ASSERT_TRUE(Eventually([&] { return fired.load() >= 1; }));
  EXPECT_EQ(fired.load(), 1);
  EXPECT_TRUE(on_loop);
  EXPECT_TRUE(t->Shutdown().ok());
  EXPECT_EQ(t->Post([] {}).code(), StatusCode::kUnavailable);
  EXPECT_TRUE(t->Shutdown().ok()) << "idempotent";
}

TEST_F(TcpTransportTest, ManyClientsAtOnce) {
  auto server = NewTransport(1);
  Collected sc;
  auto listener = ListenEcho(*server, sc);
  std::vector<std::unique_ptr<TcpTransport>> clients;
  std::vector<Collected> collected(8);
  std::vector<std::shared_ptr<Connection>> conns;
  for (int i = 0; i < 8; ++i) {
    clients.push_back(NewTransport(100 + i));
    auto c = ConnectTo(*clients.back(), listener->endpoint(), collected[i]);
    ASSERT_TRUE(c.has_value());
    conns.push_back(*c);
    ASSERT_TRUE(RunSync(*clients.back(), [&] {
                  return conns.back()->Send(ToBytes("client " + std::to_string(i)));
                }).ok());
  }
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(Eventually([&] { return collected[i].frame_count() == 1; }));
    std::lock_guard<std::mutex> l(collected[i].mu);
    EXPECT_EQ(collected[i].frames[0], ToBytes("client " + std::to_string(i)));
  }
  {
    std::lock_guard<std::mutex> l(sc.mu);
    std::set<PublicKey> keys(sc.accepted_keys.begin(), sc.accepted_keys.end());
    EXPECT_EQ(keys.size(), 8u);
  }
  conns.clear();
  for (auto& c : clients) EXPECT_TRUE(c->Shutdown().ok());
  ASSERT_TRUE(Eventually([&] { return sc.closed_count() == 8; }));
  EXPECT_TRUE(server->Shutdown().ok());
}

}  // namespace
}  // namespace cw::transport
