#include "storage/sealed_store.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/session/records.h"
#include "core/session/store.h"
#include "storage/keystore.h"
#include "storage/sealed_store_internal.h"
#include "tests/storage/sealed_store_fixture.h"

namespace cw::storage {
namespace {

using session::Table;
using session::internal::BigEndian32;
using session::internal::SenderKeyKey;
using session::internal::SessionKey;
using testing::Delete;
using testing::kPassphrase;
using testing::Put;
using testing::RawDb;

class SealedStoreTest : public testing::SealedStoreFixture {};

std::string WithNul(std::string_view s) {
  std::string out(s);
  out.push_back('\0');
  return out;
}

TEST_F(SealedStoreTest, RoundTripInEveryTableAndAcrossReopen) {
  const std::vector<std::pair<Table, std::string>> keys = {
      {Table::kMeta, "registration_id"},
      {Table::kContact, "dr.alice@clinic"},
      {Table::kPreKey, BigEndian32(1)},
      {Table::kSignedPreKey, BigEndian32(0x01000000)},
      {Table::kSession, SessionKey("bob", 1)},
      {Table::kSenderKey, SenderKeyKey("ward-7", "bob", 2)},
      {Table::kGroup, "ward-7"},
  };
  session::WriteBatch batch;
  for (const auto& [t, k] : keys) batch.writes.push_back(Put(t, k, "value of " + k));
  CW_ST_ASSERT_OK(store_->Commit(std::move(batch)));
  for (const auto& [t, k] : keys) EXPECT_EQ(Value(t, k), "value of " + k);
  EXPECT_EQ(Value(Table::kContact, "nobody"), "<absent>");
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 2)), "<absent>");

  // Empty values and overwrite.
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "dr.alice@clinic", "")));
  EXPECT_EQ(Value(Table::kContact, "dr.alice@clinic"), "");
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "dr.alice@clinic", "second")));

  Reopen();
  for (const auto& [t, k] : keys) {
    if (t != Table::kContact) {
      EXPECT_EQ(Value(t, k), "value of " + k);
    }
  }
  EXPECT_EQ(Value(Table::kContact, "dr.alice@clinic"), "second");
  CW_ST_ASSERT_OK(Commit(Delete(Table::kSession, SessionKey("bob", 1))));
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "<absent>");
  Reopen();
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "<absent>");
  EXPECT_EQ(Value(Table::kGroup, "ward-7"), "value of ward-7");
}

TEST_F(SealedStoreTest, ListKeysByTheEnginesPrefixes) {
  session::WriteBatch batch;
  for (uint32_t d : {1u, 2u, 256u, 0x01000000u})
    batch.writes.push_back(Put(Table::kSession, SessionKey("alice", d), "s"));
  batch.writes.push_back(Put(Table::kSession, SessionKey("alicia", 1), "s"));
  batch.writes.push_back(Put(Table::kSession, SessionKey("bob", 1), "s"));
  batch.writes.push_back(Put(Table::kSenderKey, SenderKeyKey("g1", "alice", 1), "k"));
  batch.writes.push_back(Put(Table::kSenderKey, SenderKeyKey("g1", "alice", 2), "k"));
  batch.writes.push_back(Put(Table::kSenderKey, SenderKeyKey("g1", "bob", 1), "k"));
  batch.writes.push_back(Put(Table::kSenderKey, SenderKeyKey("g2", "alice", 1), "k"));
  for (uint32_t id : {300u, 2u, 70000u}) batch.writes.push_back(Put(Table::kPreKey, BigEndian32(id), "p"));
  CW_ST_ASSERT_OK(store_->Commit(std::move(batch)));

  using V = std::vector<std::string>;
  EXPECT_EQ(List(Table::kSession, WithNul("alice")),
            (V{SessionKey("alice", 1), SessionKey("alice", 2), SessionKey("alice", 256),
               SessionKey("alice", 0x01000000)}));
  EXPECT_EQ(List(Table::kSession, "ali"),
            (V{SessionKey("alice", 1), SessionKey("alice", 2), SessionKey("alice", 256),
               SessionKey("alice", 0x01000000), SessionKey("alicia", 1)}));
  EXPECT_EQ(List(Table::kSession, SessionKey("alice", 2)), (V{SessionKey("alice", 2)}));
  EXPECT_EQ(List(Table::kSession, WithNul("carol")), V{});
  EXPECT_EQ(List(Table::kSession, "").size(), 6u);
  EXPECT_EQ(
      List(Table::kSenderKey, WithNul("g1")),
      (V{SenderKeyKey("g1", "alice", 1), SenderKeyKey("g1", "alice", 2), SenderKeyKey("g1", "bob", 1)}));
  std::string g1_alice = SenderKeyKey("g1", "alice", 0);
  g1_alice.resize(g1_alice.size() - 4);  // how the engine lists every device of a member
  EXPECT_EQ(List(Table::kSenderKey, g1_alice),
            (V{SenderKeyKey("g1", "alice", 1), SenderKeyKey("g1", "alice", 2)}));
  EXPECT_EQ(List(Table::kPreKey, ""), (V{BigEndian32(2), BigEndian32(300), BigEndian32(70000)}));
  EXPECT_EQ(List(Table::kPreKey, std::string(3, '\0')), (V{BigEndian32(2)}));
}

// The same random operations on a SealedStore and an InMemoryStore give the same answers.
TEST_F(SealedStoreTest, BehavesLikeTheInMemoryStore) {
  session::InMemoryStore reference;
  SeededRandom rnd(42);
  const std::vector<std::string> names = {"a", "ab", "abc", "b", "dr.x", std::string("\xff\x01", 2)};
  const std::vector<std::string> groups = {"g", "g2", "team"};
  auto random_key = [&](Table t) -> std::string {
    const std::string& n = names[rnd.Uniform(names.size())];
    const uint32_t device = rnd.Uniform(3) == 0 ? 0x00000100u * rnd.Uniform(3) : rnd.Uniform(4);
    switch (t) {
      case Table::kSession:
        return SessionKey(n, device);
      case Table::kSenderKey:
        return SenderKeyKey(groups[rnd.Uniform(groups.size())], n, device);
      case Table::kPreKey:
        return BigEndian32(rnd.Uniform(1000));
      case Table::kGroup:
        return groups[rnd.Uniform(groups.size())];
      default:
        return n;
    }
  };
  const Table tables[] = {Table::kContact, Table::kPreKey, Table::kSession, Table::kSenderKey, Table::kGroup};
  for (int round = 0; round < 40; ++round) {
    session::WriteBatch a, b;
    const int writes = 1 + static_cast<int>(rnd.Uniform(8));
    for (int i = 0; i < writes; ++i) {
      const Table t = tables[rnd.Uniform(5)];
      const std::string k = random_key(t);
      if (rnd.Uniform(4) == 0) {
        a.writes.push_back(Delete(t, k));
        b.writes.push_back(Delete(t, k));
      } else {
        std::string v = std::to_string(round * 100 + i);
        v.insert(v.begin(), 'v');
        a.writes.push_back(Put(t, k, v));
        b.writes.push_back(Put(t, k, v));
      }
    }
    CW_ST_ASSERT_OK(store_->Commit(std::move(a)));
    CW_ST_ASSERT_OK(reference.Commit(std::move(b)));
    if (round == 20) Reopen();
  }
  for (Table t : tables) {
    std::vector<std::string> prefixes = {""};
    for (const auto& n : names) {
      prefixes.push_back(n);
      prefixes.push_back(WithNul(n));
    }
    for (const auto& g : groups) {
      prefixes.push_back(WithNul(g));
      for (const auto& n : names) prefixes.push_back(WithNul(g) + WithNul(n));
    }
    for (const auto& p : prefixes) {
      auto expected = reference.ListKeys(t, p);
      ASSERT_TRUE(expected.has_value());
      EXPECT_EQ(List(t, p), *expected) << "table " << static_cast<int>(t) << " prefix " << ToHex(AsBytes(p));
      for (const auto& k : *expected) {
        auto want = reference.Get(t, k);
        ASSERT_TRUE(want.has_value() && want->has_value());
        EXPECT_EQ(Value(t, k), std::string((*want)->reveal().begin(), (*want)->reveal().end()));
      }
    }
  }
}

// prefix followed by n in decimal (GCC 12 warns falsely on "literal" + std::string).
std::string Numbered(std::string_view prefix, uint32_t n) {
  std::string s(prefix);
  s.append(std::to_string(n));
  return s;
}

// The digest is kept up to date by every commit from what it knows of the records each write replaces (its
// own recent commits, a filter of the keys on disk, RocksDB). Any slip there shows as a table refused at the
// next open, so: random batches (keys written twice in one batch, deletes of absent keys, batches past the
// small-batch path) across reopens, each reopen checked, and every value checked against a reference.
TEST_F(SealedStoreTest, TheDigestStaysExactThroughEveryKindOfCommitAndReopen) {
  session::InMemoryStore reference;
  SeededRandom rnd(7);
  const Table tables[] = {Table::kContact, Table::kPreKey, Table::kSession, Table::kTranscript,
                          Table::kInboundDedup};
  auto random_key = [&](Table t) -> std::string {
    const uint32_t n = rnd.Uniform(40);
    switch (t) {
      case Table::kSession:
        return SessionKey(Numbered("peer", n % 5), n / 5);
      case Table::kPreKey:
        return BigEndian32(n);
      case Table::kTranscript: {
        std::string k = WithNul(Numbered("dm:peer", n % 3));
        k.append(BigEndian32(0));
        k.append(BigEndian32(n));
        return k;
      }
      default:
        return Numbered("id", n);
    }
  };
  for (int round = 0; round < 60; ++round) {
    session::WriteBatch a, b;
    // Every tenth batch is large (the other path for keys written twice in one batch).
    const int writes = round % 10 == 9 ? 80 : 1 + static_cast<int>(rnd.Uniform(6));
    for (int i = 0; i < writes; ++i) {
      const Table t = tables[rnd.Uniform(5)];
      const std::string k = random_key(t);
      if (rnd.Uniform(4) == 0) {
        a.writes.push_back(Delete(t, k));
        b.writes.push_back(Delete(t, k));
      } else {
        const std::string v = Numbered("v", round * 1000 + i);
        a.writes.push_back(Put(t, k, v));
        b.writes.push_back(Put(t, k, v));
      }
    }
    CW_ST_ASSERT_OK(store_->Commit(std::move(a)));
    CW_ST_ASSERT_OK(reference.Commit(std::move(b)));
    if (round % 15 == 14) {
      Reopen();
      ASSERT_TRUE(store_->TamperedTables().empty()) << "after round " << round;
    }
  }
  Reopen();
  EXPECT_TRUE(store_->TamperedTables().empty());
  for (Table t : tables) {
    for (int n = 0; n < 40; ++n) {
      // The same keys random_key draws from, in order.
      std::string k;
      switch (t) {
        case Table::kSession:
          k = SessionKey(Numbered("peer", n % 5), n / 5);
          break;
        case Table::kPreKey:
          k = BigEndian32(n);
          break;
        case Table::kTranscript:
          k = WithNul(Numbered("dm:peer", n % 3)) + BigEndian32(0) + BigEndian32(n);
          break;
        default:
          k = Numbered("id", n);
      }
      auto want = reference.Get(t, k);
      ASSERT_TRUE(want.has_value());
      EXPECT_EQ(Value(t, k), want->has_value() ? std::string((*want)->reveal().begin(), (*want)->reveal().end())
                                               : std::string("<absent>"))
          << "table " << static_cast<int>(t) << " key " << n;
    }
  }
}

// More keys than the key filter's first layer holds (it grows by adding layers), some written before a
// reopen (the filter is refilled from the files): replacing and deleting any of them keeps the digest exact,
// and a key never written still reads as absent.
TEST_F(SealedStoreTest, ReplacingOldAndNewKeysAmongManyKeepsTheDigestExact) {
  constexpr uint32_t kKeys = 40'000;
  auto fill = [&](uint32_t from, uint32_t to) {
    for (uint32_t first = from; first < to; first += 1000) {
      session::WriteBatch b;
      for (uint32_t id = first; id < std::min(to, first + 1000); ++id) {
        b.writes.push_back(Put(Table::kPreKey, BigEndian32(id), Numbered("k", id)));
      }
      CW_ST_ASSERT_OK(store_->Commit(std::move(b)));
    }
  };
  ASSERT_NO_FATAL_FAILURE(fill(0, kKeys / 2));
  Reopen();
  ASSERT_TRUE(store_->TamperedTables().empty());
  ASSERT_NO_FATAL_FAILURE(fill(kKeys / 2, kKeys));
  for (uint32_t id : {0u, 1u, kKeys / 2 - 1, kKeys / 2, kKeys - 1}) {
    CW_ST_ASSERT_OK(Commit(Put(Table::kPreKey, BigEndian32(id), Numbered("again ", id))));
  }
  for (uint32_t id : {2u, kKeys - 2}) CW_ST_ASSERT_OK(Commit(Delete(Table::kPreKey, BigEndian32(id))));
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(kKeys)), "<absent>");
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(kKeys - 3)), Numbered("k", kKeys - 3));
  Reopen();
  EXPECT_TRUE(store_->TamperedTables().empty());
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(0)), "again 0");
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(kKeys / 2)), Numbered("again ", kKeys / 2));
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(kKeys - 1)), Numbered("again ", kKeys - 1));
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(2)), "<absent>");
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(kKeys - 2)), "<absent>");
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(3)), "k3");
}

TEST_F(SealedStoreTest, NamesAppearNowhereOnDisk) {
  session::WriteBatch batch;
  batch.writes.push_back(Put(Table::kContact, "patient-jane-doe", "identity key"));
  batch.writes.push_back(Put(Table::kSession, SessionKey("patient-jane-doe", 1), "session record"));
  batch.writes.push_back(Put(Table::kSenderKey, SenderKeyKey("oncology-team", "patient-jane-doe", 1), "sk"));
  batch.writes.push_back(Put(Table::kGroup, "oncology-team", "members"));
  CW_ST_ASSERT_OK(store_->Commit(std::move(batch)));
  CloseStore();
  {
    // Flushed to SST files as well as the log.
    RawDb raw(db_path());
    ASSERT_TRUE(raw.ok());
    for (const char* cf : {"contacts", "sessions", "sender_keys", "groups"}) {
      ASSERT_TRUE(raw.db()->Flush(rocksdb::FlushOptions(), raw.cf(cf)).ok());
    }
    auto keys = raw.Keys("sessions");
    ASSERT_EQ(keys.size(), 1u);
    EXPECT_EQ(keys[0].size(), 32u);  // H(name) || H(device)
    EXPECT_EQ(raw.Keys("sender_keys")[0].size(), 48u);
    EXPECT_EQ(raw.Keys("contacts")[0].size(), 16u);
  }
  EXPECT_FALSE(testing::AnyFileContains(db_path(), "patient-jane-doe"));
  EXPECT_FALSE(testing::AnyFileContains(db_path(), "oncology-team"));
  EXPECT_FALSE(testing::AnyFileContains(db_path(), "session record"));
  EXPECT_FALSE(testing::AnyFileContains(db_path(), "identity key"));
  OpenStore();
  EXPECT_EQ(Value(Table::kSession, SessionKey("patient-jane-doe", 1)), "session record");
}

TEST_F(SealedStoreTest, EqualNamesInDifferentTablesHashDifferently) {
  auto contact = store_->StoredKeyForTesting(Table::kContact, "alice");
  auto group = store_->StoredKeyForTesting(Table::kGroup, "alice");
  auto session = store_->StoredKeyForTesting(Table::kSession, SessionKey("alice", 1));
  CW_ST_ASSERT_OK(contact);
  CW_ST_ASSERT_OK(group);
  CW_ST_ASSERT_OK(session);
  EXPECT_NE(*contact, *group);
  EXPECT_NE(*contact, session->substr(0, 16));
}

TEST_F(SealedStoreTest, AfterLockEveryCallFailsClearly) {
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "x")));
  keystore_->Lock();
  auto got = store_->Get(Table::kContact, "bob");
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(got.error().message(), "keystore is locked");
  CW_ST_EXPECT_CODE(store_->Get(Table::kPreKey, BigEndian32(1)), StatusCode::kPermissionDenied);
  CW_ST_EXPECT_CODE(store_->ListKeys(Table::kPreKey, ""), StatusCode::kPermissionDenied);
  CW_ST_EXPECT_CODE(store_->ListKeys(Table::kSession, ""), StatusCode::kPermissionDenied);
  CW_ST_EXPECT_CODE(Commit(Put(Table::kContact, "carol", "y")), StatusCode::kPermissionDenied);
  CloseStore();
  CW_ST_EXPECT_CODE(SealedStore::Open(db_path(), keystore_.get(), Options()), StatusCode::kPermissionDenied);
  CW_ST_ASSERT_OK(keystore_->Unlock(AsBytes(kPassphrase)));
  OpenStore();
  EXPECT_EQ(Value(Table::kContact, "bob"), "x");
  EXPECT_EQ(Value(Table::kContact, "carol"), "<absent>");
}

// The store keeps its subkeys and recently opened records between calls; Lock must take both away.
TEST_F(SealedStoreTest, RecordsReadBeforeLockAreNotServedAfterIt) {
  CW_ST_ASSERT_OK(Commit(Put(Table::kSession, SessionKey("bob", 1), "session")));
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "session");  // opened, so now cached
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "session");
  keystore_->Lock();
  auto got = store_->Get(Table::kSession, SessionKey("bob", 1));
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(got.error().message(), "keystore is locked");
  CW_ST_EXPECT_CODE(store_->StoredKeyForTesting(Table::kSession, SessionKey("bob", 1)),
                    StatusCode::kPermissionDenied);
  CW_ST_ASSERT_OK(keystore_->Unlock(AsBytes(kPassphrase)));
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "session");
}

TEST_F(SealedStoreTest, CachedRecordsFollowCommitsAndDeletes) {
  CW_ST_ASSERT_OK(Commit(Put(Table::kSession, SessionKey("bob", 1), "v1")));
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "v1");
  CW_ST_ASSERT_OK(Commit(Put(Table::kSession, SessionKey("bob", 1), "v2")));
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "v2");
  CW_ST_ASSERT_OK(Commit(Delete(Table::kSession, SessionKey("bob", 1))));
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "<absent>");
  CW_ST_ASSERT_OK(Commit(Put(Table::kSession, SessionKey("bob", 1), "v3")));
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "v3");
  // Equal plain keys in different tables are different records.
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "contact")));
  CW_ST_ASSERT_OK(Commit(Put(Table::kGroup, "bob", "group")));
  EXPECT_EQ(Value(Table::kContact, "bob"), "contact");
  EXPECT_EQ(Value(Table::kGroup, "bob"), "group");
  // A failed batch changes nothing, cached or not.
  session::WriteBatch bad;
  bad.writes.push_back(Put(Table::kContact, "bob", "changed"));
  bad.writes.push_back(Put(Table::kSession, "no separator", "y"));
  CW_ST_EXPECT_CODE(store_->Commit(std::move(bad)), StatusCode::kInvalidArgument);
  EXPECT_EQ(Value(Table::kContact, "bob"), "contact");
  Reopen();
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "v3");
}

// An idle timer locks from another thread while the owner works: every call either succeeds with the right
// value or fails with kPermissionDenied, and nothing is left readable after the last Lock.
TEST_F(SealedStoreTest, LockFromAnotherThreadWhileTheOwnerWorks) {
  CW_ST_ASSERT_OK(Commit(Put(Table::kSession, SessionKey("bob", 1), "0")));
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::thread owner([&] {
    int n = 0;
    std::string last = "0";
    while (!stop.load()) {
      session::WriteBatch b;
      const std::string next = std::to_string(++n);
      b.writes.push_back(Put(Table::kSession, SessionKey("bob", 1), next));
      Status s = store_->Commit(std::move(b));
      if (s.ok()) {
        last = next;
      } else if (s.code() != StatusCode::kPermissionDenied) {
        ++bad;
      }
      auto got = store_->Get(Table::kSession, SessionKey("bob", 1));
      if (got.has_value()) {
        if (!got->has_value() || std::string((*got)->reveal().begin(), (*got)->reveal().end()) != last) ++bad;
      } else if (got.error().code() != StatusCode::kPermissionDenied) {
        ++bad;
      }
    }
  });
  for (int i = 0; i < 20; ++i) {
    keystore_->Lock();
    EXPECT_FALSE(store_->Get(Table::kSession, SessionKey("bob", 1)).has_value());
    CW_ST_ASSERT_OK(keystore_->Unlock(AsBytes(kPassphrase)));
  }
  keystore_->Lock();
  stop = true;
  owner.join();
  EXPECT_EQ(bad.load(), 0);
  CW_ST_EXPECT_CODE(store_->Get(Table::kSession, SessionKey("bob", 1)), StatusCode::kPermissionDenied);
}

TEST_F(SealedStoreTest, ABatchWithABadWriteWritesNothing) {
  session::WriteBatch batch;
  batch.writes.push_back(Put(Table::kContact, "bob", "x"));
  batch.writes.push_back(Put(Table::kSession, "no separator", "y"));
  CW_ST_EXPECT_CODE(store_->Commit(std::move(batch)), StatusCode::kInvalidArgument);
  EXPECT_EQ(Value(Table::kContact, "bob"), "<absent>");
  CW_ST_EXPECT_CODE(store_->Get(static_cast<Table>(session::kTableCount + 2), "x"), StatusCode::kInvalidArgument);
  CW_ST_ASSERT_OK(store_->Commit(session::WriteBatch{}));
}

TEST_F(SealedStoreTest, UnsyncedOptionStillPersistsAcrossCleanClose) {
  SealedStoreOptions o = Options();
  o.sync = false;
  CloseStore();
  auto s = SealedStore::Open(db_path(), keystore_.get(), o);
  CW_ST_ASSERT_OK(s);
  session::WriteBatch batch;
  batch.writes.push_back(Put(Table::kContact, "bob", "x"));
  CW_ST_ASSERT_OK((*s)->Commit(std::move(batch)));
  s->reset();
  OpenStore();
  EXPECT_EQ(Value(Table::kContact, "bob"), "x");
}

TEST_F(SealedStoreTest, MissingStoreWithoutCreateIsNotFound) {
  SealedStoreOptions o = Options();
  o.create_if_missing = false;
  CW_ST_EXPECT_CODE(SealedStore::Open(dir_.Sub("nothing-here"), keystore_.get(), o), StatusCode::kNotFound);
}

TEST_F(SealedStoreTest, ANewerSchemaIsRefusedAndLeftAlone) {
  CloseStore();
  {
    RawDb raw(db_path());
    ASSERT_TRUE(raw.ok());
    raw.Put("metadata", "schema_version", std::string("\0\0\0\3", 4));
    ASSERT_TRUE(raw.CreateCf("transcripts").ok());
  }
  auto s = SealedStore::Open(db_path(), keystore_.get(), Options());
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), StatusCode::kUnsupportedVersion) << s.error().ToString();
  {
    RawDb raw(db_path());
    EXPECT_TRUE(raw.HasCf("transcripts"));
    raw.Put("metadata", "schema_version", std::string("\0\0\0\0", 4));
  }
  CW_ST_EXPECT_CODE(SealedStore::Open(db_path(), keystore_.get(), Options()), StatusCode::kMalformed);
  {
    RawDb raw(db_path());
    raw.Put("metadata", "schema_version", std::string("\0\0\0\2", 4));
  }
  OpenStore();  // the current version opens, with the unknown column family left in place
}

TEST_F(SealedStoreTest, AStoreSealedUnderAnotherMasterKeyIsTampered) {
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "x")));
  CloseStore();
  auto other = Keystore::Create(dir_.Sub("other-keystore"), AsBytes(kPassphrase),
                                KeystoreOptions::MinimumCostForTesting());
  CW_ST_ASSERT_OK(other);
  auto s = SealedStore::Open(db_path(), other->get(), Options());
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), StatusCode::kTampered) << s.error().ToString();
  OpenStore();
  EXPECT_EQ(Value(Table::kContact, "bob"), "x");
}

TEST_F(SealedStoreTest, TheDatabaseIsLockedAgainstASecondOpen) {
  CW_ST_EXPECT_CODE(SealedStore::Open(db_path(), keystore_.get(), Options()), StatusCode::kUnavailable);
}

// A store as schema version 1 left it: records sealed with version 1 in their associated data, no digest.
// Built from a current store with the store's own sealing key, as version 1 would have written it.
void RewriteAsVersion1(const std::string& path, const Keystore& keystore, std::vector<std::string>* damaged) {
  std::array<uint8_t, 32> key{};
  ASSERT_TRUE(internal::DeriveSealKeyForTesting(keystore, key).ok());
  SeededRandom random(11);
  RawDb raw(path);
  ASSERT_TRUE(raw.ok());
  for (Table t : {Table::kMeta, Table::kContact, Table::kPreKey, Table::kSession, Table::kTranscript}) {
    const std::string cf(SealedStore::ColumnFamilyName(t));
    for (const auto& stored : raw.Keys(cf)) {
      auto opened = internal::OpenRecordWithKey(key, cf, stored, raw.Get(cf, stored));
      ASSERT_TRUE(opened.has_value()) << cf;
      raw.Put(cf, stored,
              internal::SealRecordWithKey(key, random, cf, stored, opened->plain_key, opened->value.reveal(), 1));
    }
  }
  auto check = internal::OpenRecordWithKey(key, "metadata", "key_check", raw.Get("metadata", "key_check"));
  ASSERT_TRUE(check.has_value());
  raw.Put("metadata", "key_check",
          internal::SealRecordWithKey(key, random, "metadata", "key_check", "key_check", check->value.reveal(), 1));
  raw.Delete("metadata", "digest");
  raw.Put("metadata", "schema_version", std::string("\0\0\0\1", 4));
  // One record that was already damaged under version 1: it must be carried over, not dropped or "repaired".
  const std::string cf(SealedStore::ColumnFamilyName(Table::kContact));
  for (const auto& stored : raw.Keys(cf)) {
    std::string v = raw.Get(cf, stored);
    v.back() = static_cast<char>(v.back() ^ 1);
    raw.Put(cf, stored, v);
    damaged->push_back(stored);
    break;
  }
  sodium_memzero(key.data(), key.size());
}

TEST_F(SealedStoreTest, AVersion1StoreIsMigratedOnOpen) {
  session::WriteBatch batch;
  batch.writes.push_back(Put(Table::kContact, "bob", "contact bob"));
  batch.writes.push_back(Put(Table::kContact, "carol", "contact carol"));
  batch.writes.push_back(Put(Table::kSession, SessionKey("bob", 1), "session bob"));
  batch.writes.push_back(Put(Table::kPreKey, BigEndian32(7), "pre-key 7"));
  batch.writes.push_back(Put(Table::kMeta, "registration_id", "1234"));
  std::string row_key = WithNul("conversation");
  row_key.append(std::string("\0\0\0\0\0\0\0\1", 8));
  batch.writes.push_back(Put(Table::kTranscript, row_key, "row 1"));
  CW_ST_ASSERT_OK(store_->Commit(std::move(batch)));
  const std::string bob = store_->StoredKeyForTesting(Table::kContact, "bob").value();
  const std::string carol = store_->StoredKeyForTesting(Table::kContact, "carol").value();
  CloseStore();
  std::vector<std::string> damaged;
  ASSERT_NO_FATAL_FAILURE(RewriteAsVersion1(db_path(), *keystore_, &damaged));
  ASSERT_EQ(damaged.size(), 1u);
  const bool bob_damaged = damaged[0] == bob;
  {
    // A version-1 record opens only under version 1's associated data: the migration is not a no-op.
    std::array<uint8_t, 32> key{};
    ASSERT_TRUE(internal::DeriveSealKeyForTesting(*keystore_, key).ok());
    RawDb raw(db_path());
    const std::string intact = bob_damaged ? carol : bob;
    EXPECT_FALSE(internal::OpenRecordWithKey(key, "contacts", intact, raw.Get("contacts", intact)).has_value());
    EXPECT_TRUE(internal::OpenRecordWithKey(key, "contacts", intact, raw.Get("contacts", intact), 1).has_value());
    sodium_memzero(key.data(), key.size());
  }
  OpenStore();
  EXPECT_TRUE(store_->TamperedTables().empty());
  EXPECT_EQ(Value(Table::kContact, bob_damaged ? "carol" : "bob"),
            bob_damaged ? "contact carol" : "contact bob");
  CW_ST_EXPECT_CODE(store_->Get(Table::kContact, bob_damaged ? "bob" : "carol"), StatusCode::kTampered);
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "session bob");
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(7)), "pre-key 7");
  EXPECT_EQ(Value(Table::kMeta, "registration_id"), "1234");
  EXPECT_EQ(Value(Table::kTranscript, row_key), "row 1");
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "dave", "contact dave")));
  CloseStore();
  {
    RawDb raw(db_path());
    EXPECT_EQ(raw.Get("metadata", "schema_version"), std::string("\0\0\0\2", 4));
    EXPECT_FALSE(raw.Get("metadata", "digest").empty());
  }
  // Opened again, it is an ordinary version-2 store whose digest matches.
  OpenStore();
  EXPECT_TRUE(store_->TamperedTables().empty());
  EXPECT_EQ(Value(Table::kContact, "dave"), "contact dave");
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "session bob");
}

TEST_F(SealedStoreTest, WhenSyncedReportsEachCommitOnceItIsDurable) {
  // Synced commits (the default) are durable when Commit returns: the callback runs at once.
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "x")));
  bool called = false;
  CW_ST_ASSERT_OK(store_->WhenSynced(store_->LastCommitSequence(), [&](const Status& s) {
    EXPECT_TRUE(s.ok());
    called = true;
  }));
  EXPECT_TRUE(called);
  CW_ST_EXPECT_CODE(store_->WhenSynced(store_->LastCommitSequence() + 1, [](const Status&) {}),
                    StatusCode::kInvalidArgument);

  // Group commit: the sync thread reports every waiting commit, and nothing before its fsync.
  SealedStoreOptions o = Options();
  o.sync = false;
  CloseStore();
  auto opened = SealedStore::Open(db_path(), keystore_.get(), o);
  CW_ST_ASSERT_OK(opened);
  store_ = std::move(*opened);
  const uint64_t first = store_->LastCommitSequence() + 1;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint64_t> reported;
  for (int i = 0; i < 50; ++i) {
    CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "patient-" + std::to_string(i), "x")));
    const uint64_t sequence = store_->LastCommitSequence();
    ASSERT_EQ(sequence, first + static_cast<uint64_t>(i));
    CW_ST_ASSERT_OK(store_->WhenSynced(sequence, [&, sequence](const Status& s) {
      EXPECT_TRUE(s.ok()) << s.ToString();
      EXPECT_GE(store_->SyncedThrough(), sequence);
      std::lock_guard<std::mutex> lock(mu);
      reported.push_back(sequence);
      cv.notify_all();
    }));
  }
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(30), [&] { return reported.size() == 50; }));
  for (size_t i = 0; i < reported.size(); ++i) EXPECT_EQ(reported[i], first + i) << "in commit order";
  EXPECT_GE(store_->SyncedThrough(), first + 49);
}

}  // namespace
}  // namespace cw::storage
