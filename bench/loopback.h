// Helpers for the plain-main benchmarks that run runtime Clients against a relay on 127.0.0.1
// (cw_latency_bench, cw_group_bench): failing loudly, a temporary directory, latency percentiles, and the
// relay itself. A benchmark that cannot set up must not print numbers, so failures end the process.
// Thread rules: call from the benchmark's main thread.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/status.h"
#include "relay/log.h"
#include "relay/relay_service.h"
#include "relay/rocksdb_mailbox_store.h"
#include "relay/server.h"
#include "transport/tcp_transport.h"

namespace cw::bench {

[[noreturn]] inline void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "%s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}
inline void Must(const Status& s, const std::string& what) {
  if (!s.ok()) Die(what, s);
}
template <typename T>
T Must(Result<T> r, const std::string& what) {
  if (!r) Die(what, r.error());
  return std::move(*r);
}

class TempDir {
 public:
  explicit TempDir(const std::string& name) {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/" + name + "_XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string Sub(const std::string& n) const { return path_ + "/" + n; }

 private:
  std::string path_;
};

struct Percentiles {
  double p50, p90, p99, max;
};

inline Percentiles Summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  auto at = [&](double q) { return us[std::min(us.size() - 1, static_cast<size_t>(q * us.size()))]; };
  return {at(0.50), at(0.90), at(0.99), us.back()};
}

// A relay as the cipherward-relay binary runs it (RocksDB store, deposits answered after their fsync), on
// 127.0.0.1 with a fresh key, its data in `dir`.
class LoopbackRelay {
 public:
  LoopbackRelay(const std::string& dir, relay::ServerOptions options = {})
      : store_(Must(relay::RocksDbMailboxStore::Open(dir), "relay store")),
        service_(*store_, SystemClock::Default(), SystemRandom::Default(), relay::RelayOptions{}, &log_),
        transport_(Must(transport::TcpTransport::New(transport::StaticKeyPair::Generate(SystemRandom::Default())),
                        "relay transport")),
        server_(Must(relay::RelayServer::Start(*transport_, service_,
                                               Must(transport::Endpoint::Parse("127.0.0.1:0"), "endpoint"),
                                               options, log_, SystemClock::Default()),
                     "relay")) {}
  ~LoopbackRelay() {
    server_->Stop();
    (void)transport_->Shutdown();
  }
  std::string address() const { return server_->endpoint().ToString(); }

 private:
  relay::NullLogSink log_;
  std::unique_ptr<relay::RocksDbMailboxStore> store_;
  relay::RelayService service_;
  std::unique_ptr<transport::TcpTransport> transport_;
  std::unique_ptr<relay::RelayServer> server_;
};

}  // namespace cw::bench
