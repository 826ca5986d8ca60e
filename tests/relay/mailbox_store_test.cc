// The MailboxStore contract, run against both implementations: in memory and RocksDB (in a mkdtemp dir).
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <optional>

#include <atomic>
#include <set>
#include <thread>

#include "relay/mailbox_store.h"
#include "relay/rocksdb_mailbox_store.h"
#include "tests/relay/relay_test_util.h"

namespace cw::relay {
namespace {

using testing::Filled;
using testing::Key;
using testing::Mid;

enum class Kind { kInMemory, kRocksDb };

constexpr int64_t kNow = 1'700'000'000'000;
constexpr auto kRefused = MailboxStore::Admission::kRefused;
constexpr auto kAdmitted = MailboxStore::Admission::kAdmitted;
constexpr auto kClaimed = MailboxStore::Admission::kClaimed;
constexpr int64_t kFar = 1'000'000'000'000'000;

class MailboxStoreTest : public ::testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    if (GetParam() == Kind::kInMemory) {
      store_ = NewInMemoryMailboxStore();
    } else {
      auto opened = RocksDbMailboxStore::Open(dir_.Sub("db"));
      ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
      store_ = std::move(*opened);
    }
    CW_RL_ASSERT_OK(store_->CreateMailbox(box_, Key(1)));
  }

  PreKeySet Keys(uint32_t first_id, size_t n) {
    PreKeySet k;
    k.registration_id = 99;
    k.identity_key = Filled<wire::kPublicKeySize>(0x05);
    k.signed_pre_key.id = 3;
    k.signed_pre_key.public_key = Filled<wire::kPublicKeySize>(0x06);
    k.signed_pre_key.signature = Filled<wire::kSignatureSize>(0x07);
    for (size_t i = 0; i < n; ++i) {
      k.one_time_pre_keys.push_back({first_id + static_cast<uint32_t>(i), Filled<wire::kPublicKeySize>(uint8_t(i))});
    }
    return k;
  }

  testing::TempDir dir_;
  std::unique_ptr<MailboxStore> store_;
  const MailboxId box_ = Filled<kMailboxIdSize>(0xb0);
  const int64_t far_ = 1'000'000'000'000'000;
};

TEST_P(MailboxStoreTest, MailboxIsBoundToItsOwner) {
  CW_RL_EXPECT_CODE(store_->CreateMailbox(box_, Key(2)), StatusCode::kAlreadyExists);
  auto owner = store_->MailboxOwner(box_);
  ASSERT_TRUE(owner && owner->has_value());
  EXPECT_EQ(**owner, Key(1));
  auto none = store_->MailboxOwner(Filled<kMailboxIdSize>(0xee));
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());
  auto owned = store_->MailboxesOwnedBy(Key(1));
  ASSERT_TRUE(owned.has_value());
  EXPECT_EQ(*owned, std::vector<MailboxId>{box_});
  EXPECT_TRUE(store_->MailboxesOwnedBy(Key(2))->empty());
}

TEST_P(MailboxStoreTest, InsertIsIdempotentByMessageId) {
  const Bytes env(300, 0xab);
  auto first = store_->Insert(box_, Mid(1), env, far_, {});
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(*first, InsertOutcome::kInserted);
  auto again = store_->Insert(box_, Mid(1), Bytes(500, 0xcd), far_, {});
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, InsertOutcome::kDuplicate);
  bool more = true;
  auto msgs = store_->FetchAfter(box_, 0, 10, 1 << 20, &more);
  ASSERT_TRUE(msgs.has_value());
  ASSERT_EQ(msgs->size(), 1u);
  EXPECT_EQ((*msgs)[0].envelope, env);  // the first copy, stored once
  EXPECT_FALSE(more);
  EXPECT_EQ(store_->Stats()->messages, 1u);
  EXPECT_EQ(store_->Stats()->message_bytes, 300u);
}

TEST_P(MailboxStoreTest, InsertIntoUnknownMailboxIsNotFound) {
  CW_RL_EXPECT_CODE(store_->Insert(Filled<kMailboxIdSize>(1), Mid(1), Bytes(1, 1), far_, {}), StatusCode::kNotFound);
}

TEST_P(MailboxStoreTest, FetchAfterSequenceInOrderWithLimits) {
  for (uint32_t i = 1; i <= 5; ++i) CW_RL_ASSERT_OK(store_->Insert(box_, Mid(i), Bytes(100, uint8_t(i)), far_, {}));
  bool more = false;
  auto page = store_->FetchAfter(box_, 0, 2, 1 << 20, &more);
  ASSERT_TRUE(page.has_value());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_TRUE(more);
  EXPECT_EQ((*page)[0].id, Mid(1));
  EXPECT_EQ((*page)[1].id, Mid(2));
  EXPECT_LT((*page)[0].seq, (*page)[1].seq);
  auto rest = store_->FetchAfter(box_, (*page)[1].seq, 10, 1 << 20, &more);
  ASSERT_EQ(rest->size(), 3u);
  EXPECT_FALSE(more);
  EXPECT_EQ(rest->back().envelope, Bytes(100, 5));
  // A byte budget smaller than one message still returns one.
  auto tiny = store_->FetchAfter(box_, 0, 10, 1, &more);
  ASSERT_EQ(tiny->size(), 1u);
  EXPECT_TRUE(more);
  // 250 bytes: two of 100 fit, the third would pass it.
  auto two = store_->FetchAfter(box_, 0, 10, 250, &more);
  EXPECT_EQ(two->size(), 2u);
}

TEST_P(MailboxStoreTest, AckManyRemovesTheListedMessagesAndSkipsUnknownOrRepeatedIds) {
  for (uint32_t i = 1; i <= 4; ++i)
    CW_RL_ASSERT_OK(store_->Insert(box_, Mid(i), Bytes(10, uint8_t(i)), far_, {}));
  const std::vector<MessageId> ids = {Mid(1), Mid(3), Mid(3), Mid(9)};
  EXPECT_EQ(store_->AckMany(box_, ids).value(), 2u);
  auto left = store_->FetchAfter(box_, 0, 10, 1 << 20, nullptr);
  ASSERT_EQ(left->size(), 2u);
  EXPECT_EQ((*left)[0].id, Mid(2));
  EXPECT_EQ((*left)[1].id, Mid(4));
  EXPECT_EQ(store_->AckMany(box_, ids).value(), 0u);  // nothing left of them: not an error
  EXPECT_EQ(testing::CodeOf(store_->AckMany(Filled<kMailboxIdSize>(0xee), ids)), StatusCode::kNotFound);
}

TEST_P(MailboxStoreTest, AckRemovesByIdAndSequencesAreNeverReused) {
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(1), Bytes(10, 1), far_, {}));
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(2), Bytes(10, 2), far_, {}));
  auto all = store_->FetchAfter(box_, 0, 10, 1 << 20, nullptr);
  const uint64_t last = all->back().seq;
  EXPECT_EQ(store_->Ack(box_, Mid(1)).value(), true);
  EXPECT_EQ(store_->Ack(box_, Mid(1)).value(), false);  // already gone: not an error
  EXPECT_EQ(store_->Ack(box_, Mid(2)).value(), true);
  EXPECT_TRUE(store_->FetchAfter(box_, 0, 10, 1 << 20, nullptr)->empty());
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(3), Bytes(10, 3), far_, {}));
  auto next = store_->FetchAfter(box_, last, 10, 1 << 20, nullptr);
  ASSERT_EQ(next->size(), 1u);  // a client resuming after `last` still sees the new message
  EXPECT_GT((*next)[0].seq, last);
  EXPECT_EQ(store_->Stats()->messages, 1u);
  // An acked id may be deposited again: it is a new message.
  EXPECT_EQ(store_->Insert(box_, Mid(1), Bytes(10, 1), far_, {}).value(), InsertOutcome::kInserted);
}

TEST_P(MailboxStoreTest, QuotaByCountAndBytesRefusesAndDropsNothing) {
  MessageQuota q{3, 1000};
  for (uint32_t i = 1; i <= 3; ++i) CW_RL_ASSERT_OK(store_->Insert(box_, Mid(i), Bytes(100, 1), far_, q));
  CW_RL_EXPECT_CODE(store_->Insert(box_, Mid(4), Bytes(100, 1), far_, q), StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->FetchAfter(box_, 0, 10, 1 << 20, nullptr)->size(), 3u);  // the first three kept
  // A retry of a stored id is still a duplicate, not "full".
  EXPECT_EQ(store_->Insert(box_, Mid(2), Bytes(100, 1), far_, q).value(), InsertOutcome::kDuplicate);
  ASSERT_TRUE(store_->Ack(box_, Mid(1)).value());
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(4), Bytes(100, 1), far_, q));

  const MailboxId other = Filled<kMailboxIdSize>(0xb1);
  CW_RL_ASSERT_OK(store_->CreateMailbox(other, Key(1)));
  MessageQuota bytes{1000, 250};
  CW_RL_ASSERT_OK(store_->Insert(other, Mid(1), Bytes(200, 1), far_, bytes));
  CW_RL_EXPECT_CODE(store_->Insert(other, Mid(2), Bytes(51, 1), far_, bytes), StatusCode::kResourceExhausted);
  CW_RL_ASSERT_OK(store_->Insert(other, Mid(3), Bytes(50, 1), far_, bytes));
}

// The purge walks the store a few mailboxes and attachments at a time; none is skipped between two walks.
TEST_P(MailboxStoreTest, PurgeReachesEveryMailboxAndAttachmentOfALargeStore) {
  constexpr int kMany = 300;  // several of the purge's lock holds
  auto numbered = [](int i) {
    std::array<uint8_t, 16> id{};
    id[0] = uint8_t(i);
    id[1] = uint8_t(i >> 8);
    id[15] = 0x7e;
    return id;
  };
  for (int i = 0; i < kMany; ++i) {
    const MailboxId box = numbered(i);
    CW_RL_ASSERT_OK(store_->CreateMailbox(box, Key(2)));
    CW_RL_ASSERT_OK(store_->Insert(box, Mid(1), Bytes(10, 1), 1000, {}));
    CW_RL_ASSERT_OK(store_->Insert(box, Mid(2), Bytes(10, 2), far_, {}));
    CW_RL_ASSERT_OK(store_->CreateAttachment(numbered(i), Key(2), 10, 1000));
  }
  EXPECT_EQ(store_->PurgeExpired(1000, 1000).value(), size_t{2 * kMany});
  auto stats = store_->Stats().value();
  EXPECT_EQ(stats.messages, uint64_t{kMany});
  EXPECT_EQ(stats.attachments, 0u);
}

// An abandoned upload is given up sooner than a finished attachment expires: the relay passes the expiry
// before which unfinished ones go, and nothing finished, nor anything unfinished expiring later, goes with
// it.
TEST_P(MailboxStoreTest, PurgeRemovesUnfinishedUploadsByTheirOwnCutoff) {
  const AttachmentId finished = Filled<kAttachmentIdSize>(1);
  const AttachmentId abandoned = Filled<kAttachmentIdSize>(2);
  const AttachmentId later = Filled<kAttachmentIdSize>(3);
  CW_RL_ASSERT_OK(store_->CreateAttachment(finished, Key(1), 10, 5000));
  CW_RL_ASSERT_OK(store_->CreateAttachment(abandoned, Key(1), 10, 5000));
  CW_RL_ASSERT_OK(store_->CreateAttachment(later, Key(1), 10, 6000));
  ASSERT_TRUE(store_->AppendAttachment(finished, Key(1), 0, Bytes(10, 7)).has_value());
  ASSERT_TRUE(store_->AppendAttachment(abandoned, Key(1), 0, Bytes(4, 7)).has_value());
  ASSERT_TRUE(store_->AppendAttachment(later, Key(1), 0, Bytes(4, 7)).has_value());
  EXPECT_EQ(store_->PurgeExpired(100, 4999).value(), 0u);
  EXPECT_EQ(store_->PurgeExpired(100, 5000).value(), 1u);
  EXPECT_EQ(store_->Stats().value().attachments, 2u);
  EXPECT_EQ(store_->Stats().value().attachment_bytes, 14u);
  ASSERT_TRUE(store_->ReadAttachment(finished, 0, 10).has_value());
  EXPECT_EQ(store_->AppendAttachment(abandoned, Key(1), 4, Bytes(6, 7)).error().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(store_->PurgeExpired(5000, 5000).value(), 1u);  // the finished one, at its own expiry
  EXPECT_EQ(store_->PurgeExpired(5000, 6000).value(), 1u);
  EXPECT_EQ(store_->Stats().value().attachments, 0u);
}

TEST_P(MailboxStoreTest, PurgeRemovesOnlyExpired) {
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(1), Bytes(10, 1), 1000, {}));
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(2), Bytes(10, 2), 2000, {}));
  CW_RL_ASSERT_OK(store_->CreateAttachment(Filled<kAttachmentIdSize>(1), Key(1), 10, 1500));
  EXPECT_EQ(store_->PurgeExpired(999, 999).value(), 0u);
  EXPECT_EQ(store_->PurgeExpired(1500, 1500).value(), 2u);  // message 1 and the attachment
  auto left = store_->FetchAfter(box_, 0, 10, 1 << 20, nullptr);
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].id, Mid(2));
  EXPECT_EQ(store_->Stats()->attachments, 0u);
}

TEST_P(MailboxStoreTest, WatchHearsNewMessagesOnlyUntilDestroyed) {
  std::vector<MessageId> heard;
  auto watch = store_->WatchMailbox(box_, [&](const MailboxId& id, const StoredMessage& m) {
    EXPECT_EQ(id, box_);
    EXPECT_FALSE(m.envelope.empty());
    heard.push_back(m.id);
  });
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(1), Bytes(10, 1), far_, {}));
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(1), Bytes(10, 1), far_, {}));  // duplicate: not announced
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(2), Bytes(10, 1), far_, {}));
  watch.reset();
  CW_RL_ASSERT_OK(store_->Insert(box_, Mid(3), Bytes(10, 1), far_, {}));
  EXPECT_EQ(heard, (std::vector<MessageId>{Mid(1), Mid(2)}));
}

// InsertAsync gives each caller what Insert would have, and watchers hear of a new message as with Insert.
namespace {
struct AsyncResult {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result<InsertOutcome>> value;
  void Set(Result<InsertOutcome> r) {
    std::lock_guard<std::mutex> lock(mu);
    value.emplace(std::move(r));
    cv.notify_all();
  }
  Result<InsertOutcome> Wait() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return value.has_value(); });
    return *value;
  }
};
Result<InsertOutcome> InsertAsyncAndWait(MailboxStore& store, const MailboxId& id, const MessageId& mid,
                                         Bytes envelope, int64_t expiry, const MessageQuota& quota) {
  auto result = std::make_shared<AsyncResult>();
  int calls = 0;
  store.InsertAsync(id, mid, envelope, expiry, quota, [result, &calls](Result<InsertOutcome> r) {
    ++calls;
    result->Set(std::move(r));
  });
  envelope.assign(envelope.size(), 0);  // the store copied it before returning
  Result<InsertOutcome> r = result->Wait();
  EXPECT_EQ(calls, 1);
  return r;
}
}  // namespace

TEST_P(MailboxStoreTest, InsertAsyncAnswersAsInsertDoes) {
  std::mutex mu;
  std::vector<StoredMessage> heard;
  auto watch = store_->WatchMailbox(box_, [&](const MailboxId&, const StoredMessage& m) {
    std::lock_guard<std::mutex> lock(mu);
    heard.push_back(m);
  });
  MessageQuota q;
  q.max_messages = 2;
  EXPECT_EQ(InsertAsyncAndWait(*store_, box_, Mid(1), Bytes(100, 0xab), far_, q).value(), InsertOutcome::kInserted);
  EXPECT_EQ(InsertAsyncAndWait(*store_, box_, Mid(1), Bytes(100, 0xcd), far_, q).value(), InsertOutcome::kDuplicate);
  EXPECT_EQ(InsertAsyncAndWait(*store_, box_, Mid(2), Bytes(100, 0x02), far_, q).value(), InsertOutcome::kInserted);
  CW_RL_EXPECT_CODE(InsertAsyncAndWait(*store_, box_, Mid(3), Bytes(100, 0x03), far_, q),
                    StatusCode::kResourceExhausted);
  CW_RL_EXPECT_CODE(InsertAsyncAndWait(*store_, Filled<kMailboxIdSize>(9), Mid(1), Bytes(1, 1), far_, q),
                    StatusCode::kNotFound);
  CW_RL_EXPECT_CODE(InsertAsyncAndWait(*store_, box_, Mid(4), Bytes(), far_, q), StatusCode::kInvalidArgument);

  auto fetched = store_->FetchAfter(box_, 0, 10, 1 << 20, nullptr).value();
  ASSERT_EQ(fetched.size(), 2u);
  EXPECT_EQ(fetched[0].envelope, Bytes(100, 0xab));  // the first copy, kept though the caller's buffer was wiped
  EXPECT_EQ(fetched[1].id, Mid(2));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(heard.size(), 2u);  // the duplicate and the refusals are not announced
  EXPECT_EQ(heard[0].id, Mid(1));
  EXPECT_EQ(heard[0].envelope, Bytes(100, 0xab));
  EXPECT_EQ(heard[1].seq, fetched[1].seq);
}

TEST_P(MailboxStoreTest, DepositTokensAreKeptAndRevoked) {
  const TokenHash t = Filled<kTokenHashSize>(1);
  EXPECT_FALSE(store_->HasDepositToken(box_, t, kNow).value());
  EXPECT_EQ(store_->AdmitDeposit(box_, t, kNow).value(), kRefused);
  CW_RL_ASSERT_OK(store_->AddDepositToken(box_, t, 2, 0));
  EXPECT_TRUE(store_->HasDepositToken(box_, t, kNow).value());
  EXPECT_EQ(store_->AdmitDeposit(box_, t, kFar).value(), kAdmitted) << "a claimed token never lapses";
  EXPECT_FALSE(store_->HasDepositToken(Filled<kMailboxIdSize>(9), t, kNow).value());
  EXPECT_EQ(store_->AdmitDeposit(Filled<kMailboxIdSize>(9), t, kNow).value(), kRefused);
  CW_RL_ASSERT_OK(store_->AddDepositToken(box_, Filled<kTokenHashSize>(2), 2, 0));
  CW_RL_EXPECT_CODE(store_->AddDepositToken(box_, Filled<kTokenHashSize>(3), 2, 0), StatusCode::kResourceExhausted);
  CW_RL_ASSERT_OK(store_->RemoveDepositToken(box_, t));
  EXPECT_FALSE(store_->HasDepositToken(box_, t, kNow).value());
  EXPECT_EQ(store_->AdmitDeposit(box_, t, kNow).value(), kRefused);
  CW_RL_EXPECT_CODE(store_->RemoveDepositToken(box_, t), StatusCode::kNotFound);
  CW_RL_EXPECT_CODE(store_->AddDepositToken(Filled<kMailboxIdSize>(9), t, 2, 0), StatusCode::kNotFound);
}

// An invite's token admits its first deposit only before its claim_by time; that deposit claims it for good.
// One nobody claimed in time is refused, then forgotten by the purge (freeing its place under the cap).
TEST_P(MailboxStoreTest, AClaimableTokenLapsesUnlessItsFirstDepositComesInTime) {
  const TokenHash answered = Filled<kTokenHashSize>(1), unanswered = Filled<kTokenHashSize>(2);
  const int64_t claim_by = kNow + 1000;
  CW_RL_ASSERT_OK(store_->AddDepositToken(box_, answered, 2, claim_by));
  CW_RL_ASSERT_OK(store_->AddDepositToken(box_, unanswered, 2, claim_by));
  EXPECT_TRUE(store_->HasDepositToken(box_, unanswered, claim_by - 1).value());
  EXPECT_EQ(store_->AdmitDeposit(box_, answered, claim_by - 1).value(), kClaimed);
  EXPECT_EQ(store_->AdmitDeposit(box_, answered, claim_by + 5000).value(), kAdmitted) << "kept after claim_by";
  EXPECT_FALSE(store_->HasDepositToken(box_, unanswered, claim_by).value());
  EXPECT_EQ(store_->AdmitDeposit(box_, unanswered, claim_by).value(), kRefused) << "lapsed: nobody claimed it";
  // Still counted until purged; the purge forgets only the lapsed one.
  CW_RL_EXPECT_CODE(store_->AddDepositToken(box_, Filled<kTokenHashSize>(3), 2, 0), StatusCode::kResourceExhausted);
  ASSERT_TRUE(store_->PurgeExpired(claim_by, claim_by).has_value());
  CW_RL_ASSERT_OK(store_->AddDepositToken(box_, Filled<kTokenHashSize>(3), 2, 0));
  EXPECT_TRUE(store_->HasDepositToken(box_, answered, claim_by + 5000).value());
  CW_RL_EXPECT_CODE(store_->RemoveDepositToken(box_, unanswered), StatusCode::kNotFound);
}

TEST_P(MailboxStoreTest, PreKeyDirectoryHandsOutEachOneTimeKeyOnce) {
  EXPECT_FALSE(store_->TakeBundle(box_).value().has_value());  // nothing uploaded
  EXPECT_FALSE(store_->CountOneTimePreKeys(box_).value().has_value());
  EXPECT_EQ(store_->PutPreKeys(box_, Keys(1, 3), 1000).value(), 3u);
  std::set<uint32_t> seen;
  for (int i = 0; i < 3; ++i) {
    auto b = store_->TakeBundle(box_);
    ASSERT_TRUE(b && b->has_value());
    ASSERT_TRUE((*b)->bundle.one_time_pre_key.has_value());
    EXPECT_TRUE(seen.insert((*b)->bundle.one_time_pre_key->id).second);
    EXPECT_EQ((*b)->one_time_remaining, static_cast<uint32_t>(2 - i));
    EXPECT_EQ((*b)->bundle.registration_id, 99u);
    EXPECT_EQ((*b)->bundle.signed_pre_key.id, 3u);
  }
  // Out of one-time keys: the bundle still comes, without one.
  auto empty = store_->TakeBundle(box_);
  ASSERT_TRUE(empty && empty->has_value());
  EXPECT_FALSE((*empty)->bundle.one_time_pre_key.has_value());
  EXPECT_EQ((*empty)->one_time_remaining, 0u);
  // A refill adds; a too-large pool is refused.
  EXPECT_EQ(store_->PutPreKeys(box_, Keys(100, 5), 6).value(), 5u);
  CW_RL_EXPECT_CODE(store_->PutPreKeys(box_, Keys(200, 2), 6), StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->CountOneTimePreKeys(box_).value().value(), 5u);
}

TEST_P(MailboxStoreTest, ConcurrentTakesNeverShareAKey) {
  constexpr int kKeys = 200;
  ASSERT_EQ(store_->PutPreKeys(box_, Keys(1, 100), 1000).value(), 100u);
  ASSERT_EQ(store_->PutPreKeys(box_, Keys(101, 100), 1000).value(), 200u);
  constexpr int kThreads = 8;
  constexpr int kPerThread = 30;  // 240 takes for 200 keys: 40 come back without one
  std::vector<std::vector<uint32_t>> got(kThreads);
  std::atomic<int> without{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto b = store_->TakeBundle(box_);
        if (!b || !b->has_value()) continue;
        if ((*b)->bundle.one_time_pre_key) {
          got[t].push_back((*b)->bundle.one_time_pre_key->id);
        } else {
          without.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<uint32_t> all;
  size_t total = 0;
  for (const auto& g : got) {
    total += g.size();
    all.insert(g.begin(), g.end());
  }
  EXPECT_EQ(total, static_cast<size_t>(kKeys));
  EXPECT_EQ(all.size(), static_cast<size_t>(kKeys));  // no key handed out twice
  EXPECT_EQ(without.load(), kThreads * kPerThread - kKeys);
}

TEST_P(MailboxStoreTest, AttachmentsUploadInOrderAndReadBack) {
  const AttachmentId id = Filled<kAttachmentIdSize>(7);
  CW_RL_ASSERT_OK(store_->CreateAttachment(id, Key(1), 10, far_));
  CW_RL_EXPECT_CODE(store_->CreateAttachment(id, Key(1), 10, far_), StatusCode::kAlreadyExists);
  CW_RL_EXPECT_CODE(store_->ReadAttachment(id, 0, 10), StatusCode::kNotFound);  // incomplete
  EXPECT_EQ(store_->AppendAttachment(id, Key(1), 0, Bytes{0, 1, 2, 3}).value(), 4u);
  CW_RL_EXPECT_CODE(store_->AppendAttachment(id, Key(2), 4, Bytes{4}), StatusCode::kNotFound);  // not the uploader
  CW_RL_EXPECT_CODE(store_->AppendAttachment(id, Key(1), 5, Bytes{5}), StatusCode::kInvalidArgument);  // gap
  EXPECT_EQ(store_->AppendAttachment(id, Key(1), 0, Bytes{0, 1, 2, 3}).value(), 4u);  // retransmission
  CW_RL_EXPECT_CODE(store_->AppendAttachment(id, Key(1), 4, Bytes(7, 1)), StatusCode::kInvalidArgument);  // past size
  EXPECT_EQ(store_->AppendAttachment(id, Key(1), 4, Bytes{4, 5, 6}).value(), 7u);
  EXPECT_EQ(store_->AppendAttachment(id, Key(1), 7, Bytes{7, 8, 9}).value(), 10u);
  auto all = store_->ReadAttachment(id, 0, 100);
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(all->total_size, 10u);
  EXPECT_EQ(all->data, (Bytes{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  auto mid = store_->ReadAttachment(id, 3, 5);  // spans three chunks
  EXPECT_EQ(mid->data, (Bytes{3, 4, 5, 6, 7}));
  EXPECT_TRUE(store_->ReadAttachment(id, 10, 5)->data.empty());
  CW_RL_EXPECT_CODE(store_->ReadAttachment(id, 11, 5), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Stats()->attachment_bytes, 10u);
}

INSTANTIATE_TEST_SUITE_P(Stores, MailboxStoreTest, ::testing::Values(Kind::kInMemory, Kind::kRocksDb),
                         [](const auto& info) { return info.param == Kind::kInMemory ? "InMemory" : "RocksDb"; });

}  // namespace
}  // namespace cw::relay
