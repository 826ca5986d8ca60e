// cipherward-relay: the blind relay binary. Wires TcpTransport, the RocksDB store and RelayService together.
//
//   cipherward-relay --data-dir DIR [--listen 127.0.0.1:7400] [--key-file FILE] [--config FILE] ...
//
// On first start it draws the relay's static Noise key and keeps it in the key file (mode 0600); every
// start prints the address clients pin, `cw://<key>@host:port`, on stdout. SIGINT or SIGTERM stops it
// gracefully: no new connections or commands, every command taken in finishes (its writes synced) and is
// answered before its link closes, the store closes. Logs are logfmt lines on stderr, never holding
// envelopes, tokens or keys.
#include <fcntl.h>
#include <sodium.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include "core/base/random.h"
#include "core/base/secret.h"
#include "relay/allocator.h"
#include "relay/rate_limiter.h"
#include "relay/relay_service.h"
#include "relay/rocksdb_mailbox_store.h"
#include "relay/run.h"
#include "relay/server.h"
#include "transport/tcp_transport.h"

namespace {

using cw::Result;
using cw::Status;
using cw::StatusCode;

// Reads the relay's private key (64 hex digits) or, when the file does not exist, creates it.
Result<cw::transport::StaticKeyPair> LoadOrCreateKey(const std::string& path, bool* created) {
  *created = false;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    auto pair = cw::transport::StaticKeyPair::Generate(cw::SystemRandom::Default());
    std::string hex = cw::ToHex(pair.private_key().reveal());
    hex.push_back('\n');
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return cw::Error(StatusCode::kUnavailable, "cannot create the key file");
    const bool ok = ::write(fd, hex.data(), hex.size()) == static_cast<ssize_t>(hex.size()) && ::fsync(fd) == 0;
    ::close(fd);
    sodium_memzero(hex.data(), hex.size());
    if (!ok) return cw::Error(StatusCode::kUnavailable, "cannot write the key file");
    *created = true;
    return pair;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    return cw::Error(StatusCode::kPermissionDenied, "key file is readable by others; chmod 600 it");
  }
  std::ifstream in(path);
  std::string hex((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!hex.empty() && (hex.back() == '\n' || hex.back() == '\r' || hex.back() == ' ')) hex.pop_back();
  cw::Bytes raw;
  const bool parsed = cw::FromHex(hex, &raw);
  sodium_memzero(hex.data(), hex.size());
  if (!parsed || raw.size() != cw::transport::kKeySize) {
    sodium_memzero(raw.data(), raw.size());
    return cw::Error(StatusCode::kMalformed, "key file does not hold a 32-byte hex key");
  }
  cw::SecretBytes secret(raw);
  sodium_memzero(raw.data(), raw.size());
  return cw::transport::StaticKeyPair::FromPrivateKey(secret.reveal());
}

// Raises the soft open-file limit to the hard one (Debian's soft default, 1024, would hold about a thousand
// connections), lowers the connection caps to what it allows (see FitToOpenFileLimit), saying so, and sizes
// the store's open table files to the descriptors the connections leave.
cw::relay::ServerOptions UseOpenFileLimit(cw::relay::ServerOptions options,
                                          cw::relay::RocksDbStoreOptions* store, cw::relay::LogSink& log) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return options;
  if (rl.rlim_cur != rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  if (rl.rlim_cur == RLIM_INFINITY) return options;
  // Of the reserve, 256 stay for the rest: attachment files (at most 64 written and 64 read at once, see
  // attachment_files.cc), RocksDB's logs and manifest, the process's own. 20 is RocksDB's least.
  const uint64_t reserved = cw::relay::ReservedDescriptors(rl.rlim_cur);
  store->max_open_files = static_cast<int>(std::max<uint64_t>(20, reserved > 256 ? reserved - 256 : 0));
  const cw::relay::ServerOptions fitted = cw::relay::FitToOpenFileLimit(options, rl.rlim_cur);
  if (fitted.max_connections != options.max_connections ||
      fitted.max_handshaking != options.max_handshaking) {
    log.Log(cw::relay::LogLevel::kWarn, "connections_capped",
            {{"open_file_limit", std::to_string(rl.rlim_cur)},
             {"max_connections", std::to_string(fitted.max_connections)},
             {"max_handshaking", std::to_string(fitted.max_handshaking)},
             {"hint", "raise the open-file limit (ulimit -n, LimitNOFILE=) for more"}});
  }
  return fitted;
}

int Fail(cw::relay::LogSink& log, const char* event, const Status& s) {
  log.Log(cw::relay::LogLevel::kError, event, {{"error", s.ToString()}});
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cipherward-relay: the Cipherward blind relay"};
  std::string listen = "127.0.0.1:7400";
  std::string data_dir;
  std::string key_file;
  std::string log_level = "info";
  std::vector<std::string> stats_keys;
  int64_t ttl_days = 30;
  uint64_t max_attachment_mib = 100;
  uint64_t min_free_disk_mib = 1024;
  uint32_t quota_messages = 1000;
  uint64_t quota_mib = 64;
  std::string advertise;
  int64_t attachment_ttl_days = 30;
  int64_t unfinished_upload_hours = 24;
  cw::relay::TokenBucketLimiter::Options bundle_fetch;
  cw::relay::ServerOptions server_options;
  app.add_option("--listen", listen, "host:port to listen on")->capture_default_str();
  app.add_option("--data-dir", data_dir, "directory of the relay's RocksDB store")->required();
  app.add_option("--key-file", key_file, "the relay's static Noise key (created on first start) [DATA_DIR/relay.key]");
  app.set_config("--config", "", "read options from this TOML/INI file");
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  app.add_option("--stats-key", stats_keys, "link key (hex) allowed the stats command; repeatable");
  app.add_option("--message-ttl-days", ttl_days, "days a message waits")->capture_default_str();
  app.add_option("--max-attachment-mib", max_attachment_mib, "largest attachment")->capture_default_str();
  app.add_option("--min-free-disk-mib", min_free_disk_mib,
                 "new attachments are refused when the disk would keep less free than this")
      ->capture_default_str();
  app.add_option("--advertise", advertise,
                 "IP[:port] clients reach this relay at, for the printed address [the listening address]");
  app.add_option("--attachment-ttl-days", attachment_ttl_days, "days an attachment is kept")
      ->check(CLI::Range(1, 3650))
      ->capture_default_str();
  app.add_option("--unfinished-upload-hours", unfinished_upload_hours,
                 "hours after which an upload still unfinished is removed")
      ->check(CLI::Range(1, 87600))
      ->capture_default_str();
  app.add_option("--bundle-fetch-burst", bundle_fetch.capacity,
                 "pre-key bundles one link key may fetch at once (each takes a one-time pre-key)")
      ->check(CLI::Range(1u, 1000000u))
      ->capture_default_str();
  int64_t bundle_fetch_every_seconds = bundle_fetch.refill_millis / 1000;
  app.add_option("--bundle-fetch-every-seconds", bundle_fetch_every_seconds,
                 "then one more bundle per this many seconds")
      ->check(CLI::Range(int64_t{1}, int64_t{86400}))
      ->capture_default_str();
  app.add_option("--quota-messages", quota_messages, "messages per mailbox")->capture_default_str();
  app.add_option("--quota-mib", quota_mib, "envelope MiB per mailbox")->capture_default_str();
  app.add_option("--max-connections", server_options.max_connections)->capture_default_str();
  app.add_option("--max-connections-per-address", server_options.max_connections_per_address)
      ->capture_default_str();
  app.add_option("--frames-per-second", server_options.frames_per_second, "per address")->capture_default_str();
  app.add_option("--frame-burst", server_options.frame_burst, "per address")->capture_default_str();
  app.add_option("--workers", server_options.workers)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  cw::relay::LogLevel level = cw::relay::LogLevel::kInfo;
  if (log_level == "debug") level = cw::relay::LogLevel::kDebug;
  if (log_level == "warn") level = cw::relay::LogLevel::kWarn;
  if (log_level == "error") level = cw::relay::LogLevel::kError;
  cw::relay::StderrLogSink log(level);

  // SIGINT and SIGTERM are taken by sigwait in this thread only: blocked before any other thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  if (sodium_init() < 0) return Fail(log, "startup_failed", Status(StatusCode::kInternal, "libsodium init"));
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (key_file.empty()) key_file = data_dir + "/relay.key";

  cw::relay::RelayOptions options;
  options.message_ttl_millis = ttl_days * 24 * 3600 * 1000;
  options.max_attachment_size = max_attachment_mib << 20;
  options.min_free_disk_bytes = min_free_disk_mib << 20;
  options.attachment_ttl_millis = attachment_ttl_days * 24 * 3600 * 1000;
  options.unfinished_attachment_ttl_millis = unfinished_upload_hours * 3600 * 1000;
  bundle_fetch.refill_millis = bundle_fetch_every_seconds * 1000;
  options.bundle_fetch_limit = bundle_fetch;
  options.quota.max_messages = quota_messages;
  options.quota.max_bytes = quota_mib << 20;
  for (const auto& hex : stats_keys) {
    auto key = cw::transport::ParseKey(hex);
    if (!key) return Fail(log, "bad_option", key.error());
    cw::relay::LinkKey k;
    std::copy(key->begin(), key->end(), k.begin());
    options.stats_keys.push_back(k);
  }
  auto endpoint = cw::transport::Endpoint::Parse(listen);
  if (!endpoint) return Fail(log, "bad_option", endpoint.error());
  // "ip" or "ip:port" ("[v6]" or "[v6]:port"); port 0 means the one the relay listens on. Only what a
  // client's transport can dial (it resolves no names).
  std::optional<cw::transport::Endpoint> advertised;
  if (!advertise.empty()) {
    const bool has_port = advertise.back() != ']' && advertise.find(':') != std::string::npos;
    auto parsed = cw::transport::Endpoint::Parse(has_port ? advertise : advertise + ":0");
    if (!parsed || parsed->static_key || !cw::transport::CheckDialableHost(parsed->host).ok()) {
      return Fail(
          log, "bad_option",
          cw::Status(StatusCode::kInvalidArgument,
                     "--advertise wants the IP address clients reach the relay at, with or without :port"));
    }
    advertised = *parsed;
  } else if (endpoint->host == "0.0.0.0" || endpoint->host == "::") {
    log.Log(cw::relay::LogLevel::kWarn, "advertise_missing",
            {{"hint", "the printed address names no host other machines can reach; give --advertise IP"}});
  }

  bool created = false;
  auto key = LoadOrCreateKey(key_file, &created);
  if (!key) return Fail(log, "key_failed", key.error());
  if (created) log.Log(cw::relay::LogLevel::kInfo, "key_created", {{"file", key_file}});

  auto transport = cw::transport::TcpTransport::New(std::move(*key));
  if (!transport) return Fail(log, "transport_failed", transport.error());

  cw::relay::RunOptions run;
  run.relay = options;
  cw::relay::RocksDbStoreOptions store_options;
  run.server = UseOpenFileLimit(server_options, &store_options, log);
  cw::relay::RunHooks hooks;
  const std::string store_dir = data_dir + "/store";
  hooks.open_store = [&]() -> cw::Result<std::unique_ptr<cw::relay::MailboxStore>> {
    auto store = cw::relay::RocksDbMailboxStore::Open(store_dir, store_options);
    if (!store) return cw::Error(store.error());
    log.Log(cw::relay::LogLevel::kInfo, "store_opened",
            {{"dir", store_dir}, {"allocator", cw::relay::AllocatorName()}});
    return std::unique_ptr<cw::relay::MailboxStore>(std::move(*store));
  };
  hooks.wait_for_stop = [&](int64_t millis) {
    const timespec timeout{static_cast<time_t>(millis / 1000), static_cast<long>(millis % 1000) * 1'000'000};
    const int sig = sigtimedwait(&signals, nullptr, &timeout);
    if (sig < 0) return false;  // the time is up (or an interruption): keep serving
    log.Log(cw::relay::LogLevel::kInfo, "signal", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
    return true;
  };
  bool announced = false;
  hooks.listening = [&](const cw::transport::Endpoint& where) {
    // The address goes to stdout once, for whoever started the relay; a restart after a store failure keeps
    // it.
    if (announced) return;
    announced = true;
    cw::transport::Endpoint shown = where;
    if (advertised) {
      shown.host = advertised->host;
      if (advertised->port != 0) shown.port = advertised->port;
    }
    std::printf("%s\n", shown.ToString().c_str());
    std::fflush(stdout);
  };
  int rc = 0;
  const Status ran = cw::relay::RunRelay(**transport, *endpoint, run, hooks, log, cw::SystemClock::Default(),
                                         cw::SystemRandom::Default());
  if (!ran.ok()) rc = Fail(log, "start_failed", ran);  // the store would not open, or the address is taken
  Status down = (*transport)->Shutdown();
  if (!down.ok()) log.Log(cw::relay::LogLevel::kWarn, "transport_shutdown", {{"error", down.ToString()}});
  log.Log(cw::relay::LogLevel::kInfo, "exit", {{"code", std::to_string(rc)}});
  return rc;
}
