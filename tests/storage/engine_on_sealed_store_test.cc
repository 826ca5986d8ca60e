// The session engine on SealedStores: sessions, pre-keys and sender keys survive closing everything and
// reopening from disk with the passphrase.
#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/session/engine.h"
#include "core/session/store.h"
#include "core/wire/bundle.h"
#include "storage/keystore.h"
#include "storage/sealed_store.h"
#include "storage/transcript.h"
#include "tests/storage/storage_test_util.h"

namespace cw::storage {
namespace {

using session::Address;
using session::Ciphertext;
using session::Engine;
using session::EngineOptions;
using session::Outgoing;
using session::Received;
using testing::TempDir;

constexpr std::string_view kPassphrase = "the ward's night-shift passphrase";

std::string Text(const SecretBytes& s) { return std::string(s.reveal().begin(), s.reveal().end()); }

// One person's device: a keystore file and a sealed RocksDB store in its own directory, or (for the peer
// that is not under test) an InMemoryStore. Restart() closes everything and reopens it from disk.
class Device {
 public:
  Device(std::string name, FakeClock* clock, uint64_t seed, bool on_disk)
      : name_(std::move(name)), clock_(clock), seed_(seed), on_disk_(on_disk) {
    Start(/*create=*/true);
  }
  ~Device() { Stop(); }

  void Restart() {
    Stop();
    Start(/*create=*/false);
  }
  void Stop() {
    engine_.reset();  // the engine first: it uses the store
    sealed_.reset();
    keystore_.reset();
  }

  Engine* operator->() { return engine_.get(); }
  Engine& engine() { return *engine_; }
  Keystore& keystore() { return *keystore_; }
  SealedStore* sealed() { return sealed_.get(); }
  Address address() const { return Address{name_, 1}; }
  const std::string& name() const { return name_; }
  bool ok() const { return engine_ != nullptr; }

 private:
  void Start(bool create) {
    session::ProtocolStore* store = nullptr;
    if (on_disk_) {
      KeystoreOptions ko = KeystoreOptions::MinimumCostForTesting();
      ko.clock = clock_;
      const std::string ks_path = dir_.Sub("keystore");
      if (create) {
        auto ks = Keystore::Create(ks_path, AsBytes(kPassphrase), ko);
        ASSERT_TRUE(ks.has_value()) << ks.error().ToString();
        keystore_ = std::move(*ks);
      } else {
        auto ks = Keystore::Open(ks_path, ko);
        ASSERT_TRUE(ks.has_value()) << ks.error().ToString();
        keystore_ = std::move(*ks);
        Status s = keystore_->Unlock(AsBytes(kPassphrase));
        ASSERT_TRUE(s.ok()) << s.ToString();
      }
      auto st = SealedStore::Open(dir_.Sub("db"), keystore_.get());
      ASSERT_TRUE(st.has_value()) << st.error().ToString();
      sealed_ = std::move(*st);
      store = sealed_.get();
    } else {
      if (create) memory_ = std::make_unique<session::InMemoryStore>();
      store = memory_.get();
    }
    // A new random stream per start: a restarted app must not replay the randomness it used before.
    random_ = std::make_unique<SeededRandom>(seed_ * 1000 + starts_++);
    EngineOptions o;
    o.clock = clock_;
    o.random = random_.get();
    o.one_time_pre_key_batch = 5;
    o.one_time_pre_key_refill_below = 2;
    auto e = Engine::Open(store, name_, o);
    ASSERT_TRUE(e.has_value()) << name_ << ": " << e.error().ToString();
    engine_ = std::move(*e);
  }

  std::string name_;
  FakeClock* clock_;
  uint64_t seed_;
  bool on_disk_;
  int starts_ = 0;
  TempDir dir_;
  std::unique_ptr<session::InMemoryStore> memory_;
  std::unique_ptr<Keystore> keystore_;
  std::unique_ptr<SealedStore> sealed_;
  std::unique_ptr<SeededRandom> random_;
  std::unique_ptr<Engine> engine_;
};

class StorageEngineTest : public ::testing::Test {
 protected:
  Device& Add(const std::string& name, bool on_disk = true) {
    auto d = std::make_unique<Device>(name, &clock_, next_seed_++, on_disk);
    Device& ref = *d;
    devices_[name] = std::move(d);
    return ref;
  }
  Device& operator[](const std::string& name) { return *devices_.at(name); }

  static Result<wire::PreKeyBundle> Bundle(Device& of) {
    auto b = of->MakeBundle(true);
    if (!b.has_value()) return b;
    return wire::DecodeBundle(wire::EncodeBundle(*b));
  }

  // X3DH from `a` to `b`, then one message each way.
  void Establish(Device& a, Device& b) {
    auto bundle = Bundle(b);
    ASSERT_TRUE(bundle.has_value()) << bundle.error().ToString();
    Status s = a->ProcessBundle(b.address(), *bundle);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(Send(a, b, "hello " + b.name()), "hello " + b.name());
    ASSERT_EQ(Send(b, a, "hello " + a.name()), "hello " + a.name());
  }

  static Ciphertext Encrypt(Device& from, const Device& to, std::string_view text) {
    auto ct = from->Encrypt(to.address(), AsBytes(text));
    if (!ct.has_value()) {
      ADD_FAILURE() << from.name() << " -> " << to.name() << ": " << ct.error().ToString();
      return {};
    }
    return *ct;
  }
  static std::string Decrypt(Device& to, const Device& from, const Ciphertext& ct) {
    auto r = to->Decrypt(from.address(), ct);
    if (!r.has_value()) return "<" + r.error().ToString() + ">";
    return Text(r->body);
  }
  static std::string Send(Device& from, Device& to, std::string_view text) {
    return Decrypt(to, from, Encrypt(from, to, text));
  }

  // Delivers messages and the replies they cause until none are left; a receiver missing a session fetches
  // the bundle and shares its sender key, as a client would. Returns how many deliveries failed.
  int Pump(const std::string& from, const std::vector<Outgoing>& outs) {
    std::deque<std::pair<std::string, Outgoing>> queue;
    for (const auto& o : outs) queue.emplace_back(from, o);
    int failures = 0;
    for (int guard = 0; !queue.empty() && guard < 1000; ++guard) {
      auto [sender, out] = std::move(queue.front());
      queue.pop_front();
      Device& to = (*this)[out.to.name];
      auto r = to->Decrypt(Address{sender, 1}, out.message);
      if (!r.has_value()) {
        ADD_FAILURE() << sender << " -> " << out.to.name << ": " << r.error().ToString();
        ++failures;
        continue;
      }
      for (const auto& reply : r->replies) queue.emplace_back(out.to.name, reply);
      for (const auto& missing : r->missing_sessions) {
        auto bundle = Bundle((*this)[missing.name]);
        if (!bundle.has_value() || !to->ProcessBundle(missing, *bundle).ok()) {
          ADD_FAILURE() << "no session from " << out.to.name << " to " << missing.name;
          ++failures;
          continue;
        }
        auto caught_up = to->CatchUpGroups(missing.name);
        if (!caught_up.has_value()) {
          ADD_FAILURE() << caught_up.error().ToString();
          ++failures;
          continue;
        }
        for (const auto& o : caught_up->messages) queue.emplace_back(out.to.name, o);
      }
    }
    return failures;
  }

  std::string GroupDecrypt(Device& to, const Device& from, const Ciphertext& ct) {
    return Decrypt(to, from, ct);
  }

  FakeClock clock_;
  uint64_t next_seed_ = 7;
  std::map<std::string, std::unique_ptr<Device>> devices_;
};

TEST_F(StorageEngineTest, ASessionSurvivesClosingEverythingAndReopeningFromDisk) {
  Device& alice = Add("dr.alice");
  Device& bob = Add("patient.bob", /*on_disk=*/false);
  ASSERT_TRUE(alice.ok() && bob.ok());
  const auto identity = alice->identity_key();
  const uint32_t registration_id = alice->registration_id();
  ASSERT_NO_FATAL_FAILURE(Establish(bob, alice));  // bob starts: alice consumes a one-time pre-key
  auto pre_keys = alice->OneTimePreKeyCount();
  ASSERT_TRUE(pre_keys.has_value());

  const Ciphertext m1 = Encrypt(bob, alice, "message 1");
  const Ciphertext m2 = Encrypt(bob, alice, "message 2");
  const Ciphertext m3 = Encrypt(bob, alice, "message 3");
  EXPECT_EQ(Decrypt(alice, bob, m1), "message 1");

  alice.Restart();
  ASSERT_TRUE(alice.ok());
  EXPECT_EQ(alice->identity_key(), identity);
  EXPECT_EQ(alice->registration_id(), registration_id);
  EXPECT_TRUE(alice->HasSession(bob.address()));
  auto pre_keys_after = alice->OneTimePreKeyCount();
  ASSERT_TRUE(pre_keys_after.has_value());
  EXPECT_EQ(*pre_keys_after, *pre_keys);
  auto contact = alice->GetContact(bob.name());
  ASSERT_TRUE(contact.has_value());
  EXPECT_EQ(contact->state, session::TrustState::kTrusted);

  // Out of order after the restart: the skipped key for message 2 was persisted with message 3's state.
  EXPECT_EQ(Decrypt(alice, bob, m3), "message 3");
  EXPECT_EQ(Decrypt(alice, bob, m2), "message 2");
  auto replay = alice->Decrypt(bob.address(), m1);
  ASSERT_FALSE(replay.has_value());
  EXPECT_EQ(replay.error().code(), StatusCode::kDuplicate);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Send(alice, bob, "reply " + std::to_string(i)), "reply " + std::to_string(i));
    EXPECT_EQ(Send(bob, alice, "more " + std::to_string(i)), "more " + std::to_string(i));
  }
}

TEST_F(StorageEngineTest, BothSidesOnDiskThroughManyRestarts) {
  Device& alice = Add("dr.alice");
  Device& bob = Add("patient.bob");
  ASSERT_NO_FATAL_FAILURE(Establish(alice, bob));
  for (int round = 0; round < 6; ++round) {
    Device& restarted = round % 2 == 0 ? alice : bob;
    restarted.Restart();
    ASSERT_TRUE(restarted.ok());
    const std::string n = std::to_string(round);
    EXPECT_EQ(Send(alice, bob, "a" + n), "a" + n);
    EXPECT_EQ(Send(alice, bob, "a" + n + "'"), "a" + n + "'");
    EXPECT_EQ(Send(bob, alice, "b" + n), "b" + n);
  }
}

TEST_F(StorageEngineTest, ALockedStoreStopsTheEngineAndChangesNothing) {
  Device& alice = Add("dr.alice");
  Device& bob = Add("patient.bob", /*on_disk=*/false);
  ASSERT_NO_FATAL_FAILURE(Establish(alice, bob));
  const Ciphertext pending = Encrypt(bob, alice, "while locked");

  alice.keystore().Lock();  // automatic logoff
  auto ct = alice->Encrypt(bob.address(), AsBytes("x"));
  ASSERT_FALSE(ct.has_value());
  EXPECT_EQ(ct.error().code(), StatusCode::kPermissionDenied) << ct.error().ToString();
  auto got = alice->Decrypt(bob.address(), pending);
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code(), StatusCode::kPermissionDenied) << got.error().ToString();

  Status s = alice.keystore().Unlock(AsBytes(kPassphrase));
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Decrypt(alice, bob, pending), "while locked");
  EXPECT_EQ(Send(alice, bob, "back"), "back");
}

TEST_F(StorageEngineTest, ACareTeamGroupSurvivesRestarts) {
  Device& alice = Add("dr.alice");
  Device& bob = Add("nurse.bob");
  Device& carol = Add("patient.carol");
  ASSERT_NO_FATAL_FAILURE(Establish(alice, bob));
  ASSERT_NO_FATAL_FAILURE(Establish(alice, carol));
  ASSERT_NO_FATAL_FAILURE(Establish(bob, carol));

  const std::string ward = alice->NewGroupId();
  auto created = alice->CreateGroup(ward, {bob.name(), carol.name()});
  ASSERT_TRUE(created.has_value()) << created.error().ToString();
  ASSERT_EQ(Pump(alice.name(), created->messages), 0);

  auto g1 = alice->GroupEncrypt(ward, AsBytes("rounds at 9"));
  ASSERT_TRUE(g1.has_value()) << g1.error().ToString();
  EXPECT_EQ(GroupDecrypt(bob, alice, *g1), "rounds at 9");
  EXPECT_EQ(GroupDecrypt(carol, alice, *g1), "rounds at 9");

  alice.Restart();
  bob.Restart();
  carol.Restart();
  ASSERT_TRUE(alice.ok() && bob.ok() && carol.ok());
  auto members = bob->GroupMembers(ward);
  ASSERT_TRUE(members.has_value()) << members.error().ToString();
  EXPECT_EQ(members->size(), 3u);

  // bob's sender key was shared before the restarts (as a reply to the membership message).
  auto g2 = bob->GroupEncrypt(ward, AsBytes("on my way"));
  ASSERT_TRUE(g2.has_value()) << g2.error().ToString();
  EXPECT_EQ(GroupDecrypt(alice, bob, *g2), "on my way");
  EXPECT_EQ(GroupDecrypt(carol, bob, *g2), "on my way");

  // Removing a member deletes its sender keys by prefix and rotates alice's.
  auto removed = alice->RemoveGroupMember(ward, carol.name());
  ASSERT_TRUE(removed.has_value()) << removed.error().ToString();
  ASSERT_EQ(Pump(alice.name(), removed->messages), 0);
  alice.Restart();
  bob.Restart();
  auto g3 = alice->GroupEncrypt(ward, AsBytes("carol discharged"));
  ASSERT_TRUE(g3.has_value()) << g3.error().ToString();
  EXPECT_EQ(GroupDecrypt(bob, alice, *g3), "carol discharged");
  EXPECT_NE(GroupDecrypt(carol, alice, *g3), "carol discharged");
}

// Every record of every table, opened: what a failed operation must leave exactly as it was.
std::map<std::string, std::string> StoreState(SealedStore* store) {
  std::map<std::string, std::string> out;
  for (int t = 0; t < session::kTableCount; ++t) {
    const auto table = static_cast<session::Table>(t);
    auto keys = store->ListKeys(table, "");
    if (!keys.has_value()) {
      ADD_FAILURE() << keys.error().ToString();
      continue;
    }
    for (const auto& k : *keys) {
      auto v = store->Get(table, k);
      if (!v.has_value() || !v->has_value()) {
        ADD_FAILURE() << "listed key does not open";
        continue;
      }
      std::string name(SealedStore::ColumnFamilyName(table));
      name.push_back('/');
      name.append(k);
      out[name] = Text(**v);
    }
  }
  return out;
}

TEST_F(StorageEngineTest, TamperedReplayedAndUnknownMessagesChangeNothingOnDiskWithTheTranscriptHook) {
  Device& alice = Add("dr.alice");
  Device& bob = Add("patient.bob", /*on_disk=*/false);
  ASSERT_NO_FATAL_FAILURE(Establish(bob, alice));
  TranscriptOptions to;
  to.clock = &clock_;
  auto transcripts = Transcripts::New(alice.sealed(), to);
  ASSERT_TRUE(transcripts.has_value());
  int relay = 0;
  auto receive = [&](const Ciphertext& ct) {
    std::string relay_id = "relay-";
    relay_id.append(std::to_string(++relay));
    return alice->Decrypt(bob.address(), ct, [&](const Received& r, session::WriteBatch* b) {
      return (*transcripts)->StageIncoming(r, relay_id, b);
    });
  };

  const Ciphertext good = Encrypt(bob, alice, "the real message");
  const auto before = StoreState(alice.sealed());
  Ciphertext flipped = good;
  flipped.body[flipped.body.size() - 3] ^= 0x01;  // inside the MAC
  Ciphertext truncated = good;
  truncated.body.resize(truncated.body.size() / 2);
  Ciphertext garbage = good;
  garbage.body.assign(good.body.size(), 0x5a);
  for (const Ciphertext* bad : {&flipped, &truncated, &garbage}) {
    auto r = receive(*bad);
    EXPECT_FALSE(r.has_value());
    EXPECT_EQ(StoreState(alice.sealed()), before) << "a failed decrypt wrote something";
  }
  auto ok = receive(good);
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  EXPECT_EQ(Text(ok->body), "the real message");
  const auto after_good = StoreState(alice.sealed());
  EXPECT_NE(after_good, before);
  // The same ciphertext under a new relay id (a re-encrypted-looking replay): the ratchet refuses it and
  // the transcript gets no second row.
  auto replay = receive(good);
  ASSERT_FALSE(replay.has_value());
  EXPECT_EQ(replay.error().code(), StatusCode::kDuplicate);
  EXPECT_EQ(StoreState(alice.sealed()), after_good);
  auto rows = (*transcripts)->All(Transcripts::DirectConversationId(bob.name()));
  ASSERT_TRUE(rows.has_value());
  EXPECT_EQ(rows->size(), 1u);
  // After a restart from disk the session still decrypts.
  transcripts->reset();
  alice.Restart();
  EXPECT_EQ(Send(bob, alice, "after restart"), "after restart");
}

}  // namespace
}  // namespace cw::storage
