// Storage benchmarks (issue 3), next to the in-memory engine figures of cipherward_bench.cc:
//   Cipherward/Persisted/OneWay/256        one encrypt+decrypt pair, both engines on SealedStores with the
//                                          default policy (every commit synced before the call returns) and
//                                          the transcript hooks (outbox + row on send; row + dedup on
//                                          receive)
//   Cipherward/Persisted/OneWayGroupCommit/256  the same with commits unsynced and one SealedStore::SyncNow()
//                                          per 64 pairs on each side (the group-commit policy: the runtime
//                                          acknowledges a burst to the relay after its sync)
//   Cipherward/Storage/InMemoryOneWay/256  the same hooks on InMemoryStores: the baseline for the 60% target
//   Cipherward/Storage/SyncedCommit        one synced commit of one 300-byte record
//   Cipherward/Storage/Unlock              Keystore::Unlock at the default Argon2id cost (moderate)
//   Cipherward/Storage/RSS10k              resident memory of an open store holding 10k transcript messages
// Every failure ends the process (bench_util.h's rule: no numbers from a broken run).
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "core/base/bytes.h"
#include "core/session/engine.h"
#include "core/session/store.h"
#include "core/wire/bundle.h"
#include "storage/keystore.h"
#include "storage/sealed_store.h"
#include "storage/transcript.h"

namespace {

using namespace cw;

[[noreturn]] void Fail(const std::string& what, const Status& s) {
  std::fprintf(stderr, "storage_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::abort();
}
void Must(const Status& s, const std::string& what) {
  if (!s.ok()) Fail(what, s);
}
template <typename T>
T Must(Result<T> r, const std::string& what) {
  if (!r) Fail(what, r.error());
  return std::move(*r);
}

class BenchDir {
 public:
  BenchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/cw_storage_bench_XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    path_ = pattern;
  }
  ~BenchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string Sub(const std::string& n) const { return path_ + "/" + n; }

 private:
  std::string path_;
};

// Resident set size of this process, from /proc/self/statm.
int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

// One device: keystore, store (sealed on disk, or in memory), engine and transcripts.
class Device {
 public:
  Device(const std::string& name, bool on_disk, bool sync) : name_(name) {
    session::ProtocolStore* store = &memory_;
    if (on_disk) {
      // The Argon2id cost of the keystore does not enter these figures (Unlock is measured on its own).
      keystore_ = Must(storage::Keystore::Create(dir_.Sub("keystore"), AsBytes("bench passphrase"),
                                                 storage::KeystoreOptions::MinimumCostForTesting()),
                       "keystore");
      storage::SealedStoreOptions so;
      so.sync = sync;
      sealed_ = Must(storage::SealedStore::Open(dir_.Sub("db"), keystore_.get(), so), "store");
      store = sealed_.get();
    }
    session::EngineOptions eo;
    eo.one_time_pre_key_batch = 5;
    engine_ = Must(session::Engine::Open(store, name, eo), "engine");
    storage::TranscriptOptions to;
    to.local_name = name;
    transcripts_ = Must(storage::Transcripts::New(store, to), "transcripts");
  }
  session::Engine& engine() { return *engine_; }
  storage::Transcripts& transcripts() { return *transcripts_; }
  session::Address address() const { return {name_, 1}; }
  void SyncNow() {
    if (sealed_) Must(sealed_->SyncNow(), "sync");
  }

 private:
  std::string name_;
  BenchDir dir_;
  session::InMemoryStore memory_;
  std::unique_ptr<storage::Keystore> keystore_;
  std::unique_ptr<storage::SealedStore> sealed_;
  std::unique_ptr<session::Engine> engine_;
  std::unique_ptr<storage::Transcripts> transcripts_;
};

class Pair {
 public:
  Pair(bool on_disk, bool sync) : alice_("alice", on_disk, sync), bob_("bob", on_disk, sync) {
    auto bundle = Must(bob_.engine().MakeBundle(true), "bundle");
    Must(alice_.engine().ProcessBundle(bob_.address(),
                                       Must(wire::DecodeBundle(wire::EncodeBundle(bundle)), "decode")),
         "process bundle");
    const Bytes hello = ToBytes("hello");
    Send(alice_, bob_, hello);
    Send(bob_, alice_, hello);
    Send(alice_, bob_, hello);
  }
  void OneWay(const Bytes& plaintext) { Send(alice_, bob_, plaintext); }
  void SyncBoth() {
    alice_.SyncNow();
    bob_.SyncNow();
  }

 private:
  void Send(Device& from, Device& to, const Bytes& plaintext) {
    const std::string conv = storage::Transcripts::DirectConversationId(to.address().name);
    const std::vector<session::Address> recipients{to.address()};
    auto ct = Must(from.engine().Encrypt(to.address(), plaintext,
                                         [&](const session::Ciphertext& c, session::WriteBatch* b) {
                                           return from.transcripts().StageOutgoing(conv, plaintext, {},
                                                                                   recipients, c, b);
                                         }),
                   "encrypt");
    std::string relay_id = "relay-";
    relay_id.append(std::to_string(++relay_));
    auto got = Must(to.engine().Decrypt(from.address(), ct,
                                        [&](const session::Received& r, session::WriteBatch* b) {
                                          return to.transcripts().StageIncoming(r, relay_id, b);
                                        }),
                    "decrypt");
    if (got.body.size() != plaintext.size()) std::abort();
  }

  Device alice_;
  Device bob_;
  uint64_t relay_ = 0;
};

Bytes Plaintext(int64_t size) {
  Bytes p(static_cast<size_t>(size));
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint8_t>('a' + i % 26);
  return p;
}

void RunOneWay(benchmark::State& state, bool on_disk, bool sync, int sync_every = 0) {
  Pair pair(on_disk, sync);
  const Bytes plaintext = Plaintext(state.range(0));
  int n = 0;
  for (auto _ : state) {
    pair.OneWay(plaintext);
    if (sync_every > 0 && ++n % sync_every == 0) pair.SyncBoth();
  }
  if (sync_every > 0) pair.SyncBoth();
  state.counters["msgs/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void PersistedOneWay(benchmark::State& state) { RunOneWay(state, /*on_disk=*/true, /*sync=*/true); }
void PersistedOneWayGroupCommit(benchmark::State& state) {
  RunOneWay(state, /*on_disk=*/true, /*sync=*/false, /*sync_every=*/64);
}
void InMemoryOneWay(benchmark::State& state) { RunOneWay(state, /*on_disk=*/false, /*sync=*/false); }

void SyncedCommit(benchmark::State& state) {
  BenchDir dir;
  auto ks = Must(storage::Keystore::Create(dir.Sub("keystore"), AsBytes("bench passphrase"),
                                           storage::KeystoreOptions::MinimumCostForTesting()),
                 "keystore");
  auto store = Must(storage::SealedStore::Open(dir.Sub("db"), ks.get()), "store");
  const Bytes value = Plaintext(300);
  uint64_t n = 0;
  for (auto _ : state) {
    session::WriteBatch b;
    std::string key("bench\0", 6);
    key.append(std::to_string(n++ % 1000));
    b.writes.push_back(session::Write{session::Table::kOutbox, std::move(key), SecretBytes(value)});
    Must(store->Commit(std::move(b)), "commit");
  }
}

void Unlock(benchmark::State& state) {
  BenchDir dir;
  auto ks = Must(storage::Keystore::Create(dir.Sub("keystore"), AsBytes("bench passphrase")), "keystore");
  for (auto _ : state) {
    ks->Lock();
    Must(ks->Unlock(AsBytes("bench passphrase")), "unlock");
  }
}

void Rss10k(benchmark::State& state) {
  constexpr int kMessages = 10'000;
  BenchDir dir;
  const std::string conv = storage::Transcripts::DirectConversationId("patient.bob");
  {
    auto ks = Must(storage::Keystore::Create(dir.Sub("keystore"), AsBytes("bench passphrase"),
                                             storage::KeystoreOptions::MinimumCostForTesting()),
                   "keystore");
    storage::SealedStoreOptions so;
    so.sync = false;  // filling, not measuring
    auto store = Must(storage::SealedStore::Open(dir.Sub("db"), ks.get(), so), "store");
    auto t = Must(storage::Transcripts::New(store.get(), {}), "transcripts");
    session::Received r;
    r.kind = session::Received::Kind::kMessage;
    r.sender = {"patient.bob", 1};
    r.body = SecretBytes(Plaintext(256));
    for (int i = 0; i < kMessages; ++i) {
      session::WriteBatch b;
      Must(t->StageIncoming(r, "relay-" + std::to_string(i), &b), "stage");
      Must(store->Commit(std::move(b)), "commit");
    }
  }
  for (auto _ : state) {
    const int64_t before = ResidentBytes();
    auto ks =
        Must(storage::Keystore::Open(dir.Sub("keystore"), storage::KeystoreOptions::MinimumCostForTesting()),
             "keystore");
    Must(ks->Unlock(AsBytes("bench passphrase")), "unlock");
    auto store = Must(storage::SealedStore::Open(dir.Sub("db"), ks.get()), "store");
    auto t = Must(storage::Transcripts::New(store.get(), {}), "transcripts");
    auto page = Must(t->Latest(conv, 50), "latest");  // an open conversation screen
    if (page.size() != 50) std::abort();
    state.counters["rss_total_MiB"] = static_cast<double>(ResidentBytes()) / (1 << 20);
    state.counters["rss_store_MiB"] = static_cast<double>(ResidentBytes() - before) / (1 << 20);
  }
}

}  // namespace

// Wall-clock time: fsync waits are the cost being measured, and CPU time would hide them.
BENCHMARK(PersistedOneWay)
    ->Name("Cipherward/Persisted/OneWay")
    ->Arg(256)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(PersistedOneWayGroupCommit)
    ->Name("Cipherward/Persisted/OneWayGroupCommit")
    ->Arg(256)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(InMemoryOneWay)
    ->Name("Cipherward/Storage/InMemoryOneWay")
    ->Arg(256)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(SyncedCommit)
    ->Name("Cipherward/Storage/SyncedCommit")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(Unlock)
    ->Name("Cipherward/Storage/Unlock")
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3)
    ->UseRealTime();
BENCHMARK(Rss10k)->Name("Cipherward/Storage/RSS10k")->Unit(benchmark::kMillisecond)->Iterations(1);
