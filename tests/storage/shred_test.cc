// Crypto-shredding: a deleted conversation cannot be read back from the database's files, even by someone
// who copies the device afterwards and also knows the passphrase (so can open every record the store
// sealed under the master key).
#include <gtest/gtest.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_reader.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "storage/transcript_records.h"
#include "tests/storage/transcript_test_fixture.h"

namespace cw::storage {
namespace {

using session::Table;
using testing::N;

// Every (key, value) in every SST file of column family `cf` in `dir`, older versions included: a value
// overwritten or deleted later stays in the file that holds it until compaction rewrites that file.
std::vector<std::pair<std::string, std::string>> SstEntries(const std::string& dir, std::string_view cf) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".sst") continue;
    rocksdb::SstFileReader reader{rocksdb::Options()};
    rocksdb::Status s = reader.Open(e.path().string());
    if (!s.ok()) {
      ADD_FAILURE() << s.ToString();
      continue;
    }
    if (reader.GetTableProperties()->column_family_name != cf) continue;
    std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(rocksdb::ReadOptions()));
    for (it->SeekToFirst(); it->Valid(); it->Next())
      out.emplace_back(it->key().ToString(), it->value().ToString());
  }
  return out;
}

class ShredTest : public testing::TranscriptFixture {};

TEST_F(ShredTest, ADeletedConversationCannotBeReadFromFilesCompactionHasNotRewritten) {
  const std::string bob = Transcripts::DirectConversationId("patient.bob");
  const std::string carol = Transcripts::DirectConversationId("patient.carol");
  for (int i = 0; i < 20; ++i) Receive("patient.bob", N("SHRED-BODY-", i), N("relay-b", i));
  for (int i = 0; i < 3; ++i) Receive("patient.carol", N("KEEP-BODY-", i), N("relay-c", i));
  ASSERT_EQ(t_->All(bob)->size(), 20u);
  CW_ST_ASSERT_OK(store_->FlushForTesting());  // the rows and the keys are now in SST files

  // What the files hold of bob's conversation key record (sealed under the master key) before the delete.
  auto conv_key = store_->StoredKeyForTesting(Table::kConversation, bob);
  ASSERT_TRUE(conv_key.has_value());
  std::vector<std::string> sealed_key_records;
  for (auto& [k, v] : SstEntries(db_path(), "conversations")) {
    if (k == *conv_key) sealed_key_records.push_back(v);
  }
  ASSERT_EQ(sealed_key_records.size(), 1u);

  CW_ST_ASSERT_OK(t_->DeleteConversation(bob));

  // 1. No file in the directory (SSTs, write-ahead logs, manifest) holds the plaintext, nor the sealed key
  //    record: PurgeDeleted flushed every column family (retiring the log that held it) and compacted the
  //    conversations table, dropping the deleted value.
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(testing::AnyFileContains(db_path(), N("SHRED-BODY-", i))) << i;
  for (const auto& sealed : sealed_key_records) {
    EXPECT_FALSE(testing::AnyFileContains(db_path(), sealed))
        << "the deleted conversation key is still on disk";
  }

  // 2. Bob's rows are still in transcript SST files: deleting wrote tombstones, and the files holding the
  //    rows are rewritten only when compaction reaches them (this test makes sure it has not). Someone with
  //    the passphrase can open the store-level seal of each row, since the master key still exists. What
  //    they get is the row's outer record: status, expiry and a blob sealed with XChaCha20-Poly1305 under
  //    bob's conversation key. That key was random, lived only in the conversations record deleted and
  //    purged above, and was never derived from anything that survives, so the blob is ciphertext under a
  //    key that no longer exists anywhere: the rows are unreadable without compacting anything.
  auto row_key = store_->StoredKeyForTesting(Table::kTranscript, internal::RowKey(bob, 1));
  ASSERT_TRUE(row_key.has_value());
  const std::string bob_prefix = row_key->substr(0, 16);  // the hash of bob's conversation id
  std::vector<internal::ConversationRecord> surviving_keys;
  for (auto& [k, v] : SstEntries(db_path(), "conversations")) {
    auto opened = store_->OpenRawRecordForTesting(Table::kConversation, k, v);
    ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
    EXPECT_NE(opened->plain_key, bob);
    auto c = internal::DecodeConversation(opened->value.reveal());
    ASSERT_TRUE(c.has_value());
    surviving_keys.push_back(std::move(*c));
  }
  EXPECT_FALSE(surviving_keys.empty());  // carol's key is there and opens: the attacker's view is real

  int stale_rows = 0;
  for (auto& [k, v] : SstEntries(db_path(), "transcript")) {
    if (!k.starts_with(bob_prefix)) continue;
    ++stale_rows;
    auto opened = store_->OpenRawRecordForTesting(Table::kTranscript, k, v);
    ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
    std::string conv;
    uint64_t seq = 0;
    ASSERT_TRUE(internal::ParseRowKey(opened->plain_key, &conv, &seq));
    EXPECT_EQ(conv, bob);
    auto row = internal::DecodeRow(opened->value.reveal());
    ASSERT_TRUE(row.has_value());
    for (const auto& c : surviving_keys) {
      auto body = internal::OpenBlob(c.key.reveal(), conv, seq, row->blob);
      EXPECT_FALSE(body.has_value()) << "a deleted row opened under a surviving key";
    }
  }
  EXPECT_EQ(stale_rows, 20) << "the test must look at rows that compaction has not removed";

  // 3. Through the API bob's conversation is gone and carol's is untouched.
  auto info = t_->GetConversation(bob);
  ASSERT_TRUE(info.has_value());
  EXPECT_FALSE(info->has_value());
  EXPECT_TRUE(t_->All(bob)->empty());
  EXPECT_EQ(t_->All(carol)->size(), 3u);
  ReopenAll();
  EXPECT_TRUE(t_->All(bob)->empty());
  EXPECT_EQ(t_->All(carol)->size(), 3u);
}

// A purge that did not finish (it failed here; an app killed during it leaves the store the same) leaves the
// deleted key in the files only until the next open: FinishPendingPurge, which the client runs then, takes
// it out.
TEST_F(ShredTest, AKeyWhosePurgeDidNotFinishIsGoneFromTheFilesAfterTheNextOpen) {
  const std::string bob = Transcripts::DirectConversationId("patient.bob");
  for (int i = 0; i < 5; ++i) Receive("patient.bob", N("SHRED-BODY-", i), N("relay-b", i));
  Receive("patient.carol", "KEEP", "relay-c");
  CW_ST_ASSERT_OK(store_->FlushForTesting());
  auto conv_key = store_->StoredKeyForTesting(Table::kConversation, bob);
  ASSERT_TRUE(conv_key.has_value());
  std::string sealed_key_record;
  for (auto& [k, v] : SstEntries(db_path(), "conversations")) {
    if (k == *conv_key) sealed_key_record = v;
  }
  ASSERT_FALSE(sealed_key_record.empty());

  fail_purges_ = Status(StatusCode::kUnavailable, "compact: IO error");
  Status purged;
  CW_ST_ASSERT_OK(t_->DeleteConversation(bob, {}, &purged));
  ASSERT_FALSE(purged.ok());
  EXPECT_TRUE(testing::AnyFileContains(db_path(), sealed_key_record)) << "the test needs a purge left undone";

  fail_purges_ = Status::Ok();
  ReopenAll();
  CW_ST_ASSERT_OK(t_->FinishPendingPurge());
  EXPECT_FALSE(testing::AnyFileContains(db_path(), sealed_key_record))
      << "the deleted conversation key is still on disk";
  EXPECT_EQ(t_->All(Transcripts::DirectConversationId("patient.carol"))->size(), 1u);
}

}  // namespace
}  // namespace cw::storage
