// Changes made to the raw database behind the store's back. A record damaged in place fails with kTampered
// on its own. A change of which version of a record sits under a key (rolled back, deleted, resurrected,
// copied, moved, swapped) breaks its table's digest: the whole table is refused with kTampered until the user
// accepts the state on disk, and the other tables serve as before. Nothing is rewritten.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/session/records.h"
#include "storage/sealed_store.h"
#include "tests/storage/sealed_store_fixture.h"

namespace cw::storage {
namespace {

using session::Table;
using session::internal::BigEndian32;
using session::internal::SenderKeyKey;
using session::internal::SessionKey;
using testing::Put;
using testing::RawDb;

class SealedStoreTamperTest : public testing::SealedStoreFixture {
 protected:
  void SetUp() override {
    SealedStoreFixture::SetUp();
    session::WriteBatch batch;
    for (const auto& n : names_) {
      batch.writes.push_back(Put(Table::kContact, n, "contact " + n));
      batch.writes.push_back(Put(Table::kSession, SessionKey(n, 1), "session " + n));
    }
    batch.writes.push_back(Put(Table::kPreKey, BigEndian32(1), "pre-key 1"));
    batch.writes.push_back(Put(Table::kPreKey, BigEndian32(2), "pre-key 2"));
    batch.writes.push_back(Put(Table::kSignedPreKey, BigEndian32(1), "signed pre-key 1"));
    batch.writes.push_back(Put(Table::kSenderKey, SenderKeyKey("g", "alice", 1), "sender key"));
    ASSERT_TRUE(store_->Commit(std::move(batch)).ok());
  }

  std::string Stored(Table t, const std::string& key) {
    auto k = store_->StoredKeyForTesting(t, key);
    EXPECT_TRUE(k.has_value());
    return k.value_or("");
  }

  // The untouched records still open.
  void ExpectOthersIntact(const std::vector<std::string>& touched) {
    for (const auto& n : names_) {
      if (std::find(touched.begin(), touched.end(), n) != touched.end()) continue;
      EXPECT_EQ(Value(Table::kContact, n), "contact " + n);
      EXPECT_EQ(Value(Table::kSession, SessionKey(n, 1)), "session " + n);
    }
    EXPECT_EQ(Value(Table::kSenderKey, SenderKeyKey("g", "alice", 1)), "sender key");
  }

  std::vector<std::string> names_ = {"alice", "bob", "carol", "dave", "erin"};
};

// Where a sealed record's element starts and ends: its format byte and nonce (sealed_store.cc).
constexpr size_t kIdentityBytes = 1 + 24;

TEST_F(SealedStoreTamperTest, EveryFlippedByteOfASealedBodyFailsOnItsOwn) {
  // Records of equal length; record i gets byte kIdentityBytes + i flipped, so every position after the
  // nonce (sealed key length, key, value, tag) is hit once, with one reopen.
  constexpr int kRecords = 80;
  auto name = [](int i) { return "patient-" + std::to_string(100 + i); };
  session::WriteBatch batch;
  for (int i = 0; i < kRecords; ++i)
    batch.writes.push_back(Put(Table::kContact, name(i), "identity key bytes"));
  CW_ST_ASSERT_OK(store_->Commit(std::move(batch)));
  std::vector<std::string> stored;
  for (int i = 0; i < kRecords; ++i) stored.push_back(Stored(Table::kContact, name(i)));
  CloseStore();
  size_t flipped = 0;
  {
    RawDb raw(db_path());
    const size_t length = raw.Get("contacts", stored[0]).size();
    ASSERT_LT(length, kIdentityBytes + kRecords);
    flipped = length - kIdentityBytes;
    for (size_t i = 0; i < flipped; ++i) {
      std::string v = raw.Get("contacts", stored[i]);
      ASSERT_EQ(v.size(), length);
      const size_t at = kIdentityBytes + i;
      v[at] = static_cast<char>(v[at] ^ (1 << (at % 8)));
      raw.Put("contacts", stored[i], v);
    }
  }
  OpenStore();
  EXPECT_TRUE(store_->TamperedTables().empty());
  for (size_t i = 0; i < flipped; ++i) {
    auto got = store_->Get(Table::kContact, name(static_cast<int>(i)));
    ASSERT_FALSE(got.has_value()) << "byte " << kIdentityBytes + i;
    EXPECT_EQ(got.error().code(), StatusCode::kTampered) << "byte " << kIdentityBytes + i;
    EXPECT_EQ(got.error().message().find("patient"), std::string::npos) << got.error().message();
  }
  for (int i = static_cast<int>(flipped); i < kRecords; ++i)
    EXPECT_EQ(Value(Table::kContact, name(i)), "identity key bytes");
  ExpectOthersIntact({});
}

TEST_F(SealedStoreTamperTest, AFlippedFormatOrNonceByteRefusesTheTable) {
  const std::string a = Stored(Table::kContact, "alice");
  for (size_t at : {size_t{0}, size_t{1}, size_t{13}, kIdentityBytes - 1}) {
    CloseStore();
    std::string original;
    {
      RawDb raw(db_path());
      original = raw.Get("contacts", a);
      std::string v = original;
      v[at] = static_cast<char>(v[at] ^ 0x40);
      raw.Put("contacts", a, v);
    }
    OpenStore();
    EXPECT_EQ(store_->TamperedTables(), std::vector<Table>{Table::kContact}) << "byte " << at;
    CW_ST_EXPECT_CODE(store_->Get(Table::kContact, "bob"), StatusCode::kTampered);
    CW_ST_EXPECT_CODE(store_->ListKeys(Table::kContact, ""), StatusCode::kTampered);
    CW_ST_EXPECT_CODE(Commit(Put(Table::kContact, "frank", "x")),
                      StatusCode::kTampered);
    EXPECT_EQ(Value(Table::kSession, SessionKey("alice", 1)), "session alice");
    EXPECT_EQ(Value(Table::kSenderKey, SenderKeyKey("g", "alice", 1)), "sender key");
    // Put back as it was, the table matches its digest again.
    CloseStore();
    {
      RawDb raw(db_path());
      raw.Put("contacts", a, original);
    }
    OpenStore();
    EXPECT_TRUE(store_->TamperedTables().empty());
    EXPECT_EQ(Value(Table::kContact, "alice"), "contact alice");
  }
}

TEST_F(SealedStoreTamperTest, TruncatedAndEmptyValuesAreCaught) {
  const std::string a = Stored(Table::kContact, "alice");
  const std::string b = Stored(Table::kContact, "bob");
  const std::string s = Stored(Table::kSession, SessionKey("carol", 1));
  CloseStore();
  {
    RawDb raw(db_path());
    std::string v = raw.Get("contacts", a);
    raw.Put("contacts", a, v.substr(0, v.size() - 1));  // the nonce survives: only this record fails
    raw.Put("sessions", s, "");                         // the nonce is gone: the table is refused
  }
  OpenStore();
  EXPECT_EQ(store_->TamperedTables(), std::vector<Table>{Table::kSession});
  CW_ST_EXPECT_CODE(store_->Get(Table::kContact, "alice"), StatusCode::kTampered);
  EXPECT_EQ(Value(Table::kContact, "bob"), "contact bob");
  CW_ST_EXPECT_CODE(store_->Get(Table::kSession, SessionKey("dave", 1)), StatusCode::kTampered);
  CloseStore();
  {
    RawDb raw(db_path());
    raw.Put("contacts", b, "");
  }
  OpenStore();
  EXPECT_EQ(store_->TamperedTables(), (std::vector<Table>{Table::kContact, Table::kSession}));
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(1)), "pre-key 1");
  EXPECT_EQ(Value(Table::kSenderKey, SenderKeyKey("g", "alice", 1)), "sender key");
  // The user decides to go on: each damaged record still fails, one by one, and the rest serve.
  CW_ST_ASSERT_OK(store_->AcceptCurrentState());
  EXPECT_TRUE(store_->TamperedTables().empty());
  CW_ST_EXPECT_CODE(store_->Get(Table::kContact, "alice"), StatusCode::kTampered);
  CW_ST_EXPECT_CODE(store_->Get(Table::kContact, "bob"), StatusCode::kTampered);
  CW_ST_EXPECT_CODE(store_->Get(Table::kSession, SessionKey("carol", 1)), StatusCode::kTampered);
  ExpectOthersIntact({"alice", "bob", "carol"});
}

TEST_F(SealedStoreTamperTest, SwappedValuesRefuseTheTableAndFailOnBothKeys) {
  const std::string a = Stored(Table::kSession, SessionKey("alice", 1));
  const std::string b = Stored(Table::kSession, SessionKey("bob", 1));
  CloseStore();
  {
    RawDb raw(db_path());
    std::string va = raw.Get("sessions", a), vb = raw.Get("sessions", b);
    raw.Put("sessions", a, vb);
    raw.Put("sessions", b, va);
  }
  OpenStore();
  EXPECT_EQ(store_->TamperedTables(), std::vector<Table>{Table::kSession});
  auto got = store_->Get(Table::kSession, SessionKey("carol", 1));
  ASSERT_FALSE(got.has_value());
  EXPECT_EQ(got.error().code(), StatusCode::kTampered);
  EXPECT_NE(got.error().message().find("rolled back"), std::string::npos) << got.error().message();
  EXPECT_EQ(got.error().message().find("carol"), std::string::npos) << got.error().message();
  EXPECT_EQ(Value(Table::kContact, "alice"), "contact alice");
  EXPECT_EQ(Value(Table::kSenderKey, SenderKeyKey("g", "alice", 1)), "sender key");
  // Reopening changes nothing: the refusal is not a one-off.
  Reopen();
  EXPECT_EQ(store_->TamperedTables(), std::vector<Table>{Table::kSession});
  CW_ST_ASSERT_OK(store_->AcceptCurrentState());
  CW_ST_EXPECT_CODE(store_->Get(Table::kSession, SessionKey("alice", 1)), StatusCode::kTampered);
  CW_ST_EXPECT_CODE(store_->Get(Table::kSession, SessionKey("bob", 1)), StatusCode::kTampered);
  // The listing of a prefix holding a tampered record says so; other prefixes are unaffected.
  CW_ST_EXPECT_CODE(store_->ListKeys(Table::kSession, std::string("alice") + '\0'), StatusCode::kTampered);
  EXPECT_EQ(List(Table::kSession, std::string("carol") + '\0'),
            std::vector<std::string>{SessionKey("carol", 1)});
  ExpectOthersIntact({"alice", "bob"});
  // The acceptance is durable.
  Reopen();
  EXPECT_TRUE(store_->TamperedTables().empty());
}

TEST_F(SealedStoreTamperTest, ACopyUnderAnotherKeyOrTableFails) {
  const std::string alice = Stored(Table::kContact, "alice");
  const std::string mallory = Stored(Table::kContact, "mallory");
  const std::string alice_session_device_1 = Stored(Table::kSession, SessionKey("alice", 1));
  const std::string alice_session_device_2 = Stored(Table::kSession, SessionKey("alice", 2));
  CloseStore();
  {
    RawDb raw(db_path());
    // A contact record copied to another contact, a session copied to another device of the same name,
    // a pre-key copied to another id and into the signed pre-key table under the same id.
    raw.Put("contacts", mallory, raw.Get("contacts", alice));
    raw.Put("sessions", alice_session_device_2, raw.Get("sessions", alice_session_device_1));
    raw.Put("pre_keys", BigEndian32(3), raw.Get("pre_keys", BigEndian32(1)));
    raw.Put("signed_pre_keys", BigEndian32(2), raw.Get("pre_keys", BigEndian32(2)));
    raw.Put("metadata", "copied", raw.Get("pre_keys", BigEndian32(1)));
  }
  OpenStore();
  EXPECT_EQ(store_->TamperedTables(),
            (std::vector<Table>{Table::kContact, Table::kPreKey, Table::kSignedPreKey, Table::kSession}));
  EXPECT_EQ(Value(Table::kSenderKey, SenderKeyKey("g", "alice", 1)), "sender key");
  CW_ST_ASSERT_OK(store_->AcceptCurrentState());
  CW_ST_EXPECT_CODE(store_->Get(Table::kContact, "mallory"), StatusCode::kTampered);
  CW_ST_EXPECT_CODE(store_->Get(Table::kSession, SessionKey("alice", 2)), StatusCode::kTampered);
  CW_ST_EXPECT_CODE(store_->Get(Table::kPreKey, BigEndian32(3)), StatusCode::kTampered);
  CW_ST_EXPECT_CODE(store_->Get(Table::kSignedPreKey, BigEndian32(2)), StatusCode::kTampered);
  EXPECT_EQ(Value(Table::kPreKey, BigEndian32(1)), "pre-key 1");
  EXPECT_EQ(Value(Table::kSignedPreKey, BigEndian32(1)), "signed pre-key 1");
  ExpectOthersIntact({});
}

TEST_F(SealedStoreTamperTest, ARecordFromAnotherStoreFails) {
  // Same table, same name, another master key: a record restored from someone else's backup.
  const std::string alice = Stored(Table::kContact, "alice");
  CloseStore();
  testing::TempDir other_dir;
  auto other_ks = Keystore::Create(other_dir.Sub("keystore"), AsBytes(testing::kPassphrase),
                                   KeystoreOptions::MinimumCostForTesting());
  CW_ST_ASSERT_OK(other_ks);
  std::string foreign_key, foreign_value;
  {
    auto other = SealedStore::Open(other_dir.Sub("db"), other_ks->get());
    CW_ST_ASSERT_OK(other);
    session::WriteBatch b;
    b.writes.push_back(Put(Table::kContact, "alice", "forged"));
    CW_ST_ASSERT_OK((*other)->Commit(std::move(b)));
    foreign_key = (*other)->StoredKeyForTesting(Table::kContact, "alice").value();
  }
  {
    RawDb raw(other_dir.Sub("db"));
    foreign_value = raw.Get("contacts", foreign_key);
  }
  EXPECT_NE(foreign_key, alice) << "hashes are keyed per store";
  {
    RawDb raw(db_path());
    raw.Put("contacts", alice, foreign_value);
  }
  OpenStore();
  EXPECT_EQ(store_->TamperedTables(), std::vector<Table>{Table::kContact});
  CW_ST_ASSERT_OK(store_->AcceptCurrentState());
  CW_ST_EXPECT_CODE(store_->Get(Table::kContact, "alice"), StatusCode::kTampered);
  ExpectOthersIntact({"alice"});
}

TEST_F(SealedStoreTamperTest, ARecordRolledBackToItsOlderVersionRefusesTheTable) {
  // The attack sealing alone cannot see: an older, authentic version of the same record put back. Here a
  // contact marked verified is rolled back to its earlier state, and a consumed pre-key is brought back.
  const std::string a = Stored(Table::kContact, "alice");
  std::string older_contact, consumed_pre_key;
  {
    CloseStore();
    RawDb raw(db_path());
    older_contact = raw.Get("contacts", a);
    consumed_pre_key = raw.Get("pre_keys", BigEndian32(2));
  }
  OpenStore();
  session::WriteBatch batch;
  batch.writes.push_back(Put(Table::kContact, "alice", "contact alice, verified"));
  batch.writes.push_back(session::Write{Table::kPreKey, BigEndian32(2), std::nullopt});
  CW_ST_ASSERT_OK(store_->Commit(std::move(batch)));
  EXPECT_EQ(Value(Table::kContact, "alice"), "contact alice, verified");
  CloseStore();
  {
    RawDb raw(db_path());
    raw.Put("contacts", a, older_contact);
  }
  OpenStore();
  EXPECT_EQ(store_->TamperedTables(), std::vector<Table>{Table::kContact});
  CW_ST_EXPECT_CODE(store_->Get(Table::kContact, "alice"), StatusCode::kTampered);
  EXPECT_EQ(Value(Table::kSession, SessionKey("alice", 1)), "session alice");
  CloseStore();
  {
    RawDb raw(db_path());
    raw.Put("pre_keys", BigEndian32(2), consumed_pre_key);
  }
  OpenStore();
  EXPECT_EQ(store_->TamperedTables(), (std::vector<Table>{Table::kContact, Table::kPreKey}));
  CW_ST_EXPECT_CODE(store_->Get(Table::kPreKey, BigEndian32(2)), StatusCode::kTampered);
}

TEST_F(SealedStoreTamperTest, ADeletedRecordRefusesItsTable) {
  // A deleted contact record would make trust on first use accept a new identity key for that name; a
  // deleted dedup key would let a replay through. Deleting is therefore caught like a rollback.
  const std::string a = Stored(Table::kSession, SessionKey("alice", 1));
  CloseStore();
  {
    RawDb raw(db_path());
    raw.Delete("sessions", a);
    raw.Delete("pre_keys", BigEndian32(2));
  }
  OpenStore();
  EXPECT_EQ(store_->TamperedTables(), (std::vector<Table>{Table::kPreKey, Table::kSession}));
  CW_ST_EXPECT_CODE(store_->Get(Table::kSession, SessionKey("alice", 1)), StatusCode::kTampered);
  EXPECT_EQ(Value(Table::kContact, "alice"), "contact alice");
  CW_ST_ASSERT_OK(store_->AcceptCurrentState());
  EXPECT_EQ(Value(Table::kSession, SessionKey("alice", 1)), "<absent>");
  EXPECT_EQ(List(Table::kSession, std::string("alice") + '\0'), std::vector<std::string>{});
  EXPECT_EQ(List(Table::kPreKey, ""), std::vector<std::string>{BigEndian32(1)});
  ExpectOthersIntact({"alice"});
}

TEST_F(SealedStoreTamperTest, TheDigestItselfCannotBeRolledBackOrRemoved) {
  std::string older_digest;
  {
    CloseStore();
    RawDb raw(db_path());
    older_digest = raw.Get("metadata", "digest");
  }
  OpenStore();
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "frank", "contact frank")));
  CloseStore();
  {
    RawDb raw(db_path());
    raw.Put("metadata", "digest", older_digest);
  }
  OpenStore();
  // The older sums no longer describe the contacts: that table is refused, the others still match.
  EXPECT_EQ(store_->TamperedTables(), std::vector<Table>{Table::kContact});
  CloseStore();
  {
    RawDb raw(db_path());
    raw.Delete("metadata", "digest");
  }
  CW_ST_EXPECT_CODE(SealedStore::Open(db_path(), keystore_.get(), Options()), StatusCode::kTampered);
}

TEST_F(SealedStoreTamperTest, CommitSequencesSurviveReopening) {
  // What an embedder anchors in a hardware monotonic counter to catch a rollback of the whole store.
  const uint64_t before = store_->LastCommitSequence();
  EXPECT_GE(before, 1u);
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "frank", "contact frank")));
  EXPECT_EQ(store_->LastCommitSequence(), before + 1);
  CW_ST_ASSERT_OK(store_->Commit(session::WriteBatch{}));  // an empty batch is no commit
  EXPECT_EQ(store_->LastCommitSequence(), before + 1);
  Reopen();
  EXPECT_EQ(store_->LastCommitSequence(), before + 1);
}

TEST_F(SealedStoreTamperTest, AChangedKeyCheckRefusesTheStore) {
  CloseStore();
  {
    RawDb raw(db_path());
    std::string v = raw.Get("metadata", "key_check");
    v[v.size() - 1] = static_cast<char>(v[v.size() - 1] ^ 1);
    raw.Put("metadata", "key_check", v);
  }
  CW_ST_EXPECT_CODE(SealedStore::Open(db_path(), keystore_.get(), Options()), StatusCode::kTampered);
}

}  // namespace
}  // namespace cw::storage
