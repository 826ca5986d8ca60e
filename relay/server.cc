#include "relay/server.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace cw::relay {
namespace {

// Descriptors this process holds now (Linux; 0 where /proc cannot tell), for the stats line: running out of
// them is what FitToOpenFileLimit guards against, and an operator should see it coming.
uint64_t OpenFileCount() {
  std::error_code ec;
  uint64_t n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

using transport::Connection;

// A fixed pool of threads running tasks in submission order. Drain() waits until the queue is empty and
// no task runs.
class WorkerPool {
 public:
  explicit WorkerPool(size_t n) {
    for (size_t i = 0; i < std::max<size_t>(n, 1); ++i) threads_.emplace_back([this] { Run(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void Submit(std::function<void()> fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }
  void Drain() {
    std::unique_lock<std::mutex> lock(mu_);
    idle_cv_.wait(lock, [&] { return tasks_.empty() && running_ == 0; });
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stop_ and nothing left
      auto fn = std::move(tasks_.front());
      tasks_.pop_front();
      ++running_;
      lock.unlock();
      try {
        fn();
      } catch (...) {
      }
      lock.lock();
      --running_;
      if (tasks_.empty() && running_ == 0) idle_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<std::function<void()>> tasks_;
  size_t running_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Frames per address, refilled continuously (milli-token arithmetic, on the injected clock).
class FrameLimiter {
 public:
  FrameLimiter(const Clock& clock, uint32_t burst, uint32_t per_second)
      : clock_(clock), burst_milli_(uint64_t{burst} * 1000), per_second_(per_second) {}
  bool Take(const std::string& address) {
    const int64_t now = clock_.NowMillis();
    auto [it, inserted] = buckets_.try_emplace(address, Bucket{burst_milli_, now});
    Bucket& b = it->second;
    if (now > b.last) {
      b.milli = std::min<uint64_t>(burst_milli_, b.milli + uint64_t(now - b.last) * per_second_);
      b.last = now;
    }
    if (b.milli < 1000) return false;
    b.milli -= 1000;
    return true;
  }
  // The address's last connection closed. Its bucket stays until it has refilled, so reconnecting does not
  // buy a fresh burst (a flooder that was cut off would otherwise be back at full speed at once).
  void Release(const std::string& address) {
    auto it = buckets_.find(address);
    if (it != buckets_.end() && Refilled(it->second, clock_.NowMillis())) buckets_.erase(it);
    // Buckets kept this way are swept now and then: at most one per address seen within the refill time,
    // and the sweep's cost spread over as many closes as there are buckets.
    if (buckets_.size() >= sweep_at_) {
      const int64_t now = clock_.NowMillis();
      // A full bucket is what Take would create anyway, whether or not its address is connected.
      std::erase_if(buckets_, [&](const auto& entry) { return Refilled(entry.second, now); });
      sweep_at_ = std::max<size_t>(kMinSweep, 2 * buckets_.size());
    }
  }
  size_t bucket_count() const { return buckets_.size(); }

 private:
  struct Bucket {
    uint64_t milli;
    int64_t last;
  };
  bool Refilled(const Bucket& b, int64_t now) const {
    return b.milli + uint64_t(std::max<int64_t>(0, now - b.last)) * per_second_ >= burst_milli_;
  }
  static constexpr size_t kMinSweep = 1024;
  const Clock& clock_;
  const uint64_t burst_milli_;
  const uint64_t per_second_;
  std::map<std::string, Bucket> buckets_;
  size_t sweep_at_ = kMinSweep;
};

class ServerImpl;

// Everything about one accepted connection. Touched on the loop thread except `in_flight` (atomic).
struct ConnState {
  std::shared_ptr<Connection> conn;
  LinkKey key{};
  std::string address;  // for logs
  std::string group;    // transport::AddressGroup(address): what the per-address limits count
  std::unique_ptr<RelayService::Subscription> subscription;
  std::atomic<size_t> in_flight{0};
};

// Frames on their way to the loop thread: answers made on a worker or on the store's committer (a deposit is
// answered when the batch holding it is synced, so a whole batch of answers arrives at once), or on the loop
// itself (a deposit its acknowledgement cancelled), and pushes.
// One Post drains everything queued meanwhile, so a synced batch of 64 deposits costs the loop one wake-up,
// not 64. Shared by the server and its push sinks (which may outlive it briefly).
class Outbox : public std::enable_shared_from_this<Outbox> {
 public:
  Outbox(transport::Transport& transport, LogSink& log) : transport_(transport), log_(log) {}

  // An answer: a client that does not read what it asked for is cut off rather than buffered without end.
  void Reply(std::shared_ptr<ConnState> state, std::vector<Bytes> frames) {
    Add(Item{std::move(state), {}, std::move(frames)});
  }
  // A push: one that meets a full send queue cuts the owner off, as an answer does. Dropping it (the message
  // stays in the mailbox) would let later pushes overtake it, and an owner that stays connected would not
  // fetch it until it next reconnects or syncs; cut off, it reconnects and fetches everything in order.
  void Push(std::weak_ptr<ConnState> state, Bytes frame) {
    std::vector<Bytes> frames;
    frames.push_back(std::move(frame));
    Add(Item{nullptr, std::move(state), std::move(frames)});
  }

 private:
  struct Item {
    std::shared_ptr<ConnState> reply_to;
    std::weak_ptr<ConnState> push_to;
    std::vector<Bytes> frames;
  };

  void Add(Item item) {
    bool post = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      items_.push_back(std::move(item));
      post = !posted_;
      posted_ = true;
    }
    if (!post) return;
    if (!transport_.Post([self = shared_from_this()] { self->Drain(); }).ok()) {
      // Shutting down: nothing more can be sent.
      std::lock_guard<std::mutex> lock(mu_);
      items_.clear();
      posted_ = false;
    }
  }

  // Loop thread.
  void Drain() {
    std::vector<Item> items;
    {
      std::lock_guard<std::mutex> lock(mu_);
      items.swap(items_);
      posted_ = false;
    }
    for (auto& item : items) {
      if (item.reply_to) {
        SendOrCutOff(*item.reply_to, item.frames, "slow reader");
      } else if (auto s = item.push_to.lock()) {
        SendOrCutOff(*s, item.frames, "slow reader of pushes");
      }
    }
  }

  void SendOrCutOff(ConnState& s, const std::vector<Bytes>& frames, const char* reason) {
    for (const auto& f : frames) {
      Status sent = s.conn->Send(f);
      if (sent.code() == StatusCode::kResourceExhausted) {
        log_.Log(LogLevel::kWarn, "connection_closed", {{"peer", s.address}, {"reason", reason}});
        s.conn->Close(Status(StatusCode::kResourceExhausted, "client not reading"));
        return;
      }
      if (!sent.ok()) return;
    }
  }

  transport::Transport& transport_;
  LogSink& log_;
  std::mutex mu_;
  std::vector<Item> items_;
  bool posted_ = false;  // a Drain is posted and has not yet taken items_
};

class ConnectionSink final : public PushSink {
 public:
  ConnectionSink(std::shared_ptr<Outbox> outbox, std::weak_ptr<ConnState> state)
      : outbox_(std::move(outbox)), state_(std::move(state)) {}
  void Push(Bytes frame) override { outbox_->Push(state_, std::move(frame)); }

 private:
  std::shared_ptr<Outbox> outbox_;
  std::weak_ptr<ConnState> state_;
};

class ServerImpl final : public RelayServer {
 public:
  ServerImpl(transport::Transport& transport, RelayService& service, ServerOptions options, LogSink& log,
             const Clock& clock)
      : transport_(transport),
        service_(service),
        options_(options),
        log_(log),
        limiter_(clock, options.frame_burst, options.frames_per_second),
        outbox_(std::make_shared<Outbox>(transport, log)),
        pool_(options.workers) {}

  ~ServerImpl() override { Stop(); }

  Status Listen(const transport::Endpoint& where) {
    auto listener = transport::RunSync(transport_, [&]() -> Result<std::shared_ptr<transport::Listener>> {
      transport::ListenOptions lo;
      lo.max_handshaking = options_.max_handshaking;
      lo.max_handshaking_per_address = options_.max_handshaking_per_address;
      lo.on_rejected = [this](const std::string& address, const Status& why) {
        // The transport's reasons name limits and system errors, never a key or a payload.
        log_.Log(LogLevel::kInfo, "handshake_rejected",
                 {{"peer", address},
                  {"reason", std::string(StatusCodeName(why.code()))},
                  {"detail", why.message()}});
      };
      return transport_.Listen(where, [this](std::shared_ptr<Connection> c) { OnAccept(std::move(c)); }, lo);
    });
    if (!listener) return listener.error();
    listener_ = *listener;
    endpoint_ = listener_->endpoint();
    transport::RunSync(transport_, [this]() -> Status {
      ScheduleMaintenance();
      return Status::Ok();
    }).ok();
    log_.Log(LogLevel::kInfo, "listening", {{"address", endpoint_.ToString()}});
    return Status::Ok();
  }

  const transport::Endpoint& endpoint() const override { return endpoint_; }
  size_t connection_count() const override { return connections_count_.load(); }

  void Stop() override {
    if (stopped_.exchange(true)) return;
    // First no new connections and no new commands (OnFrame drops them: their senders send them again
    // after reconnecting, as for any link that closes), while the links stay open.
    transport::RunSync(transport_, [this]() -> Status {
      stopping_ = true;
      if (maintenance_timer_ != 0) transport_.CancelTimer(maintenance_timer_);
      if (listener_) listener_->Close();
      return Status::Ok();
    }).ok();
    log_.Log(LogLevel::kInfo, "stopping", {{"connections", std::to_string(connections_count_.load())}});
    // Then every command already taken in finishes: its store write is synced and its answer is queued for
    // the loop thread (a depositor hears "stored" before its link closes, and need not deposit again).
    pool_.Drain();
    {
      std::unique_lock<std::mutex> lock(unanswered_mu_);
      answered_cv_.wait(lock, [&] { return unanswered_.load() == 0; });
    }
    // Then the links close, each after sending what is queued on it: posted after the answers' Drain, this
    // runs after it.
    transport::RunSync(transport_, [this]() -> Status {
      auto conns = conns_;
      for (auto& [c, s] : conns) c->Close(Status(StatusCode::kUnavailable, "relay shutting down"));
      return Status::Ok();
    }).ok();
    // Wait for every on_closed (they touch this object).
    for (int i = 0; i < 500; ++i) {
      auto open = transport::RunSync(transport_, [this]() -> Result<size_t> { return conns_.size(); });
      if (!open || *open == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    log_.Log(LogLevel::kInfo, "stopped", {});
  }

 private:
  // ---- loop thread ----
  void OnAccept(std::shared_ptr<Connection> c) {
    const std::string address = c->peer_address();
    const std::string group = transport::AddressGroup(address);
    const auto from_group = per_address_.find(group);
    if (stopping_ || conns_.size() >= options_.max_connections ||
        (from_group != per_address_.end() && from_group->second >= options_.max_connections_per_address)) {
      log_.Log(LogLevel::kWarn, "connection_refused", {{"peer", address}, {"reason", "connection limit"}});
      c->SetCallbacks({});
      // At once: a graceful close would hold the descriptor until the peer closes too (see Abort), and the
      // caps are there to keep descriptors for the store.
      c->Abort(Status(StatusCode::kResourceExhausted, "connection limit"));
      return;
    }
    auto state = std::make_shared<ConnState>();
    state->conn = c;
    state->address = address;
    state->group = group;
    std::copy(c->remote_static_key().begin(), c->remote_static_key().end(), state->key.begin());
    ++per_address_[group];
    conns_[c.get()] = state;
    connections_count_.store(conns_.size());
    service_.SetConnectionCount(conns_.size());
    std::weak_ptr<ConnState> weak = state;
    transport::ConnectionCallbacks cb;
    cb.on_frame = [this, weak](ByteView frame) {
      if (auto s = weak.lock()) OnFrame(s, frame);
    };
    cb.on_closed = [this, weak](Status reason) {
      if (auto s = weak.lock()) OnClosed(s, reason);
    };
    c->SetCallbacks(std::move(cb));
    state->subscription = service_.Subscribe(state->key, std::make_shared<ConnectionSink>(outbox_, weak));
    log_.Log(LogLevel::kDebug, "connected", {{"peer", address}, {"client", LogTag(state->key)}});
  }

  void OnFrame(const std::shared_ptr<ConnState>& s, ByteView frame) {
    if (stopping_) return;  // see Stop
    if (!limiter_.Take(s->group)) {
      log_.Log(LogLevel::kWarn, "connection_closed", {{"peer", s->address}, {"reason", "frame rate limit"}});
      s->conn->Close(Status(StatusCode::kResourceExhausted, "frame rate limit"));
      return;
    }
    if (s->in_flight.fetch_add(1) >= options_.max_in_flight_per_connection) {
      s->in_flight.fetch_sub(1);
      log_.Log(LogLevel::kWarn, "connection_closed", {{"peer", s->address}, {"reason", "too many in flight"}});
      s->conn->Close(Status(StatusCode::kResourceExhausted, "too many commands in flight"));
      return;
    }
    unanswered_.fetch_add(1);
    RelayService::Reply reply = [this, s](std::vector<Bytes> out) {
      s->in_flight.fetch_sub(1);
      outbox_->Reply(s, std::move(out));
      if (unanswered_.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lock(unanswered_mu_);
        answered_cv_.notify_all();
      }
    };
    // A deposit, an acknowledgement or an attachment chunk is taken in right here and answered from the
    // store's committer once synced (or at once, for a deposit and the acknowledgement that cancels it
    // before it is written): no thread waits for an fsync, the common commands (every message is
    // deposited once and acknowledged once) cost no hop to a worker, and an upload's
    // chunks are appended in the order they came (on workers they could overtake each other and be refused
    // as not continuing the upload). Everything else may wait for a write.
    if (service_.TryHandleWithoutBlocking(s->key, frame, reply)) return;
    Bytes copy(frame.begin(), frame.end());
    pool_.Submit([this, s, copy = std::move(copy), reply = std::move(reply)] { reply(service_.Handle(s->key, copy)); });
  }

  void OnClosed(const std::shared_ptr<ConnState>& s, const Status& reason) {
    s->subscription.reset();
    conns_.erase(s->conn.get());
    if (--per_address_[s->group] == 0) {
      per_address_.erase(s->group);
      limiter_.Release(s->group);
    }
    connections_count_.store(conns_.size());
    service_.SetConnectionCount(conns_.size());
    log_.Log(LogLevel::kDebug, "disconnected",
             {{"peer", s->address}, {"reason", std::string(StatusCodeName(reason.code()))}});
  }

  void ScheduleMaintenance() {
    const int64_t every = std::min(options_.purge_interval_millis, options_.stats_log_interval_millis);
    maintenance_timer_ = transport_.ScheduleAfter(std::max<int64_t>(every, 1), [this] {
      if (stopping_) return;
      // Purging syncs: off the loop thread.
      pool_.Submit([this] {
        auto purged = service_.PurgeExpired();
        if (!purged) log_.Log(LogLevel::kError, "purge_failed", {});
        const RelayStatsView v = service_.Stats();
        log_.Log(LogLevel::kInfo, "stats",
                 {{"connections", std::to_string(v.connections)},
                  {"mailboxes", std::to_string(v.mailboxes)},
                  {"queued_messages", std::to_string(v.queued_messages)},
                  {"queued_bytes", std::to_string(v.queued_bytes)},
                  {"attachments", std::to_string(v.attachments)},
                  {"attachment_bytes", std::to_string(v.attachment_bytes)},
                  {"syncs", std::to_string(v.syncs)},
                  {"commands", std::to_string(v.commands)},
                  {"errors", std::to_string(v.errors)},
                  {"open_files", std::to_string(OpenFileCount())}});
      });
      ScheduleMaintenance();
    });
  }

  transport::Transport& transport_;
  RelayService& service_;
  const ServerOptions options_;
  LogSink& log_;
  FrameLimiter limiter_;  // loop thread only
  std::shared_ptr<transport::Listener> listener_;
  transport::Endpoint endpoint_;
  std::map<Connection*, std::shared_ptr<ConnState>> conns_;  // loop thread only
  std::map<std::string, size_t> per_address_;                // loop thread only
  std::atomic<size_t> connections_count_{0};
  transport::Transport::TimerId maintenance_timer_ = 0;
  bool stopping_ = false;  // loop thread only
  std::atomic<bool> stopped_{false};
  std::shared_ptr<Outbox> outbox_;
  // Commands taken in and not yet answered (deposits waiting for their sync among them): Stop waits for 0,
  // so every deposit it took in is synced and answered (or failed) before it returns.
  std::atomic<size_t> unanswered_{0};
  std::mutex unanswered_mu_;  // for answered_cv_ only
  std::condition_variable answered_cv_;
  WorkerPool pool_;  // last: destroyed (joined) first
};

}  // namespace

uint64_t ReservedDescriptors(uint64_t open_file_limit) {
  return std::min(kReservedDescriptors, open_file_limit / 4);
}

ServerOptions FitToOpenFileLimit(ServerOptions options, uint64_t open_file_limit) {
  const uint64_t budget = open_file_limit - ReservedDescriptors(open_file_limit);
  // Compared without adding: caps given as huge numbers (no limit meant) must not wrap around.
  if (options.max_connections <= budget && options.max_handshaking <= budget - options.max_connections) {
    return options;
  }
  // Handshakes get a sixteenth: enough that a burst of reconnecting devices gets in, while the rest of the
  // budget goes to the links that carry messages.
  options.max_handshaking = std::max<uint64_t>(1, std::min<uint64_t>(options.max_handshaking, budget / 16));
  options.max_handshaking_per_address =
      std::min(options.max_handshaking_per_address, options.max_handshaking);
  options.max_connections = std::min<uint64_t>(options.max_connections, budget - options.max_handshaking);
  return options;
}

Result<std::unique_ptr<RelayServer>> RelayServer::Start(transport::Transport& transport, RelayService& service,
                                                        const transport::Endpoint& listen, ServerOptions options,
                                                        LogSink& log, const Clock& clock) {
  auto server = std::make_unique<ServerImpl>(transport, service, options, log, clock);
  CW_RETURN_IF_ERROR(server->Listen(listen));
  return std::unique_ptr<RelayServer>(std::move(server));
}

}  // namespace cw::relay
