// The seeded in-memory network: same Transport interface, deterministic faults, fake time.
#include "transport/in_memory.h"

#include <gtest/gtest.h>

#include <set>

#include "core/base/random.h"

namespace cw::transport {
namespace {

struct Node {
  Transport* t = nullptr;
  std::vector<Bytes> frames;
  std::vector<Status> closed;
  std::vector<std::shared_ptr<Connection>> conns;
};

class InMemoryTest : public ::testing::Test {
 protected:
  void Build(uint64_t seed, Faults faults = {}, TransportOptions server_options = {}) {
    net_ = std::make_unique<InMemoryNetwork>(seed, clock_, faults);
    SeededRandom rng(seed);
    server_.t = *net_->AddNode("relay", StaticKeyPair::Generate(rng), server_options);
    client_.t = *net_->AddNode("alice", StaticKeyPair::Generate(rng));
    auto l = server_.t->Listen({"relay", 443, std::nullopt}, [this](std::shared_ptr<Connection> c) {
      c->SetCallbacks({.on_frame = [this](ByteView f) { server_.frames.emplace_back(f.begin(), f.end()); },
                       .on_writable = nullptr,
                       .on_closed = [this](Status s) { server_.closed.push_back(s); }});
      server_.conns.push_back(c);
    });
    ASSERT_TRUE(l.has_value());
    listener_ = *l;
  }

  Result<std::shared_ptr<Connection>> Connect(Endpoint ep) {
    std::optional<Result<std::shared_ptr<Connection>>> out;
    Status s = client_.t->Connect(
        ep,
        {.on_frame = [this](ByteView f) { client_.frames.emplace_back(f.begin(), f.end()); },
         .on_writable = nullptr,
         .on_closed = [this](Status s) { client_.closed.push_back(s); }},
        [&](Result<std::shared_ptr<Connection>> r) { out = std::move(r); });
    if (!s.ok()) return Error(s);
    EXPECT_FALSE(out.has_value()) << "on_connected never runs inside Connect";
    for (int i = 0; i < 100 && !out; ++i) net_->Advance(10'000);
    if (!out) return Error(StatusCode::kInternal, "never connected");
    return *out;
  }

  FakeClock clock_;
  std::unique_ptr<InMemoryNetwork> net_;
  Node server_, client_;
  std::shared_ptr<Listener> listener_;
};

TEST_F(InMemoryTest, PerfectNetworkDeliversInOrderExactlyOnce) {
  Build(1);
  auto c = Connect(listener_->endpoint());
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  net_->RunUntilIdle();
  ASSERT_EQ(server_.conns.size(), 1u);
  EXPECT_EQ(server_.conns[0]->remote_static_key(), client_.t->local_static_key());
  EXPECT_EQ((*c)->remote_static_key(), server_.t->local_static_key());
  EXPECT_EQ(server_.conns[0]->peer_address(), "alice");
  for (int i = 0; i < 100; ++i) ASSERT_TRUE((*c)->Send(ToBytes(std::to_string(i))).ok());
  net_->RunUntilIdle();
  ASSERT_EQ(server_.frames.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(server_.frames[i], ToBytes(std::to_string(i)));
}

TEST_F(InMemoryTest, PinnedKeyMismatchAndRefusal) {
  Build(2);
  Endpoint wrong = listener_->endpoint();
  wrong.static_key = client_.t->local_static_key();
  auto c = Connect(wrong);
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), StatusCode::kPermissionDenied);
  Endpoint nobody{"relay", 444, server_.t->local_static_key()};
  auto d = Connect(nobody);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(client_.t->Connect({"relay", 443, std::nullopt}, {}, [](auto) {}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(server_.conns.empty());
}

TEST_F(InMemoryTest, FaultsAreDeterministicPerSeed) {
  Faults f;
  f.drop_probability = 0.1;
  f.duplicate_probability = 0.1;
  f.latency_millis = 5;
  f.jitter_millis = 50;
  auto run = [&](uint64_t seed) {
    Build(seed, f);
    net_->set_faults({});  // connect cleanly, then turn the faults on
    auto c = Connect(listener_->endpoint());
    EXPECT_TRUE(c.has_value());
    net_->set_faults(f);
    for (int i = 0; i < 500; ++i) EXPECT_TRUE((*c)->Send(ToBytes(std::to_string(i))).ok());
    net_->Advance(1000);
    return server_.frames;
  };
  const auto a = run(7);
  server_ = {};
  client_ = {};
  const auto b = run(7);
  EXPECT_EQ(a, b) << "same seed, same run";
  const auto stats = net_->stats();
  EXPECT_GT(stats.frames_dropped, 0u);
  EXPECT_GT(stats.frames_duplicated, 0u);
  EXPECT_EQ(stats.frames_delivered, a.size());
  // Out of order somewhere, duplicates present, some missing.
  bool reordered = false;
  for (size_t i = 1; i < a.size(); ++i) {
    if (std::stoi(std::string(a[i].begin(), a[i].end())) <
        std::stoi(std::string(a[i - 1].begin(), a[i - 1].end()))) {
      reordered = true;
    }
  }
  EXPECT_TRUE(reordered);
  std::set<std::string> distinct;
  for (const auto& f : a) distinct.insert(std::string(f.begin(), f.end()));
  EXPECT_LT(distinct.size(), a.size());
  EXPECT_LT(distinct.size(), 500u);
}

TEST_F(InMemoryTest, DelaysFollowTheFakeClock) {
  Faults f;
  f.latency_millis = 100;
  Build(3, f);
  auto c = Connect(listener_->endpoint());
  ASSERT_TRUE(c.has_value());
  net_->Advance(1000);
  ASSERT_TRUE((*c)->Send(ToBytes("x")).ok());
  net_->Advance(99);
  EXPECT_TRUE(server_.frames.empty());
  net_->Advance(1);
  EXPECT_EQ(server_.frames.size(), 1u);
}

TEST_F(InMemoryTest, LostConnectAttemptTimesOutOnTheFakeClock) {
  Faults f;
  f.drop_probability = 1.0;
  TransportOptions o;
  Build(4, f);
  std::optional<Status> result;
  ASSERT_TRUE(
      client_.t
          ->Connect(listener_->endpoint(), {},
                    [&](Result<std::shared_ptr<Connection>> r) { result = r ? Status::Ok() : r.error(); })
          .ok());
  net_->Advance(o.handshake_timeout_millis - 1);
  EXPECT_FALSE(result.has_value());
  net_->Advance(1);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->message(), "handshake timed out");
}

TEST_F(InMemoryTest, BackpressureDrainsAsTimePasses) {
  TransportOptions o;
  Faults f;
  f.latency_millis = 10;
  Build(5, f);
  auto c = Connect(listener_->endpoint());
  ASSERT_TRUE(c.has_value());
  int writable = 0;
  (*c)->SetCallbacks({.on_frame = nullptr, .on_writable = [&] { ++writable; }, .on_closed = nullptr});
  int sent = 0;
  while ((*c)->Send(Bytes(64 * 1024, 1)).ok()) ++sent;
  EXPECT_EQ((*c)->Send(Bytes(1)).code(), StatusCode::kResourceExhausted);
  EXPECT_GE((*c)->queued_bytes(), o.send_high_water);
  net_->Advance(10);
  EXPECT_EQ(writable, 1);
  EXPECT_EQ((*c)->queued_bytes(), 0u);
  EXPECT_EQ(server_.frames.size(), static_cast<size_t>(sent));
}

TEST_F(InMemoryTest, CloseReachesThePeerAfterItsFramesAndTimersFire) {
  Build(6);
  auto c = Connect(listener_->endpoint());
  ASSERT_TRUE(c.has_value());
  net_->RunUntilIdle();
  ASSERT_TRUE((*c)->Send(ToBytes("last words")).ok());
  (*c)->Close(Status(StatusCode::kOk, "done"));
  EXPECT_TRUE(client_.closed.empty()) << "on_closed never runs inside Close";
  EXPECT_EQ((*c)->Send(ToBytes("x")).code(), StatusCode::kUnavailable);
  net_->RunUntilIdle();
  ASSERT_EQ(client_.closed.size(), 1u);
  EXPECT_EQ(client_.closed[0].message(), "done");
  ASSERT_EQ(server_.frames.size(), 1u);
  ASSERT_EQ(server_.closed.size(), 1u);
  EXPECT_EQ(server_.closed[0].code(), StatusCode::kUnavailable);

  int fired = 0;
  server_.t->ScheduleAfter(50, [&] { ++fired; });
  auto id = server_.t->ScheduleAfter(50, [&] { fired += 100; });
  server_.t->CancelTimer(id);
  net_->Advance(49);
  EXPECT_EQ(fired, 0);
  net_->Advance(1);
  EXPECT_EQ(fired, 1);
  ASSERT_TRUE(server_.t->Post([&] { fired += 10; }).ok());
  EXPECT_EQ(fired, 1) << "never inside Post";
  net_->RunUntilIdle();
  EXPECT_EQ(fired, 11);
}

TEST_F(InMemoryTest, BreakingAndRemovingNodes) {
  Build(7);
  auto c = Connect(listener_->endpoint());
  ASSERT_TRUE(c.has_value());
  net_->RunUntilIdle();
  net_->BreakConnections("relay", Status(StatusCode::kUnavailable, "relay restarted"));
  net_->RunUntilIdle();
  ASSERT_EQ(server_.closed.size(), 1u);
  EXPECT_EQ(server_.closed[0].message(), "relay restarted");
  ASSERT_EQ(client_.closed.size(), 1u);
  EXPECT_EQ(client_.closed[0].message(), "connection lost");
  // Reconnect still works: listeners survive a link failure.
  auto again = Connect(listener_->endpoint());
  ASSERT_TRUE(again.has_value());
  net_->RemoveNode("relay");
  net_->RunUntilIdle();
  EXPECT_EQ(client_.closed.size(), 2u);
  EXPECT_FALSE(Connect(listener_->endpoint()).has_value());
}

}  // namespace
}  // namespace cw::transport
