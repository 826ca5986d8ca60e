#include "core/compliance/erasure.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "tests/compliance/compliance_fixture.h"

namespace cw::compliance {
namespace {

using testing::SignerFromByte;

class ErasureTest : public ::testing::Test {
 protected:
  FakeClock clock_;
  SeededRandom random_{42};
  std::unique_ptr<Ed25519Signer> device_ = SignerFromByte(9);
  StandardVerifier verifier_;
};

TEST_F(ErasureTest, ASignedReceiptNamesTheConversationOnlyToWhoeverKnowsIt) {
  auto r = MakeErasureReceipt("dm:patient.bob", ErasureReason::kPatientRequest, clock_, random_, *device_);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->erased_at_ms, clock_.NowMillis());
  EXPECT_TRUE(VerifyErasureReceipt(*r, device_->public_key(), verifier_).ok());
  EXPECT_TRUE(ErasureNames(*r, "dm:patient.bob"));
  EXPECT_FALSE(ErasureNames(*r, "dm:patient.carol"));
  auto bytes = EncodeErasureReceipt(*r);
  ASSERT_TRUE(bytes.has_value());
  const std::string id = "patient.bob";
  EXPECT_EQ(std::search(bytes->begin(), bytes->end(), id.begin(), id.end()), bytes->end());
  auto back = DecodeErasureReceipt(*bytes);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(*back, *r);
  // Two erasures of one conversation are unlinkable by their hashes (salted).
  auto again =
      MakeErasureReceipt("dm:patient.bob", ErasureReason::kPatientRequest, clock_, random_, *device_);
  EXPECT_NE(again->conversation_hash, r->conversation_hash);
}

TEST_F(ErasureTest, ATamperedOrForeignErasureReceiptIsRejected) {
  auto r = MakeErasureReceipt("dm:patient.bob", ErasureReason::kDisappearingTimer, clock_, random_, *device_);
  const Bytes good = *EncodeErasureReceipt(*r);
  for (size_t i = 0; i < good.size(); ++i) {
    Bytes bad = good;
    bad[i] ^= 0x01;
    auto d = DecodeErasureReceipt(bad);
    if (d.has_value()) {
      EXPECT_FALSE(VerifyErasureReceipt(*d, device_->public_key(), verifier_).ok()) << i;
    }
  }
  auto mallory = SignerFromByte(7);
  EXPECT_EQ(VerifyErasureReceipt(*r, mallory->public_key(), verifier_).code(), StatusCode::kBadSignature);
  ErasureReceipt later = *r;
  later.erased_at_ms += 1;
  EXPECT_EQ(VerifyErasureReceipt(later, device_->public_key(), verifier_).code(), StatusCode::kBadSignature);
}

TEST_F(ErasureTest, AnErasureIsRecordedInTheAuditChain) {
  InMemoryAuditSink sink;
  AuditLogOptions o;
  o.chain_id = "device:abc:1";
  o.clock = &clock_;
  o.signer = device_.get();
  auto log = AuditLog::Open(&sink, o);
  ASSERT_TRUE(log.has_value());
  auto r = MakeErasureReceipt("dm:patient.bob", ErasureReason::kPatientRequest, clock_, random_, *device_);
  auto entry = RecordErasure(**log, *r);
  ASSERT_TRUE(entry.has_value()) << entry.error().ToString();
  EXPECT_EQ(entry->type, AuditEventType::kErasure);
  EXPECT_EQ(entry->subject, ToHex(r->conversation_hash));
  EXPECT_EQ(entry->ref, r->erasure_id);
  const Digest d = ErasureDigest(*r);
  EXPECT_EQ(entry->digest, Bytes(d.begin(), d.end()));
  ASSERT_TRUE((*log)->Checkpoint().has_value());
  EXPECT_TRUE(
      VerifyChainRecords(o.chain_id, sink.entries(), sink.checkpoints(), device_->public_key(), verifier_)
          .has_value());
}

TEST_F(ErasureTest, TheRetentionFloorStretchesShortTimersAndFlagsTheConflict) {
  const int64_t day = 24LL * 3600 * 1000;
  RetentionPolicy policy{30 * day};
  RetentionDecision d = ApplyRetentionFloor(policy, 1000, day);
  EXPECT_TRUE(d.conflict);
  EXPECT_EQ(d.expires_at_ms, 1000 + 30 * day);
  EXPECT_EQ(d.extended_by_ms, 29 * day);
  d = ApplyRetentionFloor(policy, 1000, 60 * day);
  EXPECT_FALSE(d.conflict);
  EXPECT_EQ(d.expires_at_ms, 1000 + 60 * day);
  d = ApplyRetentionFloor(policy, 1000, 0);
  EXPECT_FALSE(d.conflict);
  EXPECT_EQ(d.expires_at_ms, 0);
  d = ApplyRetentionFloor(RetentionPolicy{}, 1000, day);
  EXPECT_FALSE(d.conflict);
  EXPECT_EQ(d.expires_at_ms, 1000 + day);
}

}  // namespace
}  // namespace cw::compliance
