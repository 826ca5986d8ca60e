#include <gtest/gtest.h>

#include "core/compliance/export_bundle.h"
#include "core/compliance/ledger.h"
#include "tests/compliance/compliance_fixture.h"

namespace cw::compliance {
namespace {

using testing::Parties;
using testing::SignerFromByte;

constexpr char kChain[] = "device:clinician:1";

class ExportBundleTest : public ::testing::Test {
 protected:
  // The clinician's device exports: its receipts, a withdrawal, its audit chain and an erasure.
  ExportContents Contents(Signer& device) {
    ExportContents c;
    c.created_at_ms = clock_.NowMillis();
    c.exporter = "dr.alice";
    c.transcript_json =
        ToBytes(R"({"format":"cipherward-transcript-export","version":1,"conversations":[]})");
    SignedConsentReceipt r = p_.Signed();
    c.receipts.push_back(r);
    c.withdrawals.push_back(*Withdraw(r, {"marketing"}, clock_, *p_.patient));
    AuditLogOptions o;
    o.chain_id = kChain;
    o.clock = &clock_;
    o.signer = &device;
    o.checkpoint_interval = 3;
    auto log = AuditLog::Open(&sink_, o);
    EXPECT_TRUE(log.has_value());
    AuditEvent given{AuditEventType::kConsentGiven, r.receipt.principal_id, r.receipt.receipt_id, 0, {}};
    EXPECT_TRUE((*log)->Append(given).has_value());
    for (int i = 0; i < 4; ++i) {
      EXPECT_TRUE((*log)
                      ->Append({AuditEventType::kMessageSent, "conv1", "msg-" + std::to_string(i), 0, {}})
                      .has_value());
    }
    auto erasure =
        MakeErasureReceipt("dm:patient.bob", ErasureReason::kPatientRequest, clock_, random_, device);
    EXPECT_TRUE(RecordErasure(**log, *erasure).has_value());
    EXPECT_TRUE((*log)->Checkpoint().has_value());
    c.erasures.push_back(*erasure);
    c.audit_chain_id = kChain;
    for (const auto& b : sink_.entries()) c.audit_entries.push_back(*DecodeAuditEntry(b));
    for (const auto& b : sink_.checkpoints()) c.checkpoints.push_back(*DecodeCheckpoint(b));
    return c;
  }

  Parties p_;
  FakeClock clock_;
  SeededRandom random_{7};
  InMemoryAuditSink sink_;
};

TEST_F(ExportBundleTest, AnExportVerifiesOfflineWithPublicKeysOnly) {
  ExportContents c = Contents(*p_.clinician);
  auto bytes = BuildExport(c, *p_.clinician, p_.verifier);
  ASSERT_TRUE(bytes.has_value()) << bytes.error().ToString();
  // The verifier holds nothing but public keys.
  StandardVerifier offline;
  ExportTrust trust{p_.clinician->public_key(), {}};
  auto v = VerifyExport(*bytes, trust, offline);
  ASSERT_TRUE(v.has_value()) << v.error().ToString();
  EXPECT_EQ(v->contents.exporter, "dr.alice");
  EXPECT_EQ(v->contents.transcript_json, c.transcript_json);
  ASSERT_EQ(v->contents.receipts.size(), 1u);
  EXPECT_EQ(v->contents.receipts[0].receipt, c.receipts[0].receipt);
  EXPECT_EQ(v->contents.withdrawals.size(), 1u);
  EXPECT_EQ(v->contents.audit_entries, c.audit_entries);
  EXPECT_EQ(v->contents.checkpoints, c.checkpoints);
  EXPECT_EQ(v->contents.erasures, c.erasures);
  EXPECT_EQ(v->chain.entries, 6u);
  EXPECT_EQ(v->chain.unanchored_tail, 0u);
  // With the party keys listed, both parties must be among them.
  trust.party_keys = {p_.patient->public_key(), p_.clinician->public_key()};
  EXPECT_TRUE(VerifyExport(*bytes, trust, offline).has_value());
  trust.party_keys = {p_.clinician->public_key()};
  EXPECT_EQ(VerifyExport(*bytes, trust, offline).error().code(), StatusCode::kBadSignature);
}

TEST_F(ExportBundleTest, ATamperedExportIsRejected) {
  auto bytes = BuildExport(Contents(*p_.clinician), *p_.clinician, p_.verifier);
  ASSERT_TRUE(bytes.has_value());
  const ExportTrust trust{p_.clinician->public_key(), {}};
  for (size_t i = 0; i < bytes->size(); ++i) {
    Bytes bad = *bytes;
    bad[i] ^= 0x01;
    EXPECT_FALSE(VerifyExport(bad, trust, p_.verifier).has_value()) << "flip at " << i;
  }
  for (size_t n : {size_t{0}, size_t{1}, bytes->size() / 2, bytes->size() - 1}) {
    EXPECT_EQ(VerifyExport(ByteView(bytes->data(), n), trust, p_.verifier).error().code(),
              StatusCode::kMalformed);
  }
  Bytes longer = *bytes;
  longer.push_back(0);
  EXPECT_EQ(VerifyExport(longer, trust, p_.verifier).error().code(), StatusCode::kMalformed);
  // Signed by someone else, or checked against another exporter's key.
  auto mallory = SignerFromByte(7);
  EXPECT_EQ(VerifyExport(*bytes, ExportTrust{mallory->public_key(), {}}, p_.verifier).error().code(),
            StatusCode::kBadSignature);
}

TEST_F(ExportBundleTest, AnExportWithATamperedChainOrReceiptCannotBeRebuiltByAnyoneElse) {
  // Someone without the device key edits the audit chain and re-signs the bundle with their own key: the
  // verifier, who trusts only the device key, refuses; and even under their key the checkpoints fail.
  ExportContents c = Contents(*p_.clinician);
  c.audit_entries.erase(c.audit_entries.begin() + 2);
  auto mallory = SignerFromByte(7);
  auto rebuilt = BuildExport(c, *mallory, p_.verifier);
  EXPECT_FALSE(rebuilt.has_value());
  // BuildExport refuses what would not verify: a deleted entry, an unanchored tail, a transcript that is not
  // JSON, an edited receipt.
  ExportContents d = Contents(*p_.clinician);
  EXPECT_EQ(BuildExport(c, *p_.clinician, p_.verifier).error().code(), StatusCode::kInvalidArgument);
  ExportContents tail = d;
  AuditEntry extra = tail.audit_entries.back();
  extra.sequence += 1;
  extra.prev_hash = AuditEntryHash(tail.audit_entries.back());
  tail.audit_entries.push_back(extra);
  EXPECT_EQ(BuildExport(tail, *p_.clinician, p_.verifier).error().code(), StatusCode::kInvalidArgument);
  ExportContents not_json = d;
  not_json.transcript_json = ToBytes("{\"unterminated\": ");
  EXPECT_EQ(BuildExport(not_json, *p_.clinician, p_.verifier).error().code(), StatusCode::kInvalidArgument);
  ExportContents edited = d;
  edited.receipts[0].receipt.jurisdiction = "US-NY";
  EXPECT_EQ(BuildExport(edited, *p_.clinician, p_.verifier).error().code(), StatusCode::kInvalidArgument);
  ExportContents orphan = d;
  orphan.receipts.clear();
  EXPECT_EQ(BuildExport(orphan, *p_.clinician, p_.verifier).error().code(), StatusCode::kInvalidArgument);
  ExportContents unrecorded = d;
  unrecorded.erasures.push_back(
      *MakeErasureReceipt("dm:x", ErasureReason::kAccountClosed, clock_, random_, *p_.clinician));
  EXPECT_EQ(BuildExport(unrecorded, *p_.clinician, p_.verifier).error().code(), StatusCode::kInvalidArgument);
}

TEST_F(ExportBundleTest, IdentityKeySignedExportsVerifyWithTheIdentityKeyAlone) {
  // Design (a): the device signs checkpoints and the export with its Signal identity key (XEdDSA).
  testing::XEdDSATestSigner identity;
  testing::XEdDSATestSigner patient;
  SessionBinding session{patient.public_key().key, identity.public_key().key, std::string(60, '5')};
  ConsentReceipt r = testing::MakeReceipt(session, patient.public_key(), identity.public_key());
  auto s = SignReceipt(r, patient);
  ASSERT_TRUE(CountersignReceipt(&*s, session, identity, p_.verifier).ok());
  ExportContents c;
  c.created_at_ms = clock_.NowMillis();
  c.exporter = "dr.alice";
  c.transcript_json = ToBytes("[]");
  c.receipts.push_back(*s);
  c.audit_chain_id = kChain;
  AuditLogOptions o;
  o.chain_id = kChain;
  o.clock = &clock_;
  o.signer = &identity;
  auto log = AuditLog::Open(&sink_, o);
  ASSERT_TRUE(log.has_value());
  ASSERT_TRUE(
      (*log)->Append({AuditEventType::kConsentGiven, r.principal_id, r.receipt_id, 0, {}}).has_value());
  ASSERT_TRUE((*log)->Checkpoint().has_value());
  for (const auto& b : sink_.entries()) c.audit_entries.push_back(*DecodeAuditEntry(b));
  for (const auto& b : sink_.checkpoints()) c.checkpoints.push_back(*DecodeCheckpoint(b));
  auto bytes = BuildExport(c, identity, p_.verifier);
  ASSERT_TRUE(bytes.has_value()) << bytes.error().ToString();
  auto v = VerifyExport(
      *bytes, ExportTrust{identity.public_key(), {identity.public_key(), patient.public_key()}}, p_.verifier);
  ASSERT_TRUE(v.has_value()) << v.error().ToString();
  Bytes bad = *bytes;
  bad[bad.size() / 2] ^= 0x20;
  EXPECT_FALSE(VerifyExport(bad, ExportTrust{identity.public_key(), {}}, p_.verifier).has_value());
}

}  // namespace
}  // namespace cw::compliance
