#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/compliance/consent.h"
#include "tests/compliance/compliance_fixture.h"

namespace cw::compliance {
namespace {

using testing::Binding;
using testing::MakeReceipt;
using testing::Parties;

class ConsentReceiptTest : public ::testing::Test {
 protected:
  Parties p_;
  ConsentReceipt Receipt() {
    return MakeReceipt(p_.session, p_.patient->public_key(), p_.clinician->public_key());
  }
};

TEST_F(ConsentReceiptTest, SignedCountersignedRoundTripsAndVerifies) {
  SignedConsentReceipt s = p_.Signed();
  EXPECT_TRUE(VerifyReceipt(s, p_.Expect(), p_.verifier).ok());
  auto bytes = EncodeSignedReceipt(s);
  ASSERT_TRUE(bytes.has_value());
  auto back = DecodeSignedReceipt(*bytes);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->receipt, s.receipt);
  EXPECT_EQ(back->receipt_bytes, s.receipt_bytes);
  EXPECT_TRUE(VerifyReceipt(*back, p_.Expect(), p_.verifier).ok());
  EXPECT_EQ(ReceiptDigest(*back), ReceiptDigest(s));
}

TEST_F(ConsentReceiptTest, ARequestCarriesThePatientHalfToTheClinician) {
  auto patient_signed = SignReceipt(Receipt(), *p_.patient);
  ASSERT_TRUE(patient_signed.has_value());
  EXPECT_FALSE(EncodeSignedReceipt(*patient_signed).has_value()) << "the signed form needs both signatures";
  auto request = EncodeReceiptRequest(*patient_signed);
  ASSERT_TRUE(request.has_value()) << request.error().ToString();
  auto back = DecodeReceiptRequest(*request);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_TRUE(back->clinician_signature.empty());
  EXPECT_EQ(back->receipt_bytes, patient_signed->receipt_bytes);
  ASSERT_TRUE(CountersignReceipt(&*back, p_.session, *p_.clinician, p_.verifier).ok());
  EXPECT_TRUE(VerifyReceipt(*back, p_.Expect(), p_.verifier).ok());

  // The two forms are not interchangeable, and a request with a flipped signature is not countersigned.
  auto full = EncodeSignedReceipt(*back);
  ASSERT_TRUE(full.has_value());
  EXPECT_EQ(DecodeReceiptRequest(*full).error().code(), StatusCode::kMalformed);
  EXPECT_EQ(DecodeSignedReceipt(*request).error().code(), StatusCode::kMalformed);
  Bytes flipped = *request;
  flipped[flipped.size() - 3] ^= 1;
  auto bad = DecodeReceiptRequest(flipped);
  ASSERT_TRUE(bad.has_value());
  EXPECT_EQ(CountersignReceipt(&*bad, p_.session, *p_.clinician, p_.verifier).code(), StatusCode::kBadSignature);
  SignedConsentReceipt unsigned_receipt;
  EXPECT_EQ(EncodeReceiptRequest(unsigned_receipt).error().code(), StatusCode::kInvalidArgument);
}

TEST_F(ConsentReceiptTest, EncodingIsDeterministicAndCanonical) {
  auto a = EncodeReceipt(Receipt());
  auto b = EncodeReceipt(Receipt());
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(*a, *b);
  // A non-minimal encoding of the same value (the 32-character receipt id as str16 instead of str8) is
  // refused, so nobody can produce other bytes for a signed value.
  const std::string id = Receipt().receipt_id;
  Bytes pattern = {0xd9, 0x20};
  pattern.insert(pattern.end(), id.begin(), id.end());
  auto it = std::search(a->begin(), a->end(), pattern.begin(), pattern.end());
  ASSERT_NE(it, a->end());
  Bytes longer(a->begin(), it);
  longer.insert(longer.end(), {0xda, 0x00, 0x20});
  longer.insert(longer.end(), it + 2, a->end());
  auto r = DecodeReceipt(longer);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kMalformed);
}

TEST_F(ConsentReceiptTest, ReceiptRulesAreEnforced) {
  auto expect_invalid = [&](auto mutate, const char* what) {
    ConsentReceipt r = Receipt();
    mutate(r);
    Status s = ValidateReceipt(r);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << what;
    EXPECT_FALSE(EncodeReceipt(r).has_value()) << what;
  };
  EXPECT_TRUE(ValidateReceipt(Receipt()).ok());
  expect_invalid([](ConsentReceipt& r) { r.sensitive = false; }, "not sensitive");
  expect_invalid([](ConsentReceipt& r) { r.spi_categories = {"genetic"}; }, "no health category");
  expect_invalid([](ConsentReceipt& r) { r.principal_id = std::string(64, 'a'); },
                 "principal not the patient");
  expect_invalid([](ConsentReceipt& r) { r.services[0].purposes[0].purpose = "Treatment!"; }, "bad label");
  expect_invalid([](ConsentReceipt& r) { r.services[0].purposes[1].purpose = "treatment"; },
                 "repeated purpose");
  expect_invalid([](ConsentReceipt& r) { r.services[0].purposes[0].third_party_disclosure = true; },
                 "no 3rd name");
  expect_invalid([](ConsentReceipt& r) { r.controllers.clear(); }, "no controller");
  expect_invalid([](ConsentReceipt& r) { r.services.clear(); }, "no service");
  expect_invalid([](ConsentReceipt& r) { r.withdrawal_method.clear(); }, "no withdrawal method");
  expect_invalid([](ConsentReceipt& r) { r.retention_period.clear(); }, "no retention");
  expect_invalid([](ConsentReceipt& r) { r.expires_at_ms = r.consent_timestamp_ms; },
                 "expiry before consent");
  expect_invalid([](ConsentReceipt& r) { r.binding.safety_number = std::string(59, '1'); },
                 "short safety number");
  expect_invalid([](ConsentReceipt& r) { r.binding.patient_identity_key.pop_back(); }, "short identity key");
  expect_invalid([](ConsentReceipt& r) { r.clinician_key = r.patient_key; }, "one signer for both");
  expect_invalid([](ConsentReceipt& r) { r.version = "KI-CR-v1.0.0"; }, "other Kantara version");
  ConsentReceipt custom = Receipt();
  custom.services[0].purposes[3].purpose = "x-research-study-12";
  EXPECT_TRUE(ValidateReceipt(custom).ok());
}

TEST_F(ConsentReceiptTest, AReceiptSignedByTheWrongKeyIsRejected) {
  // The patient's signer must hold the key the receipt names.
  EXPECT_EQ(SignReceipt(Receipt(), *p_.mallory).error().code(), StatusCode::kInvalidArgument);
  // Mallory makes a receipt naming her own key and signs it: it verifies under its own keys, but not as the
  // patient's receipt in this session.
  ConsentReceipt forged = MakeReceipt(p_.session, p_.mallory->public_key(), p_.clinician->public_key());
  auto s = SignReceipt(forged, *p_.mallory);
  ASSERT_TRUE(s.has_value());
  ASSERT_TRUE(CountersignReceipt(&*s, p_.session, *p_.clinician, p_.verifier).ok());
  EXPECT_TRUE(VerifyReceiptSelfConsistent(*s, p_.verifier).ok());
  Status st = VerifyReceipt(*s, p_.Expect(), p_.verifier);
  EXPECT_EQ(st.code(), StatusCode::kBadSignature) << st.ToString();
  // A countersignature by someone other than the clinician.
  ConsentReceipt other_clinician =
      MakeReceipt(p_.session, p_.patient->public_key(), p_.mallory->public_key());
  auto t = SignReceipt(other_clinician, *p_.patient);
  ASSERT_TRUE(t.has_value());
  ASSERT_TRUE(CountersignReceipt(&*t, p_.session, *p_.mallory, p_.verifier).ok());
  EXPECT_EQ(VerifyReceipt(*t, p_.Expect(), p_.verifier).code(), StatusCode::kBadSignature);
}

TEST_F(ConsentReceiptTest, ASignatureOverOtherBytesIsRejected) {
  SignedConsentReceipt s = p_.Signed();
  SignedConsentReceipt other = p_.Signed("fedcba9876543210fedcba9876543210");
  // Signatures of one receipt on the bytes of another.
  SignedConsentReceipt swapped = other;
  swapped.patient_signature = s.patient_signature;
  EXPECT_EQ(VerifyReceipt(swapped, p_.Expect(), p_.verifier).code(), StatusCode::kBadSignature);
  swapped = other;
  swapped.clinician_signature = s.clinician_signature;
  EXPECT_EQ(VerifyReceipt(swapped, p_.Expect(), p_.verifier).code(), StatusCode::kBadSignature);
  // Fields edited after signing no longer match the signed bytes.
  SignedConsentReceipt edited = s;
  edited.receipt.expires_at_ms += 1;
  EXPECT_EQ(VerifyReceipt(edited, p_.Expect(), p_.verifier).code(), StatusCode::kBadSignature);
  // The clinician's countersignature covers the patient's signature: a re-signed patient part breaks it.
  SignedConsentReceipt resigned = s;
  ConsentReceipt r2 = s.receipt;
  r2.jurisdiction = "US-NY";
  auto fresh = SignReceipt(r2, *p_.patient);
  ASSERT_TRUE(fresh.has_value());
  fresh->clinician_signature = s.clinician_signature;
  EXPECT_EQ(VerifyReceipt(*fresh, p_.Expect(), p_.verifier).code(), StatusCode::kBadSignature);
}

TEST_F(ConsentReceiptTest, EveryFlippedByteOfTheSignedReceiptIsCaught) {
  SignedConsentReceipt s = p_.Signed();
  const Bytes good = *EncodeSignedReceipt(s);
  for (size_t i = 0; i < good.size(); ++i) {
    Bytes bad = good;
    bad[i] ^= 0x01;
    auto d = DecodeSignedReceipt(bad);
    if (d.has_value()) {
      EXPECT_FALSE(VerifyReceipt(*d, p_.Expect(), p_.verifier).ok()) << "flip at " << i;
    }
  }
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(DecodeSignedReceipt(ByteView(good.data(), n)).has_value()) << "truncated to " << n;
  }
  Bytes newer = good;
  newer[1] = 2;
  EXPECT_EQ(DecodeSignedReceipt(newer).error().code(), StatusCode::kUnsupportedVersion);
}

TEST_F(ConsentReceiptTest, AReceiptForAnotherSessionIsRejected) {
  SignedConsentReceipt s = p_.Signed();
  ReceiptExpectations other_number = p_.Expect();
  other_number.session.safety_number = std::string(60, '8');
  EXPECT_EQ(VerifyReceipt(s, other_number, p_.verifier).code(), StatusCode::kPermissionDenied);
  ReceiptExpectations other_patient = p_.Expect();
  other_patient.session = Binding(0x13, 0x22);
  EXPECT_EQ(VerifyReceipt(s, other_patient, p_.verifier).code(), StatusCode::kPermissionDenied);
  ReceiptExpectations other_clinician = p_.Expect();
  other_clinician.session = Binding(0x11, 0x23);
  EXPECT_EQ(VerifyReceipt(s, other_clinician, p_.verifier).code(), StatusCode::kPermissionDenied);
  // The clinician's device refuses to countersign a receipt for a session it does not share.
  auto fresh = SignReceipt(s.receipt, *p_.patient);
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(CountersignReceipt(&*fresh, Binding(0x11, 0x22, std::string(60, '1')), *p_.clinician, p_.verifier)
                .code(),
            StatusCode::kPermissionDenied);
  // ... and one whose patient signature does not verify.
  fresh->patient_signature[0] ^= 1;
  EXPECT_EQ(CountersignReceipt(&*fresh, p_.session, *p_.clinician, p_.verifier).code(),
            StatusCode::kBadSignature);
}

TEST_F(ConsentReceiptTest, WithdrawalIsASignedEventOfThePatient) {
  SignedConsentReceipt s = p_.Signed();
  FakeClock clock(1'700'000'100'000);
  auto w = Withdraw(s, {"marketing"}, clock, *p_.patient);
  ASSERT_TRUE(w.has_value()) << w.error().ToString();
  EXPECT_EQ(w->withdrawn_at_ms, 1'700'000'100'000);
  EXPECT_TRUE(VerifyWithdrawal(*w, s, p_.verifier).ok());
  auto bytes = EncodeWithdrawal(*w);
  ASSERT_TRUE(bytes.has_value());
  auto back = DecodeWithdrawal(*bytes);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_TRUE(VerifyWithdrawal(*back, s, p_.verifier).ok());
  for (size_t i = 0; i < bytes->size(); ++i) {
    Bytes bad = *bytes;
    bad[i] ^= 0x01;
    auto d = DecodeWithdrawal(bad);
    if (d.has_value()) {
      EXPECT_FALSE(VerifyWithdrawal(*d, s, p_.verifier).ok()) << "flip at " << i;
    }
  }
  // Only the patient withdraws; only purposes of the receipt; only this receipt.
  EXPECT_EQ(Withdraw(s, {}, clock, *p_.clinician).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Withdraw(s, {"x-unknown"}, clock, *p_.patient).error().code(), StatusCode::kInvalidArgument);
  ConsentWithdrawal forged = *w;
  forged.signer = p_.mallory->public_key();
  EXPECT_EQ(VerifyWithdrawal(forged, s, p_.verifier).code(), StatusCode::kBadSignature);
  SignedConsentReceipt other = p_.Signed("fedcba9876543210fedcba9876543210");
  EXPECT_FALSE(VerifyWithdrawal(*w, other, p_.verifier).ok());
}

TEST_F(ConsentReceiptTest, KantaraJsonUsesKantaraFieldNames) {
  SignedConsentReceipt s = p_.Signed();
  auto j = nlohmann::json::parse(ReceiptToKantaraJson(s));
  for (const char* field :
       {"version", "jurisdiction", "consentTimestamp", "collectionMethod", "consentReceiptID", "publicKey",
        "language", "piiPrincipalId", "piiControllers", "policyUrl", "services", "sensitive", "spiCat"}) {
    EXPECT_TRUE(j.contains(field)) << field;
  }
  EXPECT_EQ(j["version"], "KI-CR-v1.1.0");
  EXPECT_EQ(j["consentTimestamp"], 1'700'000'000);
  EXPECT_EQ(j["sensitive"], true);
  EXPECT_EQ(j["spiCat"][0], "health");
  EXPECT_EQ(j["piiPrincipalId"], IdentityFingerprint(p_.session.patient_identity_key));
  const auto& purpose = j["services"][0]["purposes"][0];
  for (const char* field : {"purpose", "purposeCategory", "consentType", "piiCategory", "primaryPurpose",
                            "termination", "thirdPartyDisclosure", "thirdPartyName"}) {
    EXPECT_TRUE(purpose.contains(field)) << field;
  }
  EXPECT_EQ(purpose["consentType"], "EXPLICIT");
  EXPECT_EQ(j["piiControllers"][0]["piiController"], "Riverside Clinic");
  EXPECT_EQ(j["cipherward"]["retentionPeriod"], "P6Y");
  EXPECT_EQ(j["cipherward"]["session"]["safetyNumber"], std::string(60, '7'));
}

TEST_F(ConsentReceiptTest, IdentityKeyXEdDSASignaturesBindTheReceiptToTheSessionKeys) {
  // Design (a): the parties sign with their Signal identity keys, so the signing keys are the binding's keys.
  testing::XEdDSATestSigner patient, clinician;
  SessionBinding session{patient.public_key().key, clinician.public_key().key, std::string(60, '4')};
  ConsentReceipt r = MakeReceipt(session, patient.public_key(), clinician.public_key());
  auto s = SignReceipt(r, patient);
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  ASSERT_TRUE(CountersignReceipt(&*s, session, clinician, p_.verifier).ok());
  ReceiptExpectations expect{session, patient.public_key(), clinician.public_key()};
  EXPECT_TRUE(VerifyReceipt(*s, expect, p_.verifier).ok());
  auto back = DecodeSignedReceipt(*EncodeSignedReceipt(*s));
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(VerifyReceipt(*back, expect, p_.verifier).ok());
  testing::XEdDSATestSigner impostor;
  expect.patient_key = impostor.public_key();
  EXPECT_EQ(VerifyReceipt(*s, expect, p_.verifier).code(), StatusCode::kBadSignature);
}

}  // namespace
}  // namespace cw::compliance
