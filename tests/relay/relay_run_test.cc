// RunRelay: the relay binary's serve loop, on a real RocksDB store and Noise links over loopback. A store
// write that fails (FailNextWriteForTesting stands in for a full disk) must not leave a relay that answers
// "retry later" for ever: it reopens the store from what is durable and serves again on the same address.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "relay/rocksdb_mailbox_store.h"
#include "relay/run.h"
#include "tests/relay/link_client.h"
#include "tests/relay/relay_test_util.h"
#include "transport/tcp_transport.h"

namespace cw::relay {
namespace {

using testing::MailboxWithToken;
using testing::Mid;
using Client = testing::LinkClient;

class RunRelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SeededRandom r(99);
    transport_ = std::move(transport::TcpTransport::New(transport::StaticKeyPair::Generate(r)).value());
    // Short waits so the test does not sit out production's seconds; the order of events is what it checks.
    options_.health_check_millis = 5;
    options_.reopen_first_backoff_millis = 5;
    options_.reopen_max_backoff_millis = 20;
  }
  void TearDown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (runner_.joinable()) runner_.join();
    if (transport_) transport_->Shutdown().ok();
    transport_.reset();
  }

  RunHooks Hooks() {
    RunHooks hooks;
    hooks.open_store = [this]() -> Result<std::unique_ptr<MailboxStore>> {
      std::lock_guard<std::mutex> lock(mu_);
      ++opens_;
      if (refuse_opens_ > 0) {
        --refuse_opens_;
        return Error(StatusCode::kUnavailable, "IO error: No space left on device");
      }
      auto store = RocksDbMailboxStore::Open(dir_.Sub("db"));
      if (!store) return Error(store.error());
      current_ = store->get();
      return std::unique_ptr<MailboxStore>(std::move(*store));
    };
    hooks.wait_for_stop = [this](int64_t millis) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(millis), [&] { return stop_; });
      return stop_;
    };
    hooks.listening = [this](const transport::Endpoint& where) {
      std::lock_guard<std::mutex> lock(mu_);
      listened_.push_back(where);
      cv_.notify_all();
    };
    return hooks;
  }
  void Run() {
    runner_ = std::thread([this] {
      result_ = RunRelay(*transport_, transport::Endpoint::Parse("127.0.0.1:0").value(), options_, Hooks(),
                         log_, SystemClock::Default(), random_);
    });
  }
  // The address of the n-th time the relay started listening (1-based); the wait is a safety net only.
  std::optional<transport::Endpoint> Listening(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(20), [&] { return listened_.size() >= n; })) return {};
    return listened_[n - 1];
  }
  void FailNextWrite() {
    std::lock_guard<std::mutex> lock(mu_);
    current_->FailNextWriteForTesting(Status(StatusCode::kUnavailable, "IO error: No space left on device"));
  }
  size_t Logged(const std::string& event) {
    const auto lines = log_.Lines();
    return std::count_if(lines.begin(), lines.end(),
                         [&](const std::string& l) { return l.find("event=" + event) != std::string::npos; });
  }

  // Everything in `box`, fetched by its owner.
  static std::vector<MessageId> FetchAll(Client& owner, const MailboxId& box) {
    std::vector<MessageId> fetched;
    owner.Send(FetchMessages{box, 0});
    const Response r = owner.NextResponse();
    EXPECT_EQ(r.code, ResponseCode::kOk) << r.message;
    for (const auto& f : owner.other_) {
      if (const auto* d = std::get_if<Delivery>(&f); d != nullptr && d->request_id != 0) {
        fetched.push_back(d->message_id);
      }
    }
    owner.other_.clear();
    return fetched;
  }

  testing::TempDir dir_;
  SeededRandom random_{5};
  MemoryLogSink log_;
  RunOptions options_;
  std::unique_ptr<transport::TcpTransport> transport_;
  std::thread runner_;
  Status result_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  int opens_ = 0;
  int refuse_opens_ = 0;
  RocksDbMailboxStore* current_ = nullptr;  // the store RunRelay opened last
  std::vector<transport::Endpoint> listened_;
};

TEST_F(RunRelayTest, AFailedStoreWriteIsFollowedByAReopenedStoreOnTheSameAddress) {
  Run();
  const auto first = Listening(1);
  ASSERT_TRUE(first.has_value());
  MailboxId box;
  DepositToken token;
  {
    Client alice(1, *first);
    ASSERT_TRUE(alice.connected());
    std::tie(box, token) = MailboxWithToken(alice);
    Client bob(2, *first);
    ASSERT_TRUE(bob.connected());
    bob.Send(relay::Deposit{box, token, Mid(1), Bytes(300, 1)});
    ASSERT_EQ(bob.NextResponse().code, ResponseCode::kOk);

    FailNextWrite();
    bob.Send(relay::Deposit{box, token, Mid(2), Bytes(300, 2)});
    const Response failed = bob.NextResponse();
    EXPECT_EQ(failed.code, ResponseCode::kUnavailable) << failed.message;
    EXPECT_EQ(failed.message.find("No space"), std::string::npos) << "store detail reached a client";
    EXPECT_TRUE(bob.WaitClosed());  // the relay stopped serving on the failed store
  }
  const auto second = Listening(2);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->port, first->port);
  EXPECT_EQ(second->static_key, first->static_key);

  // The sender tries again, as a client's outbox does, with the same message ids.
  Client bob(2, *second);
  ASSERT_TRUE(bob.connected());
  bob.Send(relay::Deposit{box, token, Mid(1), Bytes(300, 1)});
  EXPECT_EQ(bob.NextResponse().code, ResponseCode::kOk);
  bob.Send(relay::Deposit{box, token, Mid(2), Bytes(300, 2)});
  EXPECT_EQ(bob.NextResponse().code, ResponseCode::kOk);
  Client alice(1, *second);  // the owner's link key
  ASSERT_TRUE(alice.connected());
  EXPECT_EQ(FetchAll(alice, box), (std::vector<MessageId>{Mid(1), Mid(2)}));

  EXPECT_EQ(Logged("store_failed"), 1u);
  EXPECT_EQ(Logged("store_reopened"), 1u);
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(opens_, 2);
}

TEST_F(RunRelayTest, AStoreThatWillNotReopenIsTriedAgainUntilItDoes) {
  Run();
  const auto first = Listening(1);
  ASSERT_TRUE(first.has_value());
  MailboxId box;
  {
    Client alice(1, *first);
    ASSERT_TRUE(alice.connected());
    box = MailboxWithToken(alice).first;
    {
      std::lock_guard<std::mutex> lock(mu_);
      refuse_opens_ = 3;  // the disk is still full for a while
    }
    FailNextWrite();
    alice.Send(IssueDepositToken{box});
    EXPECT_EQ(alice.NextResponse().code, ResponseCode::kUnavailable);
  }
  const auto second = Listening(2);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(Logged("store_reopen_failed"), 3u);
  EXPECT_EQ(Logged("store_reopened"), 1u);
  Client alice(1, *second);
  ASSERT_TRUE(alice.connected());
  alice.Send(IssueDepositToken{box});
  EXPECT_EQ(alice.NextResponse().code, ResponseCode::kOk);
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_EQ(opens_, 5);
}

TEST_F(RunRelayTest, AStopWhileServingIsGracefulAndReturnsOk) {
  Run();
  const auto first = Listening(1);
  ASSERT_TRUE(first.has_value());
  {
    Client alice(1, *first);
    ASSERT_TRUE(alice.connected());
    MailboxWithToken(alice);
  }
  TearDown();
  EXPECT_TRUE(result_.ok()) << result_.ToString();
  EXPECT_EQ(Logged("store_failed"), 0u);
}

TEST_F(RunRelayTest, AStoreThatWillNotOpenAtStartIsTheCallersError) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    refuse_opens_ = 1;
  }
  const Status ran = RunRelay(*transport_, transport::Endpoint::Parse("127.0.0.1:0").value(), options_,
                              Hooks(), log_, SystemClock::Default(), random_);
  EXPECT_EQ(ran.code(), StatusCode::kUnavailable);
  std::lock_guard<std::mutex> lock(mu_);
  EXPECT_TRUE(listened_.empty());
  EXPECT_EQ(opens_, 1);
}

}  // namespace
}  // namespace cw::relay
