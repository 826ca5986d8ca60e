// Write-behind under group commit (sealed_store.h, "Write-behind"): unsynced commits sit in an in-memory
// overlay that reads see at once, and reach RocksDB as one batch per sync (or when the overlay passes its
// size limit, or on Lock or a clean close). The store runs on PowerCutFileSystem, which keeps only what was
// synced when the power goes, so the tests see what a crash between syncs leaves.
#include <gtest/gtest.h>
#include <rocksdb/env.h>

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/random.h"
#include "core/session/records.h"
#include "core/session/store.h"
#include "storage/keystore.h"
#include "storage/sealed_store_internal.h"
#include "tests/storage/power_cut_fs.h"
#include "tests/storage/sealed_store_fixture.h"
#include "tests/storage/storage_test_util.h"

namespace cw::storage {
namespace {

using session::Table;
using session::internal::BigEndian32;
using session::internal::SessionKey;
using testing::Delete;
using testing::kPassphrase;
using testing::Put;

constexpr std::string_view kConversation = "conv-ward-7";

std::string RowKey(uint64_t sequence) {
  std::string k(kConversation);
  k.push_back('\0');
  for (int i = 7; i >= 0; --i) k.push_back(static_cast<char>(sequence >> (8 * i)));
  return k;
}

class WriteBehindTest : public testing::KeystoreFixture {
 protected:
  void TearDown() override { store_.reset(); }  // before the file system it runs on

  void Open(size_t limit = size_t{4} << 20) {
    if (fs_ == nullptr) {
      fs_ = std::make_shared<testing::PowerCutFileSystem>(rocksdb::FileSystem::Default());
      env_ = rocksdb::NewCompositeEnv(fs_);
    }
    SealedStoreOptions o;
    o.sync = false;
    o.overlay_limit_bytes = limit;
    auto s = internal::OpenSealedStoreWithEnv(dir_.Sub(db_name_), keystore_.get(), o, env_.get());
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    store_ = std::move(*s);
  }
  // The power goes off, the store is dropped (its writes fail), the files keep what was synced.
  void CutAndReopen(size_t limit = size_t{4} << 20) {
    fs_->PowerCut();
    store_.reset();
    fs_->Restore();
    env_.reset();
    fs_.reset();
    Open(limit);
  }

  template <typename... W>
  Status Commit(W... writes) {
    session::WriteBatch b;
    (b.writes.push_back(std::move(writes)), ...);
    return store_->Commit(std::move(b));
  }
  Status CommitAll(std::vector<session::Write> writes) {
    session::WriteBatch b;
    b.writes = std::move(writes);
    return store_->Commit(std::move(b));
  }
  size_t Unwritten() { return internal::OverlayBytesForTesting(*store_); }
  std::string ConvPrefix() { return std::string(kConversation) + std::string(1, '\0'); }

  std::string db_name_ = "db";
  std::shared_ptr<testing::PowerCutFileSystem> fs_;
  std::unique_ptr<rocksdb::Env> env_;
};

// Values, deletions and listings of unsynced commits are seen at once, merged with what RocksDB holds, in
// every kind of table (hashed keys opened to list, a plain sequence tail, plain keys).
TEST_F(WriteBehindTest, ReadsSeeUnsyncedCommitsMergedWithWhatIsOnDisk) {
  ASSERT_NO_FATAL_FAILURE(Open());
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "bob 1"), Put(Table::kContact, "carol", "carol 1"),
                          Put(Table::kContact, "erin", "erin 1"), Put(Table::kPreKey, BigEndian32(1), "pk 1"),
                          Put(Table::kPreKey, BigEndian32(2), "pk 2"), Put(Table::kTranscript, RowKey(1), "row 1"),
                          Put(Table::kTranscript, RowKey(2), "row 2"), Put(Table::kTranscript, RowKey(3), "row 3"),
                          Put(Table::kSession, SessionKey("bob", 1), "session 1")));
  CW_ST_ASSERT_OK(store_->SyncNow());
  EXPECT_EQ(Unwritten(), 0u);

  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "bob 2"), Delete(Table::kContact, "carol"),
                          Put(Table::kContact, "dave", "dave 1"), Delete(Table::kPreKey, BigEndian32(1)),
                          Put(Table::kPreKey, BigEndian32(3), "pk 3"), Delete(Table::kTranscript, RowKey(2)),
                          Put(Table::kTranscript, RowKey(4), "row 4")));
  // A key rewritten by several unsynced commits reads as the newest; one deleted and written again exists.
  for (int i = 2; i <= 5; ++i) {
    CW_ST_ASSERT_OK(Commit(Put(Table::kSession, SessionKey("bob", 1), "session " + std::to_string(i))));
  }
  CW_ST_ASSERT_OK(Commit(Delete(Table::kContact, "erin")));
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "erin", "erin 2")));
  ASSERT_GT(Unwritten(), 0u) << "the commits above must still be in the overlay for this test to mean anything";

  auto check = [&] {
    EXPECT_EQ(Value(Table::kContact, "bob"), "bob 2");
    EXPECT_EQ(Value(Table::kContact, "carol"), "<absent>");
    EXPECT_EQ(Value(Table::kContact, "dave"), "dave 1");
    EXPECT_EQ(Value(Table::kContact, "erin"), "erin 2");
    EXPECT_EQ(Value(Table::kPreKey, BigEndian32(1)), "<absent>");
    EXPECT_EQ(Value(Table::kPreKey, BigEndian32(2)), "pk 2");
    EXPECT_EQ(Value(Table::kTranscript, RowKey(2)), "<absent>");
    EXPECT_EQ(Value(Table::kTranscript, RowKey(3)), "row 3");
    EXPECT_EQ(Value(Table::kTranscript, RowKey(4)), "row 4");
    EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "session 5");
    EXPECT_EQ(List(Table::kContact, ""), (std::vector<std::string>{"bob", "dave", "erin"}));
    EXPECT_EQ(List(Table::kPreKey, ""), (std::vector<std::string>{BigEndian32(2), BigEndian32(3)}));
    EXPECT_EQ(List(Table::kTranscript, ConvPrefix()), (std::vector<std::string>{RowKey(1), RowKey(3), RowKey(4)}));
    EXPECT_EQ(List(Table::kSession, "bob"), (std::vector<std::string>{SessionKey("bob", 1)}));
  };
  check();  // first reads of these keys: from the overlay
  EXPECT_GT(Unwritten(), 0u);
  CW_ST_ASSERT_OK(store_->SyncNow());
  EXPECT_EQ(Unwritten(), 0u);
  check();
  // Synced: the power may go now.
  ASSERT_NO_FATAL_FAILURE(CutAndReopen());
  EXPECT_TRUE(store_->TamperedTables().empty());
  check();
}

// The digest's sums are computed when the overlay is written out, from the records each write-out replaces
// on disk. A random mix of puts and deletions of a few keys (put and deleted again within one write-out,
// deleted and brought back, rewritten across write-outs), thousands of new keys (more than the store keeps
// identities of), syncs at random points, Lock and Unlock: after a clean close and reopen no table is
// reported tampered and every value is the model's.
TEST_F(WriteBehindTest, TheDigestMatchesTheRecordsAfterAnyMixOfWritesSyncsAndLocks) {
  for (size_t limit : {size_t{0}, size_t{3000}, size_t{4} << 20}) {
    SCOPED_TRACE("overlay limit " + std::to_string(limit));
    store_.reset();
    db_name_ = "mix-" + std::to_string(limit);
    ASSERT_NO_FATAL_FAILURE(Open(limit));
    SeededRandom random(static_cast<uint64_t>(limit) + 7);
    std::map<std::string, std::string> contacts;  // the model: key -> value, absent when deleted
    for (int i = 0; i < 6000; ++i) {
      std::vector<session::Write> w;
      for (uint32_t k = random.Uniform(3); k > 0; --k) {
        const std::string key = "contact-" + std::to_string(random.Uniform(16));
        if (random.Uniform(3) == 0) {
          w.push_back(Delete(Table::kContact, key));
          contacts.erase(key);
        } else {
          const std::string value = key + " v" + std::to_string(i);
          w.push_back(Put(Table::kContact, key, value));
          contacts[key] = value;
        }
      }
      w.push_back(Put(Table::kInboundDedup, "relay-" + std::to_string(i), "1"));
      CW_ST_ASSERT_OK(CommitAll(std::move(w)));
      if (random.Uniform(50) == 0) CW_ST_ASSERT_OK(store_->SyncNow());
      if (random.Uniform(1000) == 0) {
        keystore_->Lock();
        CW_ST_ASSERT_OK(keystore_->Unlock(AsBytes(kPassphrase)));
      }
    }
    store_.reset();  // clean close: the overlay is written and synced
    ASSERT_NO_FATAL_FAILURE(Open(limit));
    EXPECT_TRUE(store_->TamperedTables().empty());
    std::vector<std::string> listed;
    for (const auto& [key, value] : contacts) listed.push_back(key);
    EXPECT_EQ(List(Table::kContact, ""), listed);
    for (const auto& [key, value] : contacts) EXPECT_EQ(Value(Table::kContact, key), value);
    EXPECT_EQ(Value(Table::kInboundDedup, "relay-5999"), "1");
  }
}

// A power cut between syncs, with the overlay written out at every commit, sometimes, or only at syncs:
// the store opens without a tamper report and holds exactly the commits up to some point at or after the
// last sync, none after it.
TEST_F(WriteBehindTest, APowerCutBetweenSyncsLeavesAPrefixOfTheCommitsAndAMatchingDigest) {
  for (size_t limit : {size_t{0}, size_t{2048}, size_t{4} << 20}) {
    SCOPED_TRACE("overlay limit " + std::to_string(limit));
    store_.reset();
    env_.reset();
    fs_.reset();
    db_name_ = "db-" + std::to_string(limit);
    ASSERT_NO_FATAL_FAILURE(Open(limit));
    // Commit i: the session record (rewritten by each) says i, row i is added, relay id i is remembered,
    // and every third commit deletes row i - 2.
    std::map<uint64_t, std::vector<std::string>> rows_after;  // commit -> the conversation's rows after it
    std::set<std::string> rows;
    const uint64_t base = store_->LastCommitSequence();
    constexpr uint64_t kCommits = 40;
    constexpr uint64_t kSyncedThrough = 25;
    for (uint64_t i = 1; i <= kCommits; ++i) {
      std::vector<session::Write> w;
      w.push_back(Put(Table::kSession, SessionKey("bob", 1), "session " + std::to_string(i)));
      w.push_back(Put(Table::kTranscript, RowKey(i), "row " + std::to_string(i)));
      w.push_back(Put(Table::kInboundDedup, "relay-" + std::to_string(i), "1"));
      rows.insert(RowKey(i));
      if (i % 3 == 0) {
        w.push_back(Delete(Table::kTranscript, RowKey(i - 2)));
        rows.erase(RowKey(i - 2));
      }
      CW_ST_ASSERT_OK(CommitAll(std::move(w)));
      rows_after[i] = std::vector<std::string>(rows.begin(), rows.end());
      if (i == 10 || i == kSyncedThrough) CW_ST_ASSERT_OK(store_->SyncNow());
    }
    EXPECT_EQ(store_->SyncedThrough(), base + kSyncedThrough);
    ASSERT_NO_FATAL_FAILURE(CutAndReopen(limit));

    EXPECT_TRUE(store_->TamperedTables().empty());
    const std::string session = Value(Table::kSession, SessionKey("bob", 1));
    ASSERT_EQ(session.rfind("session ", 0), 0u) << session;
    const uint64_t kept = std::stoull(session.substr(8));
    EXPECT_GE(kept, kSyncedThrough) << "a synced commit was lost";
    if (limit == (size_t{4} << 20)) {
      EXPECT_LT(kept, kCommits) << "the cut must bite for this test to mean anything";
    }
    EXPECT_EQ(store_->LastCommitSequence(), base + kept);
    EXPECT_EQ(List(Table::kTranscript, ConvPrefix()), rows_after[kept]);
    for (uint64_t i = 1; i <= kCommits; ++i) {
      EXPECT_EQ(Value(Table::kInboundDedup, "relay-" + std::to_string(i)), i <= kept ? "1" : "<absent>") << i;
    }
    // The store goes on: a commit after the cut is synced and survives the next one.
    CW_ST_ASSERT_OK(Commit(Put(Table::kSession, SessionKey("bob", 1), "after the cut")));
    CW_ST_ASSERT_OK(store_->SyncNow());
    ASSERT_NO_FATAL_FAILURE(CutAndReopen(limit));
    EXPECT_TRUE(store_->TamperedTables().empty());
    EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "after the cut");
  }
}

// Past its size limit the overlay goes to RocksDB without anyone asking for a sync (nothing is synced by
// it); under the limit it keeps coalescing.
TEST_F(WriteBehindTest, TheOverlayIsWrittenOutWhenItPassesItsLimit) {
  constexpr size_t kLimit = 8192;
  const std::string row(1000, 'r');
  ASSERT_NO_FATAL_FAILURE(Open(kLimit));
  const uint64_t synced = store_->SyncedThrough();
  size_t largest = 0;
  bool emptied = false;
  for (uint64_t i = 1; i <= 60; ++i) {
    CW_ST_ASSERT_OK(Commit(Put(Table::kTranscript, RowKey(i), row),
                            Put(Table::kSession, SessionKey("bob", 1), std::to_string(i))));
    largest = std::max(largest, Unwritten());
    if (Unwritten() == 0) emptied = true;
  }
  EXPECT_TRUE(emptied);
  EXPECT_LE(largest, kLimit) << "a write-out follows the commit that passes the limit";
  EXPECT_EQ(store_->SyncedThrough(), synced) << "a write-out for size is not a sync";
  EXPECT_EQ(List(Table::kTranscript, ConvPrefix()).size(), 60u);
  EXPECT_EQ(Value(Table::kTranscript, RowKey(1)), row);
  EXPECT_EQ(Value(Table::kSession, SessionKey("bob", 1)), "60");

  // Limit 0: every commit is written at once.
  ASSERT_NO_FATAL_FAILURE(CutAndReopen(0));
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "x")));
  EXPECT_EQ(Unwritten(), 0u);
  EXPECT_EQ(Value(Table::kContact, "bob"), "x");

  // A large limit: the same commits stay in the overlay.
  ASSERT_NO_FATAL_FAILURE(CutAndReopen(size_t{1} << 20));
  for (uint64_t i = 100; i < 120; ++i) CW_ST_ASSERT_OK(Commit(Put(Table::kTranscript, RowKey(i), row)));
  EXPECT_GT(Unwritten(), 20 * row.size());
}

// Keystore::Lock() writes and syncs the overlay before it returns: the commits survive a power cut right
// after it, and the overlay is empty while locked.
TEST_F(WriteBehindTest, LockWritesAndSyncsTheOverlay) {
  ASSERT_NO_FATAL_FAILURE(Open());
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "bob 1"), Put(Table::kTranscript, RowKey(1), "row 1")));
  CW_ST_ASSERT_OK(Commit(Delete(Table::kTranscript, RowKey(1)), Put(Table::kContact, "bob", "bob 2")));
  const uint64_t sequence = store_->LastCommitSequence();
  ASSERT_GT(Unwritten(), 0u);
  keystore_->Lock();
  EXPECT_EQ(Unwritten(), 0u);
  EXPECT_GE(store_->SyncedThrough(), sequence);
  CW_ST_EXPECT_CODE(store_->Get(Table::kContact, "bob"), StatusCode::kPermissionDenied);
  CW_ST_EXPECT_CODE(Commit(Put(Table::kContact, "carol", "x")), StatusCode::kPermissionDenied);
  EXPECT_EQ(Unwritten(), 0u);
  CW_ST_ASSERT_OK(keystore_->Unlock(AsBytes(kPassphrase)));
  ASSERT_NO_FATAL_FAILURE(CutAndReopen());
  EXPECT_TRUE(store_->TamperedTables().empty());
  EXPECT_EQ(Value(Table::kContact, "bob"), "bob 2");
  EXPECT_EQ(Value(Table::kTranscript, RowKey(1)), "<absent>");
  EXPECT_EQ(Value(Table::kContact, "carol"), "<absent>");
  EXPECT_EQ(store_->LastCommitSequence(), sequence);
}

// A sync that cannot reach the disk says so and reports nothing durable, whether asked for (SyncNow) or
// made by Lock.
TEST_F(WriteBehindTest, AFailedSyncReportsNothingDurable) {
  ASSERT_NO_FATAL_FAILURE(Open());
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "bob 1")));
  CW_ST_ASSERT_OK(store_->SyncNow());
  const uint64_t synced = store_->SyncedThrough();
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "bob 2")));
  const uint64_t sequence = store_->LastCommitSequence();
  fs_->PowerCut();
  EXPECT_FALSE(store_->SyncNow().ok());
  EXPECT_EQ(store_->SyncedThrough(), synced);
  Status reported = Status::Ok();
  bool called = false;
  keystore_->Lock();
  CW_ST_ASSERT_OK(store_->WhenSynced(sequence, [&](const Status& s) {
    reported = s;
    called = true;
  }));
  EXPECT_EQ(store_->SyncedThrough(), synced);
  store_.reset();  // joins the sync thread, whose sync failed: the waiting callback has heard of it
  EXPECT_TRUE(called);
  EXPECT_FALSE(reported.ok());
  fs_->Restore();
  env_.reset();
  fs_.reset();
  CW_ST_ASSERT_OK(keystore_->Unlock(AsBytes(kPassphrase)));
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_TRUE(store_->TamperedTables().empty());
  EXPECT_EQ(Value(Table::kContact, "bob"), "bob 1");
}

// A clean close writes and syncs the overlay: the power may go right after.
TEST_F(WriteBehindTest, ACleanCloseWritesAndSyncsTheOverlay) {
  ASSERT_NO_FATAL_FAILURE(Open());
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "bob 1")));
  CW_ST_ASSERT_OK(store_->SyncNow());
  CW_ST_ASSERT_OK(Commit(Put(Table::kContact, "bob", "bob 2"), Put(Table::kTranscript, RowKey(1), "row 1")));
  ASSERT_GT(Unwritten(), 0u);
  store_.reset();  // clean close
  fs_->PowerCut();
  fs_->Restore();
  env_.reset();
  fs_.reset();
  ASSERT_NO_FATAL_FAILURE(Open());
  EXPECT_TRUE(store_->TamperedTables().empty());
  EXPECT_EQ(Value(Table::kContact, "bob"), "bob 2");
  EXPECT_EQ(Value(Table::kTranscript, RowKey(1)), "row 1");
}

}  // namespace
}  // namespace cw::storage
