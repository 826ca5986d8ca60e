// Storage benchmarks (issue 3), next to the in-memory engine figures of cipherward_bench.cc. Every one-way
// benchmark runs the same workload: alice encrypts a 256-byte message to bob and bob decrypts it, both with
// the transcript hooks of a real client (send: transcript row + outbox entry in the session's batch;
// receive: transcript row + inbound-dedup key), each device with its own store, on one thread.
//
//   Cipherward/InMemory/OneWay/256          both devices on InMemoryStores: the baseline of the 60% target
//   Cipherward/Persisted/OneWayGroupCommit/256
//                                           both on SealedStores (RocksDB) under the group-commit policy:
//                                           commits are not synced; after every 64 messages each device asks
//                                           SealedStore::WhenSynced to report when its last commit is durable
//                                           (the store's sync thread writes and fsyncs its write-ahead log
//                                           once), and only then would the runtime acknowledge them to the
//                                           relay. The sync runs while the engine works on the next 64 (at
//                                           most one group waits per device: the next first waits for it), and
//                                           the clock stops only after the last report. So every timed message
//                                           is durable, and the fsync latency is hidden behind the work as long
//                                           as 64 messages take longer than one fsync.
//   Cipherward/Persisted/OneWayGroupCommitInline/256
//                                           the same syncs made on the engine's own thread, which waits for
//                                           each fsync: adds 2 fsyncs / 64 to every message
//   Cipherward/Persisted/OneWaySyncEach/256 every commit synced before it returns (SealedStoreOptions::sync,
//                                           the store's default): 2 fsyncs per message
//   Cipherward/Persisted/OneWayUnsynced/256 no sync at all: the CPU cost of sealing and RocksDB alone
//   Cipherward/Storage/SyncedCommit         one synced commit of one 300-byte record
//   Cipherward/Storage/Unlock               Keystore::Unlock at the default Argon2id cost (moderate)
//   Cipherward/Storage/RSS10k               memory of an open store holding 10k transcript messages, with 50 of
//                                           them read: the process's resident set (rss_total_MiB), its growth
//                                           while the store opened (rss_store_MiB; pages the filling left free
//                                           in the allocator are reused, so this moves with how it filled), and
//                                           the allocator's bytes in use that the opening added
//                                           (heap_store_MiB, the store's own)
// RocksDB's own group commit (one fsync for concurrent synced writers) does not apply: an engine commits
// from its one owner thread. Every failure ends the process (bench_util.h's rule: no numbers from a broken
// run). Wall-clock time throughout: fsync waits are the cost being measured.
#include <benchmark/benchmark.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

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

// Bytes the allocator has handed out and not had back (glibc's mallinfo2: arena chunks in use plus mmapped
// ones): what an open store holds, whatever the filling before it left in the allocator's free lists.
int64_t HeapBytes() {
  const struct mallinfo2 m = mallinfo2();
  return static_cast<int64_t>(m.uordblks + m.hblkhd);
}

// Resident set size of this process, from /proc/self/statm.
int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

// A device's group commit, as the runtime uses it: Start() asks the store (SealedStore::WhenSynced) to report
// when its newest commit is durable, which the store's sync thread does with one fsync for everything
// committed so far; Wait() returns when that report came. At most one group waits at a time: Start() first
// waits for the previous one.
class Syncer {
 public:
  explicit Syncer(storage::SealedStore* store) : store_(store) {}
  ~Syncer() { Wait(); }
  void Start() {
    Wait();
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = true;
    }
    Must(store_->WhenSynced(store_->LastCommitSequence(),
                            [this](const Status& s) {
                              Must(s, "sync");
                              std::lock_guard<std::mutex> lock(mu_);
                              busy_ = false;
                              cv_.notify_all();
                            }),
         "when synced");
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !busy_; });
  }

 private:
  storage::SealedStore* const store_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;
};

// How a benchmark makes its commits durable.
enum class Durability {
  kInMemory,           // InMemoryStore: nothing to sync
  kSyncEach,           // every commit synced
  kGroupCommit,        // unsynced commits, SyncNow per group on the sync thread
  kGroupCommitInline,  // unsynced commits, SyncNow per group on the engine's thread
  kUnsynced,           // unsynced commits, never synced
};

// One device: keystore, store (sealed on disk, or in memory), engine and transcripts.
class Device {
 public:
  Device(const std::string& name, Durability durability) : name_(name) {
    session::ProtocolStore* store = &memory_;
    if (durability != Durability::kInMemory) {
      // The Argon2id cost of the keystore does not enter these figures (Unlock is measured on its own).
      keystore_ = Must(storage::Keystore::Create(dir_.Sub("keystore"), AsBytes("bench passphrase"),
                                                 storage::KeystoreOptions::MinimumCostForTesting()),
                       "keystore");
      storage::SealedStoreOptions so;
      so.sync = durability == Durability::kSyncEach;
      sealed_ = Must(storage::SealedStore::Open(dir_.Sub("db"), keystore_.get(), so), "store");
      store = sealed_.get();
      if (durability == Durability::kGroupCommit) syncer_ = std::make_unique<Syncer>(sealed_.get());
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
  // Makes this device's commits so far durable: on the sync thread if it has one, else here.
  void StartSync() {
    if (syncer_) {
      syncer_->Start();
    } else if (sealed_) {
      Must(sealed_->SyncNow(), "sync");
    }
  }
  void WaitForSync() {
    if (syncer_) syncer_->Wait();
  }

 private:
  std::string name_;
  BenchDir dir_;
  session::InMemoryStore memory_;
  std::unique_ptr<storage::Keystore> keystore_;
  std::unique_ptr<storage::SealedStore> sealed_;
  std::unique_ptr<Syncer> syncer_;  // after sealed_: stopped before the store closes
  std::unique_ptr<session::Engine> engine_;
  std::unique_ptr<storage::Transcripts> transcripts_;
};

class Pair {
 public:
  explicit Pair(Durability durability) : alice_("alice", durability), bob_("bob", durability) {
    auto bundle = Must(bob_.engine().MakeBundle(true), "bundle");
    Must(alice_.engine().ProcessBundle(bob_.address(),
                                       Must(wire::DecodeBundle(wire::EncodeBundle(bundle)), "decode")),
         "process bundle");
    const Bytes hello = ToBytes("hello");
    Send(alice_, bob_, hello);
    Send(bob_, alice_, hello);
    Send(alice_, bob_, hello);
  }
  // Not inlined, so a profiler can collect exactly the timed work (valgrind --toggle-collect).
  [[gnu::noinline]] void OneWay(const Bytes& plaintext) { Send(alice_, bob_, plaintext); }
  void StartSyncs() {
    alice_.StartSync();
    bob_.StartSync();
  }
  void WaitForSyncs() {
    alice_.WaitForSync();
    bob_.WaitForSync();
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

// Messages per group commit: a relay fetch's worth.
constexpr int kGroupSize = 64;

void RunOneWay(benchmark::State& state, Durability durability) {
  Pair pair(durability);
  const Bytes plaintext = Plaintext(state.range(0));
  const bool grouped = durability == Durability::kGroupCommit || durability == Durability::kGroupCommitInline;
  int64_t n = 0;
  for (auto _ : state) {
    pair.OneWay(plaintext);
    if (!grouped) continue;
    // The clock stops when the loop ends, so the last iteration waits, timed, for the last group's sync.
    if (++n == state.max_iterations) {
      pair.StartSyncs();
      pair.WaitForSyncs();
    } else if (n % kGroupSize == 0) {
      pair.StartSyncs();
    }
  }
  state.counters["msgs/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void InMemoryOneWay(benchmark::State& state) { RunOneWay(state, Durability::kInMemory); }
void PersistedOneWayGroupCommit(benchmark::State& state) { RunOneWay(state, Durability::kGroupCommit); }
void PersistedOneWayGroupCommitInline(benchmark::State& state) {
  RunOneWay(state, Durability::kGroupCommitInline);
}
void PersistedOneWaySyncEach(benchmark::State& state) { RunOneWay(state, Durability::kSyncEach); }
void PersistedOneWayUnsynced(benchmark::State& state) { RunOneWay(state, Durability::kUnsynced); }

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
    const int64_t heap_before = HeapBytes();
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
    state.counters["heap_store_MiB"] = static_cast<double>(HeapBytes() - heap_before) / (1 << 20);
  }
}

}  // namespace

// Wall-clock time: fsync waits are the cost being measured, and CPU time would hide them. Registered in
// this order so the baseline prints first.
BENCHMARK(InMemoryOneWay)->Name("Cipherward/InMemory/OneWay")->Arg(256)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(PersistedOneWayGroupCommit)
    ->Name("Cipherward/Persisted/OneWayGroupCommit")
    ->Arg(256)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(PersistedOneWayGroupCommitInline)
    ->Name("Cipherward/Persisted/OneWayGroupCommitInline")
    ->Arg(256)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(PersistedOneWaySyncEach)
    ->Name("Cipherward/Persisted/OneWaySyncEach")
    ->Arg(256)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(PersistedOneWayUnsynced)
    ->Name("Cipherward/Persisted/OneWayUnsynced")
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
