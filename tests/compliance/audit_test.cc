#include "core/compliance/audit.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include "tests/compliance/compliance_fixture.h"

namespace cw::compliance {
namespace {

using testing::SignerFromByte;

constexpr char kChain[] = "device:abc123:1";

AuditEvent Event(AuditEventType type, std::string subject = "", std::string ref = "", uint64_t code = 0) {
  AuditEvent e;
  e.type = type;
  e.subject = std::move(subject);
  e.ref = std::move(ref);
  e.code = code;
  return e;
}

class AuditTest : public ::testing::Test {
 protected:
  // A log of `n` entries with a checkpoint every `interval`.
  void Build(int n, uint64_t interval = 4) {
    AuditLogOptions o;
    o.chain_id = kChain;
    o.clock = &clock_;
    o.signer = device_.get();
    o.verifier = &verifier_;
    o.checkpoint_interval = interval;
    auto log = AuditLog::Open(&sink_, o);
    ASSERT_TRUE(log.has_value()) << log.error().ToString();
    log_ = std::move(*log);
    for (int i = 0; i < n; ++i) {
      clock_.Advance(1000);
      const auto type = static_cast<AuditEventType>(1 + i % kMaxAuditEventType);
      ASSERT_TRUE(
          log_->Append(Event(type, "fp" + std::to_string(i), "msg-" + std::to_string(i), i)).has_value());
    }
  }
  Result<ChainVerification> Verify(const SigningPublicKey* key = nullptr) {
    return VerifyChainRecords(kChain, sink_.entries(), sink_.checkpoints(),
                              key ? *key : device_->public_key(), verifier_);
  }
  void ExpectTampered(const char* what) {
    auto v = Verify();
    ASSERT_FALSE(v.has_value()) << what;
    EXPECT_TRUE(v.error().code() == StatusCode::kTampered || v.error().code() == StatusCode::kMalformed)
        << what << ": " << v.error().ToString();
  }
  AuditEntry Entry(size_t i) { return *DecodeAuditEntry(sink_.entries()[i]); }
  Bytes Encode(const AuditEntry& e) { return *EncodeAuditEntry(e); }

  FakeClock clock_;
  std::unique_ptr<Ed25519Signer> device_ = SignerFromByte(9);
  StandardVerifier verifier_;
  InMemoryAuditSink sink_;
  std::unique_ptr<AuditLog> log_;
};

TEST_F(AuditTest, EntriesChainAndCheckpointEveryInterval) {
  Build(10, 4);
  EXPECT_EQ(log_->size(), 10u);
  EXPECT_EQ(sink_.checkpoints().size(), 2u);  // after 4 and 8
  auto v = Verify();
  ASSERT_TRUE(v.has_value()) << v.error().ToString();
  EXPECT_EQ(v->entries, 10u);
  EXPECT_EQ(v->anchored_through, 8u);
  EXPECT_EQ(v->unanchored_tail, 2u);
  EXPECT_EQ(v->head, log_->head());
  auto c = log_->Checkpoint();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(Verify()->unanchored_tail, 0u);
  for (size_t i = 0; i < 10; ++i) {
    AuditEntry e = Entry(i);
    EXPECT_EQ(e.sequence, i + 1);
    EXPECT_EQ(e.time_ms, 1'700'000'000'000 + 1000 * static_cast<int64_t>(i + 1));
  }
}

TEST_F(AuditTest, TheChainHashIsBlake2b256OfThePreviousHashAndTheCanonicalEntry) {
  Build(2);
  const AuditEntry first = Entry(0), second = Entry(1);
  EXPECT_EQ(first.prev_hash, AuditGenesis(kChain));
  uint8_t h1[32];
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  crypto_generichash_update(&st, first.prev_hash.data(), 32);
  crypto_generichash_update(&st, sink_.entries()[0].data(), sink_.entries()[0].size());
  crypto_generichash_final(&st, h1, 32);
  EXPECT_EQ(ToHex(second.prev_hash), ToHex(ByteView(h1, 32)));
  EXPECT_NE(AuditGenesis(kChain), AuditGenesis("device:other:1"));
}

TEST_F(AuditTest, EntriesHoldIdsNeverContent) {
  Build(0);
  EXPECT_EQ(log_->Append(Event(AuditEventType::kMessageSent, "conv", "take 5 mg twice daily")).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(log_->Append(Event(AuditEventType::kMessageSent, "patient bob")).error().code(),
            StatusCode::kInvalidArgument);
  AuditEvent long_digest = Event(AuditEventType::kExport);
  long_digest.digest = Bytes(33, 1);
  EXPECT_EQ(log_->Append(long_digest).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(log_->size(), 0u);
  EXPECT_TRUE(sink_.entries().empty());
}

TEST_F(AuditTest, EveryEventTypeRoundTrips) {
  Build(0, 0);
  for (uint8_t t = 1; t <= kMaxAuditEventType; ++t) {
    AuditEvent e = Event(static_cast<AuditEventType>(t), "s", "r", t);
    e.digest = Bytes(32, t);
    auto entry = log_->Append(e);
    ASSERT_TRUE(entry.has_value());
    auto back = DecodeAuditEntry(sink_.entries().back());
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, *entry);
    EXPECT_NE(AuditEventTypeName(static_cast<AuditEventType>(t)), "unknown");
  }
  Bytes bad = sink_.entries().back();
  EXPECT_TRUE(Verify().has_value());
}

TEST_F(AuditTest, AModifiedEntryIsDetectedWhereverItIs) {
  Build(8, 4);
  ASSERT_TRUE(log_->Checkpoint().has_value());  // anchor everything
  const std::vector<Bytes> good = sink_.entries();
  for (size_t i = 0; i < good.size(); ++i) {
    // Each field changed and the entry re-encoded validly (the forger can write well-formed records).
    for (int field = 0; field < 5; ++field) {
      sink_.entries() = good;
      AuditEntry e = Entry(i);
      switch (field) {
        case 0:
          e.time_ms += 1;
          break;
        case 1:
          e.type = e.type == AuditEventType::kMessageRead ? AuditEventType::kMessageSent
                                                          : AuditEventType::kMessageRead;
          break;
        case 2:
          e.subject = "someone-else";
          break;
        case 3:
          e.ref = "msg-999";
          break;
        case 4:
          e.code += 1;
          break;
      }
      sink_.entries()[i] = Encode(e);
      ExpectTampered("modified field");
    }
    // And every flipped byte.
    for (size_t b = 0; b < good[i].size(); ++b) {
      sink_.entries() = good;
      sink_.entries()[i][b] ^= 0x01;
      ExpectTampered("flipped byte");
    }
  }
}

TEST_F(AuditTest, ModificationWithTheRestOfTheChainRecomputedIsCaughtByACheckpoint) {
  Build(8, 4);  // checkpoints at 4 and 8
  AuditEntry e = Entry(2);
  e.ref = "msg-forged";
  sink_.entries()[2] = Encode(e);
  Digest h = AuditEntryHash(e);
  for (size_t i = 3; i < sink_.entries().size(); ++i) {  // the forger fixes every later prev_hash
    AuditEntry next = Entry(i);
    next.prev_hash = h;
    sink_.entries()[i] = Encode(next);
    h = AuditEntryHash(next);
  }
  auto v = Verify();
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), StatusCode::kTampered);
  EXPECT_NE(v.error().message().find("checkpoint"), std::string::npos) << v.error().message();
}

TEST_F(AuditTest, ADeletedEntryIsDetected) {
  Build(9, 4);
  ASSERT_TRUE(log_->Checkpoint().has_value());
  const std::vector<Bytes> good = sink_.entries();
  for (size_t i = 0; i < good.size(); ++i) {
    sink_.entries() = good;
    sink_.entries().erase(sink_.entries().begin() + static_cast<long>(i));
    ExpectTampered("deleted entry");
  }
}

TEST_F(AuditTest, ReorderedEntriesAreDetected) {
  Build(9, 4);
  const std::vector<Bytes> good = sink_.entries();
  for (size_t i = 0; i + 1 < good.size(); ++i) {
    sink_.entries() = good;
    std::swap(sink_.entries()[i], sink_.entries()[i + 1]);
    ExpectTampered("swapped entries");
  }
}

TEST_F(AuditTest, InsertedEntriesAreDetected) {
  Build(8, 4);
  const std::vector<Bytes> good = sink_.entries();
  // A copy of an entry inserted (a replay), and a forged entry that follows its predecessor correctly with
  // every later entry renumbered and re-chained: the checkpoint at 8 catches it.
  for (size_t i = 0; i < good.size(); ++i) {
    sink_.entries() = good;
    sink_.entries().insert(sink_.entries().begin() + static_cast<long>(i), good[i]);
    ExpectTampered("duplicated entry");
  }
  sink_.entries() = good;
  std::vector<AuditEntry> rewritten;
  for (size_t i = 0; i < 5; ++i) rewritten.push_back(Entry(i));
  AuditEntry forged = rewritten.back();
  forged.sequence = 6;
  forged.ref = "msg-inserted";
  forged.prev_hash = AuditEntryHash(rewritten.back());
  rewritten.push_back(forged);
  for (size_t i = 5; i < good.size(); ++i) {
    AuditEntry e = *DecodeAuditEntry(good[i]);
    e.sequence = i + 2;
    e.prev_hash = AuditEntryHash(rewritten.back());
    rewritten.push_back(e);
  }
  sink_.entries().clear();
  for (const auto& e : rewritten) sink_.entries().push_back(Encode(e));
  ExpectTampered("forged insertion");
}

TEST_F(AuditTest, TruncationBackToTheLastCheckpointIsDetected) {
  Build(10, 4);  // checkpoints at 4 and 8
  const std::vector<Bytes> good = sink_.entries();
  for (size_t keep = 0; keep < 8; ++keep) {
    sink_.entries().assign(good.begin(), good.begin() + static_cast<long>(keep));
    auto v = Verify();
    ASSERT_FALSE(v.has_value()) << keep;
    EXPECT_EQ(v.error().code(), StatusCode::kTampered);
    EXPECT_NE(v.error().message().find("truncated"), std::string::npos) << v.error().message();
  }
}

TEST_F(AuditTest, TruncationAfterTheLastCheckpointIsNotDetectableButTheTailIsReported) {
  // Documented limit: entries after the last checkpoint anyone holds can be cut off undetected. What the
  // verifier can say is how many entries were unanchored.
  Build(10, 4);
  sink_.entries().resize(9);
  auto v = Verify();
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(v->anchored_through, 8u);
  EXPECT_EQ(v->unanchored_tail, 1u);
  sink_.entries().resize(8);
  EXPECT_EQ(Verify()->unanchored_tail, 0u);
  // For the same reason the final entry of an unanchored tail can be edited undetected (nothing after it),
  // while an edit of an earlier tail entry is caught by its successor.
  Build(0, 4);
  for (int i = 0; i < 2; ++i)
    ASSERT_TRUE(log_->Append(Event(AuditEventType::kMessageSent, "c", "m")).has_value());
  const std::vector<Bytes> good = sink_.entries();  // 10 entries, anchored through 8
  AuditEntry last = Entry(9);
  last.ref = "msg-edited";
  sink_.entries()[9] = Encode(last);
  EXPECT_TRUE(Verify().has_value());
  sink_.entries() = good;
  AuditEntry middle = Entry(8);
  middle.ref = "msg-edited";
  sink_.entries()[8] = Encode(middle);
  ExpectTampered("edit of a tail entry with a successor");
  // Once a checkpoint covers the tail, neither goes unnoticed.
  sink_.entries() = good;
  ASSERT_TRUE(log_->Checkpoint().has_value());
  sink_.entries()[9] = Encode(last);
  ExpectTampered("edit of an anchored final entry");
}

TEST_F(AuditTest, CheckpointsMustBeTheDevicesAndForThisChain) {
  Build(8, 4);
  auto mallory = SignerFromByte(7);
  auto v = Verify(&mallory->public_key());
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), StatusCode::kBadSignature);
  EXPECT_EQ(VerifyChainRecords("device:other:1", sink_.entries(), sink_.checkpoints(), device_->public_key(),
                               verifier_)
                .error()
                .code(),
            StatusCode::kBadSignature);
  // A checkpoint with a changed head or sequence does not verify.
  const std::vector<Bytes> good = sink_.checkpoints();
  for (size_t b = 0; b < good[0].size(); ++b) {
    sink_.checkpoints() = good;
    sink_.checkpoints()[0][b] ^= 0x01;
    EXPECT_FALSE(Verify().has_value()) << "flip at " << b;
  }
  // A checkpoint the device signed for another history of the same chain (a fork) is caught.
  sink_.checkpoints() = good;
  InMemoryAuditSink other;
  AuditLogOptions o;
  o.chain_id = kChain;
  o.clock = &clock_;
  o.signer = device_.get();
  o.checkpoint_interval = 4;
  auto fork = AuditLog::Open(&other, o);
  ASSERT_TRUE(fork.has_value());
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE((*fork)->Append(Event(AuditEventType::kMessageSent, "x", "forked")).has_value());
  sink_.checkpoints().push_back(other.checkpoints()[0]);
  auto f = Verify();
  ASSERT_FALSE(f.has_value());
  EXPECT_EQ(f.error().code(), StatusCode::kTampered) << f.error().ToString();
}

TEST_F(AuditTest, PeersHoldSignedChainHeadsThatExposeTruncationOfBothEntriesAndCheckpoints) {
  Build(6, 0);  // no interval checkpoints on the device
  // The device sends its signed head to the peer inside the session.
  auto head = log_->Checkpoint();
  ASSERT_TRUE(head.has_value());
  const Bytes head_bytes = *EncodeCheckpoint(*head);
  sink_.checkpoints().clear();        // later someone deletes the device's own checkpoints ...
  sink_.entries().resize(3);          // ... and half its entries
  EXPECT_TRUE(Verify().has_value());  // with nothing anchored, the device's store alone cannot tell

  // The peer recorded the head in its own chain and kept its bytes.
  InMemoryAuditSink peer_sink;
  auto peer_signer = SignerFromByte(8);
  AuditLogOptions o;
  o.chain_id = "device:peer:1";
  o.clock = &clock_;
  o.signer = peer_signer.get();
  auto peer_log = AuditLog::Open(&peer_sink, o);
  ASSERT_TRUE(peer_log.has_value());
  auto recorded =
      RecordPeerHead(**peer_log, *DecodeCheckpoint(head_bytes), kChain, device_->public_key(), verifier_);
  ASSERT_TRUE(recorded.has_value());
  EXPECT_EQ(recorded->type, AuditEventType::kPeerChainHead);
  EXPECT_EQ(recorded->code, 6u);
  // A head that is not the device's is refused and not recorded.
  EXPECT_EQ(RecordPeerHead(**peer_log, *head, kChain, peer_signer->public_key(), verifier_).error().code(),
            StatusCode::kBadSignature);
  EXPECT_EQ((*peer_log)->size(), 1u);

  auto v = VerifyChainRecords(kChain, sink_.entries(), {head_bytes}, device_->public_key(), verifier_);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().code(), StatusCode::kTampered);
}

TEST_F(AuditTest, ReopeningContinuesTheChainAndRefusesATamperedStore) {
  Build(5, 4);
  const Digest head = log_->head();
  log_.reset();
  Build(3, 4);  // reopens over the same sink and appends three more
  EXPECT_EQ(log_->size(), 8u);
  EXPECT_EQ(Entry(5).prev_hash, head);
  EXPECT_TRUE(Verify().has_value());
  log_.reset();
  sink_.entries()[1][sink_.entries()[1].size() - 1] ^= 1;
  AuditLogOptions o;
  o.chain_id = kChain;
  o.signer = device_.get();
  EXPECT_FALSE(AuditLog::Open(&sink_, o).has_value());
}

TEST_F(AuditTest, PreparedEntriesCommitWithTheirBatchOrNotAtAll) {
  Build(0, 0);
  auto p = log_->Prepare(Event(AuditEventType::kMessageReceived, "conv1", "msg-1"));
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(log_->Prepare(Event(AuditEventType::kMessageRead)).error().code(), StatusCode::kInvalidArgument);
  log_->Abandon();  // the batch failed: nothing changed
  EXPECT_EQ(log_->size(), 0u);
  auto q = log_->Prepare(Event(AuditEventType::kMessageReceived, "conv1", "msg-1"));
  ASSERT_TRUE(q.has_value());
  ASSERT_TRUE(sink_.AppendEntry(q->entry.sequence, q->record).ok());  // stands in for the store batch
  ASSERT_TRUE(log_->Confirm(*q).ok());
  EXPECT_EQ(log_->size(), 1u);
  EXPECT_EQ(log_->Confirm(*q).code(), StatusCode::kInvalidArgument);
  // A failing sink leaves the log as it was.
  sink_.FailNextAppend();
  EXPECT_EQ(log_->Append(Event(AuditEventType::kMessageRead)).error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(log_->size(), 1u);
  EXPECT_TRUE(log_->Append(Event(AuditEventType::kMessageRead)).has_value());
  EXPECT_TRUE(Verify().has_value());
  // The sink is append-only.
  EXPECT_EQ(sink_.AppendEntry(1, Bytes{1}).code(), StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace cw::compliance
