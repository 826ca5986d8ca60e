// What only the RocksDB store has: durability across reopen, group commit, attachment bodies in files, and
// refusal of a damaged file; and, on a StoreCore whose syncs the test completes, what watchers hear when a
// sync fails.
#include "relay/rocksdb_mailbox_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "relay/attachment_files.h"
#include "relay/store_core.h"
#include "tests/relay/index_only_store.h"
#include "tests/relay/relay_test_util.h"

namespace cw::relay {
namespace {

using testing::Filled;
using testing::Key;
using testing::Mid;

constexpr int64_t kFar = 1'000'000'000'000'000;
constexpr int64_t kClaimBy = 1'700'000'000'000;

// Answers that async store calls deliver on the committer's thread, collected for the test's thread.
template <typename T>
class Answers {
 public:
  std::function<void(Result<T>)> Callback() {
    return [this](Result<T> r) {
      std::lock_guard<std::mutex> lock(mu_);
      got_.push_back(std::move(r));
      cv_.notify_all();
    };
  }
  // What has come so far, taken out.
  std::vector<Result<T>> Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::exchange(got_, {});
  }
  // Waits until at least n have come (bounded: a safety net against a hang, not a timing assertion), then
  // takes them.
  std::vector<Result<T>> TakeAtLeast(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return got_.size() >= n; });
    return std::exchange(got_, {});
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Result<T>> got_;
};

std::unique_ptr<RocksDbMailboxStore> OpenOrDie(const std::string& path) {
  auto s = RocksDbMailboxStore::Open(path);
  EXPECT_TRUE(s.has_value()) << s.error().ToString();
  return s ? std::move(*s) : nullptr;
}

// A store with one mailbox (owned by Key(1)), as the tests of when deposits and acknowledgements are
// answered start.
class RocksDbAnswers : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = OpenOrDie(dir_.Sub("db"));
    ASSERT_TRUE(store_);
    CW_RL_ASSERT_OK(store_->CreateMailbox(box_, Key(1)));
  }
  // Closes the store (its committer writes what was recorded) and opens it again.
  void Reopen() {
    store_.reset();
    store_ = OpenOrDie(dir_.Sub("db"));
  }

  testing::TempDir dir_;
  std::unique_ptr<RocksDbMailboxStore> store_;
  const MailboxId box_ = Filled<kMailboxIdSize>(1);
};

TEST(RocksDbMailboxStore, EverythingSurvivesReopen) {
  testing::TempDir dir;
  const MailboxId box = Filled<kMailboxIdSize>(1);
  const AttachmentId att = Filled<kAttachmentIdSize>(2);
  uint64_t last_seq = 0;
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(store);
    CW_RL_ASSERT_OK(store->CreateMailbox(box, Key(1)));
    CW_RL_ASSERT_OK(store->AddDepositToken(box, Filled<kTokenHashSize>(3), 10, 0));
    // Two claimable tokens: one claimed before the reopen, one still claimable across it.
    CW_RL_ASSERT_OK(store->AddDepositToken(box, Filled<kTokenHashSize>(4), 10, kClaimBy));
    CW_RL_ASSERT_OK(store->AddDepositToken(box, Filled<kTokenHashSize>(5), 10, kClaimBy));
    ASSERT_EQ(store->AdmitDeposit(box, Filled<kTokenHashSize>(4), kClaimBy - 1).value(),
              MailboxStore::Admission::kClaimed);
    for (uint32_t i = 1; i <= 3; ++i) CW_RL_ASSERT_OK(store->Insert(box, Mid(i), Bytes(50, uint8_t(i)), kFar, {}));
    ASSERT_TRUE(store->Ack(box, Mid(3)).value());
    last_seq = store->FetchAfter(box, 0, 10, 1 << 20, nullptr)->back().seq;
    PreKeySet keys;
    keys.registration_id = 5;
    keys.identity_key = Filled<wire::kPublicKeySize>(5);
    keys.signed_pre_key = {8, Filled<wire::kPublicKeySize>(6), Filled<wire::kSignatureSize>(7)};
    keys.one_time_pre_keys = {{1, Filled<wire::kPublicKeySize>(1)}, {2, Filled<wire::kPublicKeySize>(2)}};
    ASSERT_EQ(store->PutPreKeys(box, keys, 100).value(), 2u);
    auto taken = store->TakeBundle(box);
    ASSERT_EQ(taken.value()->bundle.one_time_pre_key->id, 1u);
    CW_RL_ASSERT_OK(store->CreateAttachment(att, Key(1), 6, kFar));
    CW_RL_ASSERT_OK(store->AppendAttachment(att, Key(1), 0, Bytes{1, 2, 3}));
    CW_RL_ASSERT_OK(store->AppendAttachment(att, Key(1), 3, Bytes{4, 5, 6}));
  }
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store);
  EXPECT_EQ(store->MailboxOwner(box).value().value(), Key(1));
  EXPECT_TRUE(store->HasDepositToken(box, Filled<kTokenHashSize>(3), kFar).value());
  EXPECT_TRUE(store->HasDepositToken(box, Filled<kTokenHashSize>(4), kFar).value()) << "the claim was kept";
  EXPECT_TRUE(store->HasDepositToken(box, Filled<kTokenHashSize>(5), kClaimBy - 1).value());
  EXPECT_FALSE(store->HasDepositToken(box, Filled<kTokenHashSize>(5), kClaimBy).value()) << "so was claim_by";
  auto msgs = store->FetchAfter(box, 0, 10, 1 << 20, nullptr);
  ASSERT_EQ(msgs->size(), 2u);
  EXPECT_EQ((*msgs)[1].envelope, Bytes(50, 2));
  EXPECT_EQ(store->Insert(box, Mid(1), Bytes(50, 9), kFar, {}).value(), InsertOutcome::kDuplicate);
  CW_RL_ASSERT_OK(store->Insert(box, Mid(4), Bytes(50, 4), kFar, {}));
  EXPECT_GT(store->FetchAfter(box, last_seq, 10, 1 << 20, nullptr)->at(0).seq, last_seq + 1)
      << "the acked message's sequence number is not reused after a restart";
  // The one-time pre-key handed out before the restart is not handed out again.
  auto taken = store->TakeBundle(box);
  ASSERT_TRUE(taken.value()->bundle.one_time_pre_key.has_value());
  EXPECT_EQ(taken.value()->bundle.one_time_pre_key->id, 2u);
  EXPECT_FALSE(store->TakeBundle(box).value()->bundle.one_time_pre_key.has_value());
  EXPECT_EQ(store->ReadAttachment(att, 0, 10)->data, (Bytes{1, 2, 3, 4, 5, 6}));
  auto stats = store->Stats().value();
  EXPECT_EQ(stats.mailboxes, 1u);
  EXPECT_EQ(stats.messages, 3u);
  EXPECT_EQ(stats.message_bytes, 150u);
}

// An upload writes only the one-time keys it brings: the ones stored before, and one taken meanwhile, come
// back after a reopen exactly as they were, next to a rotated signed pre-key and a replaced key.
TEST(RocksDbMailboxStore, PreKeyUploadsKeepEarlierOneTimeKeysAcrossReopen) {
  testing::TempDir dir;
  const MailboxId box = Filled<kMailboxIdSize>(1);
  PreKeySet keys;
  keys.registration_id = 5;
  keys.identity_key = Filled<wire::kPublicKeySize>(5);
  keys.signed_pre_key = {8, Filled<wire::kPublicKeySize>(6), Filled<wire::kSignatureSize>(7)};
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(store);
    CW_RL_ASSERT_OK(store->CreateMailbox(box, Key(1)));
    for (uint32_t id = 1; id <= 3; ++id)
      keys.one_time_pre_keys.push_back({id, Filled<wire::kPublicKeySize>(uint8_t(id))});
    ASSERT_EQ(store->PutPreKeys(box, keys, 100).value(), 3u);
    ASSERT_EQ(store->TakeBundle(box).value()->bundle.one_time_pre_key->id, 1u);
    // A rotation with no new one-time keys, then one key replaced and one added.
    keys.signed_pre_key = {9, Filled<wire::kPublicKeySize>(0x66), Filled<wire::kSignatureSize>(0x77)};
    keys.one_time_pre_keys.clear();
    ASSERT_EQ(store->PutPreKeys(box, keys, 100).value(), 2u);
    keys.one_time_pre_keys = {{3, Filled<wire::kPublicKeySize>(0x33)}, {4, Filled<wire::kPublicKeySize>(4)}};
    ASSERT_EQ(store->PutPreKeys(box, keys, 100).value(), 3u);
  }
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store);
  std::vector<wire::OneTimePreKeyPublic> handed;
  for (int i = 0; i < 4; ++i) {
    auto taken = store->TakeBundle(box);
    ASSERT_TRUE(taken.has_value() && taken->has_value());
    EXPECT_EQ((*taken)->bundle.signed_pre_key.id, 9u);
    EXPECT_EQ((*taken)->bundle.signed_pre_key.public_key, Filled<wire::kPublicKeySize>(0x66));
    if ((*taken)->bundle.one_time_pre_key) handed.push_back(*(*taken)->bundle.one_time_pre_key);
  }
  const std::vector<wire::OneTimePreKeyPublic> want = {{2, Filled<wire::kPublicKeySize>(2)},
                                                       {3, Filled<wire::kPublicKeySize>(0x33)},
                                                       {4, Filled<wire::kPublicKeySize>(4)}};
  EXPECT_EQ(handed, want);
}

// Sequence numbers are recorded a range at a time (internal::kSeqReserve), not per message. A mailbox that
// has gone past its first range and is reopened must still number above everything it handed out, and
// every message must come back.
TEST(RocksDbMailboxStore, SequenceNumbersPastAReservedRangeSurviveReopen) {
  testing::TempDir dir;
  const MailboxId box = Filled<kMailboxIdSize>(1);
  const uint32_t n = static_cast<uint32_t>(internal::kSeqReserve) + 3;
  MessageQuota quota;
  quota.max_messages = n + 1;
  uint64_t last_seq = 0;
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(store);
    CW_RL_ASSERT_OK(store->CreateMailbox(box, Key(1)));
    std::mutex mu;
    std::condition_variable cv;
    uint32_t answered = 0, ok = 0;
    for (uint32_t i = 1; i <= n; ++i) {
      store->InsertAsync(box, Mid(i), Bytes(20, uint8_t(i)), kFar, quota, [&](Result<InsertOutcome> r) {
        std::lock_guard<std::mutex> lock(mu);
        ++answered;
        if (r.has_value() && *r == InsertOutcome::kInserted) ++ok;
        cv.notify_all();
      });
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return answered == n; });
    ASSERT_EQ(ok, n);
    lock.unlock();
    bool more = true;
    for (uint64_t after = 0; more;) {
      auto page = store->FetchAfter(box, after, 64, 1 << 20, &more);
      ASSERT_TRUE(page.has_value());
      ASSERT_FALSE(page->empty());
      after = last_seq = page->back().seq;
    }
    ASSERT_GE(last_seq, internal::kSeqReserve) << "the deposits went past the first reserved range";
  }
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store);
  EXPECT_EQ(store->Stats()->messages, uint64_t{n});
  CW_RL_ASSERT_OK(store->Insert(box, Mid(n + 1), Bytes(20, 1), kFar, quota));
  uint64_t highest = 0;
  size_t count = 0;
  bool more = true;
  for (uint64_t after = 0; more;) {
    auto page = store->FetchAfter(box, after, 64, 1 << 20, &more);
    ASSERT_TRUE(page.has_value());
    for (const auto& m : *page) {
      EXPECT_GT(m.seq, highest) << "sequence numbers rise";
      highest = m.seq;
      ++count;
    }
    after = page->back().seq;
  }
  EXPECT_EQ(count, size_t{n} + 1);
  EXPECT_GT(highest, last_seq) << "the message deposited after the reopen is numbered above all earlier ones";
}

// An owner acknowledging many messages at once waits for one sync, not one per message (a 64-id Ack would
// otherwise hold a relay worker through 64 commit cycles in a row).
TEST_F(RocksDbAnswers, AckManyWaitsForOneSync) {
  std::vector<MessageId> ids;
  for (uint32_t i = 1; i <= 64; ++i) {
    CW_RL_ASSERT_OK(store_->Insert(box_, Mid(i), Bytes(50, 7), kFar, {}));
    ids.push_back(Mid(i));
  }
  const uint64_t before = store_->SyncCount();
  EXPECT_EQ(store_->AckMany(box_, ids).value(), 64u);
  EXPECT_EQ(store_->SyncCount() - before, 1u);
  EXPECT_EQ(store_->Stats()->messages, 0u);
  // Durable: gone after a reopen too.
  Reopen();
  ASSERT_TRUE(store_);
  EXPECT_EQ(store_->Stats()->messages, 0u);
}

// The asynchronous acknowledgement, counted rather than timed: with the committer held, the removals take
// effect at once (a fetch no longer hands the messages out) but nobody is answered; releasing it answers
// both acknowledgements from one synced write, and the removals survive a reopen. An acknowledgement that
// removes nothing, or names no mailbox, is answered at once, without a write.
TEST_F(RocksDbAnswers, AsyncAcksAreAnsweredOnlyOnceSynced) {
  for (uint32_t i = 1; i <= 4; ++i)
    CW_RL_ASSERT_OK(store_->Insert(box_, Mid(i), Bytes(50, uint8_t(i)), kFar, {}));
  Answers<size_t> answers;
  const uint64_t before = store_->SyncCount();
  store_->PauseCommitsForTesting(true);
  const std::vector<MessageId> first = {Mid(1), Mid(2), Mid(99)};
  store_->AckManyAsync(box_, first, answers.Callback());
  store_->AckManyAsync(box_, std::vector<MessageId>{Mid(3)}, answers.Callback());
  EXPECT_TRUE(answers.Take().empty());
  {
    const auto left = store_->FetchAfter(box_, 0, 100, 1 << 20, nullptr).value();
    ASSERT_EQ(left.size(), 1u);
    EXPECT_EQ(left[0].id, Mid(4));
  }
  store_->AckManyAsync(box_, std::vector<MessageId>{Mid(1)}, answers.Callback());  // already removed
  store_->AckManyAsync(Filled<kMailboxIdSize>(9), std::vector<MessageId>{Mid(4)}, answers.Callback());
  {
    const auto now = answers.Take();
    ASSERT_EQ(now.size(), 2u);
    EXPECT_EQ(now[0].value(), 0u);
    EXPECT_EQ(testing::CodeOf(now[1]), StatusCode::kNotFound);
  }
  store_->PauseCommitsForTesting(false);
  const auto got = answers.TakeAtLeast(2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].value(), 2u);
  EXPECT_EQ(got[1].value(), 1u);
  EXPECT_EQ(store_->SyncCount() - before, 1u);
  Reopen();
  ASSERT_TRUE(store_);
  EXPECT_EQ(store_->Stats()->messages, 1u);
}

// Whether any file under `dir` holds `needle`.
bool AnyFileHolds(const std::string& dir, const Bytes& needle) {
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (content.find(std::string(needle.begin(), needle.end())) != std::string::npos) return true;
  }
  return false;
}

Bytes Marked(const char* marker) {
  Bytes b(300, 0);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(marker[i % std::strlen(marker)]);
  return b;
}

// A message its owner acknowledges before the committer has written its deposit (the push goes out before
// the sync, so an online owner often does) never reaches the disk: not in the WAL, not in a table, not after
// a reopen. Its depositor is answered at once, while the committer is still held (nothing of the message is
// left to write), and before the acknowledgement. A deposit in the same batch that nobody acknowledged is
// answered only once it is written, as usual.
TEST_F(RocksDbAnswers, AMessageAcknowledgedBeforeItsDepositIsWrittenNeverReachesTheDisk) {
  const Bytes gone = Marked("acknowledged-before-written|");
  const Bytes kept = Marked("never-acknowledged|");
  Answers<InsertOutcome> gone_deposit;
  Answers<InsertOutcome> kept_deposit;
  Answers<size_t> acks;
  store_->PauseCommitsForTesting(true);
  store_->InsertAsync(box_, Mid(1), gone, kFar, {}, gone_deposit.Callback());
  store_->InsertAsync(box_, Mid(2), kept, kFar, {}, kept_deposit.Callback());
  EXPECT_TRUE(gone_deposit.Take().empty());
  store_->AckManyAsync(box_, std::vector<MessageId>{Mid(1)}, acks.Callback());
  const auto stored = gone_deposit.Take();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].value(), InsertOutcome::kInserted);
  EXPECT_TRUE(kept_deposit.Take().empty());
  EXPECT_EQ(store_->UnwrittenDepositCount(), 1u);
  store_->PauseCommitsForTesting(false);
  const auto written = kept_deposit.TakeAtLeast(1);
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(written[0].value(), InsertOutcome::kInserted);
  const auto removed = acks.TakeAtLeast(1);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].value(), 1u);
  store_.reset();
  EXPECT_TRUE(AnyFileHolds(dir_.Sub("db"), kept)) << "the check would not see a written envelope";
  EXPECT_FALSE(AnyFileHolds(dir_.Sub("db"), gone));
  store_ = OpenOrDie(dir_.Sub("db"));
  ASSERT_TRUE(store_);
  const auto left = store_->FetchAfter(box_, 0, 10, 1 << 20, nullptr).value();
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].id, Mid(2));
}

// When every change of a batch cancels out, its depositor is answered without waiting for the committer,
// and the committer's cycle for it (which answers the acknowledgement) writes and syncs nothing.
TEST_F(RocksDbAnswers, ABatchThatCancelsOutIsAnsweredWithoutASync) {
  Answers<InsertOutcome> deposits;
  Answers<size_t> acks;
  const uint64_t before = store_->SyncCount();
  store_->PauseCommitsForTesting(true);
  store_->InsertAsync(box_, Mid(1), Bytes(40, 1), kFar, {}, deposits.Callback());
  store_->AckManyAsync(box_, std::vector<MessageId>{Mid(1)}, acks.Callback());
  const auto stored = deposits.Take();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].value(), InsertOutcome::kInserted);
  store_->PauseCommitsForTesting(false);
  const auto removed = acks.TakeAtLeast(1);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].value(), 1u);
  EXPECT_EQ(store_->SyncCount(), before);
  EXPECT_EQ(store_->Stats()->messages, 0u);
}

// A sender that retries a message its owner has already acknowledged deposits it again; the owner
// acknowledges the new copy before it is written. That second acknowledgement cancels the copy, but it is
// answered only once the first one's removal is synced: after "acked", a restart hands out neither copy.
TEST_F(RocksDbAnswers, AnAcknowledgementThatCancelsARetriedCopyWaitsForTheEarlierRemoval) {
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(1), Bytes(50, 1), kFar, {}));
  Answers<InsertOutcome> retry;
  Answers<size_t> acks;
  store_->PauseCommitsForTesting(true);
  store_->AckManyAsync(box_, std::vector<MessageId>{Mid(1)}, acks.Callback());
  store_->InsertAsync(box_, Mid(1), Bytes(50, 1), kFar, {}, retry.Callback());
  store_->AckManyAsync(box_, std::vector<MessageId>{Mid(1)}, acks.Callback());
  const auto stored = retry.Take();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].value(), InsertOutcome::kInserted);
  EXPECT_TRUE(acks.Take().empty());
  store_->PauseCommitsForTesting(false);
  const auto removed = acks.TakeAtLeast(2);
  ASSERT_EQ(removed.size(), 2u);
  for (const auto& r : removed) EXPECT_EQ(r.value(), 1u);
  Reopen();
  ASSERT_TRUE(store_);
  EXPECT_EQ(store_->Stats()->messages, 0u);
}

// The blocking removals answer a cancelled deposit's depositor at once too, while they wait for the
// committer themselves: an acknowledgement on a worker (AckMany), and the expiry purge.
TEST(RocksDbMailboxStore, BlockingRemovalsAnswerTheDepositsTheyCancelAtOnce) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store);
  const MailboxId acked = Filled<kMailboxIdSize>(1);
  const MailboxId expiring = Filled<kMailboxIdSize>(2);
  CW_RL_ASSERT_OK(store->CreateMailbox(acked, Key(1)));
  CW_RL_ASSERT_OK(store->CreateMailbox(expiring, Key(2)));
  constexpr int64_t kExpiry = 1'000;
  Answers<InsertOutcome> deposits;
  store->PauseCommitsForTesting(true);
  store->InsertAsync(acked, Mid(1), Bytes(50, 1), kFar, {}, deposits.Callback());
  store->InsertAsync(expiring, Mid(2), Bytes(50, 2), kExpiry, {}, deposits.Callback());
  std::thread ack([&] { EXPECT_EQ(store->AckMany(acked, std::vector<MessageId>{Mid(1)}).value(), 1u); });
  EXPECT_EQ(deposits.TakeAtLeast(1).size(), 1u);
  std::thread purge([&] { EXPECT_GE(store->PurgeExpired(kExpiry, kExpiry).value(), 1u); });
  EXPECT_EQ(deposits.TakeAtLeast(1).size(), 1u);
  EXPECT_EQ(store->UnwrittenDepositCount(), 2u);
  store->PauseCommitsForTesting(false);
  ack.join();
  purge.join();
  EXPECT_EQ(store->Stats()->messages, 0u);
}

// An acknowledgement whose write fails is answered with the failure, not with a count of removed messages.
TEST_F(RocksDbAnswers, AnAsyncAckWhoseWriteFailsIsAnsweredWithTheFailure) {
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(1), Bytes(50, 1), kFar, {}));
  store_->FailNextWriteForTesting(Status(StatusCode::kUnavailable, "disk gone"));
  Answers<size_t> answers;
  store_->AckManyAsync(box_, std::vector<MessageId>{Mid(1)}, answers.Callback());
  const auto got = answers.TakeAtLeast(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(testing::CodeOf(got[0]), StatusCode::kUnavailable);
}

// Group commit, counted rather than timed: with the committer held, N depositors on N threads all record
// their writes and block; releasing it makes them durable in one synced write.
TEST(RocksDbMailboxStore, ConcurrentDepositsShareOneSync) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store);
  constexpr int kDepositors = 16;
  std::vector<MailboxId> boxes;
  for (int i = 0; i < kDepositors; ++i) {
    boxes.push_back(Filled<kMailboxIdSize>(uint8_t(i + 1)));
    CW_RL_ASSERT_OK(store->CreateMailbox(boxes.back(), Key(uint8_t(i))));
  }
  const uint64_t before = store->SyncCount();
  store->PauseCommitsForTesting(true);
  std::vector<std::thread> threads;
  std::vector<Result<InsertOutcome>> results(kDepositors, Error(StatusCode::kInternal, "not run"));
  for (int i = 0; i < kDepositors; ++i) {
    threads.emplace_back([&, i] { results[i] = store->Insert(boxes[i], Mid(i), Bytes(300, 7), kFar, {}); });
  }
  while (store->WaitingWritersForTesting() < kDepositors) std::this_thread::yield();
  // Nobody was answered before the sync.
  for (const auto& r : results) EXPECT_FALSE(r.has_value());
  store->PauseCommitsForTesting(false);
  for (auto& t : threads) t.join();
  for (const auto& r : results) EXPECT_EQ(testing::CodeOf(r), StatusCode::kOk) << testing::Describe(r);
  const uint64_t syncs = store->SyncCount() - before;
  EXPECT_EQ(syncs, 1u);
  EXPECT_LT(syncs, static_cast<uint64_t>(kDepositors));
  EXPECT_EQ(store->Stats()->messages, static_cast<uint64_t>(kDepositors));
}

// The asynchronous path, counted rather than timed: with the committer held, deposits (and a retry of one of
// them) are recorded but no depositor is answered; a watcher already registered hears of each at once (the
// owner's copy need not wait for the sync), one that registers meanwhile hears of them once they are synced;
// releasing it answers all of them from one synced write.
TEST_F(RocksDbAnswers, AsyncDepositsAreAnsweredOnlyOnceSynced) {
  std::atomic<int> heard{0};
  auto watch =
      store_->WatchMailbox(box_, [&](const MailboxId&, const StoredMessage&) { heard.fetch_add(1); });
  constexpr int kDeposits = 32;
  Answers<InsertOutcome> answers;
  const auto record = answers.Callback();
  const uint64_t before = store_->SyncCount();
  store_->PauseCommitsForTesting(true);
  for (int i = 0; i < kDeposits; ++i)
    store_->InsertAsync(box_, Mid(i), Bytes(300, uint8_t(i)), kFar, {}, record);
  store_->InsertAsync(box_, Mid(0), Bytes(300, 0), kFar, {},
                      record);  // a retry waits for the original's sync
  EXPECT_EQ(store_->WaitingWritersForTesting(), size_t{kDeposits + 1});
  // An owner who subscribes while the sync is under way cannot fetch these yet, so it must hear of them.
  std::atomic<int> late_heard{0};
  auto late_watch =
      store_->WatchMailbox(box_, [&](const MailboxId&, const StoredMessage&) { late_heard.fetch_add(1); });
  EXPECT_TRUE(answers.Take().empty());
  EXPECT_EQ(heard.load(), kDeposits);  // the retry is not announced
  EXPECT_EQ(late_heard.load(), 0);
  // Not durable, so a fetch does not hand them out.
  EXPECT_TRUE(store_->FetchAfter(box_, 0, 100, 1 << 20, nullptr)->empty());
  store_->PauseCommitsForTesting(false);
  {
    // The committer takes the waiting writers before it runs their callbacks: wait for the answers
    // themselves.
    const auto got = answers.TakeAtLeast(kDeposits + 1);
    ASSERT_EQ(got.size(), size_t{kDeposits + 1});
    int inserted = 0, duplicate = 0;
    for (const auto& a : got) {
      ASSERT_TRUE(a.has_value()) << testing::Describe(a);
      (*a == InsertOutcome::kInserted ? inserted : duplicate) += 1;
    }
    EXPECT_EQ(inserted, kDeposits);
    EXPECT_EQ(duplicate, 1);
  }
  EXPECT_EQ(heard.load(), kDeposits);
  EXPECT_EQ(late_heard.load(), kDeposits);
  EXPECT_EQ(store_->SyncCount() - before, 1u);
  EXPECT_EQ(store_->FetchAfter(box_, 0, 100, 1 << 20, nullptr)->size(), size_t{kDeposits});
}

// A watcher that registers while a deposit is recorded but not yet synced hears of it once it is, and of
// deposits made meanwhile only after it: an owner who reconnects in the middle of a burst sees its messages
// in the order they were deposited (a later group message before an earlier one reorders the transcript).
TEST(RocksDbMailboxStore, AWatcherRegisteredDuringASyncHearsInDepositOrder) {
  testing::TempDir dir;
  // Before the store: closing it answers what is still pending, and the watch goes before it.
  std::atomic<int> answered{0};
  auto count = [&](Result<InsertOutcome> r) {
    if (r) answered.fetch_add(1);
  };
  std::mutex mu;
  std::vector<uint8_t> heard;  // the first envelope byte of each message, in the order the watcher heard
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store);
  const MailboxId box = Filled<kMailboxIdSize>(1);
  CW_RL_ASSERT_OK(store->CreateMailbox(box, Key(1)));
  store->PauseCommitsForTesting(true);
  store->InsertAsync(box, Mid(1), Bytes(30, 1), kFar, {}, count);
  auto watch = store->WatchMailbox(box, [&](const MailboxId&, const StoredMessage& m) {
    std::lock_guard<std::mutex> lock(mu);
    heard.push_back(m.envelope.at(0));
  });
  store->InsertAsync(box, Mid(2), Bytes(30, 2), kFar, {}, count);
  store->InsertAsync(box, Mid(3), Bytes(30, 3), kFar, {}, count);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(heard.empty());  // the later two wait for the first
  }
  store->PauseCommitsForTesting(false);
  for (int i = 0; i < 30000 && answered.load() < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(answered.load(), 3);
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(heard, (std::vector<uint8_t>{1, 2, 3}));
}

// A StoreCore whose deposits' syncs the test completes, oldest first, with success or failure. A blocking
// Insert waits in WaitDurable, on its own thread, until the test completes its sync.
class ScriptedSyncStore final : public testing::IndexOnlyStore {
 public:
  void CompleteOldest(Status s) {
    std::function<void(Status)> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ASSERT_FALSE(waiting_.empty());
      fn = std::move(waiting_.begin()->second);
      waiting_.erase(waiting_.begin());
    }
    fn(std::move(s));
  }
  // The next WaitDurable is a deposit's: it waits for CompleteOldest.
  void NextWaitIsADeposit() { deposit_pending_.store(true); }
  // Waits until `n` syncs are pending.
  bool WaitPending(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return waiting_.size() >= n; });
  }

 private:
  uint64_t Ticket() override { return ++last_ticket_; }
  Status WaitDurable(uint64_t ticket) override {
    // Tickets of nothing new (mailbox creation here) are durable at once; a deposit's waits for the test.
    if (!deposit_pending_.exchange(false)) return Status::Ok();
    // Shared: the test's thread may still be inside set_value when this one wakes and returns.
    auto result = std::make_shared<std::promise<Status>>();
    auto done = result->get_future();
    WhenDurable(ticket, [result](Status s) { result->set_value(std::move(s)); });
    return done.get();
  }
  void WhenDurable(uint64_t ticket, std::function<void(Status)> fn) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      waiting_[ticket] = std::move(fn);
    }
    cv_.notify_all();
  }
  uint64_t SyncCount() const override { return 0; }
  bool Durable(uint64_t ticket) const override {
    std::lock_guard<std::mutex> lock(mu_);
    return waiting_.count(ticket) == 0;
  }

  std::atomic<uint64_t> last_ticket_{0};
  std::atomic<bool> deposit_pending_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, std::function<void(Status)>> waiting_;
};

// A deposit whose sync fails is never pushed to a watcher that registered while it was pending, and does not
// hold back the deposits after it: that watcher hears the second one, once.
TEST(StoreCoreWatch, AFailedSyncDoesNotHoldBackLaterMessages) {
  std::vector<StatusCode> answers;
  std::vector<uint8_t> heard;
  ScriptedSyncStore store;
  const MailboxId box = Filled<kMailboxIdSize>(1);
  CW_RL_ASSERT_OK(store.CreateMailbox(box, Key(1)));
  auto record = [&](Result<InsertOutcome> r) { answers.push_back(r ? StatusCode::kOk : r.error().code()); };
  store.InsertAsync(box, Mid(1), Bytes(30, 1), kFar, {}, record);
  auto watch = store.WatchMailbox(
      box, [&](const MailboxId&, const StoredMessage& m) { heard.push_back(m.envelope.at(0)); });
  store.InsertAsync(box, Mid(2), Bytes(30, 2), kFar, {}, record);
  EXPECT_TRUE(heard.empty());  // the second waits for the first
  store.CompleteOldest(Status(StatusCode::kUnavailable, "disk gone"));
  EXPECT_EQ(heard, std::vector<uint8_t>{2});
  store.CompleteOldest(Status::Ok());
  EXPECT_EQ(heard, std::vector<uint8_t>{2});
  EXPECT_EQ(answers, (std::vector<StatusCode>{StatusCode::kUnavailable, StatusCode::kOk}));
}

// The same through the blocking Insert: when its sync fails, the watcher that registered meanwhile is not
// left holding the deposit after it.
TEST(StoreCoreWatch, AFailedBlockingInsertDoesNotHoldBackLaterMessages) {
  std::vector<uint8_t> heard;
  std::mutex mu;
  ScriptedSyncStore store;
  const MailboxId box = Filled<kMailboxIdSize>(1);
  CW_RL_ASSERT_OK(store.CreateMailbox(box, Key(1)));
  store.NextWaitIsADeposit();
  std::promise<Result<InsertOutcome>> first;
  std::thread depositor([&] { first.set_value(store.Insert(box, Mid(1), Bytes(30, 1), kFar, {})); });
  ASSERT_TRUE(store.WaitPending(1));
  auto watch = store.WatchMailbox(box, [&](const MailboxId&, const StoredMessage& m) {
    std::lock_guard<std::mutex> lock(mu);
    heard.push_back(m.envelope.at(0));
  });
  std::optional<Result<InsertOutcome>> second;
  store.InsertAsync(box, Mid(2), Bytes(30, 2), kFar, {},
                    [&](Result<InsertOutcome> r) { second = std::move(r); });
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(heard.empty());  // the second waits for the first
  }
  store.CompleteOldest(Status(StatusCode::kUnavailable, "disk gone"));
  depositor.join();
  auto r = first.get_future().get();
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(heard, std::vector<uint8_t>{2});
  }
  store.CompleteOldest(Status::Ok());
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(second->has_value());
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(heard, std::vector<uint8_t>{2});
}

// A graceful shutdown: destroying the store writes what was recorded and answers every pending deposit;
// each one answered kInserted is there after reopening.
TEST(RocksDbMailboxStore, ClosingAnswersPendingAsyncDepositsAfterWritingThem) {
  testing::TempDir dir;
  const MailboxId box = Filled<kMailboxIdSize>(1);
  std::atomic<int> inserted{0};
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(store);
    CW_RL_ASSERT_OK(store->CreateMailbox(box, Key(1)));
    store->PauseCommitsForTesting(true);
    for (int i = 0; i < 10; ++i) {
      store->InsertAsync(box, Mid(i), Bytes(50, 1), kFar, {}, [&](Result<InsertOutcome> r) {
        if (r && *r == InsertOutcome::kInserted) inserted.fetch_add(1);
      });
    }
    EXPECT_EQ(inserted.load(), 0);
  }
  EXPECT_EQ(inserted.load(), 10);
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store);
  EXPECT_EQ(store->FetchAfter(box, 0, 100, 1 << 20, nullptr)->size(), 10u);
}

// A write that fails (a full or failing disk) leaves the store refusing every change, even once the fault
// has passed: what it holds in memory is then ahead of the disk. Reopening gives back exactly what was
// synced before the failure, and takes changes again.
TEST(RocksDbMailboxStore, AFailedWriteRefusesEveryChangeUntilReopened) {
  testing::TempDir dir;
  const MailboxId box = Filled<kMailboxIdSize>(1);
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(store);
    CW_RL_ASSERT_OK(store->CreateMailbox(box, Key(1)));
    ASSERT_TRUE(store->Insert(box, Mid(1), Bytes(50, 1), kFar, {}).has_value());
    EXPECT_TRUE(store->Health().ok());
    store->FailNextWriteForTesting(Status(StatusCode::kUnavailable, "IO error: No space left on device"));
    auto failed = store->Insert(box, Mid(2), Bytes(50, 2), kFar, {});
    ASSERT_FALSE(failed.has_value());
    EXPECT_EQ(failed.error().code(), StatusCode::kUnavailable);
    EXPECT_EQ(store->Health().code(), StatusCode::kUnavailable);
    EXPECT_FALSE(store->Insert(box, Mid(3), Bytes(50, 3), kFar, {}).has_value());
    EXPECT_FALSE(store->Ack(box, Mid(1)).has_value());
    EXPECT_FALSE(store->CreateMailbox(Filled<kMailboxIdSize>(2), Key(2)).ok());
  }
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->Health().ok());
  auto held = store->FetchAfter(box, 0, 100, 1 << 20, nullptr);
  ASSERT_TRUE(held.has_value());
  ASSERT_EQ(held->size(), 1u);
  EXPECT_EQ((*held)[0].id, Mid(1));
  EXPECT_EQ(store->MailboxOwner(Filled<kMailboxIdSize>(2)).value(), std::nullopt);
  auto again = store->Insert(box, Mid(2), Bytes(50, 2), kFar, {});
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, InsertOutcome::kInserted);
}

// Without the hold, under real concurrency: never more syncs than deposits, and all of them durable.
TEST(RocksDbMailboxStore, FreeRunningDepositsAreAllDurable) {
  testing::TempDir dir;
  const MailboxId box = Filled<kMailboxIdSize>(1);
  constexpr int kThreads = 8;
  constexpr int kEach = 50;
  uint64_t syncs = 0;
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(store);
    CW_RL_ASSERT_OK(store->CreateMailbox(box, Key(1)));
    const uint64_t before = store->SyncCount();
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kEach; ++i) {
          auto r = store->Insert(box, Mid(uint32_t(t * 1000 + i)), Bytes(64, 1), kFar, {});
          EXPECT_TRUE(r.has_value());
        }
      });
    }
    for (auto& th : threads) th.join();
    syncs = store->SyncCount() - before;
  }
  EXPECT_LE(syncs, static_cast<uint64_t>(kThreads * kEach));
  auto store = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(store->Stats()->messages, static_cast<uint64_t>(kThreads * kEach));
}

TEST(RocksDbMailboxStore, SecondOpenOfTheSameDirectoryIsUnavailable) {
  testing::TempDir dir;
  auto first = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(first);
  CW_RL_EXPECT_CODE(RocksDbMailboxStore::Open(dir.Sub("db")), StatusCode::kUnavailable);
}

TEST(RocksDbMailboxStore, DamagedIndexRecordIsTampered) {
  testing::TempDir dir;
  {
    auto store = OpenOrDie(dir.Sub("db"));
    CW_RL_ASSERT_OK(store->CreateMailbox(Filled<kMailboxIdSize>(1), Key(1)));
  }
  {
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir.Sub("db"), &db).ok());
    std::string key(1, 'B');
    key.append(16, '\x01');
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key, "short").ok());
    delete db;
  }
  CW_RL_EXPECT_CODE(RocksDbMailboxStore::Open(dir.Sub("db")), StatusCode::kTampered);
}

// A store written before a message was one record (index 'X' and envelope 'M' apart) opens with every
// message, its id (a retry is still a duplicate), expiry and body, and its mailbox numbering; the pairs are
// rewritten as 'E' records so none is left behind. A pair without its envelope is refused.
TEST(RocksDbMailboxStore, SplitMessageRecordsOfAnOlderStoreAreMigrated) {
  testing::TempDir dir;
  const MailboxId box = Filled<kMailboxIdSize>(0x21);
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(store);
    CW_RL_ASSERT_OK(store->CreateMailbox(box, Key(1)));
  }
  auto seq_key = [&](char tag, uint64_t seq) {
    std::string k(1, tag);
    k.append(reinterpret_cast<const char*>(box.data()), box.size());
    for (int shift = 56; shift >= 0; shift -= 8) k.push_back(static_cast<char>(seq >> shift));
    return k;
  };
  auto legacy_index = [&](uint32_t mid, uint64_t expiry, uint32_t size) {
    std::string v(reinterpret_cast<const char*>(Mid(mid).data()), kMessageIdSize);
    for (int shift = 56; shift >= 0; shift -= 8) v.push_back(static_cast<char>(expiry >> shift));
    for (int shift = 24; shift >= 0; shift -= 8) v.push_back(static_cast<char>(size >> shift));
    return v;
  };
  {
    rocksdb::DB* db = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir.Sub("db"), &db).ok());
    std::unique_ptr<rocksdb::DB> guard(db);
    for (uint32_t i = 1; i <= 3; ++i) {
      ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), seq_key('X', i), legacy_index(i, kFar, 30)).ok());
      ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), seq_key('M', i), std::string(30, char('a' + i))).ok());
    }
  }
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(store);
    auto msgs = store->FetchAfter(box, 0, 10, 1 << 20, nullptr);
    ASSERT_TRUE(msgs.has_value());
    ASSERT_EQ(msgs->size(), 3u);
    for (uint32_t i = 1; i <= 3; ++i) {
      EXPECT_EQ((*msgs)[i - 1].id, Mid(i));
      EXPECT_EQ((*msgs)[i - 1].expires_at_millis, kFar);
      EXPECT_EQ((*msgs)[i - 1].envelope, Bytes(30, uint8_t('a' + i)));
    }
    EXPECT_EQ(store->Insert(box, Mid(2), Bytes(30, 1), kFar, {}).value(), InsertOutcome::kDuplicate);
    EXPECT_TRUE(store->Ack(box, Mid(1)).value());
  }
  {
    auto store = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(store);
    EXPECT_EQ(store->Stats()->messages, 2u) << "the ack of a migrated message is durable";
  }
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir.Sub("db"), &db).ok());
  std::unique_ptr<rocksdb::DB> guard(db);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    EXPECT_NE(it->key()[0], 'X');
    EXPECT_NE(it->key()[0], 'M');
  }
  it.reset();
  ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), seq_key('X', 9), legacy_index(9, kFar, 30)).ok());
  guard.reset();
  CW_RL_EXPECT_CODE(RocksDbMailboxStore::Open(dir.Sub("db")), StatusCode::kTampered);
}

// ---- Attachment bodies: files beside the database ----

std::string AttachmentPath(const std::string& db, const AttachmentId& id) {
  return db + "/attachments/" + ToHex(id);
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool AnyRecordTagged(const std::string& db, char tag) {
  rocksdb::DB* raw = nullptr;
  EXPECT_TRUE(rocksdb::DB::Open(rocksdb::Options(), db, &raw).ok());
  std::unique_ptr<rocksdb::DB> guard(raw);
  std::unique_ptr<rocksdb::Iterator> it(raw->NewIterator(rocksdb::ReadOptions()));
  it->Seek(std::string(1, tag));
  return it->Valid() && it->key()[0] == tag;
}

// An upload's chunks are one file holding exactly the bytes written, not database records; the file goes
// when the attachment expires, once the removal of its record is durable.
TEST(RocksDbMailboxStore, AttachmentBodiesAreFilesThatGoWithTheirRecord) {
  testing::TempDir dir;
  const std::string db = dir.Sub("db");
  const AttachmentId att = Filled<kAttachmentIdSize>(0xa7);
  {
    auto store = OpenOrDie(db);
    ASSERT_TRUE(store);
    CW_RL_ASSERT_OK(store->CreateAttachment(att, Key(1), 6, 1000));
    CW_RL_ASSERT_OK(store->AppendAttachment(att, Key(1), 0, Bytes{'a', 'b', 'c'}));
    CW_RL_ASSERT_OK(store->AppendAttachment(att, Key(1), 3, Bytes{'d', 'e', 'f'}));
    EXPECT_EQ(ReadWholeFile(AttachmentPath(db, att)), "abcdef");
  }
  EXPECT_FALSE(AnyRecordTagged(db, 'C')) << "a chunk went into the database";
  auto store = OpenOrDie(db);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->ReadAttachment(att, 2, 10)->data, (Bytes{'c', 'd', 'e', 'f'}));
  EXPECT_EQ(store->PurgeExpired(999, 999).value(), 0u);
  EXPECT_TRUE(std::filesystem::exists(AttachmentPath(db, att)));
  EXPECT_EQ(store->PurgeExpired(1000, 1000).value(), 1u);
  EXPECT_FALSE(std::filesystem::exists(AttachmentPath(db, att)));
  CW_RL_EXPECT_CODE(store->ReadAttachment(att, 0, 10), StatusCode::kNotFound);
}

// Descriptors of this process open on `path` (also once it is deleted).
int OpenDescriptorsOf(const std::string& path) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(entry.path(), ec).string();
    if (!ec && (target == path || target == path + " (deleted)")) ++n;
  }
  return n;
}

// Whether reads on this directory's filesystem take RWF_NOWAIT at all (ext4 does; some do not, and there
// the store leaves every download to a thread that may block).
bool FilesystemReadsWithoutWaiting(const std::string& dir) {
  const std::string probe = dir + "/nowait-probe";
  const int fd = ::open(probe.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  char byte = 1;
  bool ok = ::pwrite(fd, &byte, 1, 0) == 1;
  iovec v{&byte, 1};
  ok = ok && ::preadv2(fd, &v, 1, 0, RWF_NOWAIT) == 1;
  ::close(fd);
  ::unlink(probe.c_str());
  return ok;
}

// A download's pieces may be read on an event loop (TryReadAttachmentWithoutBlocking): the index answers
// at once (an unfinished attachment, an offset past the end, a purged one), and the bytes come from a file
// an earlier read left open, out of the page cache. The first read of a file is left to a thread that may
// block (an open can wait for the disk). The file is held open only while its attachment exists: once
// purged, no descriptor keeps its space.
TEST(RocksDbMailboxStore, DownloadPiecesAreReadWithoutBlockingFromAFileAnEarlierReadOpened) {
  testing::TempDir dir;
  const std::string db = dir.Sub("db");
  auto store = OpenOrDie(db);
  ASSERT_TRUE(store);
  if (!FilesystemReadsWithoutWaiting(db)) GTEST_SKIP() << "this filesystem refuses RWF_NOWAIT reads";
  const AttachmentId att = Filled<kAttachmentIdSize>(0xb8);
  CW_RL_ASSERT_OK(store->CreateAttachment(att, Key(1), 6, 1000));
  CW_RL_ASSERT_OK(store->AppendAttachment(att, Key(1), 0, Bytes{'a', 'b', 'c'}));
  auto unfinished = store->TryReadAttachmentWithoutBlocking(att, 0, 6);
  ASSERT_TRUE(unfinished.has_value());
  CW_RL_EXPECT_CODE(*unfinished, StatusCode::kNotFound);
  CW_RL_ASSERT_OK(store->AppendAttachment(att, Key(1), 3, Bytes{'d', 'e', 'f'}));
  EXPECT_FALSE(store->TryReadAttachmentWithoutBlocking(att, 0, 6).has_value())
      << "read on the loop before any read had opened the file";
  EXPECT_EQ(store->ReadAttachment(att, 0, 2)->data, (Bytes{'a', 'b'}));
  auto cached = store->TryReadAttachmentWithoutBlocking(att, 2, 10);
  ASSERT_TRUE(cached.has_value()) << "a cached file's bytes were left to a worker";
  ASSERT_TRUE(cached->has_value()) << cached->error().ToString();
  EXPECT_EQ((*cached)->data, (Bytes{'c', 'd', 'e', 'f'}));
  EXPECT_EQ((*cached)->total_size, 6u);
  auto past = store->TryReadAttachmentWithoutBlocking(att, 7, 1);
  ASSERT_TRUE(past.has_value());
  CW_RL_EXPECT_CODE(*past, StatusCode::kInvalidArgument);
  // As /proc names it: TMPDIR may be relative or go through a symlink.
  const std::string file = std::filesystem::canonical(AttachmentPath(db, att)).string();
  EXPECT_EQ(OpenDescriptorsOf(file), 1);
  EXPECT_EQ(store->PurgeExpired(1000, 1000).value(), 1u);
  EXPECT_EQ(OpenDescriptorsOf(file), 0) << "a purged attachment's file is held open";
  auto gone = store->TryReadAttachmentWithoutBlocking(att, 0, 6);
  ASSERT_TRUE(gone.has_value());
  CW_RL_EXPECT_CODE(*gone, StatusCode::kNotFound);
}

// Chunks sent one after another without waiting are appended in that order, answered only once synced
// (together: one sync), and a retransmission of one is answered no sooner than its original.
TEST(RocksDbMailboxStore, AsyncChunksAreAppendedInOrderAndAnsweredOnceSynced) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store);
  const AttachmentId att = Filled<kAttachmentIdSize>(3);
  CW_RL_ASSERT_OK(store->CreateAttachment(att, Key(1), 9, kFar));
  Answers<uint64_t> answers;
  const auto record = answers.Callback();
  const uint64_t before = store->SyncCount();
  store->PauseCommitsForTesting(true);
  store->AppendAttachmentAsync(att, Key(1), 0, Bytes{1, 2, 3}, record);
  store->AppendAttachmentAsync(att, Key(1), 3, Bytes{4, 5, 6}, record);
  store->AppendAttachmentAsync(att, Key(1), 0, Bytes{1, 2, 3}, record);  // a retransmission
  store->AppendAttachmentAsync(att, Key(1), 6, Bytes{7, 8, 9}, record);
  store->AppendAttachmentAsync(att, Key(2), 9, Bytes{0}, record);  // not the uploader: refused at once
  const auto at_once = answers.Take();
  ASSERT_EQ(at_once.size(), 1u) << "an append was answered before its sync";
  CW_RL_EXPECT_CODE(at_once[0], StatusCode::kNotFound);
  CW_RL_EXPECT_CODE(store->ReadAttachment(att, 0, 9), StatusCode::kNotFound);  // not complete until synced
  store->PauseCommitsForTesting(false);
  const auto got = answers.TakeAtLeast(4);
  ASSERT_EQ(got.size(), 4u);
  std::vector<uint64_t> written;
  for (const auto& a : got) {
    ASSERT_TRUE(a.has_value()) << testing::Describe(a);
    written.push_back(*a);
  }
  EXPECT_EQ(written, (std::vector<uint64_t>{3, 6, 6, 9}));
  EXPECT_EQ(store->SyncCount() - before, 1u);
  EXPECT_EQ(store->ReadAttachment(att, 0, 9)->data, (Bytes{1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

// Every file written since the last sync costs the committer an fdatasync ahead of the deposits in its
// batch, so at most kMaxDirty uploads write into one batch; a chunk for one more is refused at once as
// unavailable (the uploader retries) and is taken once the batch is synced.
TEST(RocksDbMailboxStore, ChunksOfTooManyUploadsInOneBatchWaitForTheNext) {
  testing::TempDir dir;
  auto store = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(store);
  constexpr size_t kUploads = internal::AttachmentFiles::kMaxDirty + 1;
  for (size_t i = 0; i < kUploads; ++i) {
    CW_RL_ASSERT_OK(store->CreateAttachment(Filled<kAttachmentIdSize>(uint8_t(0x40 + i)), Key(1), 1, kFar));
  }
  Answers<uint64_t> answers;
  const auto record = answers.Callback();
  store->PauseCommitsForTesting(true);
  for (size_t i = 0; i < kUploads; ++i) {
    store->AppendAttachmentAsync(Filled<kAttachmentIdSize>(uint8_t(0x40 + i)), Key(1), 0, Bytes{1}, record);
  }
  const auto at_once = answers.Take();
  ASSERT_EQ(at_once.size(), 1u);
  CW_RL_EXPECT_CODE(at_once[0], StatusCode::kUnavailable);
  store->PauseCommitsForTesting(false);
  const auto got = answers.TakeAtLeast(kUploads - 1);
  ASSERT_EQ(got.size(), kUploads - 1);
  for (const auto& a : got) EXPECT_EQ(a.value_or(0), 1u) << testing::Describe(a);
  const AttachmentId last = Filled<kAttachmentIdSize>(uint8_t(0x40 + kUploads - 1));
  EXPECT_EQ(store->AppendAttachment(last, Key(1), 0, Bytes{1}).value(), 1u);
  EXPECT_EQ(store->ReadAttachment(last, 0, 1)->data, Bytes{1});
}

// A chunk whose file cannot be written is refused by itself: the upload keeps its place, and the store
// goes on serving everything else.
TEST(RocksDbMailboxStore, AnAttachmentWriteThatFailsRefusesThatChunkOnly) {
  testing::TempDir dir;
  const std::string db = dir.Sub("db");
  auto store = OpenOrDie(db);
  ASSERT_TRUE(store);
  const AttachmentId att = Filled<kAttachmentIdSize>(4);
  CW_RL_ASSERT_OK(store->CreateAttachment(att, Key(1), 3, kFar));
  std::filesystem::create_directory(AttachmentPath(db, att));  // where the file would go: open() fails
  CW_RL_EXPECT_CODE(store->AppendAttachment(att, Key(1), 0, Bytes{1, 2, 3}), StatusCode::kUnavailable);
  const MailboxId box = Filled<kMailboxIdSize>(4);
  CW_RL_ASSERT_OK(store->CreateMailbox(box, Key(1)));
  CW_RL_ASSERT_OK(store->Insert(box, Mid(1), Bytes(10, 1), kFar, {}));
  std::filesystem::remove(AttachmentPath(db, att));
  EXPECT_EQ(store->AppendAttachment(att, Key(1), 0, Bytes{1, 2, 3}).value(), 3u);
  EXPECT_EQ(store->ReadAttachment(att, 0, 3)->data, (Bytes{1, 2, 3}));
}

// At open: a file that runs past its record (an append cut short by a crash) is fine and the upload goes on
// from the record; a file that falls short of its record was damaged; a file of no attachment (its record's
// removal was durable, its deletion not yet) is removed; names that are not attachment ids are left alone.
TEST(RocksDbMailboxStore, AttachmentFilesAreCheckedAgainstTheirRecordsAtOpen) {
  testing::TempDir dir;
  const std::string db = dir.Sub("db");
  const AttachmentId att = Filled<kAttachmentIdSize>(5);
  const AttachmentId orphan = Filled<kAttachmentIdSize>(6);
  {
    auto store = OpenOrDie(db);
    ASSERT_TRUE(store);
    CW_RL_ASSERT_OK(store->CreateAttachment(att, Key(1), 6, kFar));
    CW_RL_ASSERT_OK(store->AppendAttachment(att, Key(1), 0, Bytes{1, 2, 3}));
  }
  std::ofstream(AttachmentPath(db, att), std::ios::binary | std::ios::app) << "XYZ";  // past the record
  std::ofstream(AttachmentPath(db, orphan), std::ios::binary) << "left behind";
  std::ofstream(db + "/attachments/NOTES", std::ios::binary) << "the operator's";
  const std::string odd_dir = AttachmentPath(db, Filled<kAttachmentIdSize>(7));  // named like one, not a file
  std::filesystem::create_directory(odd_dir);
  {
    auto store = OpenOrDie(db);
    ASSERT_TRUE(store);
    EXPECT_FALSE(std::filesystem::exists(AttachmentPath(db, orphan)));
    EXPECT_TRUE(std::filesystem::exists(db + "/attachments/NOTES"));
    EXPECT_TRUE(std::filesystem::is_directory(odd_dir));
    EXPECT_EQ(store->AppendAttachment(att, Key(1), 3, Bytes{4, 5, 6}).value(), 6u);
    EXPECT_EQ(store->ReadAttachment(att, 0, 6)->data, (Bytes{1, 2, 3, 4, 5, 6}));
  }
  std::filesystem::resize_file(AttachmentPath(db, att), 5);
  CW_RL_EXPECT_CODE(RocksDbMailboxStore::Open(db), StatusCode::kTampered);
}

// A store written when chunks were database records ('C' attachment offset -> chunk) opens with every
// attachment readable; the chunks are moved into files and no record of them is left. A chunk of no
// attachment is refused.
TEST(RocksDbMailboxStore, ChunkRecordsOfAnOlderStoreAreMovedIntoFiles) {
  testing::TempDir dir;
  const std::string db = dir.Sub("db");
  const AttachmentId att = Filled<kAttachmentIdSize>(8);
  {
    auto store = OpenOrDie(db);
    ASSERT_TRUE(store);
    CW_RL_ASSERT_OK(store->CreateAttachment(att, Key(1), 6, kFar));
  }
  auto be = [](uint64_t v) {
    std::string s;
    for (int shift = 56; shift >= 0; shift -= 8) s.push_back(static_cast<char>(v >> shift));
    return s;
  };
  const std::string id(reinterpret_cast<const char*>(att.data()), att.size());
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), db, &raw).ok());
    std::unique_ptr<rocksdb::DB> guard(raw);
    const LinkKey uploader = Key(1);
    const std::string record = std::string(reinterpret_cast<const char*>(uploader.data()), uploader.size()) +
                               be(6) + be(6) + be(kFar);
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), "A" + id, record).ok());
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), "C" + id + be(0), "abc").ok());
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), "C" + id + be(3), "def").ok());
  }
  // A migration cut short by a crash left part of the file: the reopen writes it again.
  std::ofstream(AttachmentPath(db, att), std::ios::binary) << "abX";
  {
    auto store = OpenOrDie(db);
    ASSERT_TRUE(store);
    EXPECT_EQ(store->ReadAttachment(att, 0, 6)->data, (Bytes{'a', 'b', 'c', 'd', 'e', 'f'}));
  }
  EXPECT_FALSE(AnyRecordTagged(db, 'C'));
  EXPECT_EQ(ReadWholeFile(AttachmentPath(db, att)), "abcdef");
  {
    auto store = OpenOrDie(db);
    ASSERT_TRUE(store);
    EXPECT_EQ(store->ReadAttachment(att, 0, 6)->data, (Bytes{'a', 'b', 'c', 'd', 'e', 'f'}));
  }
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), db, &raw).ok());
    std::unique_ptr<rocksdb::DB> guard(raw);
    const std::string stranger(kAttachmentIdSize, '\x09');
    ASSERT_TRUE(raw->Put(rocksdb::WriteOptions(), "C" + stranger + be(0), "xyz").ok());
  }
  CW_RL_EXPECT_CODE(RocksDbMailboxStore::Open(db), StatusCode::kTampered);
}

// What the relay keeps on disk for a message: the envelope, mailbox id, message id and expiry, and
// no link key of the depositor (the store never sees one).
TEST(RocksDbMailboxStore, StoredMessageRecordsHoldOnlyAllowListedFields) {
  testing::TempDir dir;
  const MailboxId box = Filled<kMailboxIdSize>(0x31);
  {
    auto store = OpenOrDie(dir.Sub("db"));
    CW_RL_ASSERT_OK(store->CreateMailbox(box, Key(0x41)));
    CW_RL_ASSERT_OK(store->Insert(box, Mid(7), Bytes(40, 0x99), 12345, {}));
  }
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir.Sub("db"), &db).ok());
  std::unique_ptr<rocksdb::DB> guard(db);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  std::vector<char> tags;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const char tag = it->key()[0];
    tags.push_back(tag);
    if (tag == 'E') {
      // message id, expiry, envelope
      std::string expected(reinterpret_cast<const char*>(Mid(7).data()), kMessageIdSize);
      for (int shift = 56; shift >= 0; shift -= 8) expected.push_back(static_cast<char>(uint64_t{12345} >> shift));
      expected.append(40, '\x99');
      EXPECT_EQ(it->value().ToString(), expected);
    }
  }
  EXPECT_EQ(tags, (std::vector<char>{'B', 'E'}));
}

}  // namespace
}  // namespace cw::relay
