// A test client for a running relay server: one real Noise TCP link whose incoming frames land in a queue
// the test waits on (the wait bound is a safety net only). Shared by the server and data-audit tests.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <variant>
#include <vector>

#include "core/base/random.h"
#include "relay/protocol.h"
#include "transport/tcp_transport.h"

namespace cw::relay::testing {

// Connects `t` to `relay` (the Noise handshake included) and waits for the outcome. The link's frames and
// its close go to `on_frame` and `on_closed`, on t's loop thread.
inline Result<std::shared_ptr<transport::Connection>> ConnectAndWait(transport::TcpTransport& t,
                                                                     const transport::Endpoint& relay,
                                                                     std::function<void(ByteView)> on_frame,
                                                                     std::function<void(Status)> on_closed) {
  using Outcome = Result<std::shared_ptr<transport::Connection>>;
  auto connected = std::make_shared<std::promise<Outcome>>();
  auto fut = connected->get_future();
  const Status started = transport::RunSync(t, [&]() -> Status {
    transport::ConnectionCallbacks cb;
    cb.on_frame = std::move(on_frame);
    cb.on_closed = std::move(on_closed);
    return t.Connect(relay, cb, [connected](Outcome c) { connected->set_value(std::move(c)); });
  });
  if (!started.ok()) return Error(started);
  return fut.get();
}

class LinkClient {
 public:
  LinkClient(uint64_t seed, const transport::Endpoint& relay) {
    SeededRandom r(seed);
    auto t = transport::TcpTransport::New(transport::StaticKeyPair::Generate(r));
    EXPECT_TRUE(t.has_value());
    transport_ = std::move(*t);
    key_ = transport_->local_static_key();
    auto c = ConnectAndWait(
        *transport_, relay,
        [this](ByteView f) {
          std::lock_guard<std::mutex> lock(mu_);
          frames_.emplace_back(f.begin(), f.end());
          cv_.notify_all();
        },
        [this](Status s) {
          std::lock_guard<std::mutex> lock(mu_);
          closed_ = s.code();
          is_closed_ = true;
          cv_.notify_all();
        });
    if (c) conn_ = *c;
    connect_status_ = c ? Status::Ok() : c.error();
  }
  ~LinkClient() { transport_->Shutdown().ok(); }

  bool connected() const { return connect_status_.ok(); }
  const transport::PublicKey& key() const { return key_; }

  void Send(CommandBody body) {
    const Bytes f = EncodeCommand(Command{++rid_, std::move(body)});
    transport::RunSync(*transport_, [&]() -> Status { return conn_->Send(f); }).ok();
  }
  std::optional<ServerFrame> Next() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(20), [&] { return !frames_.empty() || is_closed_; })) return {};
    if (frames_.empty()) return {};
    Bytes f = std::move(frames_.front());
    frames_.pop_front();
    auto d = DecodeServerFrame(f);
    if (!d) return {};
    return *d;
  }
  Response NextResponse() {
    for (;;) {
      auto f = Next();
      if (!f) return ErrorResponse(0, 0, ResponseCode::kUnavailable, "no frame");
      if (auto* r = std::get_if<Response>(&*f)) return *r;
      other_.push_back(*f);
    }
  }
  // Blocks this client's loop thread until `until` is ready: the link reads nothing meanwhile. Call nothing
  // else on this client until then.
  void Stall(std::shared_future<void> until) {
    transport_->Post([until] { until.wait(); }).ok();
  }
  bool WaitClosed() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(20), [&] { return is_closed_; });
  }
  std::vector<ServerFrame> other_;

 private:
  std::unique_ptr<transport::TcpTransport> transport_;
  std::shared_ptr<transport::Connection> conn_;
  transport::PublicKey key_{};
  Status connect_status_;
  uint32_t rid_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Bytes> frames_;
  bool is_closed_ = false;
  StatusCode closed_ = StatusCode::kOk;
};

// `owner` creates a mailbox and issues a deposit token for it.
inline std::pair<MailboxId, DepositToken> MailboxWithToken(LinkClient& owner) {
  owner.Send(CreateMailbox{});
  const MailboxId box = std::get<MailboxCreated>(owner.NextResponse().body).mailbox;
  owner.Send(IssueDepositToken{box});
  return {box, std::get<TokenIssued>(owner.NextResponse().body).token};
}

}  // namespace cw::relay::testing
