// The identity policy (trust on first use; a changed key blocks encryption until accepted) and safety numbers.
#include <gtest/gtest.h>
#include <signal/curve.h>
#include <signal/signal_protocol.h>

#include <msgpack.hpp>
#include <thread>

#include "core/session/records.h"
#include "tests/session/session_fixture.h"

namespace cw::session {
namespace {

using testing::CodeOf;
using testing::DecryptText;
using testing::MustEncrypt;
using testing::Party;
using testing::SameState;
using testing::World;

class EngineIdentityTest : public ::testing::Test {
 protected:
  World world;
  Party& clinician = world.Add("clinician");
  Party& patient = world.Add("patient");
};

TEST_F(EngineIdentityTest, FirstContactIsTrustedOnFirstUse) {
  auto unknown = clinician->GetContact("patient");
  CW_ASSERT_OK(unknown);
  EXPECT_EQ(unknown->state, TrustState::kUnknown);
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  auto c = clinician->GetContact("patient");
  CW_ASSERT_OK(c);
  EXPECT_EQ(c->state, TrustState::kTrusted);
  EXPECT_EQ(c->identity_key, patient->identity_key());
  EXPECT_FALSE(c->pending_identity_key.has_value());
  auto p = patient->GetContact("clinician");
  CW_ASSERT_OK(p);
  EXPECT_EQ(p->state, TrustState::kTrusted) << "the receiver of a first message trusts on first use too";
  EXPECT_EQ(p->identity_key, clinician->identity_key());
  EXPECT_TRUE(clinician.identity_changes.empty());
  EXPECT_TRUE(patient.identity_changes.empty());
}

TEST_F(EngineIdentityTest, BundleWithBadSignatureIsRejected) {
  auto good = World::FetchBundle(patient);
  CW_ASSERT_OK(good);
  std::vector<wire::PreKeyBundle> bad;
  for (size_t i : {size_t{0}, size_t{31}, size_t{63}}) {
    wire::PreKeyBundle b = *good;
    b.signed_pre_key.signature[i] ^= 0x01;
    bad.push_back(b);
  }
  {
    wire::PreKeyBundle b = *good;  // a different signed pre-key under the old signature
    b.signed_pre_key.public_key[5] ^= 0x01;
    bad.push_back(b);
  }
  {
    wire::PreKeyBundle b = *good;  // someone else's identity key claiming the signed pre-key
    b.identity_key = clinician->identity_key();
    bad.push_back(b);
  }
  const auto before = clinician.snapshot();
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ(CodeOf(clinician->ProcessBundle(patient.address(), bad[i])), StatusCode::kBadSignature) << i;
  }
  EXPECT_FALSE(clinician->HasSession(patient.address()));
  EXPECT_TRUE(SameState(before, clinician.snapshot()));
  EXPECT_EQ(clinician->GetContact("patient")->state, TrustState::kUnknown);
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *good));
  EXPECT_EQ(DecryptText(patient, clinician, MustEncrypt(clinician, patient, "ok")), "ok");
}

TEST_F(EngineIdentityTest, ChangedIdentityInBundleBlocksUntilAccepted) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  const wire::PublicKey old_key = patient->identity_key();
  auto old_number = clinician->GetSafetyNumber("patient");
  CW_ASSERT_OK(old_number);

  patient.Recreate(world.NextSeed());  // reinstalled: a new identity under the same name
  ASSERT_NE(patient->identity_key(), old_key);
  auto bundle = World::FetchBundle(patient);
  CW_ASSERT_OK(bundle);
  EXPECT_EQ(CodeOf(clinician->ProcessBundle(patient.address(), *bundle)), StatusCode::kUntrustedIdentity);

  ASSERT_EQ(clinician.identity_changes.size(), 1u);
  EXPECT_EQ(clinician.identity_changes[0].contact.name, "patient");
  EXPECT_EQ(clinician.identity_changes[0].previous_key, old_key);
  EXPECT_EQ(clinician.identity_changes[0].new_key, patient->identity_key());
  auto c = clinician->GetContact("patient");
  CW_ASSERT_OK(c);
  EXPECT_EQ(c->state, TrustState::kChanged);
  EXPECT_EQ(c->identity_key, old_key);
  ASSERT_TRUE(c->pending_identity_key.has_value());
  EXPECT_EQ(*c->pending_identity_key, patient->identity_key());

  // Blocked: nothing goes to the contact, not even over the old session.
  EXPECT_EQ(CodeOf(clinician->Encrypt(patient.address(), AsBytes("blocked"))), StatusCode::kUntrustedIdentity);
  EXPECT_EQ(CodeOf(clinician->Encrypt(patient.address(), AsBytes("still blocked"))),
            StatusCode::kUntrustedIdentity);
  // Seeing the same new key again does not unblock it, nor report a second change.
  EXPECT_EQ(CodeOf(clinician->ProcessBundle(patient.address(), *World::FetchBundle(patient))),
            StatusCode::kUntrustedIdentity);
  EXPECT_EQ(CodeOf(clinician->Encrypt(patient.address(), AsBytes("blocked"))), StatusCode::kUntrustedIdentity);

  CW_ASSERT_OK(clinician->AcceptIdentityChange("patient"));
  auto accepted = clinician->GetContact("patient");
  CW_ASSERT_OK(accepted);
  EXPECT_EQ(accepted->state, TrustState::kTrusted);
  EXPECT_EQ(accepted->identity_key, patient->identity_key());
  EXPECT_FALSE(accepted->pending_identity_key.has_value());

  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *World::FetchBundle(patient)));
  EXPECT_EQ(DecryptText(patient, clinician, MustEncrypt(clinician, patient, "welcome back")), "welcome back");
  EXPECT_EQ(DecryptText(clinician, patient, MustEncrypt(patient, clinician, "thanks")), "thanks");

  auto new_number = clinician->GetSafetyNumber("patient");
  CW_ASSERT_OK(new_number);
  EXPECT_NE(new_number->digits, old_number->digits);
  EXPECT_EQ(new_number->digits, patient->GetSafetyNumber("clinician")->digits);
}

TEST_F(EngineIdentityTest, AcceptWithoutPendingChangeFails) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  EXPECT_NE(CodeOf(clinician->AcceptIdentityChange("patient")), StatusCode::kOk);
  EXPECT_NE(CodeOf(clinician->AcceptIdentityChange("stranger")), StatusCode::kOk);
  EXPECT_EQ(clinician->GetContact("patient")->state, TrustState::kTrusted);
}

TEST_F(EngineIdentityTest, FirstMessageFromChangedIdentityIsHeldUntilAccepted) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  const wire::PublicKey old_key = patient->identity_key();
  patient.Recreate(world.NextSeed());
  CW_ASSERT_OK(patient->ProcessBundle(clinician.address(), *World::FetchBundle(clinician)));
  EXPECT_EQ(patient->GetContact("clinician")->state, TrustState::kTrusted) << "the new install trusts on first use";
  Ciphertext first = MustEncrypt(patient, clinician, "it's me, new phone");
  ASSERT_EQ(first.type, MessageType::kPreKey);

  const size_t otpk_before = *clinician->OneTimePreKeyCount();
  auto r = clinician->Decrypt(patient.address(), first);
  EXPECT_EQ(CodeOf(r), StatusCode::kUntrustedIdentity) << testing::Describe(r);
  auto c = clinician->GetContact("patient");
  CW_ASSERT_OK(c);
  EXPECT_EQ(c->state, TrustState::kChanged);
  EXPECT_EQ(c->identity_key, old_key);
  ASSERT_TRUE(c->pending_identity_key.has_value());
  EXPECT_EQ(*c->pending_identity_key, patient->identity_key());
  ASSERT_EQ(clinician.identity_changes.size(), 1u);
  EXPECT_EQ(clinician.identity_changes[0].new_key, patient->identity_key());
  EXPECT_EQ(*clinician->OneTimePreKeyCount(), otpk_before) << "a refused first message consumes no pre-key";
  EXPECT_EQ(CodeOf(clinician->Encrypt(patient.address(), AsBytes("blocked"))), StatusCode::kUntrustedIdentity);
  // Retrying before acceptance changes nothing.
  const auto held = clinician.snapshot();
  EXPECT_EQ(CodeOf(clinician->Decrypt(patient.address(), first)), StatusCode::kUntrustedIdentity);
  EXPECT_TRUE(SameState(held, clinician.snapshot()));

  CW_ASSERT_OK(clinician->AcceptIdentityChange("patient"));
  EXPECT_EQ(DecryptText(clinician, patient, first), "it's me, new phone");
  EXPECT_EQ(*clinician->OneTimePreKeyCount(), otpk_before - 1);
  EXPECT_EQ(DecryptText(patient, clinician, MustEncrypt(clinician, patient, "confirmed")), "confirmed");
  EXPECT_EQ(DecryptText(clinician, patient, MustEncrypt(patient, clinician, "great")), "great");
}

class SafetyNumberTest : public EngineIdentityTest {};

// Found in review: only the last rejected key was remembered, so whoever claims a contact's name with two
// keys made the user decide again and again (reject A, then B, and A was a new change once more).
TEST_F(EngineIdentityTest, EveryRejectedKeyStaysRejected) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  const wire::PublicKey trusted = patient->identity_key();

  patient.Recreate(world.NextSeed());  // impostor key A
  CW_ASSERT_OK(patient->ProcessBundle(clinician.address(), *World::FetchBundle(clinician)));
  Ciphertext a1 = MustEncrypt(patient, clinician, "A one");
  Ciphertext a2 = MustEncrypt(patient, clinician, "A two");
  patient.Recreate(world.NextSeed());  // impostor key B
  CW_ASSERT_OK(patient->ProcessBundle(clinician.address(), *World::FetchBundle(clinician)));
  Ciphertext b1 = MustEncrypt(patient, clinician, "B one");

  for (const Ciphertext* first : {&a1, &b1}) {
    EXPECT_EQ(CodeOf(clinician->Decrypt(patient.address(), *first)), StatusCode::kUntrustedIdentity);
    auto pending = clinician->GetContact("patient");
    CW_ASSERT_OK(pending);
    ASSERT_TRUE(pending->pending_identity_key.has_value());
    CW_ASSERT_OK(clinician->RejectIdentityChange("patient", *pending->pending_identity_key));
    EXPECT_EQ(CodeOf(clinician->Decrypt(patient.address(), *first)), StatusCode::kRejected);
  }
  ASSERT_EQ(clinician.identity_changes.size(), 2u);
  EXPECT_EQ(CodeOf(clinician->Decrypt(patient.address(), a2)), StatusCode::kRejected);
  EXPECT_EQ(clinician.identity_changes.size(), 2u) << "asked again about a key already rejected";
  auto c = clinician->GetContact("patient");
  CW_ASSERT_OK(c);
  EXPECT_EQ(c->state, TrustState::kTrusted);
  EXPECT_EQ(c->identity_key, trusted);
}

// A user who rejected their contact's real new phone by mistake could never hear from it again: the rejection
// is taken back, the key awaits the decision again, and accepted, its messages read.
TEST_F(EngineIdentityTest, ARejectionTakenBackAwaitsTheDecisionAgain) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  EXPECT_EQ(CodeOf(clinician->ReconsiderIdentityChange("patient")),
            StatusCode::kNotFound);  // nothing rejected
  CW_ASSERT_OK(clinician->SetVerified("patient", true));

  patient.Recreate(world.NextSeed());  // the patient's new phone
  CW_ASSERT_OK(patient->ProcessBundle(clinician.address(), *World::FetchBundle(clinician)));
  Ciphertext dropped = MustEncrypt(patient, clinician, "new phone");
  ASSERT_EQ(CodeOf(clinician->Decrypt(patient.address(), dropped)), StatusCode::kUntrustedIdentity);
  CW_ASSERT_OK(clinician->RejectIdentityChange("patient", patient->identity_key()));
  ASSERT_EQ(CodeOf(clinician->Decrypt(patient.address(), dropped)), StatusCode::kRejected);
  Ciphertext later = MustEncrypt(patient, clinician, "it really is me");

  auto key = clinician->ReconsiderIdentityChange("patient");
  CW_ASSERT_OK(key);
  EXPECT_EQ(*key, patient->identity_key());
  auto c = clinician->GetContact("patient");
  CW_ASSERT_OK(c);
  EXPECT_EQ(c->state, TrustState::kChanged);
  EXPECT_EQ(c->pending_identity_key, patient->identity_key());
  EXPECT_EQ(CodeOf(clinician->ReconsiderIdentityChange("patient")),
            StatusCode::kInvalidArgument);  // one awaits
  // Its messages wait for the decision now instead of being refused for good.
  EXPECT_EQ(CodeOf(clinician->Decrypt(patient.address(), later)), StatusCode::kUntrustedIdentity);

  // Rejected again, the verified mark of the old key is back, as after the first rejection.
  CW_ASSERT_OK(clinician->RejectIdentityChange("patient", *key));
  c = clinician->GetContact("patient");
  CW_ASSERT_OK(c);
  EXPECT_EQ(c->state, TrustState::kVerified);
  CW_ASSERT_OK(clinician->ReconsiderIdentityChange("patient"));
  CW_ASSERT_OK(clinician->AcceptIdentityChange("patient", *key));
  auto read = clinician->Decrypt(patient.address(), later);
  CW_ASSERT_OK(read);
  EXPECT_EQ(testing::Text(read->body), "it really is me");
}

// Found in review: the real new phone rejected by mistake, then a key of an impostor's rejected (records.h:
// an impostor can alternate keys). Taking back a rejection offers the impostor's key; rejected again, it goes
// back to the end of the list, and the real phone's key can never be reached.
TEST_F(EngineIdentityTest, AnEarlierRejectionCanStillBeTakenBack) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  patient.Recreate(world.NextSeed());  // the real new phone
  const wire::PublicKey real = patient->identity_key();
  CW_ASSERT_OK(patient->ProcessBundle(clinician.address(), *World::FetchBundle(clinician)));
  Ciphertext from_real = MustEncrypt(patient, clinician, "new phone");
  patient.Recreate(world.NextSeed());  // an impostor
  const wire::PublicKey fake = patient->identity_key();
  CW_ASSERT_OK(patient->ProcessBundle(clinician.address(), *World::FetchBundle(clinician)));
  Ciphertext from_fake = MustEncrypt(patient, clinician, "impostor");
  ASSERT_EQ(CodeOf(clinician->Decrypt(patient.address(), from_real)), StatusCode::kUntrustedIdentity);
  CW_ASSERT_OK(clinician->RejectIdentityChange("patient", real));  // the mistake
  ASSERT_EQ(CodeOf(clinician->Decrypt(patient.address(), from_fake)), StatusCode::kUntrustedIdentity);
  CW_ASSERT_OK(clinician->RejectIdentityChange("patient", fake));

  auto key = clinician->ReconsiderIdentityChange("patient");
  CW_ASSERT_OK(key);
  EXPECT_EQ(*key, fake);  // not the one the user meant: the numbers differ, so rejected again
  CW_ASSERT_OK(clinician->RejectIdentityChange("patient", *key));
  key = clinician->ReconsiderIdentityChange("patient");
  CW_ASSERT_OK(key);
  EXPECT_EQ(*key, real) << "the real phone's key can never be taken back once a later key was rejected";
}

TEST(ContactRecordTest, TheRejectedKeyAndTheVerifiedMarkRoundTripAndOlderRecordsStillRead) {
  internal::ContactRecord c;
  c.state = TrustState::kChanged;
  c.identity_key.fill(5);
  c.pending_identity_key.emplace().fill(6);
  c.rejected_identity_keys.resize(2);
  c.rejected_identity_keys[0].fill(7);
  c.rejected_identity_keys[1].fill(8);
  c.verified_before_change = true;
  auto back = internal::DecodeContact(internal::EncodeContact(c).reveal());
  CW_ASSERT_OK(back);
  EXPECT_EQ(back->state, c.state);
  EXPECT_EQ(back->identity_key, c.identity_key);
  EXPECT_EQ(back->pending_identity_key, c.pending_identity_key);
  EXPECT_EQ(back->rejected_identity_keys, c.rejected_identity_keys);
  EXPECT_TRUE(back->verified_before_change);

  // A record written before the last two fields existed: [1, state, key, nil].
  msgpack::sbuffer old;
  msgpack::packer<msgpack::sbuffer> pk(old);
  pk.pack_array(4);
  pk.pack(1);
  pk.pack(static_cast<uint8_t>(TrustState::kVerified));
  pk.pack_bin(33);
  pk.pack_bin_body(reinterpret_cast<const char*>(c.identity_key.data()), 33);
  pk.pack_nil();
  auto legacy = internal::DecodeContact(ByteView(reinterpret_cast<const uint8_t*>(old.data()), old.size()));
  CW_ASSERT_OK(legacy);
  EXPECT_EQ(legacy->state, TrustState::kVerified);
  EXPECT_TRUE(legacy->rejected_identity_keys.empty());
  EXPECT_FALSE(legacy->verified_before_change);

  // "Verified before the change" means nothing without a change.
  internal::ContactRecord odd = c;
  odd.state = TrustState::kTrusted;
  odd.pending_identity_key.reset();
  EXPECT_EQ(CodeOf(internal::DecodeContact(internal::EncodeContact(odd).reveal())), StatusCode::kMalformed);
}

TEST(GroupRecordTest, EachMembersListedKeyRoundTripsAndOlderRecordsReadWithNone) {
  internal::GroupRecord g{"clinician", 7, {"clinician", "nurse", "patient"}, {}};
  g.keys.resize(3);
  g.keys[0].emplace().fill(1);
  g.keys[2].emplace().fill(3);  // the nurse listed with none
  auto back = internal::DecodeGroup(internal::EncodeGroup(g).reveal());
  CW_ASSERT_OK(back);
  EXPECT_EQ(back->admin, "clinician");
  EXPECT_EQ(back->epoch, 7u);
  EXPECT_EQ(back->members, g.members);
  EXPECT_EQ(back->keys, g.keys);
  EXPECT_EQ(back->KeyOf("patient"), g.keys[2]);
  EXPECT_FALSE(back->KeyOf("nurse").has_value());
  EXPECT_FALSE(back->KeyOf("stranger").has_value());

  // A record written before keys: [1, admin, epoch, [members]].
  msgpack::sbuffer old;
  msgpack::packer<msgpack::sbuffer> pk(old);
  pk.pack_array(4);
  pk.pack(1);
  pk.pack(std::string("clinician"));
  pk.pack(3);
  pk.pack(std::vector<std::string>{"clinician", "nurse"});
  auto legacy = internal::DecodeGroup(ByteView(reinterpret_cast<const uint8_t*>(old.data()), old.size()));
  CW_ASSERT_OK(legacy);
  EXPECT_EQ(legacy->members, (std::vector<std::string>{"clinician", "nurse"}));
  ASSERT_EQ(legacy->keys.size(), 2u);
  EXPECT_FALSE(legacy->keys[0].has_value());
  EXPECT_FALSE(legacy->keys[1].has_value());

  // Keys that do not match the members are refused.
  msgpack::sbuffer odd;
  msgpack::packer<msgpack::sbuffer> pk2(odd);
  pk2.pack_array(5);
  pk2.pack(1);
  pk2.pack(std::string("clinician"));
  pk2.pack(3);
  pk2.pack(std::vector<std::string>{"clinician", "nurse"});
  pk2.pack_array(1);
  pk2.pack_nil();
  EXPECT_EQ(CodeOf(internal::DecodeGroup(ByteView(reinterpret_cast<const uint8_t*>(odd.data()), odd.size()))),
            StatusCode::kMalformed);
}

TEST_F(SafetyNumberTest, SixtyDigitsEqualOnBothSides) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  auto mine = clinician->GetSafetyNumber("patient");
  auto theirs = patient->GetSafetyNumber("clinician");
  CW_ASSERT_OK(mine);
  CW_ASSERT_OK(theirs);
  ASSERT_EQ(mine->digits.size(), 60u);
  for (char ch : mine->digits) EXPECT_TRUE(ch >= '0' && ch <= '9') << mine->digits;
  EXPECT_EQ(mine->digits, theirs->digits);
  EXPECT_FALSE(mine->scannable.empty());
  EXPECT_NE(mine->scannable, theirs->scannable) << "each side's QR code names itself first";
  // Deterministic: asking again gives the same number.
  EXPECT_EQ(clinician->GetSafetyNumber("patient")->digits, mine->digits);
}

TEST_F(SafetyNumberTest, ScanningThePeersCodeMatches) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  auto mine = clinician->GetSafetyNumber("patient");
  auto theirs = patient->GetSafetyNumber("clinician");
  CW_ASSERT_OK(mine);
  CW_ASSERT_OK(theirs);
  auto match = clinician->CompareScannedSafetyNumber("patient", theirs->scannable);
  CW_ASSERT_OK(match);
  EXPECT_TRUE(*match);
  auto match2 = patient->CompareScannedSafetyNumber("clinician", mine->scannable);
  CW_ASSERT_OK(match2);
  EXPECT_TRUE(*match2);
}

TEST_F(SafetyNumberTest, ScanningTheWrongCodeDoesNotMatch) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  Party& impostor = world.Add("impostor");
  ASSERT_NO_FATAL_FAILURE(world.Establish(impostor, clinician));
  auto theirs = patient->GetSafetyNumber("clinician");
  CW_ASSERT_OK(theirs);
  // My own code shown back to me.
  auto own = clinician->GetSafetyNumber("patient");
  auto r1 = clinician->CompareScannedSafetyNumber("patient", own->scannable);
  EXPECT_FALSE(r1.has_value() && *r1) << "own code must not match";
  // Someone else's code for me.
  auto other = impostor->GetSafetyNumber("clinician");
  CW_ASSERT_OK(other);
  auto r2 = clinician->CompareScannedSafetyNumber("patient", other->scannable);
  CW_ASSERT_OK(r2);
  EXPECT_FALSE(*r2);
  // One flipped byte in the key part of a genuine code.
  Bytes flipped = theirs->scannable;
  flipped[flipped.size() - 3] ^= 0x01;
  auto r3 = clinician->CompareScannedSafetyNumber("patient", flipped);
  EXPECT_FALSE(r3.has_value() && *r3);
  // Garbage.
  for (const Bytes& garbage : {Bytes{}, Bytes{0x01, 0x02, 0x03}, Bytes(64, 0xff)}) {
    auto r = clinician->CompareScannedSafetyNumber("patient", garbage);
    EXPECT_EQ(CodeOf(r), StatusCode::kMalformed) << garbage.size();
  }
}

TEST_F(SafetyNumberTest, ChangesWithIdentityAndVerificationIsCleared) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  auto before = clinician->GetSafetyNumber("patient");
  CW_ASSERT_OK(before);
  auto old_peer_code = patient->GetSafetyNumber("clinician");
  CW_ASSERT_OK(old_peer_code);
  CW_ASSERT_OK(clinician->SetVerified("patient", true));
  EXPECT_EQ(clinician->GetContact("patient")->state, TrustState::kVerified);
  CW_ASSERT_OK(clinician->SetVerified("patient", false));
  EXPECT_EQ(clinician->GetContact("patient")->state, TrustState::kTrusted);
  CW_ASSERT_OK(clinician->SetVerified("patient", true));
  clinician.Reopen();
  EXPECT_EQ(clinician->GetContact("patient")->state, TrustState::kVerified) << "verification is stored";
  // Verified contacts still talk normally.
  EXPECT_EQ(DecryptText(patient, clinician, MustEncrypt(clinician, patient, "v")), "v");

  patient.Recreate(world.NextSeed());
  EXPECT_EQ(CodeOf(clinician->ProcessBundle(patient.address(), *World::FetchBundle(patient))),
            StatusCode::kUntrustedIdentity);
  EXPECT_EQ(clinician->GetContact("patient")->state, TrustState::kChanged);
  EXPECT_EQ(CodeOf(clinician->Encrypt(patient.address(), AsBytes("x"))), StatusCode::kUntrustedIdentity);
  CW_ASSERT_OK(clinician->AcceptIdentityChange("patient"));
  EXPECT_EQ(clinician->GetContact("patient")->state, TrustState::kTrusted) << "accepting a change clears verified";

  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *World::FetchBundle(patient)));
  EXPECT_EQ(DecryptText(patient, clinician, MustEncrypt(clinician, patient, "again")), "again");
  auto after = clinician->GetSafetyNumber("patient");
  CW_ASSERT_OK(after);
  EXPECT_NE(after->digits, before->digits);
  EXPECT_EQ(after->digits, patient->GetSafetyNumber("clinician")->digits);
  // The code the old install showed no longer matches.
  auto old_match = clinician->CompareScannedSafetyNumber("patient", old_peer_code->scannable);
  EXPECT_FALSE(old_match.has_value() && *old_match);
  auto stale = clinician->CompareScannedSafetyNumber("patient", patient->GetSafetyNumber("clinician")->scannable);
  CW_ASSERT_OK(stale);
  EXPECT_TRUE(*stale) << "the new install's code matches";
  stale = clinician->CompareScannedSafetyNumber("patient", old_peer_code->scannable);
  EXPECT_FALSE(stale.has_value() && *stale);
}

TEST_F(SafetyNumberTest, UnknownContactHasNoSafetyNumber) {
  EXPECT_NE(CodeOf(clinician->GetSafetyNumber("nobody")), StatusCode::kOk);
  EXPECT_NE(CodeOf(clinician->SetVerified("nobody", true)), StatusCode::kOk);
}

}  // namespace
}  // namespace cw::session

namespace cw::session {
namespace {

// curve_verify_signature on a serialized identity key: what compliance::StandardVerifier does for kXEdDSA.
bool XEdDSAVerifies(const wire::PublicKey& key, ByteView message, ByteView signature) {
  ec_public_key* point = nullptr;
  if (curve_decode_point(&point, key.data(), key.size(), nullptr) != 0) return false;
  const int rc = curve_verify_signature(point, message.data(), message.size(), signature.data(), signature.size());
  SIGNAL_UNREF(point);
  return rc == 1;
}

TEST_F(EngineIdentityTest, IdentitySignatureVerifiesUnderTheIdentityKeyOnly) {
  const Bytes message = ToBytes("cipherward-consent-receipt-v1 test body");
  auto sig = patient->SignWithIdentityKey(message);
  CW_ASSERT_OK(sig);
  ASSERT_EQ(sig->size(), 64u);
  EXPECT_TRUE(XEdDSAVerifies(patient->identity_key(), message, *sig));
  Bytes altered = message;
  altered.back() ^= 1;
  EXPECT_FALSE(XEdDSAVerifies(patient->identity_key(), altered, *sig)) << "a changed message must not verify";
  EXPECT_FALSE(XEdDSAVerifies(clinician->identity_key(), message, *sig)) << "another identity must not verify";
}

TEST_F(EngineIdentityTest, IdentitySignatureRefusesOtherThreads) {
  Result<Bytes> from_other = Error(StatusCode::kInternal, "not run");
  std::thread t([&] { from_other = patient->SignWithIdentityKey(ToBytes("x")); });
  t.join();
  ASSERT_FALSE(from_other.has_value());
  EXPECT_EQ(from_other.error().code(), StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace cw::session
