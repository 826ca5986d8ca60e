#include <gtest/gtest.h>

#include "core/compliance/ledger.h"
#include "tests/compliance/compliance_fixture.h"

namespace cw::compliance {
namespace {

using testing::Binding;
using testing::MakeReceipt;
using testing::Parties;

constexpr int64_t kStart = 1'700'000'000'000;
constexpr int64_t kDay = 24LL * 3600 * 1000;

class ConsentLedgerTest : public ::testing::Test {
 protected:
  Parties p_;
  FakeClock clock_{kStart + 1000};
  ConsentLedger ledger_{&p_.verifier, &clock_};
  std::string patient_ = IdentityFingerprint(p_.session.patient_identity_key);
};

TEST_F(ConsentLedgerTest, GivenPurposesAreConsentedAndOthersAreNot) {
  ASSERT_TRUE(ledger_.AddReceipt(p_.Signed(), p_.Expect()).ok());
  EXPECT_TRUE(ledger_.IsConsented(patient_, "treatment"));
  EXPECT_TRUE(ledger_.IsConsented(patient_, "marketing"));
  Status s = ledger_.CheckConsent(patient_, "x-research");
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "no valid consent for purpose");
  EXPECT_FALSE(ledger_.IsConsented(IdentityFingerprint(testing::IdentityKey(0x44)), "treatment"));
  EXPECT_EQ(*ledger_.StateOf("0123456789abcdef0123456789abcdef", "billing"), ConsentState::kGiven);
}

TEST_F(ConsentLedgerTest, AWithdrawnPurposeIsRefusedAndTheRestStays) {
  SignedConsentReceipt r = p_.Signed();
  ASSERT_TRUE(ledger_.AddReceipt(r, p_.Expect()).ok());
  auto w = Withdraw(r, {"marketing"}, clock_, *p_.patient);
  ASSERT_TRUE(w.has_value());
  ASSERT_TRUE(ledger_.AddWithdrawal(*w).ok());
  EXPECT_TRUE(ledger_.AddWithdrawal(*w).ok());  // idempotent
  EXPECT_EQ(ledger_.CheckConsent(patient_, "marketing").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(*ledger_.StateOf(r.receipt.receipt_id, "marketing"), ConsentState::kWithdrawn);
  EXPECT_TRUE(ledger_.IsConsented(patient_, "treatment"));
  // Withdrawing everything is one call, as easy as giving (GDPR Art. 7(3)).
  auto all = Withdraw(r, {}, clock_, *p_.patient);
  ASSERT_TRUE(ledger_.AddWithdrawal(*all).ok());
  EXPECT_FALSE(ledger_.IsConsented(patient_, "treatment"));
  EXPECT_EQ(ledger_.Withdrawals().size(), 2u);
}

TEST_F(ConsentLedgerTest, AReceiptLapsesAtItsExpiry) {
  SignedConsentReceipt r = p_.Signed();
  ASSERT_TRUE(ledger_.AddReceipt(r, p_.Expect()).ok());
  clock_.Set(r.receipt.expires_at_ms - 1);
  EXPECT_TRUE(ledger_.IsConsented(patient_, "billing"));
  clock_.Set(r.receipt.expires_at_ms);
  EXPECT_EQ(ledger_.CheckConsent(patient_, "billing").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(*ledger_.StateOf(r.receipt.receipt_id, "billing"), ConsentState::kLapsed);
}

TEST_F(ConsentLedgerTest, AReceiptIsNotConsentBeforeItsTimestamp) {
  ASSERT_TRUE(
      ledger_.AddReceipt(p_.Signed("0123456789abcdef0123456789abcdef", kStart + 10 * kDay), p_.Expect())
          .ok());
  EXPECT_FALSE(ledger_.IsConsented(patient_, "treatment"));
  clock_.Set(kStart + 10 * kDay);
  EXPECT_TRUE(ledger_.IsConsented(patient_, "treatment"));
}

TEST_F(ConsentLedgerTest, ANewReceiptGivesConsentAgainAfterAWithdrawal) {
  SignedConsentReceipt first = p_.Signed();
  ASSERT_TRUE(ledger_.AddReceipt(first, p_.Expect()).ok());
  ASSERT_TRUE(ledger_.AddWithdrawal(*Withdraw(first, {"marketing"}, clock_, *p_.patient)).ok());
  EXPECT_FALSE(ledger_.IsConsented(patient_, "marketing"));
  ASSERT_TRUE(
      ledger_.AddReceipt(p_.Signed("fedcba9876543210fedcba9876543210", kStart + 500), p_.Expect()).ok());
  EXPECT_TRUE(ledger_.IsConsented(patient_, "marketing"));
  EXPECT_EQ(ledger_.Receipts().size(), 2u);
}

TEST_F(ConsentLedgerTest, OnlyVerifiedReceiptsAndWithdrawalsEnter) {
  SignedConsentReceipt r = p_.Signed();
  ReceiptExpectations other = p_.Expect();
  other.session = Binding(0x11, 0x22, std::string(60, '3'));
  EXPECT_EQ(ledger_.AddReceipt(r, other).code(), StatusCode::kPermissionDenied);
  EXPECT_FALSE(ledger_.IsConsented(patient_, "treatment"));
  // A withdrawal for a receipt not held yet.
  auto w = Withdraw(r, {}, clock_, *p_.patient);
  EXPECT_EQ(ledger_.AddWithdrawal(*w).code(), StatusCode::kNotFound);
  ASSERT_TRUE(ledger_.AddReceipt(r, p_.Expect()).ok());
  EXPECT_TRUE(ledger_.AddReceipt(r, p_.Expect()).ok());  // the same receipt again: idempotent
  // Another receipt under the same id.
  ConsentReceipt changed = r.receipt;
  changed.jurisdiction = "US-NY";
  EXPECT_EQ(ledger_.AddReceipt(p_.Signed(changed), p_.Expect()).code(), StatusCode::kAlreadyExists);
  // A withdrawal signed by someone else changes nothing.
  ConsentWithdrawal forged = *w;
  forged.signature[0] ^= 1;
  EXPECT_EQ(ledger_.AddWithdrawal(forged).code(), StatusCode::kBadSignature);
  EXPECT_TRUE(ledger_.IsConsented(patient_, "treatment"));
}

TEST(ConsentPolicyTest, PurposeLabels) {
  for (const char* ok : {"treatment", "scheduling", "billing", "marketing", "x-research", "x-study.12_b"}) {
    EXPECT_TRUE(IsValidPurposeLabel(ok)) << ok;
  }
  for (const char* bad : {"", "x-", "research", "Treatment", "x-Research", "x-a b", "treatment\n"}) {
    EXPECT_FALSE(IsValidPurposeLabel(bad)) << bad;
  }
  EXPECT_FALSE(IsValidPurposeLabel("x-" + std::string(65, 'a')));
}

TEST(ConsentPolicyTest, TheClinicDecidesWhichPurposesNeedConsentAndUnlistedOnesFailClosed) {
  ConsentPolicy hipaa = ConsentPolicy::HipaaDefault();
  EXPECT_FALSE(hipaa.RequiresConsent("treatment"));
  EXPECT_FALSE(hipaa.RequiresConsent("scheduling"));
  EXPECT_TRUE(hipaa.RequiresConsent("billing"));
  EXPECT_TRUE(hipaa.RequiresConsent("marketing"));
  EXPECT_TRUE(hipaa.RequiresConsent("x-research"));
  auto strict = ConsentPolicy::New({"treatment", "scheduling", "billing", "marketing"});
  ASSERT_TRUE(strict.has_value());
  EXPECT_TRUE(strict->RequiresConsent("treatment"));
  auto open = ConsentPolicy::New({"marketing"}, {}, false);
  EXPECT_FALSE(open->RequiresConsent("x-newsletter"));
  EXPECT_EQ(ConsentPolicy::New({"Marketing"}).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ConsentPolicy::New({"marketing"}, {"marketing"}).error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(hipaa.PolicyDigest(), strict->PolicyDigest());
  EXPECT_EQ(hipaa.PolicyDigest(), ConsentPolicy::HipaaDefault().PolicyDigest());
}

TEST(ConsentPolicyTest, AMessageForAWithdrawnPurposeIsRefusedOnBothEnds) {
  // The clinician's device (sender) and the patient's device (receiver) each hold the receipt.
  Parties p;
  FakeClock clock(kStart + 1000);
  ConsentLedger clinician_ledger(&p.verifier, &clock), patient_ledger(&p.verifier, &clock);
  SignedConsentReceipt r = p.Signed();
  ASSERT_TRUE(clinician_ledger.AddReceipt(r, p.Expect()).ok());
  ASSERT_TRUE(patient_ledger.AddReceipt(r, p.Expect()).ok());
  const std::string patient = r.receipt.principal_id;
  ConsentPolicy policy = ConsentPolicy::HipaaDefault();
  EXPECT_TRUE(policy.CheckOutgoing("marketing", patient, clinician_ledger).ok());
  EXPECT_TRUE(policy.CheckIncoming("marketing", patient, patient_ledger).ok());

  auto w = Withdraw(r, {"marketing"}, clock, *p.patient);
  ASSERT_TRUE(patient_ledger.AddWithdrawal(*w).ok());
  // Before the withdrawal reaches the clinician, the sender still sends; the receiver refuses.
  EXPECT_TRUE(policy.CheckOutgoing("marketing", patient, clinician_ledger).ok());
  Status in = policy.CheckIncoming("marketing", patient, patient_ledger);
  EXPECT_EQ(in.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(in.message().find("no valid consent for purpose"), std::string::npos);
  ASSERT_TRUE(clinician_ledger.AddWithdrawal(*w).ok());
  Status out = policy.CheckOutgoing("marketing", patient, clinician_ledger);
  EXPECT_EQ(out.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(out.message(), "no valid consent for purpose");
  // Treatment needs no consent under this policy; a malformed label is refused either way.
  EXPECT_TRUE(policy.CheckOutgoing("treatment", patient, clinician_ledger).ok());
  EXPECT_EQ(policy.CheckOutgoing("Marketing", patient, clinician_ledger).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(policy.CheckIncoming("bogus", patient, patient_ledger).code(), StatusCode::kPermissionDenied);
  // A lapsed receipt refuses billing too.
  clock.Set(r.receipt.expires_at_ms);
  EXPECT_EQ(policy.CheckOutgoing("billing", patient, clinician_ledger).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(policy.CheckIncoming("billing", patient, patient_ledger).code(), StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace cw::compliance
