// RelayServer over real TcpTransport on loopback: Noise links, commands, pushes, per-address limits, stop.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <limits>
#include <thread>

#include "relay/rocksdb_mailbox_store.h"
#include "relay/server.h"
#include "tests/relay/link_client.h"
#include "tests/relay/relay_test_util.h"
#include "transport/tcp_transport.h"

namespace cw::relay {
namespace {

using testing::MailboxWithToken;
using testing::Mid;

using Client = testing::LinkClient;

class RelayServerTest : public ::testing::Test {
 protected:
  // `server_clock`: what the server's limits run on (the system clock when null).
  void Start(ServerOptions options = {}, const Clock* server_clock = nullptr) {
    store_ = RocksDbMailboxStore::Open(dir_.Sub("db")).value();
    service_ = std::make_unique<RelayService>(*store_, SystemClock::Default(), random_);
    SeededRandom r(99);
    transport_ = std::move(transport::TcpTransport::New(transport::StaticKeyPair::Generate(r)).value());
    server_ = RelayServer::Start(*transport_, *service_, transport::Endpoint::Parse("127.0.0.1:0").value(),
                                 options, log_, server_clock ? *server_clock : SystemClock::Default())
                  .value();
  }
  void TearDown() override {
    if (server_) server_->Stop();
    if (transport_) transport_->Shutdown().ok();
    server_.reset();
    transport_.reset();
    service_.reset();
    store_.reset();
  }

  testing::TempDir dir_;
  FakeClock still_clock_;  // outlives the server (TearDown stops it), which reads it until then
  SeededRandom random_{5};
  MemoryLogSink log_;
  std::unique_ptr<RocksDbMailboxStore> store_;
  std::unique_ptr<RelayService> service_;
  std::unique_ptr<transport::TcpTransport> transport_;
  std::unique_ptr<RelayServer> server_;
};

TEST_F(RelayServerTest, DepositOverNoiseLinkIsPushedToConnectedOwner) {
  Start();
  const transport::Endpoint relay = server_->endpoint();
  ASSERT_TRUE(relay.static_key.has_value());
  Client alice(1, relay);
  ASSERT_TRUE(alice.connected());
  alice.Send(CreateMailbox{});
  Response created = alice.NextResponse();
  ASSERT_EQ(created.code, ResponseCode::kOk) << created.message;
  const MailboxId box = std::get<MailboxCreated>(created.body).mailbox;
  alice.Send(IssueDepositToken{box});
  const DepositToken token = std::get<TokenIssued>(alice.NextResponse().body).token;

  Client bob(2, relay);
  ASSERT_TRUE(bob.connected());
  bob.Send(relay::Deposit{box, token, Mid(1), Bytes(512, 0x42)});
  EXPECT_EQ(bob.NextResponse().code, ResponseCode::kOk);
  bob.Send(relay::Deposit{box, DepositToken{}, Mid(2), Bytes(512, 0x42)});
  EXPECT_EQ(bob.NextResponse().code, ResponseCode::kDepositRefused);

  auto pushed = alice.Next();
  ASSERT_TRUE(pushed.has_value());
  const auto& d = std::get<Delivery>(*pushed);
  EXPECT_EQ(d.request_id, 0u);
  EXPECT_EQ(d.message_id, Mid(1));
  EXPECT_EQ(d.envelope, Bytes(512, 0x42));
  // Bob cannot read alice's mailbox even over his own authenticated link.
  bob.Send(FetchMessages{box, 0, 10});
  EXPECT_EQ(bob.NextResponse().code, ResponseCode::kNotFound);
  EXPECT_EQ(server_->connection_count(), 2u);
}

TEST(FitToOpenFileLimit, LeavesTheStoreItsDescriptors) {
  const ServerOptions defaults;
  // Room for every cap: nothing changes.
  const ServerOptions roomy = FitToOpenFileLimit(defaults, 1 << 20);
  EXPECT_EQ(roomy.max_connections, defaults.max_connections);
  EXPECT_EQ(roomy.max_handshaking, defaults.max_handshaking);
  // This machine's hard limit: 20000 connections and 1024 handshakes would leave the store nothing.
  const ServerOptions tight = FitToOpenFileLimit(defaults, 20000);
  EXPECT_EQ(tight.max_handshaking, defaults.max_handshaking);
  EXPECT_EQ(tight.max_connections + tight.max_handshaking, 20000u - kReservedDescriptors);
  // A small limit: a quarter stays with the store, handshakes get a sixteenth of the rest.
  const ServerOptions small = FitToOpenFileLimit(defaults, 256);
  EXPECT_EQ(small.max_handshaking, 12u);
  EXPECT_EQ(small.max_handshaking_per_address, 12u);
  EXPECT_EQ(small.max_connections, 180u);
  EXPECT_EQ(small.max_connections_per_address, defaults.max_connections_per_address);
}

TEST_F(RelayServerTest, AHandshakeEndingAfterTheServerIsGoneReachesNothingOfIt) {
  Start();
  // A TCP connection that never says a word: the transport holds it as a handshake in progress.
  const int silent = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(silent, 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(server_->endpoint().port);
  ASSERT_EQ(::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr), 1);
  ASSERT_EQ(::connect(silent, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
  {
    // Accepted after it, so once this handshake is through the relay's loop has taken the silent one too.
    Client after(1, server_->endpoint());
    ASSERT_TRUE(after.connected());
  }
  server_->Stop();
  server_.reset();
  // The transport's shutdown ends the silent handshake: the server that listened is gone, and must not hear.
  transport_->Shutdown().ok();
  transport_.reset();
  ::close(silent);
  bool stopped = false;
  for (const std::string& line : log_.Lines()) {
    if (line.find("event=stopped") != std::string::npos) stopped = true;
    EXPECT_FALSE(stopped && line.find("event=handshake_rejected") != std::string::npos) << line;
  }
  EXPECT_TRUE(stopped);
}

TEST(FitToOpenFileLimit, CapsGivenAsHugeNumbersDoNotWrapAround) {
  ServerOptions unlimited;
  unlimited.max_connections = std::numeric_limits<size_t>::max();
  const ServerOptions fitted = FitToOpenFileLimit(unlimited, 20000);
  EXPECT_EQ(fitted.max_connections + fitted.max_handshaking, 20000u - kReservedDescriptors);
}

TEST_F(RelayServerTest, ConnectionsPerAddressAreLimited) {
  ServerOptions o;
  o.max_connections_per_address = 1;
  Start(o);
  Client first(1, server_->endpoint());
  ASSERT_TRUE(first.connected());
  first.Send(CreateMailbox{});
  ASSERT_EQ(first.NextResponse().code, ResponseCode::kOk);
  Client second(2, server_->endpoint());
  // The handshake completes, then the relay closes the link at once.
  EXPECT_TRUE(second.WaitClosed());
  first.Send(CreateMailbox{});
  EXPECT_EQ(first.NextResponse().code, ResponseCode::kOk);  // the first client keeps being served
}

TEST_F(RelayServerTest, FrameFloodClosesOnlyThatAddress) {
  ServerOptions o;
  o.frame_burst = 20;
  o.frames_per_second = 1;
  Start(o);
  Client flooder(1, server_->endpoint());
  ASSERT_TRUE(flooder.connected());
  for (int i = 0; i < 100; ++i) flooder.Send(GetStats{});
  EXPECT_TRUE(flooder.WaitClosed());
  bool logged = false;
  for (const auto& l : log_.Lines()) logged |= l.find("frame rate limit") != std::string::npos;
  EXPECT_TRUE(logged);
}

// The frame budget belongs to the address, not the connection: a flooder that was cut off and reconnects
// at once finds its bucket as empty as it left it (before, the bucket went with the last connection, and
// every reconnect bought a fresh burst). The server's clock stands still here, so nothing refills.
TEST_F(RelayServerTest, ReconnectingDoesNotRefillAnAddressFrameBudget) {
  ServerOptions o;
  o.frame_burst = 5;
  o.frames_per_second = 1;
  Start(o, &still_clock_);
  {
    Client first(1, server_->endpoint());
    ASSERT_TRUE(first.connected());
    for (int i = 0; i < 5; ++i) {
      first.Send(GetStats{});
      EXPECT_EQ(first.NextResponse().code, ResponseCode::kPermissionDenied);  // answered (not an operator)
    }
    first.Send(GetStats{});
    EXPECT_TRUE(first.WaitClosed());
  }
  Client again(2, server_->endpoint());
  ASSERT_TRUE(again.connected());
  again.Send(GetStats{});
  EXPECT_TRUE(again.WaitClosed()) << "a new connection got a fresh burst";
}

// A deposit waiting for its sync holds no worker: with one worker and the committer held, the owner's fetch
// is still answered; the deposit is answered (and pushed) only once the committer writes it.
TEST_F(RelayServerTest, DepositWaitingForItsSyncHoldsNoWorker) {
  ServerOptions o;
  o.workers = 1;
  Start(o);
  Client alice(1, server_->endpoint());
  ASSERT_TRUE(alice.connected());
  const auto [box, token] = MailboxWithToken(alice);
  Client bob(2, server_->endpoint());
  ASSERT_TRUE(bob.connected());

  store_->PauseCommitsForTesting(true);
  bob.Send(relay::Deposit{box, token, Mid(1), Bytes(300, 0x11)});
  for (int i = 0; i < 10000 && store_->WaitingWritersForTesting() == 0; ++i) {  // a bound, not a timing
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(store_->WaitingWritersForTesting(), 1u);
  // The connected owner is pushed the message before its sync (its copy need not wait for the relay's
  // fsync); a fetch still hands out only synced messages.
  auto pushed = alice.Next();
  ASSERT_TRUE(pushed.has_value());
  EXPECT_EQ(std::get<Delivery>(*pushed).message_id, Mid(1));
  alice.Send(FetchMessages{box, 0, 10});
  const Response fetched = alice.NextResponse();
  ASSERT_EQ(fetched.code, ResponseCode::kOk) << fetched.message;
  EXPECT_TRUE(alice.other_.empty()) << "a fetch handed out a message not yet synced";
  EXPECT_EQ(store_->WaitingWritersForTesting(), 1u) << "the deposit was answered before its sync";

  store_->PauseCommitsForTesting(false);
  EXPECT_EQ(bob.NextResponse().code, ResponseCode::kOk);
}

// A deposit that claims an invite's token is answered only once the claim is synced too, even when the
// deposit itself needs no sync (a retried message id, stored before under another token): else a crash could
// lose the claim of an acknowledged deposit, and the invite's token would lapse under its contact.
TEST_F(RelayServerTest, ADepositThatClaimsAnInviteTokenIsAnsweredOnceTheClaimIsSynced) {
  Start();
  Client alice(1, server_->endpoint());
  ASSERT_TRUE(alice.connected());
  const auto [box, reply_card] = MailboxWithToken(alice);
  alice.Send(IssueDepositToken{box, 3600 * 1000});
  const DepositToken invite = std::get<TokenIssued>(alice.NextResponse().body).token;
  Client bob(2, server_->endpoint());
  ASSERT_TRUE(bob.connected());
  bob.Send(relay::Deposit{box, reply_card, Mid(1), Bytes(300, 0x11)});
  ASSERT_EQ(bob.NextResponse().code, ResponseCode::kOk);

  store_->PauseCommitsForTesting(true);
  bob.Send(relay::Deposit{box, invite, Mid(1), Bytes(300, 0x11)});  // a duplicate that claims `invite`
  for (int i = 0; i < 10000 && store_->WaitingWritersForTesting() == 0; ++i) {  // a bound, not a timing
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(store_->WaitingWritersForTesting(), 1u) << "the claiming deposit was answered before its claim's sync";
  store_->PauseCommitsForTesting(false);
  EXPECT_EQ(bob.NextResponse().code, ResponseCode::kOk);
  const int64_t past_the_hour = SystemClock::Default().NowMillis() + 3 * 3600 * 1000;
  EXPECT_TRUE(store_->HasDepositToken(box, HashDepositToken(box, invite), past_the_hour).value());
}

// An owner that stops reading while deposits keep coming is cut off once its send queue is full, rather than
// quietly missing the pushes that did not fit (later ones would overtake them, and an owner that stays
// connected would not fetch them until it next reconnected). Reconnecting, it fetches every one, in order.
TEST_F(RelayServerTest, AnOwnerThatStopsReadingPushesIsCutOffAndFetchesEverythingInOrder) {
  Start();
  Client alice(1, server_->endpoint());
  ASSERT_TRUE(alice.connected());
  const auto [box, token] = MailboxWithToken(alice);
  Client bob(2, server_->endpoint());
  ASSERT_TRUE(bob.connected());
  const auto cut_off = [&] {
    for (const auto& l : log_.Lines()) {
      if (l.find("slow reader of pushes") != std::string::npos) return true;
    }
    return false;
  };
  std::promise<void> resume;
  alice.Stall(resume.get_future().share());
  // Loopback's socket buffers take a few MiB before the relay's own queue (1 MiB) fills.
  constexpr uint32_t kMaxDeposits = 600;  // 36 MiB of 60 KiB envelopes, inside the 64 MiB quota
  uint32_t sent = 0;
  while (sent < kMaxDeposits && !cut_off()) {
    Bytes envelope(60 * 1024, static_cast<uint8_t>(sent));
    bob.Send(relay::Deposit{box, token, Mid(sent), std::move(envelope)});
    const Response r = bob.NextResponse();
    if (r.code != ResponseCode::kOk) break;
    ++sent;
  }
  resume.set_value();
  ASSERT_TRUE(cut_off()) << "after " << sent << " deposits";
  EXPECT_TRUE(alice.WaitClosed());

  Client again(1, server_->endpoint());  // the same link key: the owner, back
  ASSERT_TRUE(again.connected());
  std::vector<MessageId> fetched;
  uint64_t after = 0;
  for (bool more = true; more;) {
    again.Send(FetchMessages{box, after});
    const Response r = again.NextResponse();
    ASSERT_EQ(r.code, ResponseCode::kOk) << r.message;
    const auto& done = std::get<FetchDone>(r.body);
    more = done.more;
    after = done.last_seq;
    for (const auto& f : again.other_) {
      if (const auto* d = std::get_if<Delivery>(&f); d != nullptr && d->request_id != 0) {
        fetched.push_back(d->message_id);
      }
    }
    again.other_.clear();
  }
  std::vector<MessageId> deposited;
  for (uint32_t i = 0; i < sent; ++i) deposited.push_back(Mid(i));
  EXPECT_EQ(fetched, deposited);
}

TEST_F(RelayServerTest, StopAnswersTheDepositsItFinishesBeforeClosingTheirLinks) {
  Start();
  Client alice(1, server_->endpoint());
  const auto [box, token] = MailboxWithToken(alice);
  Client bob(2, server_->endpoint());
  store_->PauseCommitsForTesting(true);
  bob.Send(relay::Deposit{box, token, Mid(1), Bytes(300, 1)});
  // Taken in (alice has its push) and waiting for its sync when the stop begins.
  ASSERT_TRUE(alice.Next().has_value());
  std::thread stopper([&] { server_->Stop(); });
  for (int i = 0; i < 2000; ++i) {
    const auto lines = log_.Lines();
    if (std::any_of(lines.begin(), lines.end(),
                    [](const std::string& l) { return l.find("event=stopping") != std::string::npos; }))
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  store_->PauseCommitsForTesting(false);
  // The depositor hears "stored" (and need not deposit it again) before its link closes.
  EXPECT_EQ(bob.NextResponse().code, ResponseCode::kOk);
  EXPECT_TRUE(bob.WaitClosed());
  stopper.join();
}

TEST_F(RelayServerTest, StopFinishesAcknowledgedDepositsAndTheyAreThereAfterRestart) {
  Start();
  MailboxId box;
  {
    Client alice(1, server_->endpoint());
    const auto [created, token] = MailboxWithToken(alice);
    box = created;
    Client bob(2, server_->endpoint());
    for (uint32_t i = 1; i <= 20; ++i) bob.Send(relay::Deposit{box, token, Mid(i), Bytes(300, uint8_t(i))});
    for (int i = 0; i < 20; ++i) ASSERT_EQ(bob.NextResponse().code, ResponseCode::kOk);
  }
  TearDown();
  auto store = RocksDbMailboxStore::Open(dir_.Sub("db")).value();
  EXPECT_EQ(store->FetchAfter(box, 0, 100, 1 << 20, nullptr)->size(), 20u);
}

}  // namespace
}  // namespace cw::relay
