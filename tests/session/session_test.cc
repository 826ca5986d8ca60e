// 1:1 sessions: X3DH, the Double Ratchet's delivery guarantees, and that no failed decrypt changes state.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <thread>

#include "tests/session/session_fixture.h"

namespace cw::session {
namespace {

using testing::AllDelivered;
using testing::CodeOf;
using testing::DecryptText;
using testing::MustEncrypt;
using testing::Party;
using testing::SameState;
using testing::Text;
using testing::World;

class SessionTest : public ::testing::Test {
 protected:
  World world;
  Party& clinician = world.Add("clinician");
  Party& patient = world.Add("patient");
};

void ExchangeAFew(Party& a, Party& b, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    const std::string ab = a.name() + " to " + b.name() + " #" + std::to_string(i);
    const std::string ba = b.name() + " to " + a.name() + " #" + std::to_string(i);
    EXPECT_EQ(DecryptText(b, a, MustEncrypt(a, b, ab)), ab);
    EXPECT_EQ(DecryptText(a, b, MustEncrypt(b, a, ba)), ba);
  }
}

TEST_F(SessionTest, X3dhWithOneTimePreKeyConsumesIt) {
  auto count_before = patient->OneTimePreKeyCount();
  CW_ASSERT_OK(count_before);
  auto bundle = World::FetchBundle(patient);
  CW_ASSERT_OK(bundle);
  ASSERT_TRUE(bundle->one_time_pre_key.has_value());
  EXPECT_EQ(bundle->identity_key, patient->identity_key());
  EXPECT_EQ(bundle->registration_id, patient->registration_id());

  EXPECT_FALSE(clinician->HasSession(patient.address()));
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *bundle));
  EXPECT_TRUE(clinician->HasSession(patient.address()));
  EXPECT_FALSE(patient->HasSession(clinician.address()));

  // Until the patient answers, every message carries the X3DH header.
  std::vector<Ciphertext> first;
  for (int i = 0; i < 3; ++i) {
    first.push_back(MustEncrypt(clinician, patient, testing::Numbered("first ", i)));
    EXPECT_EQ(first.back().type, MessageType::kPreKey);
  }
  // A bundle handed out is not yet consumed.
  EXPECT_EQ(*patient->OneTimePreKeyCount(), *count_before);
  EXPECT_EQ(DecryptText(patient, clinician, first[0]), "first 0");
  EXPECT_EQ(*patient->OneTimePreKeyCount(), *count_before - 1);
  EXPECT_TRUE(patient->HasSession(clinician.address()));
  EXPECT_EQ(DecryptText(patient, clinician, first[2]), "first 2");
  EXPECT_EQ(DecryptText(patient, clinician, first[1]), "first 1");
  EXPECT_EQ(*patient->OneTimePreKeyCount(), *count_before - 1) << "later first messages consume nothing more";

  for (int i = 0; i < 3; ++i) {
    Ciphertext reply = MustEncrypt(patient, clinician, testing::Numbered("reply ", i));
    EXPECT_EQ(reply.type, MessageType::kSignal);
    EXPECT_EQ(DecryptText(clinician, patient, reply), testing::Numbered("reply ", i));
  }
  Ciphertext after = MustEncrypt(clinician, patient, "after the reply");
  EXPECT_EQ(after.type, MessageType::kSignal) << "a session the peer answered drops the X3DH header";
  EXPECT_EQ(DecryptText(patient, clinician, after), "after the reply");
  ExchangeAFew(clinician, patient, 3);
  EXPECT_EQ(*patient->OneTimePreKeyCount(), *count_before - 1);

  // The consumed pre-key is never handed out again.
  auto next = patient->MakeBundle();
  CW_ASSERT_OK(next);
  ASSERT_TRUE(next->one_time_pre_key.has_value());
  EXPECT_NE(next->one_time_pre_key->id, bundle->one_time_pre_key->id);
}

TEST_F(SessionTest, X3dhWithoutOneTimePreKey) {
  auto count_before = patient->OneTimePreKeyCount();
  CW_ASSERT_OK(count_before);
  auto bundle = World::FetchBundle(patient, /*with_one_time_pre_key=*/false);
  CW_ASSERT_OK(bundle);
  EXPECT_FALSE(bundle->one_time_pre_key.has_value());
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *bundle));
  Ciphertext first = MustEncrypt(clinician, patient, "no one-time key");
  EXPECT_EQ(first.type, MessageType::kPreKey);
  EXPECT_EQ(DecryptText(patient, clinician, first), "no one-time key");
  EXPECT_EQ(*patient->OneTimePreKeyCount(), *count_before);
  ExchangeAFew(clinician, patient, 3);
}

TEST_F(SessionTest, BundlesNeverHandOutTheSameOneTimePreKey) {
  std::set<uint32_t> ids;
  for (int i = 0; i < 5; ++i) {  // the small batch
    auto b = patient->MakeBundle();
    CW_ASSERT_OK(b);
    ASSERT_TRUE(b->one_time_pre_key.has_value()) << i;
    EXPECT_TRUE(ids.insert(b->one_time_pre_key->id).second) << "id handed out twice: " << b->one_time_pre_key->id;
  }
  // All handed out: bundles go without one, and X3DH still works from them.
  auto b = patient->MakeBundle();
  CW_ASSERT_OK(b);
  EXPECT_FALSE(b->one_time_pre_key.has_value());
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *b));
  EXPECT_EQ(DecryptText(patient, clinician, MustEncrypt(clinician, patient, "x")), "x");
  // And the engine remembers across a restart what it handed out.
  patient.Reopen();
  auto again = patient->MakeBundle();
  CW_ASSERT_OK(again);
  EXPECT_FALSE(again->one_time_pre_key.has_value());
}

TEST_F(SessionTest, EncryptWithoutSessionIsNoSession) {
  auto r = clinician->Encrypt(patient.address(), AsBytes("hi"));
  EXPECT_EQ(CodeOf(r), StatusCode::kNoSession);
  // A SignalMessage from a peer the receiver has no session with.
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  Party& nurse = world.Add("nurse");
  Ciphertext ct = MustEncrypt(clinician, patient, "for the patient");
  auto snap = nurse.snapshot();
  EXPECT_EQ(CodeOf(nurse->Decrypt(clinician.address(), ct)), StatusCode::kNoSession);
  EXPECT_TRUE(SameState(snap, nurse.snapshot()));
}

TEST_F(SessionTest, ReplayIsDuplicateAndSessionKeepsWorking) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  // A first message (PreKeySignalMessage) replayed, on a fresh pair.
  Party& nurse = world.Add("nurse");
  auto bundle = World::FetchBundle(nurse);
  CW_ASSERT_OK(bundle);
  CW_ASSERT_OK(clinician->ProcessBundle(nurse.address(), *bundle));
  Ciphertext first = MustEncrypt(clinician, nurse, "first");
  ASSERT_EQ(first.type, MessageType::kPreKey);
  EXPECT_EQ(DecryptText(nurse, clinician, first), "first");
  auto snap = nurse.snapshot();
  EXPECT_EQ(CodeOf(nurse->Decrypt(clinician.address(), first)), StatusCode::kDuplicate);
  EXPECT_TRUE(SameState(snap, nurse.snapshot()));

  // A SignalMessage replayed, once and many times.
  Ciphertext m = MustEncrypt(clinician, patient, "take 5 mg");
  ASSERT_EQ(m.type, MessageType::kSignal);
  EXPECT_EQ(DecryptText(patient, clinician, m), "take 5 mg");
  auto snap2 = patient.snapshot();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(CodeOf(patient->Decrypt(clinician.address(), m)), StatusCode::kDuplicate);
  }
  EXPECT_TRUE(SameState(snap2, patient.snapshot()));
  ExchangeAFew(clinician, patient, 3);
  ExchangeAFew(clinician, nurse, 2);
  // Replay after the ratchet moved on is still a duplicate.
  EXPECT_EQ(CodeOf(patient->Decrypt(clinician.address(), m)), StatusCode::kDuplicate);
}

// Flips every byte of `ct` in turn (XOR with each of `masks`): each must fail without changing the receiver's
// store, and the original must still decrypt afterwards.
void ExpectEveryFlipRejected(Party& receiver, const Party& sender, const Ciphertext& ct, const std::string& text,
                             std::initializer_list<uint8_t> masks) {
  const auto before = receiver.snapshot();
  for (size_t i = 0; i < ct.body.size(); ++i) {
    for (uint8_t mask : masks) {
      Ciphertext bad = ct;
      bad.body[i] ^= mask;
      auto r = receiver->Decrypt(sender.address(), bad);
      EXPECT_NE(CodeOf(r), StatusCode::kOk)
          << "byte " << i << " of " << ct.body.size() << " ^ " << int(mask) << " decrypted to \""
          << (r.has_value() ? Text(r->body) : "") << "\"";
      ASSERT_TRUE(SameState(before, receiver.snapshot())) << "byte " << i << " ^ " << int(mask);
    }
  }
  EXPECT_EQ(DecryptText(receiver, sender, ct), text);
}

TEST_F(SessionTest, TamperedSignalMessageFailsAtEveryByteAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  Ciphertext ct = MustEncrypt(clinician, patient, "potassium 4.1 mmol/L");
  ASSERT_EQ(ct.type, MessageType::kSignal);
  // A SignalMessage is MAC'd from its version byte to its end: every bit counts.
  ExpectEveryFlipRejected(patient, clinician, ct, "potassium 4.1 mmol/L", {0xff, 0x01, 0x80});
}

TEST_F(SessionTest, BadMacIsReportedAsTampered) {
  // The header promises kTampered for a MAC failure, so a client can tell an attack from a broken sender.
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  Ciphertext ct = MustEncrypt(clinician, patient, "mac me");
  for (size_t i = ct.body.size() - 8; i < ct.body.size(); ++i) {  // the 8-byte truncated HMAC
    Ciphertext bad = ct;
    bad.body[i] ^= 0x01;
    auto r = patient->Decrypt(clinician.address(), bad);
    EXPECT_EQ(CodeOf(r), StatusCode::kTampered) << "MAC byte " << i << ": " << testing::Describe(r);
  }
  EXPECT_EQ(DecryptText(patient, clinician, ct), "mac me");
}

TEST_F(SessionTest, TamperedPreKeySignalMessageFailsAtEveryByteAndChangesNothing) {
  auto bundle = World::FetchBundle(patient);
  CW_ASSERT_OK(bundle);
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *bundle));
  Ciphertext ct = MustEncrypt(clinician, patient, "first contact");
  ASSERT_EQ(ct.type, MessageType::kPreKey);
  // Whole-byte flips only: Signal v3 leaves two header fields of a PreKeySignalMessage unauthenticated (the
  // low nibble of the version byte, the sender's current version, and the registration id), so single-bit
  // flips there still decrypt to the same plaintext from the same sender. Everything that keys or carries the
  // message (pre-key ids, base key, identity key, the MAC'd inner message) must fail.
  ExpectEveryFlipRejected(patient, clinician, ct, "first contact", {0xff});
}

TEST_F(SessionTest, TruncatedMessagesFailAndChangeNothing) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  Ciphertext ct = MustEncrypt(clinician, patient, "truncate me");
  const auto before = patient.snapshot();
  for (size_t len = 0; len < ct.body.size(); ++len) {
    Ciphertext bad = ct;
    bad.body.resize(len);
    EXPECT_NE(CodeOf(patient->Decrypt(clinician.address(), bad)), StatusCode::kOk) << len;
  }
  ASSERT_TRUE(SameState(before, patient.snapshot()));
  EXPECT_EQ(DecryptText(patient, clinician, ct), "truncate me");
}

// The receiver's chain starts at index 0 for a chain it has not seen; libsignal refuses a message whose
// counter is more than 2000 past the chain index, i.e. a message that would skip more than 2000 keys.
class SessionRatchetGapTest : public SessionTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
    // The clinician's next sends start a new sending chain (it received the patient's reply), counter 0.
    for (int i = 0; i < 2002; ++i) sent.push_back(MustEncrypt(clinician, patient, testing::Numbered("m", i)));
  }
  std::vector<Ciphertext> sent;
};

TEST_F(SessionRatchetGapTest, SkippingExactly2000Works) {
  // Message index 2000 (the 2001st) skips 2000 keys.
  EXPECT_EQ(DecryptText(patient, clinician, sent[2000]), "m2000");
  // The 2000 skipped keys were kept: every earlier message still decrypts, in any order.
  for (int i : {0, 1999, 1000, 1, 1998}) EXPECT_EQ(DecryptText(patient, clinician, sent[i]), testing::Numbered("m", i));
  EXPECT_EQ(DecryptText(patient, clinician, sent[2001]), "m2001");
  EXPECT_EQ(CodeOf(patient->Decrypt(clinician.address(), sent[1000])), StatusCode::kDuplicate);
}

TEST_F(SessionRatchetGapTest, Skipping2001IsTooFarAheadAndChangesNothing) {
  const auto before = patient.snapshot();
  auto r = patient->Decrypt(clinician.address(), sent[2001]);
  EXPECT_EQ(CodeOf(r), StatusCode::kTooFarAhead) << testing::Describe(r);
  ASSERT_TRUE(SameState(before, patient.snapshot()));
  // Nothing was lost: the chain picks up normally, and the refused message decrypts once it is in range.
  EXPECT_EQ(DecryptText(patient, clinician, sent[0]), "m0");
  EXPECT_EQ(DecryptText(patient, clinician, sent[2001]), "m2001");
  EXPECT_EQ(DecryptText(patient, clinician, sent[2000]), "m2000");
  ExchangeAFew(clinician, patient, 2);
}

TEST_F(SessionRatchetGapTest, BoundaryIsRelativeToTheChainIndex) {
  // After message 1 is delivered the chain index is 2: counter 2002 would be exactly 2000 ahead.
  EXPECT_EQ(DecryptText(patient, clinician, sent[1]), "m1");
  sent.push_back(MustEncrypt(clinician, patient, "m2002"));
  sent.push_back(MustEncrypt(clinician, patient, "m2003"));
  const auto before = patient.snapshot();
  EXPECT_EQ(CodeOf(patient->Decrypt(clinician.address(), sent[2003])), StatusCode::kTooFarAhead);
  ASSERT_TRUE(SameState(before, patient.snapshot()));
  EXPECT_EQ(DecryptText(patient, clinician, sent[2002]), "m2002");
}

TEST_F(SessionTest, OutOfOrderWithinAChainAndAcrossRatchetSteps) {
  for (uint32_t seed = 0; seed < 8; ++seed) {
    SCOPED_TRACE("shuffle seed " + std::to_string(seed));
    World w;
    Party& a = w.Add("clinician");
    Party& b = w.Add("patient");
    ASSERT_NO_FATAL_FAILURE(w.Establish(a, b));
    std::vector<std::pair<Ciphertext, std::string>> to_b, to_a;
    auto send_ab = [&](const std::string& t) { to_b.emplace_back(MustEncrypt(a, b, t), t); };
    auto send_ba = [&](const std::string& t) { to_a.emplace_back(MustEncrypt(b, a, t), t); };
    send_ab("a1");
    send_ab("a2");
    send_ab("a3");
    // The patient sees one of them and replies: a DH ratchet step on both sides.
    EXPECT_EQ(DecryptText(b, a, to_b[1].first), "a2");
    send_ba("b1");
    send_ba("b2");
    EXPECT_EQ(DecryptText(a, b, to_a[1].first), "b2");
    EXPECT_EQ(DecryptText(a, b, to_a[0].first), "b1");
    send_ab("a4");  // a new sending chain
    send_ab("a5");
    send_ab("a6");
    std::vector<size_t> order = {0, 2, 3, 4, 5};
    std::mt19937 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t i : order) EXPECT_EQ(DecryptText(b, a, to_b[i].first), to_b[i].second);
    // Each exactly once.
    for (const auto& [ct, t] : to_b) EXPECT_EQ(CodeOf(b->Decrypt(a.address(), ct)), StatusCode::kDuplicate) << t;
    for (const auto& [ct, t] : to_a) EXPECT_EQ(CodeOf(a->Decrypt(b.address(), ct)), StatusCode::kDuplicate) << t;
    ExchangeAFew(a, b, 2);
  }
}

TEST_F(SessionTest, SimultaneousInitiationConverges) {
  auto patient_bundle = World::FetchBundle(patient);
  auto clinician_bundle = World::FetchBundle(clinician);
  CW_ASSERT_OK(patient_bundle);
  CW_ASSERT_OK(clinician_bundle);
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *patient_bundle));
  CW_ASSERT_OK(patient->ProcessBundle(clinician.address(), *clinician_bundle));
  Ciphertext from_c = MustEncrypt(clinician, patient, "from clinician");
  Ciphertext from_p = MustEncrypt(patient, clinician, "from patient");
  EXPECT_EQ(from_c.type, MessageType::kPreKey);
  EXPECT_EQ(from_p.type, MessageType::kPreKey);
  EXPECT_EQ(DecryptText(patient, clinician, from_c), "from clinician");
  EXPECT_EQ(DecryptText(clinician, patient, from_p), "from patient");
  // Both directions keep working, alternating and in bursts, whichever session each side now uses.
  ExchangeAFew(clinician, patient, 3);
  std::vector<Ciphertext> burst_c, burst_p;
  for (int i = 0; i < 3; ++i) {
    burst_c.push_back(MustEncrypt(clinician, patient, testing::Numbered("c", i)));
    burst_p.push_back(MustEncrypt(patient, clinician, testing::Numbered("p", i)));
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(DecryptText(patient, clinician, burst_c[i]), testing::Numbered("c", i));
    EXPECT_EQ(DecryptText(clinician, patient, burst_p[i]), testing::Numbered("p", i));
  }
  ExchangeAFew(patient, clinician, 3);
}

TEST_F(SessionTest, SimultaneousInitiationWithBothMessagesInFlightConverges) {
  // As above, but each side sends twice before anything arrives, and delivery interleaves.
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *World::FetchBundle(patient)));
  CW_ASSERT_OK(patient->ProcessBundle(clinician.address(), *World::FetchBundle(clinician)));
  Ciphertext c1 = MustEncrypt(clinician, patient, "c1");
  Ciphertext p1 = MustEncrypt(patient, clinician, "p1");
  Ciphertext c2 = MustEncrypt(clinician, patient, "c2");
  Ciphertext p2 = MustEncrypt(patient, clinician, "p2");
  EXPECT_EQ(DecryptText(patient, clinician, c1), "c1");
  EXPECT_EQ(DecryptText(clinician, patient, p2), "p2");
  EXPECT_EQ(DecryptText(clinician, patient, p1), "p1");
  EXPECT_EQ(DecryptText(patient, clinician, c2), "c2");
  ExchangeAFew(clinician, patient, 4);
}

TEST_F(SessionTest, UnknownVersionByteIsRejectedAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  Ciphertext ct = MustEncrypt(clinician, patient, "versioned");
  ASSERT_EQ(ct.type, MessageType::kSignal);
  ASSERT_EQ(ct.body[0] >> 4, 3) << "Signal v3 traffic";
  const auto before = patient.snapshot();
  for (int version = 0; version < 16; ++version) {
    if (version == 3) continue;
    Ciphertext bad = ct;
    bad.body[0] = static_cast<uint8_t>((version << 4) | (ct.body[0] & 0x0f));
    auto r = patient->Decrypt(clinician.address(), bad);
    // libsignal 2.3.3 reports a version above 3 as an invalid message (not SG_ERR_INVALID_VERSION) and parses
    // version 2, failing later on the session's version; the engine reports both as kMalformed today.
    EXPECT_TRUE(CodeOf(r) == StatusCode::kUnsupportedVersion || CodeOf(r) == StatusCode::kMalformed)
        << "version " << version << ": " << testing::Describe(r);
  }
  ASSERT_TRUE(SameState(before, patient.snapshot()));
  EXPECT_EQ(DecryptText(patient, clinician, ct), "versioned");
}

TEST_F(SessionTest, ParseSignalMessageRejectsEveryVersionButThree) {
  // The relay's sanity check must not pass what no engine here can decrypt.
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  Ciphertext ct = MustEncrypt(clinician, patient, "versioned");
  CW_ASSERT_OK(ParseSignalMessage(MessageType::kSignal, ct.body));
  for (int version = 0; version < 16; ++version) {
    if (version == 3) continue;
    Bytes bad = ct.body;
    bad[0] = static_cast<uint8_t>((version << 4) | (bad[0] & 0x0f));
    auto s = ParseSignalMessage(MessageType::kSignal, bad);
    EXPECT_TRUE(s.code() == StatusCode::kUnsupportedVersion || s.code() == StatusCode::kMalformed)
        << "version " << version << ": " << s.ToString();
  }
}

TEST_F(SessionTest, GarbageOfEachMessageTypeIsMalformedAndChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  // A group the clinician belongs to, so group-message garbage reaches the parser rather than the
  // membership check.
  const std::string group = clinician->NewGroupId();
  auto outs = clinician->CreateGroup(group, {"patient"});
  CW_ASSERT_OK(outs);
  ASSERT_TRUE(AllDelivered(world.Pump("clinician", *outs)));
  std::mt19937 rng(99);
  const auto before = patient.snapshot();
  for (MessageType type : {MessageType::kSignal, MessageType::kPreKey, MessageType::kSenderKey,
                           MessageType::kSenderKeyDistribution}) {
    for (size_t len : {size_t{0}, size_t{1}, size_t{2}, size_t{8}, size_t{33}, size_t{64}, size_t{200}, size_t{1000}}) {
      for (int rep = 0; rep < 5; ++rep) {
        Ciphertext garbage;
        garbage.type = type;
        garbage.body.resize(len);
        for (auto& b : garbage.body) b = static_cast<uint8_t>(rng());
        if (len > 0) garbage.body[0] = 0x33;  // a valid version byte, so the parser, not the version, rejects it
        if (type == MessageType::kSenderKey) garbage.group_id = group;
        auto r = patient->Decrypt(clinician.address(), garbage);
        if (type == MessageType::kSenderKeyDistribution) {
          // Refused outright at the top level: sender keys only count inside a 1:1 session.
          EXPECT_TRUE(CodeOf(r) == StatusCode::kPermissionDenied || CodeOf(r) == StatusCode::kMalformed)
              << "len " << len << ": " << testing::Describe(r);
        } else {
          EXPECT_EQ(CodeOf(r), StatusCode::kMalformed)
              << "type " << int(type) << " len " << len << ": " << testing::Describe(r);
        }
        EXPECT_EQ(CodeOf(ParseSignalMessage(type, garbage.body)), StatusCode::kMalformed)
            << "type " << int(type) << " len " << len;
      }
    }
  }
  // An unknown message type.
  Ciphertext odd = MustEncrypt(clinician, patient, "x");
  odd.type = static_cast<MessageType>(9);
  EXPECT_NE(CodeOf(patient->Decrypt(clinician.address(), odd)), StatusCode::kOk);
  ASSERT_TRUE(SameState(before, patient.snapshot()));
  ExchangeAFew(clinician, patient, 1);
}

TEST_F(SessionTest, ParseSignalMessageAcceptsRealMessages) {
  auto bundle = World::FetchBundle(patient);
  CW_ASSERT_OK(bundle);
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *bundle));
  Ciphertext first = MustEncrypt(clinician, patient, "1");
  CW_EXPECT_OK(ParseSignalMessage(MessageType::kPreKey, first.body));
  EXPECT_NE(CodeOf(ParseSignalMessage(MessageType::kSignal, first.body)), StatusCode::kOk)
      << "a PreKeySignalMessage is not a SignalMessage";
  EXPECT_EQ(DecryptText(patient, clinician, first), "1");
  Ciphertext reply = MustEncrypt(patient, clinician, "2");
  CW_EXPECT_OK(ParseSignalMessage(MessageType::kSignal, reply.body));
}

TEST_F(SessionTest, StoreFailureDuringDecryptWritesNothingAndTheMessageDecryptsLater) {
  auto bundle = World::FetchBundle(patient);
  CW_ASSERT_OK(bundle);
  CW_ASSERT_OK(clinician->ProcessBundle(patient.address(), *bundle));
  Ciphertext first = MustEncrypt(clinician, patient, "first");
  const size_t otpk = *patient->OneTimePreKeyCount();
  auto before = patient.snapshot();
  patient.store().FailCommitAfter(0);
  EXPECT_NE(CodeOf(patient->Decrypt(clinician.address(), first)), StatusCode::kOk);
  patient.store().FailCommitAfter(-1);
  ASSERT_TRUE(SameState(before, patient.snapshot()));
  EXPECT_EQ(*patient->OneTimePreKeyCount(), otpk);
  EXPECT_EQ(DecryptText(patient, clinician, first), "first");
  EXPECT_EQ(*patient->OneTimePreKeyCount(), otpk - 1);

  // The same for a SignalMessage on the settled session, and across a restart of the receiver.
  Ciphertext reply = MustEncrypt(patient, clinician, "reply");
  EXPECT_EQ(DecryptText(clinician, patient, reply), "reply");
  Ciphertext m = MustEncrypt(clinician, patient, "second");
  before = patient.snapshot();
  patient.store().FailCommitAfter(0);
  EXPECT_NE(CodeOf(patient->Decrypt(clinician.address(), m)), StatusCode::kOk);
  patient.store().FailCommitAfter(-1);
  ASSERT_TRUE(SameState(before, patient.snapshot()));
  patient.Reopen();
  EXPECT_EQ(DecryptText(patient, clinician, m), "second");
  ExchangeAFew(clinician, patient, 2);
}

TEST_F(SessionTest, StoreFailureDuringEncryptDoesNotBreakTheSession) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  auto before = clinician.snapshot();
  clinician.store().FailCommitAfter(0);
  auto r = clinician->Encrypt(patient.address(), AsBytes("lost"));
  clinician.store().FailCommitAfter(-1);
  EXPECT_NE(CodeOf(r), StatusCode::kOk) << "an Encrypt whose state was not stored must not hand out ciphertext";
  EXPECT_TRUE(SameState(before, clinician.snapshot()));
  ExchangeAFew(clinician, patient, 3);
}

TEST_F(SessionTest, StateSurvivesARestart) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  Ciphertext held = MustEncrypt(clinician, patient, "held");
  const auto identity = patient->identity_key();
  patient.Reopen();
  clinician.Reopen();
  EXPECT_EQ(patient->identity_key(), identity);
  EXPECT_EQ(DecryptText(patient, clinician, held), "held");
  ExchangeAFew(clinician, patient, 2);
}

TEST_F(SessionTest, CallsFromAnotherThreadArePermissionDenied) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  Ciphertext ct = MustEncrypt(clinician, patient, "owner thread only");
  const auto c_before = clinician.snapshot();
  const auto p_before = patient.snapshot();
  StatusCode encrypt_code = StatusCode::kOk, decrypt_code = StatusCode::kOk, bundle_code = StatusCode::kOk;
  std::thread t([&] {
    encrypt_code = CodeOf(clinician->Encrypt(patient.address(), AsBytes("from elsewhere")));
    decrypt_code = CodeOf(patient->Decrypt(clinician.address(), ct));
    bundle_code = CodeOf(patient->MakeBundle());
  });
  t.join();
  EXPECT_EQ(encrypt_code, StatusCode::kPermissionDenied);
  EXPECT_EQ(decrypt_code, StatusCode::kPermissionDenied);
  EXPECT_EQ(bundle_code, StatusCode::kPermissionDenied);
  EXPECT_TRUE(SameState(c_before, clinician.snapshot()));
  EXPECT_TRUE(SameState(p_before, patient.snapshot()));
  // The owner thread carries on, and the message refused on the other thread was not consumed.
  EXPECT_EQ(DecryptText(patient, clinician, ct), "owner thread only");
  ExchangeAFew(clinician, patient, 1);
}

TEST_F(SessionTest, LargeAndEmptyPlaintextsRoundTrip) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(clinician, patient));
  for (size_t n : {size_t{0}, size_t{1}, size_t{255}, size_t{256}, size_t{5000}, size_t{200000}}) {
    std::string text(n, 'x');
    for (size_t i = 0; i < n; ++i) text[i] = static_cast<char>('a' + i % 26);
    Ciphertext ct = MustEncrypt(clinician, patient, text);
    EXPECT_EQ(DecryptText(patient, clinician, ct), text) << n;
  }
  // Padding hides short lengths: a 1-byte and a 200-byte message have the same ciphertext size.
  Ciphertext a = MustEncrypt(clinician, patient, "y");
  Ciphertext b = MustEncrypt(clinician, patient, std::string(200, 'y'));
  EXPECT_EQ(a.body.size(), b.body.size());
}

}  // namespace
}  // namespace cw::session
