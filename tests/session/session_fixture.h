// Test fixture for the session engine: parties (one Engine each, on its own store, with a seeded Random and
// a shared FakeClock), and a post office that delivers Outgoing messages to the right engine, pumps the
// replies the engine asks for, and fetches bundles for missing sessions.
//
// The store: the same test sources build two binaries. cw_session_tests puts every party on an
// InMemoryStore; cw_session_sealed_tests (compiled with CW_TEST_STORE_SEALED) on a SealedStore (RocksDB)
// per party, with its keystore file at the minimum Argon2id cost in a fresh temporary directory. Tests see only
// the session::ProtocolStore interface, through a FaultyStore that can fail the Nth commit; snapshots
// read every table through ListKeys and Get, so they mean the same on both stores.
#pragma once

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/session/engine.h"
#include "core/session/store.h"
#include "core/wire/bundle.h"
#include "tests/common/test_util.h"
#include "tests/wire/print_status.h"

#if defined(CW_TEST_STORE_SEALED)
#include <stdlib.h>

#include <filesystem>

#include <rocksdb/env.h>

#include "storage/keystore.h"
#include "storage/sealed_store.h"
#include "storage/sealed_store_internal.h"
#endif

namespace cw::session::testing {

using ::cw::testing::CodeOf;
using ::cw::testing::Describe;

#define CW_ASSERT_OK(expr)                                                      \
  do {                                                                          \
    const auto& cw_r_ = (expr);                                                 \
    ASSERT_EQ(::cw::session::testing::CodeOf(cw_r_), ::cw::StatusCode::kOk)     \
        << #expr << ": " << ::cw::session::testing::Describe(cw_r_);            \
  } while (0)
#define CW_EXPECT_OK(expr)                                                      \
  do {                                                                          \
    const auto& cw_r_ = (expr);                                                 \
    EXPECT_EQ(::cw::session::testing::CodeOf(cw_r_), ::cw::StatusCode::kOk)     \
        << #expr << ": " << ::cw::session::testing::Describe(cw_r_);            \
  } while (0)

// "<CODE: message>", built without operator+ on a literal (GCC 12 warns falsely on it under -O3).
inline std::string Failed(const Status& s) {
  std::string out(1, '<');
  out.append(s.ToString());
  out.push_back('>');
  return out;
}

// "<prefix><n>", for numbered test messages.
inline std::string Numbered(std::string_view prefix, int n) {
  std::string out(prefix);
  out.append(std::to_string(n));
  return out;
}

inline std::string Text(const SecretBytes& s) { return std::string(s.reveal().begin(), s.reveal().end()); }

using Snapshot = std::map<std::string, SecretBytes>;

// Byte-for-byte equality of two store snapshots, naming the first difference.
inline ::testing::AssertionResult SameState(const Snapshot& before, const Snapshot& after) {
  for (const auto& [k, v] : before) {
    auto it = after.find(k);
    if (it == after.end()) return ::testing::AssertionFailure() << "key removed: " << k;
    if (!it->second.Equals(v)) return ::testing::AssertionFailure() << "value changed: " << k;
  }
  for (const auto& [k, v] : after) {
    if (!before.count(k)) return ::testing::AssertionFailure() << "key added: " << k;
  }
  return ::testing::AssertionSuccess();
}

// A ProtocolStore in front of another, that can be told to fail the Nth commit from now (like
// InMemoryStore::FailCommitAfter, for any store).
class FaultyStore final : public ProtocolStore {
 public:
  void set_inner(ProtocolStore* inner) { inner_ = inner; }
  ProtocolStore* inner() const { return inner_; }

  Result<std::optional<SecretBytes>> Get(Table table, std::string_view key) override {
    return inner_->Get(table, key);
  }
  Result<std::vector<std::string>> ListKeys(Table table, std::string_view prefix) override {
    return inner_->ListKeys(table, prefix);
  }
  Status Commit(WriteBatch batch) override {
    if (fail_after_ == 0) {
      fail_after_ = -1;
      return Status(StatusCode::kUnavailable, "injected commit failure");
    }
    if (fail_after_ > 0) --fail_after_;
    return inner_->Commit(std::move(batch));
  }
  // The next `n` commits succeed, the one after fails with kUnavailable and writes nothing. -1 turns it off.
  void FailCommitAfter(int n) { fail_after_ = n; }

 private:
  ProtocolStore* inner_ = nullptr;
  int fail_after_ = -1;
};

// Where a party's records live. Open() returns the store, opening it the first time; later calls close and
// reopen it where that means anything (on disk), as an app restart does. Destroying the backing deletes
// what it holds.
class StoreBacking {
 public:
  virtual ~StoreBacking() = default;
  virtual Result<ProtocolStore*> Open() = 0;
};

class InMemoryBacking final : public StoreBacking {
 public:
  Result<ProtocolStore*> Open() override { return &store_; }

 private:
  InMemoryStore store_;
};

#if defined(CW_TEST_STORE_SEALED)
// A keystore file in a fresh temporary directory and a SealedStore whose RocksDB files live in an in-memory
// rocksdb::Env of this backing (so they survive Reopen and vanish with the backing). The sealing, key
// hashing, record cache and RocksDB code are the real ones; only the file system is not: the engine suite
// is about protocol state, the crash and power-loss tests of tests/storage cover the files, and the suite
// opens hundreds of stores, whose fsyncs on a busy disk took minutes. Commits are not synced, likewise.
class SealedBacking final : public StoreBacking {
 public:
  SealedBacking() : env_(rocksdb::NewMemEnv(rocksdb::Env::Default())) {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/cw_session_sealed_XXXXXX";
    if (::mkdtemp(pattern.data()) != nullptr) dir_ = pattern;
  }
  ~SealedBacking() override {
    store_.reset();  // before the keystore and the Env it uses
    keystore_.reset();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  Result<ProtocolStore*> Open() override {
    if (dir_.empty()) return Error(StatusCode::kUnavailable, "mkdtemp failed");
    store_.reset();
    keystore_.reset();
    static constexpr std::string_view kPassphrase = "session suite passphrase";
    const auto options = storage::KeystoreOptions::MinimumCostForTesting();
    if (std::filesystem::exists(dir_ + "/keystore")) {
      CW_ASSIGN_OR_RETURN(keystore_, storage::Keystore::Open(dir_ + "/keystore", options));
      CW_RETURN_IF_ERROR(keystore_->Unlock(AsBytes(kPassphrase)));
    } else {
      CW_ASSIGN_OR_RETURN(keystore_, storage::Keystore::Create(dir_ + "/keystore", AsBytes(kPassphrase), options));
    }
    storage::SealedStoreOptions so;
    so.sync = false;
    CW_ASSIGN_OR_RETURN(store_, storage::internal::OpenSealedStoreWithEnv(dir_ + "/db", keystore_.get(), so,
                                                                          env_.get()));
    return store_.get();
  }

 private:
  std::unique_ptr<rocksdb::Env> env_;  // first: destroyed after the store
  std::string dir_;
  std::unique_ptr<storage::Keystore> keystore_;
  std::unique_ptr<storage::SealedStore> store_;
};
#endif

using StoreFactory = std::function<std::unique_ptr<StoreBacking>()>;

// The store this binary tests the engine on (see the top of this file).
inline StoreFactory DefaultStoreFactory() {
#if defined(CW_TEST_STORE_SEALED)
  return [] { return std::make_unique<SealedBacking>(); };
#else
  return [] { return std::make_unique<InMemoryBacking>(); };
#endif
}

// Every record of every table, keyed "<table number>:<key>", read through the ProtocolStore interface.
inline Snapshot SnapshotOf(ProtocolStore& store) {
  Snapshot out;
  for (int i = 0; i < kTableCount; ++i) {
    const auto table = static_cast<Table>(i);
    auto keys = store.ListKeys(table, "");
    if (!keys.has_value()) {
      ADD_FAILURE() << "snapshot: ListKeys: " << keys.error().ToString();
      continue;
    }
    for (const auto& k : *keys) {
      auto v = store.Get(table, k);
      if (!v.has_value() || !v->has_value()) {
        ADD_FAILURE() << "snapshot: a listed key does not read back: " << Describe(v);
        continue;
      }
      out.emplace(std::to_string(i) + ":" + k, std::move(**v));
    }
  }
  return out;
}

class Party {
 public:
  Party(std::string name, FakeClock* clock, uint64_t seed, EngineOptions base, StoreFactory factory)
      : name_(std::move(name)), clock_(clock), base_(std::move(base)), factory_(std::move(factory)) {
    Recreate(seed);
  }
  Party(const Party&) = delete;
  Party& operator=(const Party&) = delete;
  ~Party() { engine_.reset(); }

  // A fresh store and a fresh identity under the same name: the peer reinstalled the app.
  void Recreate(uint64_t seed) {
    engine_.reset();
    store_.set_inner(nullptr);
    backing_ = factory_();
    random_ = std::make_unique<SeededRandom>(seed);
    OpenEngine();
  }
  // A new Engine over the same records (on disk, the store is closed and opened again): the app restarted.
  void Reopen() {
    engine_.reset();
    OpenEngine();
  }

  Engine& engine() { return *engine_; }
  Engine* operator->() { return engine_.get(); }
  FaultyStore& store() { return store_; }
  Snapshot snapshot() { return SnapshotOf(*store_.inner()); }
  const std::string& name() const { return name_; }
  Address address() const { return Address{name_, 1}; }

  std::vector<IdentityChange> identity_changes;

 private:
  void OpenEngine() {
    auto opened_store = backing_->Open();
    if (!opened_store.has_value()) {
      ADD_FAILURE() << "opening the store of " << name_ << ": " << opened_store.error().ToString();
      return;
    }
    store_.set_inner(*opened_store);
    EngineOptions options = base_;
    options.clock = clock_;
    options.random = random_.get();
    options.on_identity_change = [this](const IdentityChange& c) { identity_changes.push_back(c); };
    auto opened = Engine::Open(&store_, name_, options);
    if (!opened.has_value()) {
      ADD_FAILURE() << "Engine::Open(" << name_ << "): " << opened.error().ToString();
      return;
    }
    engine_ = std::move(*opened);
  }

  std::string name_;
  FakeClock* clock_;
  EngineOptions base_;
  StoreFactory factory_;
  // Declared before engine_: the engine must be destroyed first.
  std::unique_ptr<StoreBacking> backing_;
  FaultyStore store_;
  std::unique_ptr<SeededRandom> random_;
  std::unique_ptr<Engine> engine_;
};

// One delivery the post office made, and what came of it.
struct Delivery {
  std::string from;
  std::string to;
  Ciphertext message;
  Result<Received> result;
};

class World {
 public:
  explicit World(EngineOptions base = SmallBatch(), StoreFactory store_factory = DefaultStoreFactory())
      : base_(std::move(base)), store_factory_(std::move(store_factory)) {}

  // Tests that do not count pre-keys use small batches: Open is much faster.
  static EngineOptions SmallBatch() {
    EngineOptions o;
    o.one_time_pre_key_batch = 5;
    o.one_time_pre_key_refill_below = 2;
    return o;
  }

  Party& Add(const std::string& name) {
    auto p = std::make_unique<Party>(name, &clock, next_seed_++, base_, store_factory_);
    Party& ref = *p;
    parties_[name] = std::move(p);
    return ref;
  }
  Party& operator[](const std::string& name) {
    auto it = parties_.find(name);
    if (it == parties_.end()) {
      ADD_FAILURE() << "no party " << name;
      return Add(name);
    }
    return *it->second;
  }
  uint64_t NextSeed() { return next_seed_++; }

  // `to`'s bundle, as it would arrive from the relay (through the wire encoding).
  static Result<wire::PreKeyBundle> FetchBundle(Party& to, bool with_one_time_pre_key = true) {
    auto b = to->MakeBundle(with_one_time_pre_key);
    if (!b.has_value()) return b;
    return wire::DecodeBundle(wire::EncodeBundle(*b));
  }

  // X3DH from `a` to `b`, a first message each way, and both sessions settled.
  void Establish(Party& a, Party& b) {
    auto bundle = FetchBundle(b);
    ASSERT_TRUE(bundle.has_value()) << bundle.error().ToString();
    CW_ASSERT_OK(a->ProcessBundle(b.address(), *bundle));
    auto hello = a->Encrypt(b.address(), AsBytes("hello " + b.name()));
    CW_ASSERT_OK(hello);
    auto got = b->Decrypt(a.address(), *hello);
    CW_ASSERT_OK(got);
    ASSERT_EQ(Text(got->body), "hello " + b.name());
    auto reply = b->Encrypt(a.address(), AsBytes("hello " + a.name()));
    CW_ASSERT_OK(reply);
    auto got2 = a->Decrypt(b.address(), *reply);
    CW_ASSERT_OK(got2);
    ASSERT_EQ(Text(got2->body), "hello " + a.name());
  }

  // Delivers one message from `from` to out.to.
  Result<Received> Deliver(const std::string& from, const Outgoing& out) {
    return (*this)[out.to.name]->Decrypt(Address{from, 1}, out.message);
  }

  // Delivers every message in FIFO order, then the replies each delivery produced, until none are left.
  // For a member reported in missing_sessions, the receiver fetches that member's bundle and catches it up
  // (Engine::CatchUpGroups), as a client does with a new contact. Returns every delivery made.
  std::vector<Delivery> Pump(const std::string& from, const GroupDelivery& delivery) {
    return Pump(from, delivery.messages);
  }
  std::vector<Delivery> Pump(const std::string& from, const std::vector<Outgoing>& outs) {
    std::deque<std::pair<std::string, Outgoing>> queue;
    for (const auto& o : outs) queue.emplace_back(from, o);
    return PumpQueue(std::move(queue));
  }
  std::vector<Delivery> PumpQueue(std::deque<std::pair<std::string, Outgoing>> queue) {
    std::vector<Delivery> log;
    for (int guard = 0; !queue.empty() && guard < 10000; ++guard) {
      auto [sender, out] = std::move(queue.front());
      queue.pop_front();
      auto r = Deliver(sender, out);
      if (r.has_value()) {
        for (const auto& reply : r->replies) queue.emplace_back(out.to.name, reply);
        for (const auto& missing : r->missing_sessions) {
          Party& me = (*this)[out.to.name];
          auto bundle = FetchBundle((*this)[missing.name]);
          if (!bundle.has_value()) {
            ADD_FAILURE() << bundle.error().ToString();
            continue;
          }
          Status s = me->ProcessBundle(missing, *bundle);
          if (!s.ok()) {
            ADD_FAILURE() << "ProcessBundle for a missing session: " << s.ToString();
            continue;
          }
          auto caught_up = me->CatchUpGroups(missing.name);
          if (!caught_up.has_value()) {
            ADD_FAILURE() << "CatchUpGroups: " << caught_up.error().ToString();
            continue;
          }
          for (const auto& o : caught_up->messages) queue.emplace_back(out.to.name, o);
        }
      }
      log.push_back(Delivery{sender, out.to.name, out.message, std::move(r)});
    }
    return log;
  }

  FakeClock clock;

 private:
  EngineOptions base_;
  StoreFactory store_factory_;
  uint64_t next_seed_ = 1000;
  std::map<std::string, std::unique_ptr<Party>> parties_;
};

// Every delivery in `log` succeeded.
inline ::testing::AssertionResult AllDelivered(const std::vector<Delivery>& log) {
  for (const auto& d : log) {
    if (!d.result.has_value()) {
      return ::testing::AssertionFailure() << d.from << " -> " << d.to << " (type "
                                           << static_cast<int>(d.message.type) << "): " << d.result.error().ToString();
    }
  }
  return ::testing::AssertionSuccess();
}

// Encrypts or records a failure (the returned Ciphertext is then empty and will not decrypt).
inline Ciphertext MustEncrypt(Party& from, const Party& to, std::string_view text) {
  auto r = from->Encrypt(to.address(), AsBytes(text));
  if (!r.has_value()) {
    ADD_FAILURE() << from.name() << " -> " << to.name() << " Encrypt: " << r.error().ToString();
    return Ciphertext{};
  }
  return *r;
}

// The plaintext, or "<CODE: message>" for a failed decrypt.
inline std::string DecryptText(Party& to, const Party& from, const Ciphertext& ct) {
  auto r = to->Decrypt(from.address(), ct);
  if (!r.has_value()) return Failed(r.error());
  return Text(r->body);
}

}  // namespace cw::session::testing
