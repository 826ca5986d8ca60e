// Transcripts on a SealedStore: staging into the engine's batch, paging, status and outbox, dedup,
// disappearing messages, and conversation keys.
#include "storage/transcript.h"

#include <gtest/gtest.h>

#include <algorithm>

#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/session/store.h"
#include "storage/transcript_records.h"
#include "tests/storage/transcript_test_fixture.h"

namespace cw::storage {
namespace {

using session::Received;
using session::Table;
using session::WriteBatch;

using testing::Incoming;
using testing::N;
using testing::Refs;
using testing::Text;
using testing::Texts;

class TranscriptTest : public testing::TranscriptFixture {
 protected:
  std::vector<std::string> Bodies(const Result<std::vector<TranscriptMessage>>& r) {
    std::vector<std::string> out;
    if (!r.has_value()) {
      ADD_FAILURE() << r.error().ToString();
      return out;
    }
    for (const auto& m : *r) out.push_back(Text(m.body));
    return out;
  }
};

const std::string kBob = Transcripts::DirectConversationId("patient.bob");

TEST_F(TranscriptTest, StagedIncomingMessageIsStoredWithEveryField) {
  IncomingDetails d;
  d.sent_at_ms = clock_.NowMillis() - 5000;
  d.attachments = Refs({"att:1234;key=abcd", "att:5678"});
  const int64_t received_at = clock_.NowMillis();
  const uint64_t seq = Receive("patient.bob", "my chest hurts", "relay-1", d);
  EXPECT_EQ(seq, 1u);

  ReopenAll();
  auto m = t_->GetMessage(kBob, seq);
  ASSERT_TRUE(m.has_value()) << m.error().ToString();
  EXPECT_EQ(Text(m->body), "my chest hurts");
  EXPECT_EQ(m->conversation_id, kBob);
  EXPECT_EQ(m->direction, Direction::kIncoming);
  EXPECT_EQ(m->sender, "patient.bob");
  EXPECT_EQ(m->sender_device, 2u);
  EXPECT_EQ(m->sent_at_ms, d.sent_at_ms);
  EXPECT_EQ(m->received_at_ms, received_at);
  EXPECT_EQ(Texts(m->attachments), Texts(d.attachments));
  EXPECT_EQ(m->status, MessageStatus::kDelivered);
  EXPECT_EQ(m->expires_at_ms, 0);
  EXPECT_NE(m->message_id, MessageId{});
  auto dup = t_->IsDuplicate("relay-1");
  ASSERT_TRUE(dup.has_value());
  EXPECT_TRUE(*dup);
  auto fresh = t_->IsDuplicate("relay-2");
  ASSERT_TRUE(fresh.has_value());
  EXPECT_FALSE(*fresh);
}

TEST_F(TranscriptTest, MessageIdsAreRandomAndDistinct) {
  Receive("patient.bob", "a", "r1");
  Receive("patient.bob", "b", "r2");
  auto a = t_->GetMessage(kBob, 1);
  auto b = t_->GetMessage(kBob, 2);
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_NE(a->message_id, b->message_id);
}

TEST_F(TranscriptTest, NothingIsWrittenUntilTheBatchCommits) {
  WriteBatch b;
  CW_ST_ASSERT_OK(t_->StageIncoming(Incoming("patient.bob", "x"), "relay-1", &b));
  EXPECT_FALSE(b.empty());
  // The engine dropped the batch (its decrypt failed after the hook): no row, no dedup key, no conversation.
  auto dup = t_->IsDuplicate("relay-1");
  ASSERT_TRUE(dup.has_value());
  EXPECT_FALSE(*dup);
  auto conv = t_->GetConversation(kBob);
  ASSERT_TRUE(conv.has_value());
  EXPECT_FALSE(conv->has_value());
  EXPECT_TRUE(List(Table::kTranscript, "").empty());
}

TEST_F(TranscriptTest, ARepeatedRelayIdIsRefusedAndAddsNoRow) {
  Receive("patient.bob", "once", "relay-7");
  WriteBatch b;
  CW_ST_EXPECT_CODE(t_->StageIncoming(Incoming("patient.bob", "once"), "relay-7", &b),
                    StatusCode::kDuplicate);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(Bodies(t_->All(kBob)), std::vector<std::string>{"once"});
}

TEST_F(TranscriptTest, ControlMessagesGetADedupKeyButNoRow) {
  Received r;
  r.kind = Received::Kind::kSenderKey;
  r.sender = session::Address{"nurse.carol", 1};
  r.group_id = "ward-7";
  WriteBatch b;
  CW_ST_ASSERT_OK(t_->StageIncoming(r, "relay-sk", &b));
  CW_ST_ASSERT_OK(store_->Commit(std::move(b)));
  auto dup = t_->IsDuplicate("relay-sk");
  ASSERT_TRUE(dup.has_value());
  EXPECT_TRUE(*dup);
  EXPECT_TRUE(List(Table::kTranscript, "").empty());
}

TEST_F(TranscriptTest, GroupMessagesGoToTheGroupConversation) {
  Received r;
  r.kind = Received::Kind::kGroupMessage;
  r.sender = session::Address{"nurse.carol", 1};
  r.group_id = "ward-7";
  r.body = SecretBytes(AsBytes("rounds at 9"));
  WriteBatch b;
  CW_ST_ASSERT_OK(t_->StageIncoming(r, "relay-g", &b));
  CW_ST_ASSERT_OK(store_->Commit(std::move(b)));
  auto all = t_->All(Transcripts::GroupConversationId("ward-7"));
  ASSERT_TRUE(all.has_value());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].sender, "nurse.carol");
}

TEST_F(TranscriptTest, PagingLatestAndBefore) {
  for (int i = 1; i <= 25; ++i) Receive("patient.bob", N("m", i), N("r", i));
  // Sequences cross a byte boundary of BE64 ordering only far later; 25 rows keep order by sequence.
  EXPECT_EQ(Bodies(t_->Latest(kBob, 3)), (std::vector<std::string>{"m23", "m24", "m25"}));
  EXPECT_EQ(Bodies(t_->Before(kBob, 23, 3)), (std::vector<std::string>{"m20", "m21", "m22"}));
  EXPECT_EQ(Bodies(t_->Before(kBob, 3, 10)), (std::vector<std::string>{"m1", "m2"}));
  EXPECT_TRUE(Bodies(t_->Before(kBob, 1, 10)).empty());
  EXPECT_EQ(Bodies(t_->Latest(kBob, 100)).size(), 25u);
  EXPECT_TRUE(Bodies(t_->Latest(Transcripts::DirectConversationId("nobody"), 5)).empty());
}

TEST_F(TranscriptTest, SequencesContinueAfterReopenAndOrderSurvivesByteBoundaries) {
  for (int i = 1; i <= 3; ++i) Receive("patient.bob", N("m", i), N("r", i));
  ReopenAll();
  EXPECT_EQ(Receive("patient.bob", "m4", "r4"), 4u);
  // 255 -> 256 changes the second-to-last byte of the key: byte order must still be sequence order.
  for (int i = 5; i <= 300; ++i) Receive("patient.bob", N("m", i), N("r", i));
  auto page = t_->Before(kBob, 258, 4);
  EXPECT_EQ(Bodies(page), (std::vector<std::string>{"m254", "m255", "m256", "m257"}));
}

TEST_F(TranscriptTest, OutgoingIsQueuedWithAnOutboxEntryUntilSent) {
  const uint64_t seq = Send(kBob, "take 5 mg at night");
  auto m = t_->GetMessage(kBob, seq);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->direction, Direction::kOutgoing);
  EXPECT_EQ(m->sender, "dr.alice");
  EXPECT_EQ(m->status, MessageStatus::kQueued);
  EXPECT_EQ(m->sent_at_ms, clock_.NowMillis());
  auto outbox = t_->PendingOutbox();
  ASSERT_TRUE(outbox.has_value());
  ASSERT_EQ(outbox->size(), 1u);
  EXPECT_EQ((*outbox)[0].conversation_id, kBob);
  EXPECT_EQ((*outbox)[0].sequence, seq);
  EXPECT_EQ((*outbox)[0].message.body, ToBytes("ciphertext of take 5 mg at night"));
  ASSERT_EQ((*outbox)[0].recipients.size(), 1u);
  EXPECT_EQ((*outbox)[0].recipients[0].name, "patient.bob");

  CW_ST_ASSERT_OK(t_->MarkSent(kBob, seq));
  auto after = t_->PendingOutbox();
  ASSERT_TRUE(after.has_value());
  EXPECT_TRUE(after->empty());
  auto sent = t_->GetMessage(kBob, seq);
  ASSERT_TRUE(sent.has_value());
  EXPECT_EQ(sent->status, MessageStatus::kSent);
  CW_ST_ASSERT_OK(t_->SetStatus(kBob, seq, MessageStatus::kRead));
  auto read = t_->GetMessage(kBob, seq);
  ASSERT_TRUE(read.has_value());
  EXPECT_EQ(read->status, MessageStatus::kRead);
  EXPECT_EQ(Text(read->body), "take 5 mg at night");
  CW_ST_EXPECT_CODE(t_->SetStatus(kBob, 99, MessageStatus::kRead), StatusCode::kNotFound);
}

// The outbox in key order through everything that adds or removes entries: sends in two conversations, a
// staged batch that is dropped, entries sent, entries left by an earlier run (the list survives a reopen),
// and a deleted conversation.
TEST_F(TranscriptTest, PendingOutboxFollowsEverySendAndRemoval) {
  auto pending = [&] {
    std::vector<std::string> out;
    auto outbox = t_->PendingOutbox();
    EXPECT_TRUE(outbox.has_value()) << outbox.error().ToString();
    if (!outbox) return out;
    for (const auto& e : *outbox) out.push_back(e.conversation_id + "#" + std::to_string(e.sequence));
    return out;
  };
  const std::string carol = Transcripts::DirectConversationId("patient.carol");
  EXPECT_EQ(pending(), std::vector<std::string>{});
  const uint64_t b1 = Send(kBob, "one");
  const uint64_t c1 = Send(carol, "for carol");
  const uint64_t b2 = Send(kBob, "two");
  {
    session::WriteBatch dropped;
    session::Ciphertext ct;
    ct.body = ToBytes("never committed");
    CW_ST_ASSERT_OK(t_->StageOutgoing(kBob, AsBytes("dropped"), {}, {session::Address{"patient.bob", 1}}, ct,
                                      &dropped));
  }
  const std::vector<std::string> all{kBob + "#" + std::to_string(b1), kBob + "#" + std::to_string(b2),
                                     carol + "#" + std::to_string(c1)};
  std::vector<std::string> sorted = all;
  std::sort(sorted.begin(), sorted.end());  // key order: conversation id, then sequence
  EXPECT_EQ(pending(), sorted);

  CW_ST_ASSERT_OK(t_->MarkSent(kBob, b1));
  sorted.erase(std::find(sorted.begin(), sorted.end(), kBob + "#" + std::to_string(b1)));
  EXPECT_EQ(pending(), sorted);

  ReopenAll();  // a new run lists what the last one left
  EXPECT_EQ(pending(), sorted);
  const uint64_t b3 = Send(kBob, "three");
  sorted.push_back(kBob + "#" + std::to_string(b3));
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(pending(), sorted);

  CW_ST_ASSERT_OK(t_->DeleteConversation(kBob));
  EXPECT_EQ(pending(), std::vector<std::string>{carol + "#" + std::to_string(c1)});
  CW_ST_ASSERT_OK(t_->MarkSent(carol, c1));
  EXPECT_EQ(pending(), std::vector<std::string>{});
}

// The recipient's receipt can overtake the relay's answer to the deposit (the relay pushes before it
// syncs; a direct link acks on its own): the late MarkSent drops the outbox entry but keeps the status.
TEST_F(TranscriptTest, MarkSentAfterAReceiptKeepsTheReceiptsStatus) {
  for (MessageStatus receipted : {MessageStatus::kDelivered, MessageStatus::kRead}) {
    const uint64_t seq = Send(kBob, "see you on monday");
    CW_ST_ASSERT_OK(t_->SetStatus(kBob, seq, receipted));
    CW_ST_ASSERT_OK(t_->MarkSent(kBob, seq));
    auto m = t_->GetMessage(kBob, seq);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->status, receipted);
    auto outbox = t_->PendingOutbox();
    ASSERT_TRUE(outbox.has_value());
    EXPECT_TRUE(outbox->empty());
  }
}

TEST_F(TranscriptTest, DisappearingTimerHidesThenSweepsExpiredMessages) {
  Receive("patient.bob", "kept", "r0");
  CW_ST_ASSERT_OK(t_->SetDisappearingTimer(kBob, 60'000));
  Receive("patient.bob", "vanishes", "r1");
  clock_.Advance(30'000);
  Send(kBob, "vanishes too");
  auto info = t_->GetConversation(kBob);
  ASSERT_TRUE(info.has_value() && info->has_value());
  EXPECT_EQ((*info)->disappearing_ms, 60'000);

  clock_.Advance(30'000);  // the first expiring message is due, the second is not
  EXPECT_EQ(Bodies(t_->All(kBob)), (std::vector<std::string>{"kept", "vanishes too"}));
  CW_ST_EXPECT_CODE(t_->GetMessage(kBob, 2), StatusCode::kNotFound);
  auto swept = t_->SweepExpired();
  ASSERT_TRUE(swept.has_value()) << swept.error().ToString();
  EXPECT_EQ(swept->messages, 1u);
  EXPECT_EQ(List(Table::kTranscript, kBob + std::string(1, '\0')).size(), 2u);

  // A new process has no memory of due times: it still finds and sweeps the last one.
  ReopenAll();
  clock_.Advance(30'000);
  auto swept2 = t_->SweepExpired();
  ASSERT_TRUE(swept2.has_value());
  EXPECT_EQ(swept2->messages, 1u);
  EXPECT_EQ(Bodies(t_->All(kBob)), std::vector<std::string>{"kept"});
  auto outbox = t_->PendingOutbox();
  ASSERT_TRUE(outbox.has_value());
  EXPECT_TRUE(outbox->empty());  // the expired outgoing message's outbox entry went with it
}

// When the newest messages disappear, their numbers stay taken: the next message, in this process or the
// next, is numbered after them (else a late receipt for a message that disappeared would mark the new one).
// Deleting the conversation starts it again at 1.
TEST_F(TranscriptTest, SequencesOfMessagesThatDisappearedAreNotReused) {
  Receive("patient.bob", "kept", "r0");
  CW_ST_ASSERT_OK(t_->SetDisappearingTimer(kBob, 1'000));
  Receive("patient.bob", "gone 2", "r1");
  Send(kBob, "gone 3");
  clock_.Advance(1'000);
  ASSERT_EQ(t_->SweepExpired()->messages, 2u);
  ReopenAll();
  EXPECT_EQ(Receive("patient.bob", "after", "r4"), 4u);
  // Swept again (the new one too), and then a fresh process: still after every number handed out.
  clock_.Advance(1'000);
  ASSERT_EQ(t_->SweepExpired()->messages, 1u);
  ReopenAll();
  EXPECT_EQ(Receive("patient.bob", "later", "r5"), 5u);
  CW_ST_ASSERT_OK(t_->DeleteConversation(kBob));
  ReopenAll();
  EXPECT_EQ(Receive("patient.bob", "new start", "r6"), 1u);
}

// Crypto-shredding must not depend on the purge finishing the first time: one that fails (or that a killed
// app never finished, which leaves the store the same) is run again at the next open, and only until it
// succeeds.
TEST_F(TranscriptTest, AnUnfinishedPurgeIsRunAgainAtTheNextOpenUntilItSucceeds) {
  Receive("patient.bob", "hello", "relay-1");
  fail_purges_ = Status(StatusCode::kUnavailable, "compact: IO error");
  Status purged;
  CW_ST_ASSERT_OK(t_->DeleteConversation(kBob, {}, &purged));
  EXPECT_EQ(purged.code(), StatusCode::kUnavailable);
  EXPECT_EQ(t_->GetConversation(kBob).value(), std::nullopt);  // deleted all the same

  ReopenAll();
  purges_ = 0;
  CW_ST_EXPECT_CODE(t_->FinishPendingPurge(), StatusCode::kUnavailable);  // still failing: still due
  EXPECT_EQ(purges_, 1);
  fail_purges_ = Status::Ok();
  ReopenAll();
  CW_ST_ASSERT_OK(t_->FinishPendingPurge());
  EXPECT_EQ(purges_, 2);
  ReopenAll();
  CW_ST_ASSERT_OK(t_->FinishPendingPurge());
  EXPECT_EQ(purges_, 2);  // done: nothing due any more
}

TEST_F(TranscriptTest, ADeletionWhosePurgeSucceededLeavesNoneDue) {
  Receive("patient.bob", "hello", "relay-1");
  CW_ST_ASSERT_OK(t_->DeleteConversation(kBob));
  EXPECT_EQ(purges_, 1);
  ReopenAll();
  CW_ST_ASSERT_OK(t_->FinishPendingPurge());
  EXPECT_EQ(purges_, 1);
}

TEST_F(TranscriptTest, DedupKeysLastTheRelayTtlThenAreSwept) {
  Receive("patient.bob", "hello", "relay-1");
  clock_.Advance(kDefaultDedupTtlMs - 1);
  auto still = t_->IsDuplicate("relay-1");
  ASSERT_TRUE(still.has_value());
  EXPECT_TRUE(*still);
  auto none = t_->SweepExpired();
  ASSERT_TRUE(none.has_value());
  EXPECT_EQ(none->dedup_keys, 0u);
  clock_.Advance(1);
  auto swept = t_->SweepExpired();
  ASSERT_TRUE(swept.has_value());
  EXPECT_EQ(swept->dedup_keys, 1u);
  EXPECT_TRUE(List(Table::kInboundDedup, "").empty());
  EXPECT_EQ(Bodies(t_->All(kBob)), std::vector<std::string>{"hello"});  // the message itself stays
}

TEST_F(TranscriptTest, EachConversationHasItsOwnKeyAndRowsDoNotOpenElsewhere) {
  Receive("patient.bob", "bob's", "r1");
  Receive("patient.carol", "carol's", "r2");
  const std::string kCarol = Transcripts::DirectConversationId("patient.carol");
  auto kb = store_->Get(Table::kConversation, kBob);
  auto kc = store_->Get(Table::kConversation, kCarol);
  ASSERT_TRUE(kb.has_value() && kb->has_value() && kc.has_value() && kc->has_value());
  auto cb = internal::DecodeConversation((*kb)->reveal());
  auto cc = internal::DecodeConversation((*kc)->reveal());
  ASSERT_TRUE(cb.has_value() && cc.has_value());
  EXPECT_EQ(cb->key.size(), kConversationKeySize);
  EXPECT_FALSE(cb->key.Equals(cc->key));

  // Bob's row copied (as a whole plain value, through the store) to carol's conversation at sequence 1:
  // its blob is sealed under bob's key and bob's conversation id, so it fails to open.
  auto row = store_->Get(Table::kTranscript, internal::RowKey(kBob, 1));
  ASSERT_TRUE(row.has_value() && row->has_value());
  CW_ST_ASSERT_OK(Commit(session::Write{Table::kTranscript, internal::RowKey(kCarol, 1), (*row)->Clone()}));
  CW_ST_EXPECT_CODE(t_->GetMessage(kCarol, 1), StatusCode::kTampered);
  // ... and moved to another sequence of the same conversation.
  CW_ST_ASSERT_OK(Commit(session::Write{Table::kTranscript, internal::RowKey(kBob, 2), (*row)->Clone()}));
  CW_ST_EXPECT_CODE(t_->GetMessage(kBob, 2), StatusCode::kTampered);
  auto ok = t_->GetMessage(kBob, 1);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(Text(ok->body), "bob's");
}

TEST_F(TranscriptTest, DeleteConversationRemovesKeyRowsAndOutboxOnly) {
  Receive("patient.bob", "b1", "r1");
  Send(kBob, "b2");
  Receive("patient.carol", "c1", "r3");
  CW_ST_ASSERT_OK(t_->DeleteConversation(kBob));
  auto info = t_->GetConversation(kBob);
  ASSERT_TRUE(info.has_value());
  EXPECT_FALSE(info->has_value());
  EXPECT_TRUE(List(Table::kTranscript, kBob + std::string(1, '\0')).empty());
  auto outbox = t_->PendingOutbox();
  ASSERT_TRUE(outbox.has_value());
  EXPECT_TRUE(outbox->empty());
  EXPECT_EQ(Bodies(t_->All(Transcripts::DirectConversationId("patient.carol"))),
            std::vector<std::string>{"c1"});
  CW_ST_EXPECT_CODE(t_->DeleteConversation(kBob), StatusCode::kNotFound);
  // The relay id stays remembered: a late re-delivery must not resurrect a deleted message.
  auto dup = t_->IsDuplicate("r1");
  ASSERT_TRUE(dup.has_value());
  EXPECT_TRUE(*dup);
  // A new conversation with bob starts over, under a new key.
  EXPECT_EQ(Receive("patient.bob", "again", "r4"), 1u);
  EXPECT_EQ(Bodies(t_->All(kBob)), std::vector<std::string>{"again"});
}

TEST_F(TranscriptTest, BadArgumentsAreRefused) {
  WriteBatch b;
  CW_ST_EXPECT_CODE(t_->StageIncoming(Incoming("patient.bob", "x"), "", &b), StatusCode::kInvalidArgument);
  CW_ST_EXPECT_CODE(
      t_->StageIncoming(Incoming("patient.bob", "x"), std::string(kMaxRelayMessageIdSize + 1, 'r'), &b),
      StatusCode::kInvalidArgument);
  CW_ST_EXPECT_CODE(t_->StageIncoming(Incoming("patient.bob", std::string(kMaxBodySize + 1, 'x')), "r", &b),
                    StatusCode::kInvalidArgument);
  IncomingDetails many;
  many.attachments = Refs(std::vector<std::string>(kMaxAttachments + 1, "a"));
  CW_ST_EXPECT_CODE(t_->StageIncoming(Incoming("patient.bob", "x"), "r", &b, many),
                    StatusCode::kInvalidArgument);
  CW_ST_EXPECT_CODE(t_->EnsureConversation(std::string("a\0b", 3)), StatusCode::kInvalidArgument);
  CW_ST_EXPECT_CODE(t_->EnsureConversation(""), StatusCode::kInvalidArgument);
  CW_ST_EXPECT_CODE(t_->SetDisappearingTimer(kBob, -1), StatusCode::kInvalidArgument);
}

TEST_F(TranscriptTest, BodiesAndNamesAppearNowhereOnDisk) {
  Receive("patient.bob", "UNIQUE-DIAGNOSIS-TEXT", "relay-unique-id");
  Send(kBob, "UNIQUE-REPLY-TEXT");
  CW_ST_ASSERT_OK(store_->FlushForTesting());
  CloseStore();
  for (const char* needle :
       {"UNIQUE-DIAGNOSIS-TEXT", "UNIQUE-REPLY-TEXT", "patient.bob", "relay-unique-id"}) {
    EXPECT_FALSE(testing::AnyFileContains(db_path(), needle)) << needle;
  }
  t_.reset();
  OpenStore();
}

}  // namespace
}  // namespace cw::storage
