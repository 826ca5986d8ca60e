// Helpers for runtime tests: a real relay (RelayService on RocksDB behind a RelayServer on a TcpTransport,
// on 127.0.0.1) that can be stopped and started again on the same address and key, temp directories, and
// waiting for a condition set by client callbacks (bounded: a safety net, never a timing assertion).
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/secret.h"
#include "core/runtime/client.h"
#include "core/runtime/codec.h"
#include "relay/log.h"
#include "relay/relay_service.h"
#include "relay/rocksdb_mailbox_store.h"
#include "relay/server.h"
#include "transport/tcp_transport.h"

namespace cw::runtime::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/cw_runtime_test_XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) != nullptr) path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A relay on 127.0.0.1 with its RocksDB store in `dir`. Stop() and Start() keep the address and key, so
// clients reconnect to the same pinned endpoint. WrapStore (before Start) puts a test's MailboxStore between
// the service and the RocksDB store; the wrapper borrows the store and is destroyed before it.
class TestRelay {
 public:
  explicit TestRelay(std::string dir)
      : dir_(std::move(dir)), key_(transport::StaticKeyPair::Generate(SystemRandom::Default())) {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
  }
  ~TestRelay() { Stop(); }

  using StoreWrapper = std::function<std::unique_ptr<relay::MailboxStore>(relay::MailboxStore& store)>;
  void WrapStore(StoreWrapper wrap) { wrap_ = std::move(wrap); }

  Status Start() {
    CW_ASSIGN_OR_RETURN(store_, relay::RocksDbMailboxStore::Open(dir_ + "/db"));
    relay::MailboxStore* serving = store_.get();
    if (wrap_) {
      wrapper_ = wrap_(*store_);
      serving = wrapper_.get();
    }
    service_ = std::make_unique<relay::RelayService>(*serving, *clock_,
                                                     SystemRandom::Default(), relay::RelayOptions{}, &log_);
    CW_ASSIGN_OR_RETURN(transport_, transport::TcpTransport::New(key_.Clone()));
    const std::string listen = "127.0.0.1:" + std::to_string(port_);
    CW_ASSIGN_OR_RETURN(auto ep, transport::Endpoint::Parse(listen));
    relay::ServerOptions so;
    so.workers = 4;
    CW_ASSIGN_OR_RETURN(server_,
                        relay::RelayServer::Start(*transport_, *service_, ep, so, log_, SystemClock::Default()));
    port_ = server_->endpoint().port;
    address_ = server_->endpoint().ToString();
    return Status::Ok();
  }

  void Stop() {
    if (server_) server_->Stop();
    if (transport_) (void)transport_->Shutdown();
    server_.reset();
    transport_.reset();
    service_.reset();
    wrapper_.reset();
    store_.reset();
  }

  const std::string& address() const { return address_; }
  relay::RelayStatsView Stats() { return service_->Stats(); }
  // Commands of `type` the relay has answered since it was created (from its log).
  size_t AnsweredCommands(relay::CommandType type) {
    const std::string field = " command=" + std::to_string(static_cast<int>(type)) + " ";
    size_t n = 0;
    for (const auto& line : log_.Lines()) {
      n += line.find(" event=command ") != std::string::npos && line.find(field) != std::string::npos;
    }
    return n;
  }
  // The relay's clock from the next Start (its service's: token claim times, message expiry).
  void UseClock(Clock* clock) { clock_ = clock; }

  // Whether the relay takes deposits into `card`'s mailbox with `card`'s token (without claiming it).
  bool Admits(const ContactCard& card) {
    auto has = store_->HasDepositToken(card.mailbox, relay::HashDepositToken(card.mailbox, card.token),
                                       clock_->NowMillis());
    EXPECT_TRUE(has.has_value());
    return has && *has;
  }

 private:
  std::string dir_;
  transport::StaticKeyPair key_;
  uint16_t port_ = 0;
  std::string address_;
  relay::MemoryLogSink log_;
  StoreWrapper wrap_;
  Clock* clock_ = &SystemClock::Default();
  std::unique_ptr<relay::RocksDbMailboxStore> store_;
  std::unique_ptr<relay::MailboxStore> wrapper_;
  std::unique_ptr<relay::RelayService> service_;
  std::unique_ptr<transport::TcpTransport> transport_;
  std::unique_ptr<relay::RelayServer> server_;
};

// System time plus an offset the test moves forward (thread-safe: the client reads it on its loop thread).
class ShiftedClock final : public Clock {
 public:
  int64_t NowMillis() const override { return SystemClock::Default().NowMillis() + offset_.load(); }
  void Advance(int64_t ms) { offset_ += ms; }

 private:
  std::atomic<int64_t> offset_{0};
};

// The passphrase every test client uses.
inline const ByteView kPass = AsBytes("correct horse battery staple");

inline std::string Text(const SecretBytes& b) { return std::string(b.reveal().begin(), b.reveal().end()); }

// Options for test clients: the cheapest Argon2id cost and quick reconnects.
inline ClientOptions Fast() {
  ClientOptions o;
  o.keystore = storage::KeystoreOptions::MinimumCostForTesting();
  o.reconnect_min_ms = 20;
  o.reconnect_max_ms = 200;
  return o;
}

// A client in `home` with kPass: created as `name`, or reopened. Null (and a test failure) on an error.
inline std::unique_ptr<Client> CreateClient(const std::string& home, const std::string& name, ClientOptions o) {
  auto c = Client::Create(home, name, kPass, std::move(o));
  EXPECT_TRUE(c.has_value()) << c.error().ToString();
  return c ? std::move(*c) : nullptr;
}
inline std::unique_ptr<Client> OpenClient(const std::string& home, ClientOptions o) {
  auto c = Client::Open(home, kPass, std::move(o));
  EXPECT_TRUE(c.has_value()) << c.error().ToString();
  return c ? std::move(*c) : nullptr;
}

// The bodies of the conversation with `contact`, oldest first.
inline std::vector<std::string> Bodies(Client& c, const std::string& contact) {
  auto h = c.History(contact);
  EXPECT_TRUE(h.has_value()) << h.error().ToString();
  std::vector<std::string> out;
  if (h) {
    for (const auto& m : *h) out.push_back(Text(m.body));
  }
  return out;
}

// Status and Result assertions that print the error.
#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const auto& r_ = (expr);                                \
    ASSERT_TRUE(r_.ok()) << #expr << ": " << r_.ToString(); \
  } while (0)
#define ASSERT_HAS(expr)                                                   \
  do {                                                                     \
    const auto& r_ = (expr);                                               \
    ASSERT_TRUE(r_.has_value()) << #expr << ": " << r_.error().ToString(); \
  } while (0)

// Waits (bounded, as a safety net against hangs) until `pred` holds; returns whether it did.
template <typename Pred>
bool WaitFor(std::mutex& mu, std::condition_variable& cv, Pred pred, int seconds = 30) {
  std::unique_lock<std::mutex> lock(mu);
  return cv.wait_for(lock, std::chrono::seconds(seconds), pred);
}

}  // namespace cw::runtime::testing
