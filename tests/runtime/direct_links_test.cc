// DirectLinks (core/runtime/direct_links.h) on its own, over the deterministic in-memory network: what a
// hostile contact can and cannot do to a client's direct links. The client around it is exercised end to end
// in direct_test.cc; here every peer is driven by hand, so a test can misbehave on purpose.
#include "core/runtime/direct_links.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/session/store.h"
#include "core/wire/direct.h"
#include "transport/in_memory.h"

namespace cw::runtime {
namespace {

constexpr int64_t kAckTimeoutMs = 1'000;
constexpr int64_t kReconnectMinMs = 200;

// One device: its node on the network, its store and its DirectLinks, plus what the callbacks saw.
struct Device {
  std::string name;
  transport::Transport* transport = nullptr;
  session::InMemoryStore store;
  std::unique_ptr<DirectLinks> links;
  std::vector<std::string> contacts;
  std::map<std::string, Bytes> announced;  // contact -> the last announcement payload queued for it
  struct Delivered {
    std::string contact;
    DirectLinks::MessageId id;
    DirectLinks::AckFn ack;
  };
  std::vector<Delivered> delivered;
  bool auto_ack = true;
  std::vector<std::string> reports;  // what the report callback was told
  size_t Reported(const std::string& text) const {
    return static_cast<size_t>(std::count_if(reports.begin(), reports.end(), [&](const std::string& r) {
      return r.find(text) != std::string::npos;
    }));
  }
};

class DirectLinksTest : public ::testing::Test {
 protected:
  DirectLinksTest() : net_(7, clock_) {}

  Device& Add(const std::string& name) {
    auto d = std::make_unique<Device>();
    d->name = name;
    auto t = net_.AddNode(name, transport::StaticKeyPair::Generate(random_));
    EXPECT_TRUE(t.has_value());
    d->transport = *t;
    Device* raw = d.get();
    Reopen(*raw, name + ":0");
    devices_.push_back(std::move(d));
    return *raw;
  }

  // A new DirectLinks for `d` on the same node and store (as after a restart), listening on `listen`.
  static void Reopen(Device& d, const std::string& listen) {
    if (d.links) d.links->Stop();
    Device* raw = &d;
    DirectLinks::Deps deps;
    deps.transport = raw->transport;
    deps.store = &raw->store;
    deps.send = [raw](const std::string& contact, const wire::AppMessage& m) {
      raw->announced[contact] = Bytes(m.payload.reveal().begin(), m.payload.reveal().end());
      return Status::Ok();
    };
    deps.contacts = [raw] { return raw->contacts; };
    deps.deliver = [raw](const std::string& contact, const DirectLinks::MessageId& id, Bytes,
                         DirectLinks::AckFn ack) {
      if (raw->auto_ack) ack();
      raw->delivered.push_back({contact, id, std::move(ack)});
    };
    deps.link_up = [](const std::string&) {};
    deps.report = [raw](const Status& s) { raw->reports.push_back(s.message()); };
    DirectLinks::Options o;
    o.listen = listen;
    o.ack_timeout_ms = kAckTimeoutMs;
    o.reconnect_min_ms = kReconnectMinMs;
    raw->links = std::make_unique<DirectLinks>(std::move(deps), std::move(o));
  }

  // `from` and `to` become contacts; each hands the other its announcement.
  void Befriend(Device& a, Device& b) {
    a.contacts.push_back(b.name);
    b.contacts.push_back(a.name);
    a.links->OnNewContact(b.name);
    b.links->OnNewContact(a.name);
    ASSERT_TRUE(b.links->OnAnnouncement(a.name, a.announced.at(b.name)).ok());
    ASSERT_TRUE(a.links->OnAnnouncement(b.name, b.announced.at(a.name)).ok());
    net_.RunUntilIdle();
  }

  static Bytes Deliver(uint8_t n) {
    wire::DirectFrame f;
    f.id.fill(n);
    f.envelope = Bytes(8, n);
    return *wire::EncodeDirectFrame(f);
  }

  // A raw link from `from`'s node to `to`'s listener, outside any DirectLinks; nullptr when refused.
  std::shared_ptr<transport::Connection> RawConnect(Device& from, Device& to, bool* closed) {
    auto ep = transport::Endpoint::Parse(to.links->endpoint());
    EXPECT_TRUE(ep.has_value());
    ep->static_key = to.transport->local_static_key();
    std::shared_ptr<transport::Connection> out;
    transport::ConnectionCallbacks cbs;
    cbs.on_closed = [closed](Status) { *closed = true; };
    EXPECT_TRUE(from.transport
                    ->Connect(*ep, std::move(cbs),
                              [&out](Result<std::shared_ptr<transport::Connection>> c) {
                                if (c) out = *c;
                              })
                    .ok());
    net_.RunUntilIdle();
    return out;
  }

  FakeClock clock_;
  SeededRandom random_{11};
  transport::InMemoryNetwork net_;
  std::vector<std::unique_ptr<Device>> devices_;
};

TEST_F(DirectLinksTest, MessageGoesDirectlyAndIsAcked) {
  Device& alice = Add("alice");
  Device& bob = Add("bob");
  ASSERT_TRUE(alice.links->Start().ok());
  ASSERT_TRUE(bob.links->Start().ok());
  Befriend(alice, bob);
  ASSERT_TRUE(alice.links->IsUp("bob"));
  std::optional<Status> result;
  DirectLinks::MessageId id{};
  id.fill(1);
  const Bytes env(10, 1);
  alice.links->Send("bob", id, env, [&](Status s) { result = s; });
  net_.RunUntilIdle();
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->ok()) << result->ToString();
  ASSERT_EQ(bob.delivered.size(), 1u);
  EXPECT_EQ(bob.delivered[0].contact, "alice");
}

// A contact may announce any key, including another contact's: links proving that key must then not be
// attributed to it (it would speak for the other contact's link, and could close it by re-announcing).
TEST_F(DirectLinksTest, LinkWithAKeyTwoContactsAnnouncedIsNotAttributedToEither) {
  Device& alice = Add("alice");
  Device& bob = Add("bob");
  Device& aaron = Add("aaron");  // sorts before bob
  ASSERT_TRUE(alice.links->Start().ok());
  ASSERT_TRUE(bob.links->Start().ok());
  ASSERT_TRUE(aaron.links->Start().ok());
  Befriend(alice, bob);
  alice.contacts.push_back("aaron");
  // aaron announces bob's link key (bob told it to every contact, so aaron may well know it).
  wire::DirectEndpoint forged;
  forged.link_key = bob.transport->local_static_key();
  ASSERT_TRUE(alice.links->OnAnnouncement("aaron", *wire::EncodeDirectEndpoint(forged)).ok());
  // bob's next link to alice and what it carries.
  bool closed = false;
  auto link = RawConnect(bob, alice, &closed);
  ASSERT_NE(link, nullptr);
  (void)link->Send(Deliver(9));
  net_.Advance(transport::kDefaultHandshakeTimeoutMillis);
  for (const auto& d : alice.delivered) EXPECT_NE(d.contact, "aaron");
  EXPECT_TRUE(closed);
}

// A contact can open links to us at will: only its newest one is kept, so it cannot pile up connections.
TEST_F(DirectLinksTest, OnlyTheNewestIncomingLinkOfAContactIsKept) {
  Device& alice = Add("alice");
  Device& bob = Add("bob");
  ASSERT_TRUE(alice.links->Start().ok());
  ASSERT_TRUE(bob.links->Start().ok());
  Befriend(alice, bob);
  bob.links->Stop();  // from here on bob's links are opened by hand
  net_.Advance(transport::kDefaultHandshakeTimeoutMillis);
  constexpr int kLinks = 5;
  bool closed[kLinks] = {};
  std::vector<std::shared_ptr<transport::Connection>> links;
  for (int i = 0; i < kLinks; ++i) {
    links.push_back(RawConnect(bob, alice, &closed[i]));
    ASSERT_NE(links.back(), nullptr);
  }
  net_.Advance(transport::kDefaultHandshakeTimeoutMillis);
  for (int i = 0; i + 1 < kLinks; ++i) EXPECT_TRUE(closed[i]) << "link " << i << " was kept";
  EXPECT_FALSE(closed[kLinks - 1]);
  // The newest still carries messages.
  ASSERT_TRUE(links.back()->Send(Deliver(3)).ok());
  net_.RunUntilIdle();
  ASSERT_FALSE(alice.delivered.empty());
  EXPECT_EQ(alice.delivered.back().contact, "bob");
}

// A contact that accepts links but never acks costs each message the ack timeout, and the client's outbox
// is one queue: the link must not come back at the minimum delay every time, or that contact holds up
// everyone else's messages for good.
TEST_F(DirectLinksTest, AContactThatNeverAcksIsRetriedLessAndLessOften) {
  Device& alice = Add("alice");
  Device& bob = Add("bob");
  ASSERT_TRUE(alice.links->Start().ok());
  ASSERT_TRUE(bob.links->Start().ok());
  Befriend(alice, bob);
  bob.auto_ack = false;
  for (uint8_t round = 1; round <= 3; ++round) {
    ASSERT_TRUE(alice.links->IsUp("bob")) << "round " << int(round);
    std::optional<Status> result;
    DirectLinks::MessageId id{};
    id.fill(round);
    alice.links->Send("bob", id, Bytes(8, round), [&](Status s) { result = s; });
    net_.Advance(kAckTimeoutMs);
    ASSERT_TRUE(result.has_value());
    EXPECT_EQ(result->code(), StatusCode::kUnavailable);
    EXPECT_FALSE(alice.links->IsUp("bob"));
    net_.Advance(kReconnectMinMs << (round - 1));
  }
  // After three timeouts in a row, a fourth drop waits 8x the minimum delay, not the minimum.
  ASSERT_TRUE(alice.links->IsUp("bob"));
  std::optional<Status> result;
  DirectLinks::MessageId id{};
  id.fill(4);
  alice.links->Send("bob", id, Bytes(8, 4), [&](Status s) { result = s; });
  net_.Advance(kAckTimeoutMs);
  net_.Advance(kReconnectMinMs * 2);
  EXPECT_FALSE(alice.links->IsUp("bob"));
  // An ack resets it: the next drop reconnects at the minimum delay again.
  net_.Advance(kReconnectMinMs * 8);
  ASSERT_TRUE(alice.links->IsUp("bob"));
  bob.auto_ack = true;
  result.reset();
  id.fill(5);
  alice.links->Send("bob", id, Bytes(8, 5), [&](Status s) { result = s; });
  net_.RunUntilIdle();
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->ok());
  net_.BreakConnections("bob", Status(StatusCode::kUnavailable, "restart"));
  net_.RunUntilIdle();
  net_.Advance(kReconnectMinMs);
  EXPECT_TRUE(alice.links->IsUp("bob"));
}

// A contact that announces a new endpoint while a message waits for its ack: the message is not lost in
// between; it is failed as kUnavailable (go to the relay), not kAborted (which the client keeps for Lock and
// close and answers by ending the flush, leaving the entry in the outbox with nothing to flush it again).
TEST_F(DirectLinksTest, ANewAnnouncementSendsWhatWaitedToTheRelay) {
  Device& alice = Add("alice");
  Device& bob = Add("bob");
  ASSERT_TRUE(alice.links->Start().ok());
  ASSERT_TRUE(bob.links->Start().ok());
  Befriend(alice, bob);
  bob.auto_ack = false;
  std::optional<Status> result;
  DirectLinks::MessageId id{};
  id.fill(1);
  alice.links->Send("bob", id, Bytes(8, 1), [&](Status s) { result = s; });
  net_.RunUntilIdle();
  ASSERT_FALSE(result.has_value());
  wire::DirectEndpoint moved;
  moved.link_key = bob.transport->local_static_key();  // bob stopped listening
  ASSERT_TRUE(alice.links->OnAnnouncement("bob", *wire::EncodeDirectEndpoint(moved)).ok());
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), StatusCode::kUnavailable);
}

// A contact made while direct links were off still hears of this device's endpoint once they are on again,
// even on the same fixed port as before (nothing else would ever tell it).
TEST_F(DirectLinksTest, AContactMadeWhileOffIsToldOnceOnAgain) {
  Device& alice = Add("alice");
  Device& bob = Add("bob");
  Reopen(alice, "alice:7000");
  ASSERT_TRUE(alice.links->Start().ok());
  ASSERT_TRUE(bob.links->Start().ok());
  Befriend(alice, bob);
  Reopen(alice, "");  // a run without direct links
  ASSERT_TRUE(alice.links->Start().ok());
  alice.contacts.push_back("carol");
  alice.links->OnNewContact("carol");
  EXPECT_EQ(alice.announced.count("carol"), 0u);
  Reopen(alice, "alice:7000");
  ASSERT_TRUE(alice.links->Start().ok());
  EXPECT_EQ(alice.announced.count("carol"), 1u);
}

// Found in review: a contact chooses the address it announces, and this device dialled it for as long as it
// ran, so a hostile contact could make it knock on its own loopback, link-local or broadcast addresses (or a
// cloud's metadata service at 169.254.169.254). Those are never dialled.
TEST_F(DirectLinksTest, AnAnnouncedAddressOfTheWrongKindIsNeverDialled) {
  Device& alice = Add("alice");
  ASSERT_TRUE(alice.links->Start().ok());
  alice.contacts.push_back("mallory");
  const std::vector<std::pair<std::string, uint16_t>> refused = {
      {"0.0.0.0", 7000},   {"255.255.255.255", 7000}, {"224.0.0.1", 7000}, {"169.254.169.254", 7000},
      {"::", 7000},        {"fe80::1", 7000},         {"ff02::1", 7000},   {"::ffff:169.254.1.1", 7000},
      {"127.0.0.1", 7000},  // alice does not listen on loopback
      {"10.0.0.5", 80},     // a privileged port
  };
  for (const auto& [host, port] : refused) {
    wire::DirectEndpoint e;
    e.link_key.fill(7);
    e.host = host;
    e.port = port;
    const size_t before = alice.Reported("will not dial");
    ASSERT_TRUE(alice.links->OnAnnouncement("mallory", *wire::EncodeDirectEndpoint(e)).ok()) << host;
    net_.RunUntilIdle();
    EXPECT_EQ(alice.Reported("will not dial"), before + 1) << host;
    int64_t when = 0;
    EXPECT_FALSE(net_.NextEventTime(&when)) << host << ": something was scheduled";
  }
}

// An endpoint that never answers is tried kDirectMaxConnectFailures times, then left alone (its messages go
// by the relay) instead of being dialled for as long as the device runs.
TEST_F(DirectLinksTest, AnEndpointThatNeverAnswersIsGivenUp) {
  Device& alice = Add("alice");
  ASSERT_TRUE(alice.links->Start().ok());
  alice.contacts.push_back("ghost");
  wire::DirectEndpoint e;
  e.link_key.fill(9);
  e.host = "nobody";  // no such node: every connect fails
  e.port = 7000;
  ASSERT_TRUE(alice.links->OnAnnouncement("ghost", *wire::EncodeDirectEndpoint(e)).ok());
  int64_t when = 0;
  for (int i = 0; i < 100 && net_.NextEventTime(&when); ++i) net_.Advance(when - clock_.NowMillis());
  EXPECT_FALSE(net_.NextEventTime(&when)) << "still retrying";
  EXPECT_EQ(alice.Reported("stopped answering"), 1u);
  // A new announcement is tried afresh.
  e.port = 7001;
  ASSERT_TRUE(alice.links->OnAnnouncement("ghost", *wire::EncodeDirectEndpoint(e)).ok());
  net_.RunUntilIdle();
  EXPECT_TRUE(net_.NextEventTime(&when)) << "the new endpoint is not being tried";
}

TEST_F(DirectLinksTest, AWildcardListenAddressIsRefused) {
  Device& alice = Add("alice");
  for (const std::string listen : {"0.0.0.0:7000", "[::]:7000"}) {
    Reopen(alice, listen);
    EXPECT_EQ(alice.links->Start().code(), StatusCode::kInvalidArgument) << listen;
  }
}

}  // namespace
}  // namespace cw::runtime
