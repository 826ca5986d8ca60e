// cw_relay_bench: a load generator for the blind relay (issue 4, Benchmarks). Plain main, prints tables.
//
//   build/rel/bench/cw_relay_bench [--mailboxes 1000] [--seconds 2] [--runs 3] [--idle 10000] [--workers 16]
//                                  [--no-mosquitto] [--no-sync] [--envelope 300|4096] [--window 64|1]
//                                  [--no-owner-acks] [--ack-delay-ms N] [--no-bound]
//
// 1. Deposits: a RelayServer (RocksDB store with sync=true: a deposit is answered "stored" once the group
//    commit holding it is fsynced, or once its owner's acknowledgement settled it, see below) runs in this
//    process on 127.0.0.1. An owner link creates the mailboxes and stays connected: it receives every deposit
//    as a push (sent before the sync) and acknowledges it with one Ack, so the relay removes it (a client
//    runtime puts the acknowledgements of one turn of its loop in one Ack, but those are of one mailbox, and
//    here consecutive deliveries are of different mailboxes). An acknowledgement that reaches the relay
//    before the deposit's batch is written takes the deposit out of that batch: neither is ever written
//    ("never written" column), and the depositor is answered right then. That needs an owner
//    that answers within one commit cycle, as this one on loopback does; --ack-delay-ms N holds each
//    acknowledgement back N ms, as a phone's round trip would, so every deposit is written and then deleted.
//    --no-owner-acks leaves every deposit stored (a backlog that RocksDB flushes and compacts). A depositor
//    link keeps 64 or 1 deposits in flight, round-robin over the mailboxes, for envelopes of 300 B and 4 KiB.
//    Both links are real Noise TCP links on their own TcpTransports (own loop threads). Reported per
//    configuration: deposits answered "stored" per second; deposit-to-delivery latency (depositor Send ->
//    owner receives the push) p50/p99; deposit-to-"stored" latency (depositor Send -> the answer) p50/p99;
//    CPU per deposit split into the relay's (everything but the two client loop threads) and the load
//    generator's; medians over --runs runs. Each configuration gets a fresh database.
//    Then, as a bound, the same load with 64 in flight against the in-memory store (nothing is written,
//    nothing survives a restart): what the links, the protocol and the relay's loop cost without any store,
//    so what no store under this relay can pass on this machine (--no-bound skips it).
// 2. Idle connections: the relay runs in a forked child process (so its resident memory is its own); the
//    parent opens N Noise links to it and the child's VmRSS is read from /proc before and after.
// 3. mosquitto (when /usr/sbin/mosquitto and libmosquitto are there): the same deposit load as QoS 1
//    publishes to a broker on a loopback port with persistence on, a persistent-session QoS 1 subscriber as
//    the owner (it answers each message with a PUBACK at once). Durability differs: mosquitto's PUBACK means
//    "in broker memory"; it writes its persistence file only every autosave_interval seconds (default 1800)
//    and at shutdown, so an acknowledged message can be lost on a crash. The relay's answer means "fsynced",
//    or "delivered to the owner and acknowledged by it".
#include <mosquitto.h>
#include <signal.h>
#include <sodium.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/crypto/crypto.h"
#include "relay/allocator.h"
#include "relay/rocksdb_mailbox_store.h"
#include "relay/server.h"
#include "transport/tcp_transport.h"

namespace {

using namespace cw;
using namespace cw::relay;
using Clk = std::chrono::steady_clock;

int64_t CpuNs(clockid_t clock) {
  timespec ts{};
  if (clock_gettime(clock, &ts) != 0) return 0;
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

int64_t NowNs() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clk::now().time_since_epoch()).count(); }

struct Args {
  size_t mailboxes = 1000;
  double seconds = 2.0;
  int runs = 3;
  size_t idle = 10000;
  size_t workers = 16;
  bool mosquitto = true;
  bool owner_acks = true;  // --no-owner-acks: deliveries stay in their mailboxes (a backlog building up)
  int64_t ack_delay_ms = 0;  // --ack-delay-ms: the owner's acknowledgements are sent this much later
  bool sync = true;  // --no-sync: everything but the fsync, to profile the relay's own CPU cost
  bool bound = true;         // --no-bound: skip the run with the in-memory store
  size_t only_envelope = 0;  // --envelope N: only that envelope size (for profiling one configuration)
  size_t only_window = 0;    // --window N: only that many in flight
};

std::string MakeTempDir(const char* tag) {
  std::string pattern = std::string("/tmp/cw_relay_bench_") + tag + "_XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  return buf.data();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
double Percentile(std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * double(v.size())));
  return double(v[i]);
}

// ---- A client link whose callbacks run on its own transport's loop thread. ----
struct Link {
  std::unique_ptr<transport::TcpTransport> t;
  std::shared_ptr<transport::Connection> conn;
  std::function<void(ByteView)> on_frame;  // set before frames arrive; runs on the loop thread
  clockid_t loop_cpu = CLOCK_THREAD_CPUTIME_ID;  // the loop thread's CPU clock, for the CPU split
};

std::unique_ptr<Link> Connect(uint64_t seed, const transport::Endpoint& relay) {
  auto link = std::make_unique<Link>();
  SeededRandom r(seed);
  link->t = std::move(transport::TcpTransport::New(transport::StaticKeyPair::Generate(r)).value());
  std::promise<Status> done;
  Link* l = link.get();
  transport::RunSync(*link->t, [&]() -> Status {
    transport::ConnectionCallbacks cb;
    cb.on_frame = [l](ByteView f) {
      if (l->on_frame) l->on_frame(f);
    };
    cb.on_closed = [](Status s) {
      if (!s.ok()) std::fprintf(stderr, "link closed: %s\n", s.ToString().c_str());
    };
    return link->t->Connect(relay, cb, [&, l](Result<std::shared_ptr<transport::Connection>> c) {
      if (c) l->conn = *c;
      done.set_value(c ? Status::Ok() : c.error());
    });
  }).ok();
  Status s = done.get_future().get();
  if (!s.ok()) {
    std::fprintf(stderr, "connect failed: %s\n", s.ToString().c_str());
    std::exit(1);
  }
  transport::RunSync(*link->t, [l]() -> Status {
    pthread_getcpuclockid(pthread_self(), &l->loop_cpu);
    return Status::Ok();
  }).ok();
  return link;
}

// Sends commands built by `make(i)` for i in [0, n) with at most `window` outstanding; returns the responses.
std::vector<Response> Pipeline(Link& link, size_t n, size_t window, const std::function<CommandBody(size_t)>& make) {
  std::vector<Response> out(n);
  std::promise<void> done;
  size_t next = 0, got = 0;
  auto send_one = [&]() {
    const size_t i = next++;
    link.conn->Send(EncodeCommand(Command{uint32_t(i + 1), make(i)})).ok();
  };
  link.on_frame = [&](ByteView f) {
    auto d = DecodeServerFrame(f);
    if (!d) return;
    auto* r = std::get_if<Response>(&*d);
    if (!r) return;
    out[r->request_id - 1] = *r;
    if (++got == n) {
      done.set_value();
      return;
    }
    if (next < n) send_one();
  };
  link.t->Post([&] {
    for (size_t k = 0; k < window && next < n; ++k) send_one();
  }).ok();
  done.get_future().wait();
  transport::RunSync(*link.t, [&]() -> Status {
    link.on_frame = nullptr;
    return Status::Ok();
  }).ok();
  return out;
}

struct RelayFixture {
  std::string dir;
  SeededRandom random{7};
  NullLogSink log;
  std::unique_ptr<MailboxStore> store;
  RocksDbMailboxStore* rocks = nullptr;  // null with the in-memory store
  std::unique_ptr<RelayService> service;
  std::unique_ptr<transport::TcpTransport> transport;
  std::unique_ptr<RelayServer> server;

  RelayFixture(size_t workers, size_t max_mailboxes_per_key, bool sync = true, bool memory = false) {
    dir = MakeTempDir("db");
    if (memory) {
      store = NewInMemoryMailboxStore();
    } else {
      RocksDbStoreOptions store_options;
      store_options.sync = sync;
      auto opened = RocksDbMailboxStore::Open(dir + "/db", store_options).value();
      rocks = opened.get();
      store = std::move(opened);
    }
    RelayOptions ro;
    ro.max_mailboxes_per_key = max_mailboxes_per_key;
    service = std::make_unique<RelayService>(*store, SystemClock::Default(), random, ro, &log);
    SeededRandom r(99);
    transport = std::move(transport::TcpTransport::New(transport::StaticKeyPair::Generate(r)).value());
    ServerOptions so;
    so.max_connections = 1u << 20;
    so.max_connections_per_address = 1u << 20;
    // The load comes from one address, where a relay's clients come from many: the per-address handshake cap
    // (an abuse control) would otherwise refuse all but 16 of a batch of idle connections opened at once.
    so.max_handshaking_per_address = so.max_handshaking;
    // The owner link stands for a thousand devices: its acknowledgements in flight (one per delivery, each
    // answered once synced) would pass the per-connection cap meant for one device.
    so.max_in_flight_per_connection = 1u << 20;
    so.frame_burst = 1u << 30;
    so.frames_per_second = 1u << 30;
    so.workers = workers;
    server = RelayServer::Start(*transport, *service, transport::Endpoint::Parse("127.0.0.1:0").value(), so, log,
                                SystemClock::Default())
                 .value();
  }
  ~RelayFixture() {
    server->Stop();
    transport->Shutdown().ok();
    server.reset();
    transport.reset();
    service.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

struct RunResult {
  double per_second = 0;
  double p50_us = 0, p99_us = 0;                // deposit to delivery (the push to the owner)
  double stored_p50_us = 0, stored_p99_us = 0;  // deposit to its "stored" answer (synced)
  uint64_t acked = 0, refused = 0, delivered = 0;
  // CPU per acknowledged deposit: the load generator's (its two link loop threads) and the rest of the
  // process (the relay: its loop, the store's committer, RocksDB's threads).
  double client_cpu_us = 0, relay_cpu_us = 0;
};

// One timed run: `window` deposits in flight from `dep` for `seconds`; the owner link records push latency.
RunResult DepositRun(Link& owner, Link& dep, const std::vector<MailboxId>& boxes,
                     const std::vector<DepositToken>& tokens, size_t env_size, size_t window, double seconds,
                     bool owner_acks, int64_t ack_delay_ms, uint32_t run_tag) {
  const size_t cap = 4'000'000;
  auto sent_at = std::make_unique<std::atomic<int64_t>[]>(cap);
  std::vector<int64_t> lat;
  lat.reserve(1 << 20);
  std::atomic<uint64_t> delivered{0};
  Bytes envelope(env_size);
  SeededRandom(run_tag).Fill(envelope.data(), envelope.size());

  // The owner acknowledges every delivery, one Ack per message (each of a different mailbox), so the relay
  // removes it; mosquitto's QoS 1 subscriber answers each message with a PUBACK the same way.
  std::atomic<uint64_t> acks_sent{0}, acks_answered{0}, acks_refused{0};
  owner.t->Post([&] {
    owner.on_frame = [&](ByteView f) {
      const int64_t now = NowNs();
      auto d = DecodeServerFrame(f);
      if (!d) return;
      if (auto* r = std::get_if<Response>(&*d)) {
        acks_answered.fetch_add(1);
        if (r->code != ResponseCode::kOk) acks_refused.fetch_add(1);
        return;
      }
      auto* del = std::get_if<Delivery>(&*d);
      if (!del) return;
      if (owner_acks) {
        relay::Ack ack;
        ack.mailbox = del->mailbox;
        ack.message_ids.push_back(del->message_id);
        const uint64_t n = acks_sent.fetch_add(1);
        Bytes frame = EncodeCommand(Command{uint32_t(n + 1), std::move(ack)});
        if (ack_delay_ms == 0) {
          if (!owner.conn->Send(frame).ok()) return;
        } else {
          owner.t->ScheduleAfter(ack_delay_ms,
                                 [&owner, frame = std::move(frame)] { owner.conn->Send(frame).ok(); });
        }
      }
      uint32_t tag, idx;
      std::memcpy(&tag, del->message_id.data(), 4);
      std::memcpy(&idx, del->message_id.data() + 4, 4);
      if (tag != run_tag || idx >= cap) return;
      lat.push_back(now - sent_at[idx].load(std::memory_order_acquire));
      delivered.fetch_add(1);
    };
  }).ok();
  transport::RunSync(*owner.t, [] { return Status::Ok(); }).ok();

  std::vector<int64_t> stored;  // depositor's loop thread only
  stored.reserve(cap);
  std::promise<void> done;
  uint64_t next = 0, acked = 0, refused = 0, outstanding = 0;
  bool stopping = false;
  const int64_t t0 = NowNs();
  const int64_t cpu0 = CpuNs(CLOCK_PROCESS_CPUTIME_ID), dep0 = CpuNs(dep.loop_cpu), own0 = CpuNs(owner.loop_cpu);
  const int64_t deadline = t0 + int64_t(seconds * 1e9);
  int64_t t_end = 0;
  auto send_one = [&]() {
    const uint32_t i = uint32_t(next++);
    relay::Deposit d;
    d.mailbox = boxes[i % boxes.size()];
    d.token = tokens[i % boxes.size()];
    std::memcpy(d.message_id.data(), &run_tag, 4);
    std::memcpy(d.message_id.data() + 4, &i, 4);
    std::memcpy(envelope.data(), &i, 4);  // envelopes differ
    d.envelope = envelope;
    const Bytes frame = EncodeCommand(Command{i + 1, std::move(d)});
    sent_at[i].store(NowNs(), std::memory_order_release);
    ++outstanding;
    Status s = dep.conn->Send(frame);
    if (!s.ok()) std::fprintf(stderr, "send: %s\n", s.ToString().c_str());
  };
  dep.on_frame = [&](ByteView f) {
    auto d = DecodeServerFrame(f);
    if (!d) return;
    auto* r = std::get_if<Response>(&*d);
    if (!r) return;
    if (r->code == ResponseCode::kOk && r->request_id >= 1 && r->request_id <= next) {
      stored.push_back(NowNs() - sent_at[r->request_id - 1].load(std::memory_order_acquire));
    }
    --outstanding;
    if (r->code == ResponseCode::kOk) {
      ++acked;
    } else {
      ++refused;
    }
    const int64_t now = NowNs();
    if (now >= deadline || next >= cap) stopping = true;
    if (!stopping) {
      send_one();
    } else if (outstanding == 0) {
      t_end = now;
      done.set_value();
    }
  };
  dep.t->Post([&] {
    for (size_t k = 0; k < window; ++k) send_one();
  }).ok();
  done.get_future().wait();
  const int64_t client_cpu = CpuNs(dep.loop_cpu) - dep0 + CpuNs(owner.loop_cpu) - own0;
  const int64_t total_cpu = CpuNs(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
  transport::RunSync(*dep.t, [&] {
    dep.on_frame = nullptr;
    return Status::Ok();
  }).ok();
  // Let the last pushes land and their acknowledgements be answered, then stop recording.
  for (int i = 0; i < 200 && (delivered.load() < acked || acks_answered.load() < acks_sent.load()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  RunResult res;
  transport::RunSync(*owner.t, [&] {
    owner.on_frame = nullptr;
    res.p50_us = Percentile(lat, 0.50) / 1e3;
    res.p99_us = Percentile(lat, 0.99) / 1e3;
    return Status::Ok();
  }).ok();
  res.acked = acked;
  res.stored_p50_us = Percentile(stored, 0.50) / 1e3;
  res.stored_p99_us = Percentile(stored, 0.99) / 1e3;
  res.refused = refused;
  res.delivered = delivered.load();
  if (acks_refused.load() > 0 || acks_answered.load() < acks_sent.load()) {
    std::fprintf(stderr, "owner acks: %" PRIu64 " sent, %" PRIu64 " answered, %" PRIu64 " refused\n",
                 acks_sent.load(), acks_answered.load(), acks_refused.load());
  }
  res.per_second = double(acked) / (double(t_end - t0) / 1e9);
  if (acked > 0) {
    res.client_cpu_us = double(client_cpu) / 1e3 / double(acked);
    res.relay_cpu_us = double(total_cpu - client_cpu) / 1e3 / double(acked);
  }
  return res;
}

// memory: the in-memory store instead of RocksDB, for the bound.
void RelayDeposits(const Args& a, bool memory) {
  if (memory) {
    std::printf(
        "\n== Bound: the same load with the in-memory store (nothing written, NOT durable): the links, "
        "the protocol and the relay's loop without any store ==\n");
  } else {
    std::printf(
        "\n== Relay: %s deposits (RocksDB sync=%s, group commit), in-process server, Noise TCP on 127.0.0.1 "
        "==\n",
        a.sync ? "durable" : "NOT durable (--no-sync, CPU cost only)", a.sync ? "true" : "false");
  }
  std::printf("mailboxes=%zu seconds/run=%.1f runs=%d server workers=%zu; the owner %s; medians over runs\n",
              a.mailboxes, a.seconds, a.runs, a.workers,
              !a.owner_acks ? "acknowledges nothing (--no-owner-acks)"
              : a.ack_delay_ms > 0
                  ? ("acknowledges every delivery " + std::to_string(a.ack_delay_ms) + " ms late").c_str()
                  : "acknowledges every delivery at once");
  // push: deposit to delivery at the owner (a push goes out before the sync); stored: deposit to its answer,
  // which waits for the sync (or the owner's acknowledgement); never written: deposits acknowledged before
  // their batch was written.
  std::printf("%-9s %-9s %14s %12s %12s %12s %12s %10s %10s %10s %13s %12s %12s\n", "envelope", "in-flight",
              "deposits/s", "push p50 us", "push p99 us", "stored p50", "stored p99", "acked", "refused",
              "pushed", "never written", "relay cpu us", "load cpu us");
  for (size_t env : {size_t(300), size_t(4096)}) {
    for (size_t window : {size_t(64), size_t(1)}) {
      if ((a.only_envelope != 0 && env != a.only_envelope) || (a.only_window != 0 && window != a.only_window)) continue;
      if (memory && window != 64) continue;  // the bound is of throughput
      RelayFixture fx(a.workers, a.mailboxes + 16, a.sync, memory);
      auto owner = Connect(1, fx.server->endpoint());
      auto dep = Connect(2, fx.server->endpoint());
      const auto t_setup = Clk::now();
      auto created = Pipeline(*owner, a.mailboxes, 128, [](size_t) { return CommandBody(CreateMailbox{}); });
      std::vector<MailboxId> boxes;
      for (auto& r : created) {
        if (r.code != ResponseCode::kOk) {
          std::fprintf(stderr, "create mailbox: %s\n", r.message.c_str());
          std::exit(1);
        }
        boxes.push_back(std::get<MailboxCreated>(r.body).mailbox);
      }
      auto issued = Pipeline(*owner, boxes.size(), 128, [&](size_t i) { return CommandBody(IssueDepositToken{boxes[i]}); });
      std::vector<DepositToken> tokens;
      for (auto& r : issued) tokens.push_back(std::get<TokenIssued>(r.body).token);
      const double setup_s = std::chrono::duration<double>(Clk::now() - t_setup).count();
      std::vector<double> rate, p50, p99, stored_p50, stored_p99, relay_cpu, client_cpu;
      uint64_t acked = 0, refused = 0, pushed = 0;
      for (int run = 0; run < a.runs; ++run) {
        RunResult r = DepositRun(*owner, *dep, boxes, tokens, env, window, a.seconds, a.owner_acks,
                                 a.ack_delay_ms, uint32_t(1000 * env + 10 * window + run));
        rate.push_back(r.per_second);
        p50.push_back(r.p50_us);
        p99.push_back(r.p99_us);
        stored_p50.push_back(r.stored_p50_us);
        stored_p99.push_back(r.stored_p99_us);
        relay_cpu.push_back(r.relay_cpu_us);
        client_cpu.push_back(r.client_cpu_us);
        acked += r.acked;
        refused += r.refused;
        pushed += r.delivered;
      }
      std::printf(
          "%-9zu %-9zu %14.0f %12.1f %12.1f %12.1f %12.1f %10" PRIu64 " %10" PRIu64 " %10" PRIu64
          " %13" PRIu64 " %12.1f %12.1f   (setup of %zu mailboxes+tokens: %.2f s, syncs total %" PRIu64 ")\n",
          env, window, Median(rate), Median(p50), Median(p99), Median(stored_p50), Median(stored_p99), acked,
          refused, pushed, fx.rocks ? fx.rocks->UnwrittenDepositCount() : acked, Median(relay_cpu),
          Median(client_cpu), boxes.size(), setup_s, fx.rocks ? fx.rocks->SyncCount() : 0);
      std::fflush(stdout);
      transport::RunSync(*owner->t, [&] { owner->conn->Close(Status::Ok()); return Status::Ok(); }).ok();
      transport::RunSync(*dep->t, [&] { dep->conn->Close(Status::Ok()); return Status::Ok(); }).ok();
      owner->t->Shutdown().ok();
      dep->t->Shutdown().ok();
    }
  }
}

// ---- The ceiling link crypto alone sets. ----
// A deposit's envelope crosses four Noise cipher states: the depositor's, the relay's on the way in and on
// the way out to the owner, the owner's. One thread's ChaCha20-Poly1305 rate at the envelope's size says
// how many deposits per second that work alone allows on this machine's cores, before TCP, the store, the
// sync or the load generator's own bookkeeping: the bound the deposits/s above are to be read against.
void LinkCryptoCeiling(const Args& a) {
  std::printf(
      "\n== Ceiling: ChaCha20-Poly1305 (crypto::ChaChaPoly on OpenSSL, as the Noise links use it), one "
      "thread, 4 passes per deposit ==\n");
  std::printf("%-9s %14s %18s %22s\n", "envelope", "MB/s", "us per deposit", "deposits/s, all cores");
  const uint8_t key[crypto::kChaChaPolyKeySize] = {1};
  const uint8_t nonce[crypto::kChaChaPolyNonceSize] = {};
  auto aead = crypto::ChaChaPoly::New(key);
  if (!aead) {
    std::fprintf(stderr, "ChaCha20-Poly1305: %s\n", aead.error().ToString().c_str());
    return;
  }
  for (size_t env : {size_t(300), size_t(4096)}) {
    if (a.only_envelope && a.only_envelope != env) continue;
    std::vector<uint8_t> in(env, 7), out(env + crypto::kChaChaPolyTagSize);
    std::vector<double> us;
    for (int round = 0; round < 5; ++round) {
      constexpr int kMessages = 20000;
      const auto t0 = std::chrono::steady_clock::now();
      bool sealed = true;
      for (int i = 0; i < kMessages; ++i) sealed &= (*aead)->Seal(nonce, {}, in, out.data()).ok();
      if (!sealed) {
        std::fprintf(stderr, "ChaCha20-Poly1305: a seal failed\n");
        return;
      }
      us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
                   kMessages);
    }
    std::sort(us.begin(), us.end());
    const double per_pass = us[us.size() / 2];
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    std::printf("%-9zu %14.0f %18.2f %22.0f\n", env, env / per_pass, 4 * per_pass,
                cores * 1e6 / (4 * per_pass));
  }
}

// ---- Idle connections: the relay in a child process. ----
int64_t RssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

void IdleConnections(const Args& a) {
  std::printf("\n== Relay: resident memory with idle Noise connections (relay in a forked child) ==\n");
  int fds[2];
  if (pipe(fds) != 0) return;
  pid_t child = fork();
  if (child == 0) {
    close(fds[0]);
    {
      RelayFixture fx(a.workers, 16);
      const std::string ep = fx.server->endpoint().ToString();
      if (write(fds[1], ep.data(), ep.size()) < 0) _exit(1);
      close(fds[1]);
      for (;;) pause();  // killed by the parent
    }
    _exit(0);
  }
  close(fds[1]);
  char buf[512];
  ssize_t n = read(fds[0], buf, sizeof(buf));
  close(fds[0]);
  if (n <= 0) {
    std::printf("relay child failed to start\n");
    return;
  }
  const transport::Endpoint relay = transport::Endpoint::Parse(std::string(buf, size_t(n))).value();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const int64_t rss0 = RssKiB(child);

  SeededRandom r(3);
  auto t = std::move(transport::TcpTransport::New(transport::StaticKeyPair::Generate(r)).value());
  std::atomic<size_t> ok{0}, failed{0};
  std::vector<std::shared_ptr<transport::Connection>> conns;
  std::mutex mu;
  const size_t batch = 500;
  size_t target = a.idle;
  for (size_t started = 0; started < target;) {
    const size_t k = std::min(batch, target - started);
    transport::RunSync(*t, [&]() -> Status {
      for (size_t i = 0; i < k; ++i) {
        transport::ConnectionCallbacks cb;
        cb.on_frame = [](ByteView) {};
        cb.on_closed = [](Status) {};
        Status s = t->Connect(relay, cb, [&](Result<std::shared_ptr<transport::Connection>> c) {
          if (c) {
            std::lock_guard<std::mutex> lock(mu);
            conns.push_back(*c);
            ok.fetch_add(1);
          } else {
            failed.fetch_add(1);
          }
        });
        if (!s.ok()) failed.fetch_add(1);
      }
      return Status::Ok();
    }).ok();
    started += k;
    for (int w = 0; w < 3000 && ok.load() + failed.load() < started; ++w) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (failed.load() > 0) break;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const int64_t rss1 = RssKiB(child);
  const size_t open = ok.load();
  std::printf("connections open: %zu (failed %zu); relay VmRSS before %" PRId64 " KiB, after %" PRId64
              " KiB; per connection %.2f KiB\n",
              open, failed.load(), rss0, rss1, open ? double(rss1 - rss0) / double(open) : 0.0);
  std::fflush(stdout);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  t->Shutdown().ok();
}

// ---- mosquitto ----
struct MosqState {
  std::mutex mu;
  std::condition_variable cv;
  bool connected = false;
  bool subscribed = false;
  uint64_t acked = 0;
  uint64_t outstanding = 0;
  std::vector<int64_t>* lat = nullptr;
  std::atomic<uint64_t> delivered{0};
};

void MosquittoDeposits(const Args& a) {
  std::printf(
      "\n== mosquitto (Debian) broker on 127.0.0.1, QoS 1, persistent session (clean_session=false), "
      "persistence on, plain TCP (no TLS) ==\n");
  if (access("/usr/sbin/mosquitto", X_OK) != 0) {
    std::printf("mosquitto not installed; skipped\n");
    return;
  }
  const std::string dir = MakeTempDir("mosq");
  const int port = 20000 + int(getpid() % 20000);
  {
    std::ofstream conf(dir + "/mosquitto.conf");
    conf << "listener " << port << " 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location "
         << dir << "/\nmax_inflight_messages 0\nmax_queued_messages 0\nlog_dest none\n";
  }
  pid_t broker = fork();
  if (broker == 0) {
    execl("/usr/sbin/mosquitto", "mosquitto", "-c", (dir + "/mosquitto.conf").c_str(), (char*)nullptr);
    _exit(127);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  mosquitto_lib_init();
  std::printf("%-9s %-9s %14s %12s %12s %10s %10s\n", "envelope", "in-flight", "publishes/s", "p50 us", "p99 us",
              "acked", "delivered");
  for (size_t env : {size_t(300), size_t(4096)}) {
    for (size_t window : {size_t(64), size_t(1)}) {
      if ((a.only_envelope != 0 && env != a.only_envelope) || (a.only_window != 0 && window != a.only_window)) continue;
      std::vector<double> rate, p50, p99;
      uint64_t acked_total = 0, delivered_total = 0;
      for (int run = 0; run < a.runs; ++run) {
        const size_t cap = 4'000'000;
        auto sent_at = std::make_unique<std::atomic<int64_t>[]>(cap);
        std::vector<int64_t> lat;
        lat.reserve(1 << 20);
        MosqState sub_state, pub_state;
        sub_state.lat = &lat;
        struct Ctx {
          MosqState* st;
          std::atomic<int64_t>* sent_at;
        } sctx{&sub_state, sent_at.get()}, pctx{&pub_state, sent_at.get()};
        // Owner: a persistent session subscribed at QoS 1 to all mailbox topics.
        mosquitto* sub = mosquitto_new("cw-owner", false, &sctx);
        mosquitto* pub = mosquitto_new(("cw-dep-" + std::to_string(run)).c_str(), true, &pctx);
        mosquitto_int_option(sub, MOSQ_OPT_RECEIVE_MAXIMUM, 65535);
        mosquitto_max_inflight_messages_set(pub, unsigned(window));
        mosquitto_connect_callback_set(sub, [](mosquitto* m, void* u, int) {
          auto* c = static_cast<Ctx*>(u);
          mosquitto_subscribe(m, nullptr, "mb/#", 1);
          std::lock_guard<std::mutex> l(c->st->mu);
          c->st->connected = true;
          c->st->cv.notify_all();
        });
        mosquitto_subscribe_callback_set(sub, [](mosquitto*, void* u, int, int, const int*) {
          auto* c = static_cast<Ctx*>(u);
          std::lock_guard<std::mutex> l(c->st->mu);
          c->st->subscribed = true;
          c->st->cv.notify_all();
        });
        mosquitto_message_callback_set(sub, [](mosquitto*, void* u, const mosquitto_message* msg) {
          const int64_t now = NowNs();
          auto* c = static_cast<Ctx*>(u);
          if (msg->payloadlen < 4) return;
          uint32_t idx;
          std::memcpy(&idx, msg->payload, 4);
          c->st->lat->push_back(now - c->sent_at[idx].load(std::memory_order_acquire));
          c->st->delivered.fetch_add(1);
        });
        mosquitto_connect_callback_set(pub, [](mosquitto*, void* u, int) {
          auto* c = static_cast<Ctx*>(u);
          std::lock_guard<std::mutex> l(c->st->mu);
          c->st->connected = true;
          c->st->cv.notify_all();
        });
        mosquitto_publish_callback_set(pub, [](mosquitto*, void* u, int) {
          auto* c = static_cast<Ctx*>(u);
          std::lock_guard<std::mutex> l(c->st->mu);
          ++c->st->acked;
          --c->st->outstanding;
          c->st->cv.notify_all();
        });
        if (mosquitto_connect(sub, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS ||
            mosquitto_connect(pub, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS) {
          std::printf("cannot connect to mosquitto on port %d\n", port);
          kill(broker, SIGTERM);
          waitpid(broker, nullptr, 0);
          return;
        }
        mosquitto_loop_start(sub);
        mosquitto_loop_start(pub);
        {
          std::unique_lock<std::mutex> l(sub_state.mu);
          sub_state.cv.wait(l, [&] { return sub_state.subscribed; });
        }
        {
          std::unique_lock<std::mutex> l(pub_state.mu);
          pub_state.cv.wait(l, [&] { return pub_state.connected; });
        }
        std::vector<uint8_t> payload(env, 0x5a);
        std::vector<std::string> topics;
        for (size_t i = 0; i < a.mailboxes; ++i) topics.push_back("mb/" + std::to_string(i));
        const int64_t t0 = NowNs();
        const int64_t deadline = t0 + int64_t(a.seconds * 1e9);
        uint32_t next = 0;
        for (;;) {
          {
            std::unique_lock<std::mutex> l(pub_state.mu);
            pub_state.cv.wait(l, [&] { return pub_state.outstanding < window; });
            if (NowNs() >= deadline || next >= cap) break;
            ++pub_state.outstanding;
          }
          const uint32_t i = next++;
          std::memcpy(payload.data(), &i, 4);
          sent_at[i].store(NowNs(), std::memory_order_release);
          mosquitto_publish(pub, nullptr, topics[i % topics.size()].c_str(), int(payload.size()), payload.data(), 1, false);
        }
        {
          std::unique_lock<std::mutex> l(pub_state.mu);
          pub_state.cv.wait(l, [&] { return pub_state.outstanding == 0; });
        }
        const int64_t t_end = NowNs();
        for (int w = 0; w < 300 && sub_state.delivered.load() < pub_state.acked; ++w)
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        mosquitto_disconnect(pub);
        mosquitto_disconnect(sub);
        mosquitto_loop_stop(pub, false);
        mosquitto_loop_stop(sub, false);
        mosquitto_destroy(pub);
        mosquitto_destroy(sub);
        rate.push_back(double(pub_state.acked) / (double(t_end - t0) / 1e9));
        p50.push_back(Percentile(lat, 0.5) / 1e3);
        p99.push_back(Percentile(lat, 0.99) / 1e3);
        acked_total += pub_state.acked;
        delivered_total += sub_state.delivered.load();
      }
      std::printf("%-9zu %-9zu %14.0f %12.1f %12.1f %10" PRIu64 " %10" PRIu64 "\n", env, window, Median(rate),
                  Median(p50), Median(p99), acked_total, delivered_total);
      std::fflush(stdout);
    }
  }
  mosquitto_lib_cleanup();
  kill(broker, SIGTERM);
  waitpid(broker, nullptr, 0);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"Load generator for the blind relay: durable deposits, latency, idle connections, mosquitto"};
  app.add_option("--mailboxes", a.mailboxes, "mailboxes deposited to, round robin")->check(CLI::Range(1, 1000000));
  app.add_option("--seconds", a.seconds, "seconds per measured run")->check(CLI::Range(0.1, 3600.0));
  app.add_option("--runs", a.runs, "runs per configuration (medians are reported)")->check(CLI::PositiveNumber);
  app.add_option("--idle", a.idle, "idle connections for the memory figure (0: skip)");
  app.add_option("--workers", a.workers, "relay worker threads")->check(CLI::Range(1, 256));
  app.add_flag("!--no-mosquitto", a.mosquitto, "skip the mosquitto comparison");
  app.add_flag("!--no-owner-acks", a.owner_acks,
               "the owner does not acknowledge deliveries: every deposit stays stored (a growing backlog)");
  app.add_option("--ack-delay-ms", a.ack_delay_ms,
                 "the owner sends each acknowledgement this many ms late (a remote owner's round trip)")
      ->check(CLI::Range(0, 10000));
  app.add_flag("!--no-sync", a.sync, "no fsync: the relay's CPU cost only (figures are NOT durable)");
  app.add_flag("!--no-bound", a.bound,
               "skip the bound: the same load with the in-memory store (nothing written)");
  app.add_option("--envelope", a.only_envelope, "only this envelope size")->check(CLI::IsMember({300, 4096}));
  app.add_option("--window", a.only_window, "only this many deposits in flight")->check(CLI::IsMember({1, 64}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  signal(SIGPIPE, SIG_IGN);
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  std::printf("RLIMIT_NOFILE soft=hard=%llu; %u CPUs; allocator: %s\n", (unsigned long long)rl.rlim_cur,
              std::thread::hardware_concurrency(), cw::relay::AllocatorName().c_str());
  if (a.idle + 64 > rl.rlim_cur) {
    a.idle = rl.rlim_cur - 64;
    std::printf("idle connections capped at %zu by RLIMIT_NOFILE\n", a.idle);
  }
  // Fork the idle-connection relay first, before this process has any threads.
  if (a.idle > 0) IdleConnections(a);
  RelayDeposits(a, false);
  if (a.bound) RelayDeposits(a, true);
  LinkCryptoCeiling(a);
  if (a.mosquitto) MosquittoDeposits(a);
  return 0;
}
