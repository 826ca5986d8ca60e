// cw_attachment_bench: attachment throughput (issue 5, Benchmarks). Plain main, prints a table.
//
//   build/rel/bench/cw_attachment_bench [--mib 20] [--runs 5]
//
// 1. crypto only: UploadAttachment then DownloadAttachment against an in-memory BlobChannel: file read,
//    secretstream encryption, BLAKE2b digest, decryption, file write and fsync, no network. The ceiling.
// 2. end to end on loopback: a RelayServer (RocksDB store, every chunk synced before it is acknowledged; then
//    again with the in-memory store, to tell the relay's disk from the rest) in
//    this process on 127.0.0.1, two Clients (each its own loop thread and Noise link). dr.lee SendFile()s a
//    file of --mib MiB to pat (upload + the kFile message), pat Sync()s and FetchAttachment()s it to disk.
//    Reported: upload MB/s (SendFile), download MB/s (FetchAttachment), and end to end: file size / time from
//    SendFile's start to the file on pat's disk (SendFile, deposit of the message, pat's Sync, download).
//    The process's CPU time per MB over the upload and over the download (every thread: the relay is in this
//    process) tells how far each is from using both cores. Then "overlapped": dr.lee uploads the file again
//    while pat downloads the previous copy, both at once; file size / the time until both are done. What a
//    design that streams a download behind its upload could reach end to end at best on this machine (the two
//    halves share its cores), measured, not modelled.
// 3. the ceiling: one thread's rate for each cryptographic pass a byte takes end to end (secretstream and
//    BLAKE2b at the sender and the recipient; the links' ChaCha20-Poly1305 out of the sender, into and out
//    of the relay, into the recipient; each on the library the code runs it on), and what that CPU alone
//    allows on this machine's cores, before any copy, system call or disk write. Reported so the end-to-end
//    figure can be read against it.
// The relay's per-address frame limit (1000/s by default) is lifted: both clients share 127.0.0.1, and the
// limit is an abuse control, not what this measures. MB = 10^6 bytes. Medians over --runs runs.
#include <sodium.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/crypto/crypto.h"
#include "core/runtime/attachment.h"
#include "core/runtime/client.h"
#include "relay/log.h"
#include "relay/rocksdb_mailbox_store.h"
#include "relay/server.h"
#include "transport/tcp_transport.h"

namespace {

using namespace cw;
using Clk = std::chrono::steady_clock;

double Seconds(Clk::time_point a, Clk::time_point b) { return std::chrono::duration<double>(b - a).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// CPU time of the whole process (every thread: both clients, the relay, the bench), in ms.
double CpuMs() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto ms = [](const timeval& t) { return t.tv_sec * 1e3 + t.tv_usec / 1e3; };
  return ms(u.ru_utime) + ms(u.ru_stime);
}

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "cw_attachment_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}
template <typename T>
T Must(const std::string& what, Result<T> r) {
  if (!r) Die(what, r.error());
  return std::move(*r);
}
void Must(const std::string& what, const Status& s) {
  if (!s.ok()) Die(what, s);
}

std::string MakeTempDir() {
  std::string pattern = "/tmp/cw_attachment_bench_XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) {
    std::perror("mkdtemp");
    std::exit(1);
  }
  return buf.data();
}

// Blobs in memory, with the relay's append rule.
class MemoryBlobs final : public runtime::BlobChannel {
 public:
  Result<wire::BlobId> Create(uint64_t) override {
    wire::BlobId id{};
    id[0] = static_cast<uint8_t>(++n_);
    blobs_[id].clear();
    return id;
  }
  Result<uint64_t> Put(const wire::BlobId& id, uint64_t, ByteView piece) override {
    Bytes& b = blobs_[id];
    b.insert(b.end(), piece.begin(), piece.end());
    return b.size();
  }
  Result<Read> Get(const wire::BlobId& id, uint64_t offset, uint32_t max_len) override {
    const Bytes& b = blobs_[id];
    const size_t n = std::min<uint64_t>(max_len, b.size() - offset);
    return Read{b.size(), Bytes(b.begin() + static_cast<ptrdiff_t>(offset),
                                b.begin() + static_cast<ptrdiff_t>(offset + n))};
  }

 private:
  std::map<wire::BlobId, Bytes> blobs_;
  int n_ = 0;
};

// MB/s of `pass` over 64 KiB pieces on this thread, the median of 5 rounds of 32 MiB.
template <typename Pass>
double RateOf(Pass pass) {
  constexpr size_t kPiece = 64 * 1024;
  constexpr int kPieces = 512;
  Bytes in(kPiece), out(kPiece + 64);
  SeededRandom(9).Fill(in.data(), in.size());
  std::vector<double> rates;
  for (int round = 0; round < 5; ++round) {
    const auto t0 = Clk::now();
    for (int i = 0; i < kPieces; ++i) pass(in, out);
    rates.push_back(kPiece * double{kPieces} / 1e6 / Seconds(t0, Clk::now()));
  }
  return Median(rates);
}

struct Ceiling {
  double secretstream, libsodium_secretstream, blake2b, aead, ms_per_mb, mb_per_s;
  unsigned cores;
};

Ceiling MeasureCeiling() {
  Ceiling c{};
  uint8_t key[32] = {1};
  // What attachments encrypt with (core/runtime/attachment.cc), and libsodium's own beside it.
  uint8_t header[crypto::kSecretStreamHeaderSize];
  auto stream =
      Must("secretstream", crypto::SecretStream::NewPush(std::span<const uint8_t>(key, sizeof key), header));
  c.secretstream = RateOf([&](const Bytes& in, Bytes& out) {
    Must("secretstream", stream->Push(in, crypto::kSecretStreamTagMessage, out.data()));
  });
  crypto_secretstream_xchacha20poly1305_state st;
  crypto_secretstream_xchacha20poly1305_init_push(&st, header, key);
  c.libsodium_secretstream = RateOf([&](const Bytes& in, Bytes& out) {
    crypto_secretstream_xchacha20poly1305_push(&st, out.data(), nullptr, in.data(), in.size(), nullptr, 0, 0);
  });
  crypto_generichash_state h;
  crypto_generichash_init(&h, nullptr, 0, crypto_generichash_BYTES);
  c.blake2b = RateOf([&](const Bytes& in, Bytes&) { crypto_generichash_update(&h, in.data(), in.size()); });
  // What the links seal with (transport/noise.cc).
  auto aead = Must("ChaCha20-Poly1305", crypto::ChaChaPoly::New(std::span<const uint8_t>(key, sizeof key)));
  const uint8_t nonce[crypto::kChaChaPolyNonceSize] = {};
  c.aead = RateOf(
      [&](const Bytes& in, Bytes& out) { Must("ChaCha20-Poly1305", aead->Seal(nonce, {}, in, out.data())); });
  // Per MB end to end: secretstream and BLAKE2b twice (sender, recipient), the link AEAD four times.
  c.ms_per_mb = 2e3 / c.secretstream + 2e3 / c.blake2b + 4e3 / c.aead;
  c.cores = std::max(1u, std::thread::hardware_concurrency());
  c.mb_per_s = c.cores * 1e3 / c.ms_per_mb;
  return c;
}

struct Relay {
  relay::NullLogSink log;
  std::unique_ptr<relay::MailboxStore> store;
  std::unique_ptr<relay::RelayService> service;
  std::unique_ptr<transport::TcpTransport> transport;
  std::unique_ptr<relay::RelayServer> server;

  Relay(const std::string& dir, bool in_memory) {
    std::filesystem::create_directories(dir);
    if (in_memory) {
      store = relay::NewInMemoryMailboxStore();
    } else {
      store = Must("open relay store", relay::RocksDbMailboxStore::Open(dir + "/db"));
    }
    service = std::make_unique<relay::RelayService>(*store, SystemClock::Default(), SystemRandom::Default(),
                                                    relay::RelayOptions{}, &log);
    transport =
        Must("relay transport",
             transport::TcpTransport::New(transport::StaticKeyPair::Generate(SystemRandom::Default())));
    relay::ServerOptions so;
    so.frame_burst = 1u << 30;
    so.frames_per_second = 1u << 30;
    so.workers = 4;
    server = Must("relay start",
                  relay::RelayServer::Start(*transport, *service,
                                            Must("endpoint", transport::Endpoint::Parse("127.0.0.1:0")), so,
                                            log, SystemClock::Default()));
  }
  ~Relay() {
    server->Stop();
    (void)transport->Shutdown();
  }
};

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 20;
  int runs = 5;
  bool relay_only = false;
  CLI::App app{"Attachment throughput: crypto only, and end to end through a loopback relay"};
  app.add_option("--mib", mib, "file size in MiB")->check(CLI::Range(1, 4096));
  app.add_option("--runs", runs, "runs (medians are reported)")->check(CLI::PositiveNumber);
  app.add_flag("--relay-only", relay_only, "only the RocksDB relay path (for profiling it alone)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (sodium_init() < 0) return 1;
  const std::string dir = MakeTempDir();
  const size_t size = mib << 20;
  {
    Bytes content(size);
    SeededRandom(5).Fill(content.data(), content.size());
    std::ofstream(dir + "/file.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(content.data()), static_cast<std::streamsize>(content.size()));
  }
  const double mb = static_cast<double>(size) / 1e6;

  // 1. crypto only
  std::vector<double> c_up, c_down;
  for (int r = 0; r < runs && !relay_only; ++r) {
    MemoryBlobs blobs;
    const auto t0 = Clk::now();
    auto d = Must("upload", runtime::UploadAttachment(blobs, dir + "/file.bin"));
    const auto t1 = Clk::now();
    const std::string out = dir + "/mem-" + std::to_string(r);
    Must("download", runtime::DownloadAttachment(blobs, d, out));
    const auto t2 = Clk::now();
    std::filesystem::remove(out);
    c_up.push_back(mb / Seconds(t0, t1));
    c_down.push_back(mb / Seconds(t1, t2));
  }

  struct Row {
    double up, down, total, overlapped;
    double cpu_up, cpu_down;  // ms of CPU per MB, all threads
  };
  auto end_to_end = [&](bool in_memory) -> Row {
    Relay relay(dir + (in_memory ? "/relay-mem" : "/relay"), in_memory);
    const std::string address = relay.server->endpoint().ToString();
    runtime::ClientOptions o;
    o.keystore = storage::KeystoreOptions::MinimumCostForTesting();
    std::vector<runtime::IncomingFile> got;
    runtime::ClientOptions po = o;
    po.callbacks.on_file = [&](const runtime::IncomingFile& f) {
      got.push_back(
          runtime::IncomingFile{f.contact, f.sequence, f.sent_at_ms, f.received_at_ms, f.attachment.Clone()});
    };
    auto pass = AsBytes("bench passphrase");
    const std::string tag = in_memory ? "-mem" : "";
    auto clinician =
        Must("create clinician", runtime::Client::Create(dir + "/clinician" + tag, "dr.lee", pass, o));
    auto patient = Must("create patient", runtime::Client::Create(dir + "/patient" + tag, "pat", pass, po));
    Must("register", clinician->Register(address));
    const std::string code = Must("invite", clinician->CreateInvite());
    Must("accept", patient->AcceptInvite(code, "hello"));
    Must("sync", clinician->Sync());

    std::vector<double> e_up, e_down, e_total, cpu_up, cpu_down;
    for (int r = 0; r < runs; ++r) {
      got.clear();
      const auto t0 = Clk::now();
      const double c0 = CpuMs();
      Must("send file", clinician->SendFile("pat", dir + "/file.bin"));
      const auto t1 = Clk::now();
      cpu_up.push_back((CpuMs() - c0) / mb);
      Must("clinician sync", clinician->Sync());  // the kFile message is deposited
      Must("patient sync", patient->Sync());
      if (got.size() != 1) Die("receive", Status(StatusCode::kInternal, "no file message"));
      const auto t2 = Clk::now();
      const double c2 = CpuMs();
      const std::string out = dir + "/relay-" + std::to_string(r);
      Must("fetch", patient->FetchAttachment(got[0].attachment, out));
      const auto t3 = Clk::now();
      cpu_down.push_back((CpuMs() - c2) / mb);
      std::filesystem::remove(out);
      e_up.push_back(mb / Seconds(t0, t1));
      e_down.push_back(mb / Seconds(t2, t3));
      e_total.push_back(mb / Seconds(t0, t3));
    }
    std::vector<double> e_overlapped;
    for (int r = 0; r < runs; ++r) {
      const auto previous = got.back().attachment.Clone();
      got.clear();  // the new copy's message may be pushed to pat while it downloads
      const std::string out = dir + "/overlapped-" + std::to_string(r);
      const auto t0 = Clk::now();
      std::thread download([&] { Must("fetch", patient->FetchAttachment(previous, out)); });
      Must("send file", clinician->SendFile("pat", dir + "/file.bin"));
      download.join();
      e_overlapped.push_back(mb / Seconds(t0, Clk::now()));
      std::filesystem::remove(out);
      Must("clinician sync", clinician->Sync());
      Must("patient sync", patient->Sync());
      if (got.size() != 1) Die("receive", Status(StatusCode::kInternal, "no file message"));
    }
    clinician.reset();
    patient.reset();
    return Row{Median(e_up),         Median(e_down), Median(e_total),
               Median(e_overlapped), Median(cpu_up), Median(cpu_down)};
  };
  const Ceiling ceiling = relay_only ? Ceiling{} : MeasureCeiling();
  const Row disk = end_to_end(false);
  const Row memory = relay_only ? Row{} : end_to_end(true);

  std::printf("attachment throughput, %zu MiB file, median of %d runs (MB/s, 1 MB = 10^6 B)\n", mib, runs);
  std::printf("  %-44s %8s %8s %8s %10s\n", "", "upload", "download", "end2end", "overlapped");
  if (!relay_only) {
    std::printf("  %-44s %8.0f %8.0f %8s\n", "crypto + file I/O only (in-memory blobs)", Median(c_up),
                Median(c_down), "-");
  }
  std::printf("  %-44s %8.0f %8.0f %8.0f %10.0f\n", "loopback relay (RocksDB, synced), 2 clients", disk.up,
              disk.down, disk.total, disk.overlapped);
  if (!relay_only) {
    std::printf("  %-44s %8.0f %8.0f %8.0f %10.0f\n", "loopback relay (in-memory store), 2 clients",
                memory.up, memory.down, memory.total, memory.overlapped);
  }
  std::printf(
      "  CPU per MB, every thread of the process (clients, relay): upload %.2f ms, download %.2f ms "
      "(RocksDB)",
      disk.cpu_up, disk.cpu_down);
  if (!relay_only)
    std::printf("; upload %.2f ms, download %.2f ms (in-memory)", memory.cpu_up, memory.cpu_down);
  std::printf("\n");
  if (!relay_only)
    std::printf(
        "  ceiling: one thread does secretstream %.0f (libsodium's own: %.0f), BLAKE2b %.0f,\n"
        "    ChaCha20-Poly1305 (links) %.0f MB/s; end to end that is %.2f ms of CPU per MB (2 + 2 + 4 "
        "passes),\n"
        "    at most %.0f MB/s on %u cores with every core busy on crypto alone\n",
        ceiling.secretstream, ceiling.libsodium_secretstream, ceiling.blake2b, ceiling.aead,
        ceiling.ms_per_mb, ceiling.mb_per_s, ceiling.cores);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}
