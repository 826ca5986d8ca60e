// One-time pre-key supply and signed pre-key rotation, on the default limits (batch 100, refill below 10,
// rotate every 2 days, keep replaced keys 30 days).
#include <gtest/gtest.h>

#include <set>

#include "tests/session/session_fixture.h"

namespace cw::session {
namespace {

using testing::CodeOf;
using testing::DecryptText;
using testing::MustEncrypt;
using testing::Party;
using testing::SameState;
using testing::World;

constexpr int64_t kDay = 24LL * 3600 * 1000;

class EnginePreKeyTest : public ::testing::Test {
 protected:
  World world{EngineOptions{}};
  Party& clinician = world.Add("clinician");
  Party& patient = world.Add("patient");

  // The clinician starts a new session from a fresh bundle of the patient's and the patient receives the first
  // message, consuming one one-time pre-key. Returns the pre-key id used.
  uint32_t ConsumeOne(int i) {
    auto bundle = World::FetchBundle(patient);
    if (!bundle.has_value() || !bundle->one_time_pre_key.has_value()) {
      ADD_FAILURE() << "no one-time pre-key in bundle " << i;
      return 0;
    }
    EXPECT_EQ(CodeOf(clinician->ProcessBundle(patient.address(), *bundle)), StatusCode::kOk);
    const std::string text = "session " + std::to_string(i);
    EXPECT_EQ(DecryptText(patient, clinician, MustEncrypt(clinician, patient, text)), text);
    return bundle->one_time_pre_key->id;
  }
};

TEST_F(EnginePreKeyTest, RefillNeededBelowTenAndABatchIsAHundredNewIds) {
  auto count = patient->OneTimePreKeyCount();
  CW_ASSERT_OK(count);
  ASSERT_EQ(*count, 100u) << "a new identity starts with one batch";
  EXPECT_FALSE(*patient->NeedsOneTimePreKeyRefill());
  std::set<uint32_t> used;
  for (int i = 0; i < 90; ++i) {
    EXPECT_TRUE(used.insert(ConsumeOne(i)).second) << "a one-time pre-key id was used twice";
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_EQ(*patient->OneTimePreKeyCount(), 10u);
  EXPECT_FALSE(*patient->NeedsOneTimePreKeyRefill()) << "10 left is not below 10";
  ConsumeOne(90);
  EXPECT_EQ(*patient->OneTimePreKeyCount(), 9u);
  EXPECT_TRUE(*patient->NeedsOneTimePreKeyRefill());

  auto fresh = patient->GenerateOneTimePreKeys();
  CW_ASSERT_OK(fresh);
  ASSERT_EQ(fresh->size(), 100u);
  std::set<uint32_t> ids;
  std::set<wire::PublicKey> keys;
  for (const auto& k : *fresh) {
    EXPECT_TRUE(ids.insert(k.id).second) << "duplicate id " << k.id;
    EXPECT_TRUE(keys.insert(k.public_key).second) << "duplicate key";
    EXPECT_EQ(used.count(k.id), 0u) << "id " << k.id << " reuses a consumed pre-key's id";
    EXPECT_EQ(k.public_key[0], 0x05);
  }
  EXPECT_EQ(*patient->OneTimePreKeyCount(), 109u);
  EXPECT_FALSE(*patient->NeedsOneTimePreKeyRefill());
  // The new keys work: the remaining 9 old ones are handed out first or not, either way sessions start.
  for (int i = 91; i < 101; ++i) EXPECT_TRUE(used.insert(ConsumeOne(i)).second);
  EXPECT_EQ(*patient->OneTimePreKeyCount(), 99u);
}

TEST(EnginePreKeyRefillTest, RefillKeepsEveryKeyAlreadyHandedOut) {
  // Bundles already handed out (sitting at the relay or with a peer) must stay usable after a refill: a new
  // batch may not reuse the id of a stored one-time pre-key and replace its private key.
  World world;  // batches of 5
  Party& patient = world.Add("patient");
  std::vector<wire::PreKeyBundle> handed_out;
  std::set<uint32_t> ids;
  for (int i = 0; i < 5; ++i) {
    auto b = World::FetchBundle(patient);
    CW_ASSERT_OK(b);
    ASSERT_TRUE(b->one_time_pre_key.has_value());
    ids.insert(b->one_time_pre_key->id);
    handed_out.push_back(*b);
  }
  auto fresh = patient->GenerateOneTimePreKeys();
  CW_ASSERT_OK(fresh);
  ASSERT_EQ(fresh->size(), 5u);
  for (const auto& k : *fresh) EXPECT_EQ(ids.count(k.id), 0u) << "new one-time pre-key reuses id " << k.id;
  EXPECT_EQ(*patient->OneTimePreKeyCount(), 10u);
  for (size_t i = 0; i < handed_out.size(); ++i) {
    Party& sender = world.Add("sender-" + std::to_string(i));
    CW_ASSERT_OK(sender->ProcessBundle(patient.address(), handed_out[i]));
    EXPECT_EQ(DecryptText(patient, sender, MustEncrypt(sender, patient, "hi")), "hi")
        << "bundle with one-time pre-key id " << handed_out[i].one_time_pre_key->id;
  }
}

TEST_F(EnginePreKeyTest, SignedPreKeyRotatesAfterTwoDays) {
  auto first = patient->CurrentSignedPreKey();
  CW_ASSERT_OK(first);
  auto r = patient->RotateSignedPreKeyIfDue();
  CW_ASSERT_OK(r);
  EXPECT_FALSE(*r) << "a new key is not due";
  world.clock.Advance(2 * kDay - 1000);
  EXPECT_FALSE(*patient->RotateSignedPreKeyIfDue()) << "not due before 2 days";
  EXPECT_EQ(patient->CurrentSignedPreKey()->id, first->id);
  world.clock.Advance(2000);
  r = patient->RotateSignedPreKeyIfDue();
  CW_ASSERT_OK(r);
  EXPECT_TRUE(*r) << "due after 2 days";
  auto second = patient->CurrentSignedPreKey();
  CW_ASSERT_OK(second);
  EXPECT_NE(second->id, first->id);
  EXPECT_NE(second->public_key, first->public_key);
  EXPECT_FALSE(*patient->RotateSignedPreKeyIfDue()) << "the new key is not due yet";
  auto bundle = patient->MakeBundle();
  CW_ASSERT_OK(bundle);
  EXPECT_EQ(bundle->signed_pre_key, *second) << "bundles carry the current signed pre-key";
  // Sessions from the new bundle work.
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *bundle));
  EXPECT_EQ(DecryptText(patient, clinician, MustEncrypt(clinician, patient, "new spk")), "new spk");
}

TEST_F(EnginePreKeyTest, OldBundleWorksWithinRetentionAndFailsCleanlyAfter) {
  // Two senders fetch bundles before the rotation; their first messages arrive at different times.
  Party& nurse = world.Add("nurse");
  auto old_for_clinician = World::FetchBundle(patient);
  auto old_for_nurse = World::FetchBundle(patient, /*with_one_time_pre_key=*/false);
  CW_ASSERT_OK(old_for_clinician);
  CW_ASSERT_OK(old_for_nurse);
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *old_for_clinician));
  CW_ASSERT_OK(nurse->ProcessBundle(patient.address(), *old_for_nurse));
  Ciphertext from_clinician = MustEncrypt(clinician, patient, "sent on the old bundle");
  Ciphertext from_nurse = MustEncrypt(nurse, patient, "sent on the old bundle, delivered late");

  world.clock.Advance(2 * kDay + 1000);
  ASSERT_TRUE(*patient->RotateSignedPreKeyIfDue());
  EXPECT_EQ(DecryptText(patient, clinician, from_clinician), "sent on the old bundle")
      << "a replaced signed pre-key is kept for the retention period";

  // 30 days after the replacement, and another rotation: the first key is dropped.
  world.clock.Advance(30 * kDay + 1000);
  auto rotated = patient->RotateSignedPreKeyIfDue();
  CW_ASSERT_OK(rotated);
  EXPECT_TRUE(*rotated);
  const auto before = patient.snapshot();
  auto late = patient->Decrypt(nurse.address(), from_nurse);
  EXPECT_NE(CodeOf(late), StatusCode::kOk);
  EXPECT_TRUE(CodeOf(late) == StatusCode::kNotFound || CodeOf(late) == StatusCode::kNoSession ||
              CodeOf(late) == StatusCode::kMalformed)
      << testing::Describe(late);
  EXPECT_TRUE(SameState(before, patient.snapshot()));
  // The established session is unaffected, and the nurse can start over from a current bundle.
  EXPECT_EQ(DecryptText(patient, clinician, MustEncrypt(clinician, patient, "still here")), "still here");
  CW_ASSERT_OK(nurse->ProcessBundle(patient.address(), *World::FetchBundle(patient)));
  EXPECT_EQ(DecryptText(patient, nurse, MustEncrypt(nurse, patient, "again")), "again");
}

TEST_F(EnginePreKeyTest, RotationBeforeRetentionKeepsThePreviousKey) {
  // Two rotations 2 days apart: a bundle from before the first still works (it is 4 days old, within 30).
  auto old_bundle = World::FetchBundle(patient, false);
  CW_ASSERT_OK(old_bundle);
  world.clock.Advance(2 * kDay + 1000);
  ASSERT_TRUE(*patient->RotateSignedPreKeyIfDue());
  world.clock.Advance(2 * kDay + 1000);
  ASSERT_TRUE(*patient->RotateSignedPreKeyIfDue());
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *old_bundle));
  EXPECT_EQ(DecryptText(patient, clinician, MustEncrypt(clinician, patient, "4 days late")), "4 days late");
}

TEST_F(EnginePreKeyTest, FirstMessageNamingAnUnknownOneTimePreKeyFailsCleanly) {
  auto bundle = World::FetchBundle(patient);
  CW_ASSERT_OK(bundle);
  // The relay handed out a pre-key id the patient never made (a different key under a bogus id).
  bundle->one_time_pre_key->id = 0xABCDEF;
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *bundle));
  const auto before = patient.snapshot();
  auto r = patient->Decrypt(clinician.address(), MustEncrypt(clinician, patient, "x"));
  EXPECT_NE(CodeOf(r), StatusCode::kOk);
  EXPECT_TRUE(SameState(before, patient.snapshot()));
}

}  // namespace
}  // namespace cw::session
