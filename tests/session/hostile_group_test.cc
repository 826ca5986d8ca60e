// Attacks on groups and the identity policy by a hostile relay or peer, each found in review: the relay
// names the sender of every message, may reorder and replay, and anyone may build a valid X3DH message
// with a key of their own.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <msgpack.hpp>

#include "core/session/records.h"
#include "tests/session/session_fixture.h"

namespace cw::session {
namespace {

using testing::AllDelivered;
using testing::CodeOf;
using testing::Party;
using testing::SameState;
using testing::World;

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

bool Has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

class HostileGroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (Party* p : {&clinician, &nurse, &patient, &pharmacist}) {
      for (Party* q : {&clinician, &nurse, &patient, &pharmacist}) {
        if (p < q) {
          ASSERT_NO_FATAL_FAILURE(world.Establish(*p, *q));
        }
      }
    }
  }
  void CreateGroup(std::vector<std::string> others) {
    auto outs = clinician->CreateGroup(group_, others);
    CW_ASSERT_OK(outs);
    ASSERT_TRUE(AllDelivered(world.Pump("clinician", *outs)));
  }
  // Mallory builds a valid first message to the nurse with her own identity key.
  Ciphertext ForgedFirstMessage() {
    auto bundle = World::FetchBundle(nurse);
    EXPECT_TRUE(bundle.has_value());
    EXPECT_EQ(CodeOf(mallory->ProcessBundle(Address{"nurse", 1}, *bundle)), StatusCode::kOk);
    auto forged = mallory->Encrypt(Address{"nurse", 1}, AsBytes("hi"));
    EXPECT_TRUE(forged.has_value());
    return *forged;
  }

  World world;
  Party& clinician = world.Add("clinician");
  Party& nurse = world.Add("nurse");
  Party& patient = world.Add("patient");
  Party& pharmacist = world.Add("pharmacist");
  Party& mallory = world.Add("mallory");  // no sessions with anyone
  const std::string group_ = clinician->NewGroupId();  // bound to the clinician, its admin
};

TEST_F(HostileGroupTest, NothingIsAcceptedUnderOurOwnName) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient"}));
  auto bundle = World::FetchBundle(nurse);
  ASSERT_TRUE(bundle.has_value());
  CW_ASSERT_OK(mallory->ProcessBundle(Address{"nurse", 1}, *bundle));
  auto outs = mallory->CreateGroup(group_, {"nurse"});
  CW_ASSERT_OK(outs);
  ASSERT_EQ(outs->messages.size(), 1u);
  auto before = nurse.snapshot();
  // The relay labels it as coming from another device of the nurse herself.
  auto r = nurse->Decrypt(Address{"nurse", 2}, outs->messages[0].message);
  EXPECT_EQ(CodeOf(r), StatusCode::kPermissionDenied);
  EXPECT_TRUE(SameState(before, nurse.snapshot()));
  auto members = nurse->GroupMembers(group_);
  CW_ASSERT_OK(members);
  EXPECT_EQ(Sorted(*members), (std::vector<std::string>{"clinician", "nurse", "patient"}));
  EXPECT_EQ(CodeOf(nurse->Encrypt(Address{"nurse", 2}, AsBytes("x"))), StatusCode::kInvalidArgument);
}

TEST_F(HostileGroupTest, ReorderedMembershipCannotBringBackARemovedMember) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient"}));
  auto add = clinician->AddGroupMember(group_, "pharmacist");
  CW_ASSERT_OK(add);
  auto rem = clinician->RemoveGroupMember(group_, "pharmacist");
  CW_ASSERT_OK(rem);
  const Outgoing* add_to_nurse = nullptr;
  const Outgoing* rem_to_nurse = nullptr;
  for (auto& o : add->messages) add_to_nurse = o.to.name == "nurse" ? &o : add_to_nurse;
  for (auto& o : rem->messages) rem_to_nurse = o.to.name == "nurse" ? &o : rem_to_nurse;
  ASSERT_TRUE(add_to_nurse && rem_to_nurse);
  // The relay delivers the removal first, then the stale addition.
  auto r1 = nurse->Decrypt(clinician.address(), rem_to_nurse->message);
  CW_ASSERT_OK(r1);
  auto r2 = nurse->Decrypt(clinician.address(), add_to_nurse->message);
  CW_ASSERT_OK(r2);  // the ratchet moves on; the group does not
  auto members = nurse->GroupMembers(group_);
  CW_ASSERT_OK(members);
  EXPECT_FALSE(Has(*members, "pharmacist"));
  for (auto& o : r2->replies) EXPECT_NE(o.to.name, "pharmacist") << "a sender key went to the removed member";
  // Replaying the removal changes nothing either.
  EXPECT_EQ(CodeOf(nurse->Decrypt(clinician.address(), rem_to_nurse->message)), StatusCode::kDuplicate);
}

const Outgoing* To(const std::vector<Outgoing>& v, const std::string& name) {
  for (const auto& o : v) {
    if (o.to.name == name) return &o;
  }
  return nullptr;
}

// Every member knows the group id. A hostile member (the nurse, on a modified client) forgets the group and
// "creates" it again as its admin, inviting someone the real admin is about to add. Found in review: the
// pharmacist's device took her as admin, refused the real admin's invitation, and then, when she added an
// outsider, sent its sender key to him. A group id is bound to its admin's identity key, so her claim is
// refused and the real invitation works.
TEST_F(HostileGroupTest, AMemberCannotClaimTheGroupOnANewcomersDevice) {
  ASSERT_NO_FATAL_FAILURE(world.Establish(nurse, mallory));
  ASSERT_NO_FATAL_FAILURE(world.Establish(pharmacist, mallory));
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient"}));

  WriteBatch forget;
  forget.writes.push_back(Write{Table::kGroup, group_, std::nullopt});
  CW_ASSERT_OK(nurse.store().Commit(std::move(forget)));
  auto claim = nurse->CreateGroup(group_, {"clinician", "patient", "pharmacist"});
  CW_ASSERT_OK(claim);
  ASSERT_NE(To(claim->messages, "pharmacist"), nullptr);
  const auto before = pharmacist.snapshot();
  EXPECT_EQ(CodeOf(pharmacist->Decrypt(nurse.address(), To(claim->messages, "pharmacist")->message)),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(SameState(before, pharmacist.snapshot()));

  auto add = clinician->AddGroupMember(group_, "pharmacist");
  CW_ASSERT_OK(add);
  ASSERT_NE(To(add->messages, "pharmacist"), nullptr);
  CW_ASSERT_OK(pharmacist->Decrypt(clinician.address(), To(add->messages, "pharmacist")->message));
  auto members = pharmacist->GroupMembers(group_);
  CW_ASSERT_OK(members);
  EXPECT_EQ(Sorted(*members), (std::vector<std::string>{"clinician", "nurse", "patient", "pharmacist"}));

  // The nurse, admin of nothing on the pharmacist's device, cannot bring in an outsider there.
  auto add_outsider = nurse->AddGroupMember(group_, "mallory");
  CW_ASSERT_OK(add_outsider);
  ASSERT_NE(To(add_outsider->messages, "pharmacist"), nullptr);
  EXPECT_EQ(CodeOf(pharmacist->Decrypt(nurse.address(), To(add_outsider->messages, "pharmacist")->message)),
            StatusCode::kPermissionDenied);
  members = pharmacist->GroupMembers(group_);
  CW_ASSERT_OK(members);
  EXPECT_FALSE(Has(*members, "mallory"));
}

// The same claim on a removed member's device: once the patient is removed (and has forgotten the group),
// another member cannot bring the group back there under herself.
TEST_F(HostileGroupTest, AMemberCannotReviveTheGroupOnARemovedMembersDevice) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient"}));
  auto removed = clinician->RemoveGroupMember(group_, "patient");
  CW_ASSERT_OK(removed);
  ASSERT_TRUE(AllDelivered(world.Pump("clinician", *removed)));
  EXPECT_NE(CodeOf(patient->GroupMembers(group_)), StatusCode::kOk);

  WriteBatch forget;
  forget.writes.push_back(Write{Table::kGroup, group_, std::nullopt});
  CW_ASSERT_OK(nurse.store().Commit(std::move(forget)));
  auto claim = nurse->CreateGroup(group_, {"clinician", "patient"});
  CW_ASSERT_OK(claim);
  ASSERT_NE(To(claim->messages, "patient"), nullptr);
  EXPECT_EQ(CodeOf(patient->Decrypt(nurse.address(), To(claim->messages, "patient")->message)),
            StatusCode::kPermissionDenied);
  EXPECT_NE(CodeOf(patient->GroupMembers(group_)), StatusCode::kOk);
}

TEST_F(HostileGroupTest, OnlyTheAdminChangesMembership) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient"}));
  EXPECT_EQ(CodeOf(nurse->RemoveGroupMember(group_, "patient")), StatusCode::kPermissionDenied);
  EXPECT_EQ(CodeOf(nurse->AddGroupMember(group_, "pharmacist")), StatusCode::kPermissionDenied);
}

TEST_F(HostileGroupTest, ForgedFirstMessageChangesNothingAndKeepsTheFirstPendingKey) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient", "pharmacist"}));
  Ciphertext forged = ForgedFirstMessage();
  // A bit-flipped copy fails its MAC: nothing at all is recorded. (The middle of the body is inside the
  // embedded SignalMessage's ciphertext; some outer fields, such as the registration id, are not
  // authenticated in Signal v3.)
  Ciphertext flipped = forged;
  flipped.body[flipped.body.size() / 2] ^= 0x01;
  auto before = nurse.snapshot();
  EXPECT_NE(CodeOf(nurse->Decrypt(pharmacist.address(), flipped)), StatusCode::kOk);
  EXPECT_TRUE(SameState(before, nurse.snapshot()));
  auto contact = nurse->GetContact("pharmacist");
  CW_ASSERT_OK(contact);
  EXPECT_NE(contact->state, TrustState::kChanged);

  // The intact one is a well-formed message under a new key: it is refused and shown as a change, and the
  // safety number on offer is the new key's, so the user can see it is not the pharmacist's.
  auto old_number = nurse->GetSafetyNumber("pharmacist");
  CW_ASSERT_OK(old_number);
  EXPECT_EQ(CodeOf(nurse->Decrypt(pharmacist.address(), forged)), StatusCode::kUntrustedIdentity);
  contact = nurse->GetContact("pharmacist");
  CW_ASSERT_OK(contact);
  ASSERT_EQ(contact->state, TrustState::kChanged);
  EXPECT_EQ(*contact->pending_identity_key, mallory->identity_key());
  auto new_number = nurse->GetSafetyNumber("pharmacist");
  CW_ASSERT_OK(new_number);
  EXPECT_NE(old_number->digits, new_number->digits);
  // Accepting a different key than the one compared is refused.
  EXPECT_EQ(CodeOf(nurse->AcceptIdentityChange("pharmacist", pharmacist->identity_key())),
            StatusCode::kInvalidArgument);

  // A second, different key does not replace the pending one.
  Party& eve = world.Add("eve");
  auto bundle = World::FetchBundle(nurse);
  ASSERT_TRUE(bundle.has_value());
  CW_ASSERT_OK(eve->ProcessBundle(Address{"nurse", 1}, *bundle));
  auto second = eve->Encrypt(Address{"nurse", 1}, AsBytes("me too"));
  CW_ASSERT_OK(second);
  EXPECT_EQ(CodeOf(nurse->Decrypt(pharmacist.address(), *second)), StatusCode::kUntrustedIdentity);
  contact = nurse->GetContact("pharmacist");
  CW_ASSERT_OK(contact);
  EXPECT_EQ(*contact->pending_identity_key, mallory->identity_key());
}

TEST_F(HostileGroupTest, AMemberAwaitingIdentityAcceptanceDoesNotBlockARemoval) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient", "pharmacist"}));
  ASSERT_EQ(CodeOf(nurse->Decrypt(pharmacist.address(), ForgedFirstMessage())), StatusCode::kUntrustedIdentity);

  auto rem = clinician->RemoveGroupMember(group_, "patient");
  CW_ASSERT_OK(rem);
  bool skipped_reported = false;
  for (auto& o : rem->messages) {
    if (o.to.name != "nurse") continue;
    auto d = nurse->Decrypt(clinician.address(), o.message);
    CW_ASSERT_OK(d);
    for (auto& u : d->untrusted_members) skipped_reported |= u.name == "pharmacist";
  }
  EXPECT_TRUE(skipped_reported) << "the nurse must hear that the pharmacist did not get her new key";
  auto members = nurse->GroupMembers(group_);
  CW_ASSERT_OK(members);
  EXPECT_FALSE(Has(*members, "patient")) << "the removal must take effect";
  // The removed patient cannot read the nurse's next group message (her key was rotated).
  auto ct = nurse->GroupEncrypt(group_, AsBytes("after removal"));
  CW_ASSERT_OK(ct);
  EXPECT_NE(CodeOf(patient->Decrypt(nurse.address(), *ct)), StatusCode::kOk);
}

// Found in review: anyone can send a first message under a member's name with a key of their own, which
// leaves that member's identity change pending on the admin's device. The admin then skipped that member at
// a removal, so she never learned of it, kept listing the removed patient and kept writing under her old
// key, which the removed patient (on a client that keeps its keys) could read. The removal now reaches her
// over the session with the key the admin still trusts.
TEST_F(HostileGroupTest, AMemberWithAForgedIdentityChangeStillLearnsOfARemoval) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient", "pharmacist"}));
  auto bundle = World::FetchBundle(clinician);
  ASSERT_TRUE(bundle.has_value());
  CW_ASSERT_OK(mallory->ProcessBundle(clinician.address(), *bundle));
  auto forged = mallory->Encrypt(clinician.address(), AsBytes("hi"));
  CW_ASSERT_OK(forged);
  ASSERT_EQ(CodeOf(clinician->Decrypt(pharmacist.address(), *forged)), StatusCode::kUntrustedIdentity);

  auto rem = clinician->RemoveGroupMember(group_, "patient");
  CW_ASSERT_OK(rem);
  ASSERT_EQ(rem->untrusted_members.size(), 1u);  // the user still hears of the pending change
  EXPECT_EQ(rem->untrusted_members[0].name, "pharmacist");
  // Everyone but the removed patient gets the update (the patient's client keeps its keys: it never sees its
  // own removal), and the replies (rotated keys) go round.
  std::vector<Outgoing> to_members;
  for (auto& o : rem->messages) {
    if (o.to.name != "patient") to_members.push_back(o);
  }
  ASSERT_TRUE(AllDelivered(world.Pump("clinician", to_members)));
  auto members = pharmacist->GroupMembers(group_);
  CW_ASSERT_OK(members);
  EXPECT_FALSE(Has(*members, "patient"));
  auto ct = pharmacist->GroupEncrypt(group_, AsBytes("after the removal"));
  CW_ASSERT_OK(ct);
  EXPECT_NE(CodeOf(patient->Decrypt(pharmacist.address(), *ct)), StatusCode::kOk);
  EXPECT_EQ(testing::Text(nurse->Decrypt(pharmacist.address(), *ct).value().body), "after the removal");
  // The pharmacist's 1:1 identity stays pending: a user message is still refused until accepted.
  EXPECT_EQ(CodeOf(clinician->Encrypt(pharmacist.address(), AsBytes("x"))), StatusCode::kUntrustedIdentity);
}

TEST_F(HostileGroupTest, AHookCannotReenterTheEngine) {
  Engine::EncryptHook hook = [&](const Ciphertext&, WriteBatch*) -> Status {
    auto inner = nurse->GetContact("clinician");
    EXPECT_EQ(CodeOf(inner), StatusCode::kPermissionDenied);
    return Status::Ok();
  };
  auto a = nurse->Encrypt(clinician.address(), AsBytes("first secret"), hook);
  auto b = nurse->Encrypt(clinician.address(), AsBytes("second secret"), hook);
  CW_ASSERT_OK(a);
  CW_ASSERT_OK(b);
  // Each message has its own key: both decrypt, in order.
  auto ra = clinician->Decrypt(nurse.address(), *a);
  auto rb = clinician->Decrypt(nurse.address(), *b);
  CW_ASSERT_OK(ra);
  CW_ASSERT_OK(rb);
  EXPECT_EQ(testing::Text(rb->body), "second secret");
}

TEST_F(HostileGroupTest, AThrowingHookFailsTheOperationAndWritesNothing) {
  auto before = nurse.snapshot();
  auto r = nurse->Encrypt(clinician.address(), AsBytes("x"),
                          [](const Ciphertext&, WriteBatch*) -> Status { throw std::runtime_error("boom"); });
  EXPECT_EQ(CodeOf(r), StatusCode::kInternal);
  EXPECT_TRUE(SameState(before, nurse.snapshot()));
}

// Found in review: libsignal took a second copy of a sender key already held, at the copy's place in the
// chain, and decrypted with it: messages still in flight failed as duplicates, and read ones were accepted
// again when the relay replayed them. A key already held is now taken once.
TEST_F(HostileGroupTest, ACatchUpToAMemberWhoHoldsTheKeyLosesNoMessageInFlight) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient"}));
  auto first = clinician->GroupEncrypt(group_, AsBytes("in flight 1"));
  auto second = clinician->GroupEncrypt(group_, AsBytes("in flight 2"));
  CW_ASSERT_OK(first);
  CW_ASSERT_OK(second);
  auto again = clinician->CatchUpGroups("nurse");
  CW_ASSERT_OK(again);
  ASSERT_EQ(again->messages.size(), 1u);
  ASSERT_TRUE(AllDelivered(world.Pump("clinician", *again)));
  auto r1 = nurse->Decrypt(clinician.address(), *first);
  auto r2 = nurse->Decrypt(clinician.address(), *second);
  EXPECT_EQ(CodeOf(r1), StatusCode::kOk) << testing::Describe(r1);
  EXPECT_EQ(CodeOf(r2), StatusCode::kOk) << testing::Describe(r2);
}

TEST_F(HostileGroupTest, ADelayedCatchUpDoesNotLetTheRelayReplayAReadGroupMessage) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient"}));
  auto again = clinician->CatchUpGroups("nurse");
  CW_ASSERT_OK(again);
  auto m = clinician->GroupEncrypt(group_, AsBytes("take 5mg"));
  CW_ASSERT_OK(m);
  CW_ASSERT_OK(nurse->Decrypt(clinician.address(), *m));
  ASSERT_EQ(CodeOf(nurse->Decrypt(clinician.address(), *m)), StatusCode::kDuplicate);
  ASSERT_TRUE(AllDelivered(world.Pump("clinician", *again)));
  EXPECT_EQ(CodeOf(nurse->Decrypt(clinician.address(), *m)), StatusCode::kDuplicate)
      << "a replay was read again";
}

// Found in review: a device removed from a group forgot its epoch with it, so a membership from before the
// removal that the relay held back (here the admin's catch-up) read as an invitation back into the group.
TEST_F(HostileGroupTest, AnUpdateFromBeforeOurRemovalDoesNotBringUsBack) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient"}));
  auto catch_up = clinician->CatchUpGroups("patient");
  CW_ASSERT_OK(catch_up);
  ASSERT_EQ(catch_up->messages.size(), 1u);
  auto removal = clinician->RemoveGroupMember(group_, "patient");
  CW_ASSERT_OK(removal);
  ASSERT_TRUE(AllDelivered(world.Pump("clinician", *removal)));
  ASSERT_EQ(CodeOf(patient->GroupMembers(group_)), StatusCode::kNotFound);
  auto before = patient.snapshot();
  EXPECT_EQ(CodeOf(patient->Decrypt(clinician.address(), catch_up->messages[0].message)),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(SameState(before, patient.snapshot()));
  EXPECT_EQ(CodeOf(patient->GroupMembers(group_)), StatusCode::kNotFound);

  // Added again by the admin (a later epoch), the patient is a member again.
  auto added = clinician->AddGroupMember(group_, "patient");
  CW_ASSERT_OK(added);
  ASSERT_TRUE(AllDelivered(world.Pump("clinician", *added)));
  auto members = patient->GroupMembers(group_);
  CW_ASSERT_OK(members);
  EXPECT_EQ(members->size(), 3u);
}

// Delivers `outs` from `from` and every reply they produce, without making the sessions a member reports
// missing (World::Pump would). Returns each delivery's result, in order.
std::vector<Result<Received>> DeliverAll(World& w, const std::string& from,
                                         const std::vector<Outgoing>& outs) {
  std::vector<Result<Received>> results;
  std::deque<std::pair<std::string, Outgoing>> queue;
  for (const auto& o : outs) queue.emplace_back(from, o);
  while (!queue.empty()) {
    auto [sender, o] = std::move(queue.front());
    queue.pop_front();
    auto r = w.Deliver(sender, o);
    if (r.has_value()) {
      for (const auto& reply : r->replies) queue.emplace_back(o.to.name, reply);
    }
    results.push_back(std::move(r));
  }
  return results;
}

// `from`'s first message to `to`, built from `to`'s bundle under whatever identity `from` has: its own, or
// an impostor's under a name the receiver is told it comes from.
Ciphertext FirstMessage(Party& from, Party& to, const std::string& text) {
  auto bundle = World::FetchBundle(to);
  EXPECT_TRUE(bundle.has_value());
  EXPECT_EQ(CodeOf(from->ProcessBundle(to.address(), *bundle)), StatusCode::kOk);
  auto m = from->Encrypt(to.address(), AsBytes(text));
  EXPECT_TRUE(m.has_value());
  return m.value_or(Ciphertext{});
}

bool Names(const std::vector<Address>& v, const std::string& name) {
  return std::any_of(v.begin(), v.end(), [&](const Address& a) { return a.name == name; });
}

// Found in review: a roster named members and nothing more, so on a device that never met a member, whoever
// wrote first under that member's name held the session the group's keys went over. Here the patient, a
// member herself, writes to the nurse as "pharmacist": she was sent the nurse's key again after her own
// removal, and could give the nurse a sender key that made her group messages read as the pharmacist's.
// Rosters now carry the key the admin trusts for each member.
TEST(HostileRosterTest, AMemberNameUnderAnotherKeyIsSentNoGroupKeyAndCannotGiveOne) {
  World w;
  Party& clinician = w.Add("clinician");
  Party& nurse = w.Add("nurse");
  Party& pharmacist = w.Add("pharmacist");
  Party& patient = w.Add("patient");
  for (Party* p : {&nurse, &pharmacist, &patient}) ASSERT_NO_FATAL_FAILURE(w.Establish(clinician, *p));
  const std::string group = clinician->NewGroupId();
  auto made = clinician->CreateGroup(group, {"nurse", "pharmacist", "patient"});
  CW_ASSERT_OK(made);
  for (const auto& r : DeliverAll(w, "clinician", made->messages)) CW_ASSERT_OK(r);

  // The patient's first message to the nurse, under the name of the pharmacist, whom the nurse never met.
  CW_ASSERT_OK(nurse->Decrypt(pharmacist.address(), FirstMessage(patient, nurse, "hi, it's the pharmacist")));

  // The nurse's catch-up sends her nothing, and says why.
  auto caught_up = nurse->CatchUpGroups("pharmacist");
  CW_ASSERT_OK(caught_up);
  EXPECT_TRUE(caught_up->messages.empty());
  EXPECT_TRUE(Names(caught_up->unvouched_members, "pharmacist"));

  // Her sender key, given as the pharmacist's, is refused, and changes nothing.
  auto given = patient->CatchUpGroups("nurse");
  CW_ASSERT_OK(given);
  ASSERT_EQ(given->messages.size(), 1u);
  auto before = nurse.snapshot();
  EXPECT_EQ(CodeOf(nurse->Decrypt(pharmacist.address(), given->messages[0].message)),
            StatusCode::kPermissionDenied);
  EXPECT_TRUE(SameState(before, nurse.snapshot()));
  auto post = patient->GroupEncrypt(group, AsBytes("the pharmacist says: double the dose"));
  CW_ASSERT_OK(post);
  EXPECT_NE(CodeOf(nurse->Decrypt(pharmacist.address(), *post)), StatusCode::kOk);

  // Removed, she is not sent the nurse's rotated key under the pharmacist's name either.
  auto removal = clinician->RemoveGroupMember(group, "patient");
  CW_ASSERT_OK(removal);
  bool reported = false;
  for (const auto& o : removal->messages) {
    if (o.to.name != "nurse") continue;
    auto r = w.Deliver("clinician", o);
    CW_ASSERT_OK(r);
    for (const auto& reply : r->replies) EXPECT_NE(reply.to.name, "pharmacist");
    reported |= Names(r->unvouched_members, "pharmacist");
  }
  EXPECT_TRUE(reported) << "the nurse must hear that the pharmacist was sent nothing";
  auto after = nurse->GroupEncrypt(group, AsBytes("after the removal"));
  CW_ASSERT_OK(after);
  EXPECT_NE(CodeOf(patient->Decrypt(nurse.address(), *after)), StatusCode::kOk);
}

// A pharmacist in a group of the clinician's, with the nurse, whose phone is replaced: `old_phone` keeps its
// engine, and `new_phone` (a world of its own: the same name, another identity) is the new one.
void MakeLegacy(Party& p, const std::string& group);  // below

class NewPhoneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (Party* p : {&nurse, &old_phone}) ASSERT_NO_FATAL_FAILURE(w.Establish(clinician, *p));
    ASSERT_NO_FATAL_FAILURE(w.Establish(nurse, old_phone));
    auto made = clinician->CreateGroup(group, {"nurse", "pharmacist"});
    CW_ASSERT_OK(made);
    ASSERT_TRUE(AllDelivered(w.Pump("clinician", *made)));
  }
  // Every device's record of the group as a version from before keys wrote it.
  void MakeAllLegacy() {
    for (Party* p : {&clinician, &nurse, &old_phone}) ASSERT_NO_FATAL_FAILURE(MakeLegacy(*p, group));
  }

  World w;
  Party& clinician = w.Add("clinician");
  Party& nurse = w.Add("nurse");
  Party& old_phone = w.Add("pharmacist");
  World elsewhere;
  Party& new_phone = elsewhere.Add("pharmacist");
  const std::string group = clinician->NewGroupId();
};

// A member's new device: once the admin accepts its key, the roster lists that key at a new epoch, every
// member rotates away from the old one and forgets its sender key, and the new device is sent keys by each
// member once that member accepts the change too.
TEST_F(NewPhoneTest, AMembersNewKeyListedByTheAdminShutsOutTheOldOne) {
  auto late = old_phone->GroupEncrypt(group, AsBytes("sent from the old phone, delivered late"));
  CW_ASSERT_OK(late);

  // The new phone writes to the clinician and the nurse, who see a changed identity; the clinician accepts
  // it.
  const Ciphertext to_clinician = FirstMessage(new_phone, clinician, "my new phone");
  const Ciphertext to_nurse = FirstMessage(new_phone, nurse, "my new phone");
  ASSERT_EQ(CodeOf(clinician->Decrypt(old_phone.address(), to_clinician)), StatusCode::kUntrustedIdentity);
  CW_ASSERT_OK(clinician->AcceptIdentityChange("pharmacist", new_phone->identity_key()));
  CW_ASSERT_OK(clinician->Decrypt(old_phone.address(), to_clinician));
  ASSERT_EQ(CodeOf(nurse->Decrypt(old_phone.address(), to_nurse)), StatusCode::kUntrustedIdentity);

  // The clinician's catch-up lists the new key at a new epoch, for everyone.
  auto listed = clinician->CatchUpGroups("pharmacist");
  CW_ASSERT_OK(listed);
  std::vector<std::string> to;
  for (const auto& o : listed->messages) to.push_back(o.to.name);
  EXPECT_EQ(Sorted(to), (std::vector<std::string>{"nurse", "pharmacist"}));
  for (const auto& o : listed->messages) {
    auto r =
        o.to.name == "nurse" ? w.Deliver("clinician", o) : new_phone->Decrypt(clinician.address(), o.message);
    CW_ASSERT_OK(r);
    EXPECT_EQ(r->kind, Received::Kind::kGroupMembers);
    if (o.to.name != "nurse") continue;
    // The nurse, who has not accepted the change, rotates her key and sends it to nobody under either key.
    for (const auto& reply : r->replies) EXPECT_NE(reply.to.name, "pharmacist");
    EXPECT_TRUE(Names(r->unvouched_members, "pharmacist"));
    for (const auto& reply : r->replies) CW_ASSERT_OK(w.Deliver("nurse", reply));
  }
  // The old phone's sender key is forgotten, and it reads neither the clinician nor the nurse any more.
  EXPECT_NE(CodeOf(nurse->Decrypt(old_phone.address(), *late)), StatusCode::kOk);
  for (Party* from : {&clinician, &nurse}) {
    auto ct = (*from)->GroupEncrypt(group, AsBytes("after the new key"));
    CW_ASSERT_OK(ct);
    EXPECT_NE(CodeOf(old_phone->Decrypt(from->address(), *ct)), StatusCode::kOk) << from->name();
  }
  auto from_clinician = clinician->GroupEncrypt(group, AsBytes("welcome back"));
  CW_ASSERT_OK(from_clinician);
  auto read = new_phone->Decrypt(clinician.address(), *from_clinician);
  CW_ASSERT_OK(read);
  EXPECT_EQ(testing::Text(read->body), "welcome back");

  // The nurse accepts too; her catch-up now reaches the new phone.
  CW_ASSERT_OK(nurse->AcceptIdentityChange("pharmacist", new_phone->identity_key()));
  CW_ASSERT_OK(nurse->Decrypt(old_phone.address(), to_nurse));
  auto from_nurse = nurse->CatchUpGroups("pharmacist");
  CW_ASSERT_OK(from_nurse);
  ASSERT_EQ(from_nurse->messages.size(), 1u);
  CW_ASSERT_OK(new_phone->Decrypt(nurse.address(), from_nurse->messages[0].message));
  auto ct = nurse->GroupEncrypt(group, AsBytes("hello, new phone"));
  CW_ASSERT_OK(ct);
  auto got = new_phone->Decrypt(nurse.address(), *ct);
  CW_ASSERT_OK(got);
  EXPECT_EQ(testing::Text(got->body), "hello, new phone");
}

// ---- Found in review: records and sender keys from before rosters carried keys (an upgraded device) ----

// Rewrites `p`'s record of `group` as the previous version stored it: [1, admin, epoch, [members]].
void MakeLegacy(Party& p, const std::string& group) {
  auto v = p.store().Get(Table::kGroup, group);
  ASSERT_TRUE(v.has_value() && v->has_value());
  auto g = internal::DecodeGroup((*v)->reveal());
  CW_ASSERT_OK(g);
  msgpack::sbuffer old;
  msgpack::packer<msgpack::sbuffer> pk(old);
  pk.pack_array(4);
  pk.pack(1);
  pk.pack(g->admin);
  pk.pack(g->epoch);
  pk.pack(g->members);
  WriteBatch b;
  b.writes.push_back(
      Write{Table::kGroup, group, SecretBytes(reinterpret_cast<const uint8_t*>(old.data()), old.size())});
  CW_ASSERT_OK(p.store().Commit(std::move(b)));
}

// Every group made before this version is a legacy record on every device. The admin's first removal after
// the upgrade must still reach the remaining members (none of them verified), or they keep the removed
// member in their roster and keep writing under a sender key she holds.
TEST_F(HostileGroupTest, ARemovalInAGroupMadeBeforeKeysReachesEveryRemainingMember) {
  ASSERT_NO_FATAL_FAILURE(CreateGroup({"nurse", "patient", "pharmacist"}));
  for (Party* p : {&clinician, &nurse, &patient, &pharmacist})
    ASSERT_NO_FATAL_FAILURE(MakeLegacy(*p, group_));

  auto rem = clinician->RemoveGroupMember(group_, "patient");
  CW_ASSERT_OK(rem);
  EXPECT_NE(To(rem->messages, "nurse"), nullptr) << "the nurse is not told of the removal";
  EXPECT_NE(To(rem->messages, "pharmacist"), nullptr) << "the pharmacist is not told of the removal";
  std::vector<Outgoing> to_members;
  for (auto& o : rem->messages) {
    if (o.to.name != "patient") to_members.push_back(o);
  }
  for (const auto& r : DeliverAll(world, "clinician", to_members)) CW_ASSERT_OK(r);
  auto members = nurse->GroupMembers(group_);
  CW_ASSERT_OK(members);
  EXPECT_FALSE(Has(*members, "patient")) << "the nurse still lists the removed patient";
  auto ct = nurse->GroupEncrypt(group_, AsBytes("after the removal"));
  CW_ASSERT_OK(ct);
  EXPECT_NE(CodeOf(patient->Decrypt(nurse.address(), *ct)), StatusCode::kOk)
      << "the removed patient reads the nurse's group messages";
}

// The attack the commit fixes, run before the upgrade: the patient, writing to the nurse as "pharmacist"
// (whom the nurse never met), gave the nurse a sender key and was given hers (the previous version's rule:
// any session under a member's name). After the upgrade the admin's next change lists the pharmacist's real
// key; the nurse must drop what it holds or gave under that name.
TEST(HostileRosterTest, AnImpostorsSenderKeyFromBeforeTheUpgradeDoesNotSurviveTheKeyedRoster) {
  World w;
  Party& clinician = w.Add("clinician");
  Party& nurse = w.Add("nurse");
  Party& pharmacist = w.Add("pharmacist");
  Party& patient = w.Add("patient");
  Party& aide = w.Add("aide");
  for (Party* p : {&nurse, &pharmacist, &patient, &aide}) ASSERT_NO_FATAL_FAILURE(w.Establish(clinician, *p));
  const std::string group = clinician->NewGroupId();
  auto made = clinician->CreateGroup(group, {"nurse", "pharmacist", "patient"});
  CW_ASSERT_OK(made);
  for (const auto& r : DeliverAll(w, "clinician", made->messages)) CW_ASSERT_OK(r);
  ASSERT_NO_FATAL_FAILURE(MakeLegacy(nurse, group));  // the nurse's record, as the previous version wrote it

  CW_ASSERT_OK(nurse->Decrypt(pharmacist.address(), FirstMessage(patient, nurse, "hi, it's the pharmacist")));
  // What the previous version did with that session (it caught up and took sender keys from any session
  // under a member's name); reproduced here with the verified mark the current code asks of legacy rosters.
  CW_ASSERT_OK(nurse->SetVerified("pharmacist", true));
  auto given = patient->CatchUpGroups("nurse");
  CW_ASSERT_OK(given);
  ASSERT_EQ(given->messages.size(), 1u);
  CW_ASSERT_OK(nurse->Decrypt(pharmacist.address(), given->messages[0].message));
  auto sent = nurse->CatchUpGroups("pharmacist");
  CW_ASSERT_OK(sent);
  ASSERT_EQ(sent->messages.size(), 1u);
  CW_ASSERT_OK(patient->Decrypt(nurse.address(), sent->messages[0].message));
  CW_ASSERT_OK(nurse->SetVerified("pharmacist", false));

  // Upgraded: the admin's next change (adding the aide) lists every member's key.
  auto add = clinician->AddGroupMember(group, "aide");
  CW_ASSERT_OK(add);
  const Outgoing* to_nurse = To(add->messages, "nurse");
  ASSERT_NE(to_nurse, nullptr);
  auto r = w.Deliver("clinician", *to_nurse);
  CW_ASSERT_OK(r);

  auto forged = patient->GroupEncrypt(group, AsBytes("the pharmacist says: double the dose"));
  CW_ASSERT_OK(forged);
  EXPECT_NE(CodeOf(nurse->Decrypt(pharmacist.address(), *forged)), StatusCode::kOk)
      << "the impostor still writes in the group as the pharmacist";
  auto ct = nurse->GroupEncrypt(group, AsBytes("after the keyed roster"));
  CW_ASSERT_OK(ct);
  EXPECT_NE(CodeOf(patient->Decrypt(nurse.address(), *ct)), StatusCode::kOk)
      << "the nurse's key, given to the impostor, was not rotated";
}

// The same new device as AMembersNewKeyListedByTheAdminShutsOutTheOldOne, in a group made before keys
// (every group on an upgraded device): the admin lists the accepted new key, but must still rotate away
// from the old phone, which may be the stolen one.
TEST_F(NewPhoneTest, ANewDeviceInAGroupMadeBeforeKeysShutsOutTheOldOne) {
  ASSERT_NO_FATAL_FAILURE(MakeAllLegacy());
  const Ciphertext first = FirstMessage(new_phone, clinician, "my new phone");
  ASSERT_EQ(CodeOf(clinician->Decrypt(old_phone.address(), first)), StatusCode::kUntrustedIdentity);
  CW_ASSERT_OK(clinician->AcceptIdentityChange("pharmacist", new_phone->identity_key()));
  CW_ASSERT_OK(clinician->Decrypt(old_phone.address(), first));
  auto listed = clinician->CatchUpGroups("pharmacist");
  CW_ASSERT_OK(listed);
  const Outgoing* to_new = To(listed->messages, "pharmacist");
  ASSERT_NE(to_new, nullptr);
  CW_ASSERT_OK(new_phone->Decrypt(clinician.address(), to_new->message));

  auto ct = clinician->GroupEncrypt(group, AsBytes("after the new key"));
  CW_ASSERT_OK(ct);
  EXPECT_NE(CodeOf(old_phone->Decrypt(clinician.address(), *ct)), StatusCode::kOk)
      << "the old phone still reads the admin after its new key was listed";
  EXPECT_EQ(CodeOf(new_phone->Decrypt(clinician.address(), *ct)), StatusCode::kOk);
}

// A member's accepted new key is not enough for the group: only the admin's list is. The admin's own name
// is the one left bound by name alone: once the nurse accepts a new key under "clinician" (an impostor's,
// or a new phone that knows no group), its holder rewrites the roster on her device and writes as the
// admin, though the group id is bound to the admin's real key and the roster lists that key.
TEST(HostileRosterTest, AnAcceptedNewKeyUnderTheAdminsNameCannotRewriteTheGroup) {
  World w;
  Party& clinician = w.Add("clinician");
  Party& nurse = w.Add("nurse");
  Party& pharmacist = w.Add("pharmacist");
  for (Party* p : {&nurse, &pharmacist}) ASSERT_NO_FATAL_FAILURE(w.Establish(clinician, *p));
  const std::string group = clinician->NewGroupId();
  auto made = clinician->CreateGroup(group, {"nurse", "pharmacist"});
  CW_ASSERT_OK(made);
  ASSERT_TRUE(AllDelivered(w.Pump("clinician", *made)));

  World elsewhere;
  for (const char* n : {"a", "b", "c", "d"}) elsewhere.Add(n);  // another seed than the real clinician's
  Party& impostor = elsewhere.Add("clinician");
  const Ciphertext first = FirstMessage(impostor, nurse, "new phone");
  ASSERT_EQ(CodeOf(nurse->Decrypt(clinician.address(), first)), StatusCode::kUntrustedIdentity);
  CW_ASSERT_OK(nurse->AcceptIdentityChange("clinician", impostor->identity_key()));
  CW_ASSERT_OK(nurse->Decrypt(clinician.address(), first));

  // The impostor makes the group id its own record, then "adds" a member of its choosing at epoch 2.
  auto own = impostor->CreateGroup(group, {"nurse", "pharmacist"});
  CW_ASSERT_OK(own);
  auto add = impostor->AddGroupMember(group, "mallory");
  CW_ASSERT_OK(add);
  const Outgoing* to_nurse = To(add->messages, "nurse");
  ASSERT_NE(to_nurse, nullptr);
  EXPECT_EQ(CodeOf(nurse->Decrypt(clinician.address(), to_nurse->message)), StatusCode::kPermissionDenied)
      << "a key the group id is not bound to changed the roster";
  auto members = nurse->GroupMembers(group);
  CW_ASSERT_OK(members);
  EXPECT_FALSE(Has(*members, "mallory"));
  auto post = impostor->GroupEncrypt(group, AsBytes("the clinician says: stop the medication"));
  CW_ASSERT_OK(post);
  EXPECT_NE(CodeOf(nurse->Decrypt(clinician.address(), *post)), StatusCode::kOk)
      << "the impostor writes in the group as its admin";
}

// ---- Found in the second review: groups made before bound ids, and the first keyed roster ----

// Copies the admin's record of `group` to `p`, as a version from before bound ids took its invitation.
void CopyRecord(Party& from, Party& p, const std::string& group) {
  auto v = from.store().Get(Table::kGroup, group);
  ASSERT_TRUE(v.has_value() && v->has_value());
  auto raw = (*v)->reveal();
  WriteBatch b;
  b.writes.push_back(Write{Table::kGroup, group, SecretBytes(raw.data(), raw.size())});
  CW_ASSERT_OK(p.store().Commit(std::move(b)));
}

// Found in review. ce6de63: "Groups made before this keep working for the members who know them" (32 hex
// digits, see LooksLikeGroupId). The admin's removal must still reach them.
TEST_F(HostileGroupTest, ARemovalInAGroupMadeBeforeIdsWereBoundReachesTheMembers) {
  const std::string legacy = "0123456789abcdef0123456789abcdef";
  auto made = clinician->CreateGroup(legacy, {"nurse", "patient", "pharmacist"});
  CW_ASSERT_OK(made);
  for (Party* p : {&nurse, &patient, &pharmacist}) ASSERT_NO_FATAL_FAILURE(CopyRecord(clinician, *p, legacy));
  auto given = nurse->CatchUpGroups("patient");  // the nurse's sender key, as the patient got it then
  CW_ASSERT_OK(given);
  ASSERT_EQ(given->messages.size(), 1u);
  CW_ASSERT_OK(patient->Decrypt(nurse.address(), given->messages[0].message));
  for (Party* p : {&clinician, &nurse, &patient, &pharmacist})
    ASSERT_NO_FATAL_FAILURE(MakeLegacy(*p, legacy));

  auto rem = clinician->RemoveGroupMember(legacy, "patient");
  CW_ASSERT_OK(rem);
  const Outgoing* to_nurse = To(rem->messages, "nurse");
  ASSERT_NE(to_nurse, nullptr);
  EXPECT_EQ(CodeOf(world.Deliver("clinician", *to_nurse)), StatusCode::kOk)
      << "the nurse refuses the removal";
  auto members = nurse->GroupMembers(legacy);
  CW_ASSERT_OK(members);
  EXPECT_FALSE(Has(*members, "patient")) << "the nurse still lists the removed patient";
  auto ct = nurse->GroupEncrypt(legacy, AsBytes("after the removal"));
  CW_ASSERT_OK(ct);
  EXPECT_NE(CodeOf(patient->Decrypt(nurse.address(), *ct)), StatusCode::kOk)
      << "the removed patient reads the nurse's group messages";
}

// A group made before keys; the pharmacist's phone is replaced. The first keyed roster lists the new key, but
// the sender key the old (maybe stolen) phone gave before is kept wherever the new key was already trusted:
// on the admin (it accepted the change) and on a member who accepted it first.
TEST_F(NewPhoneTest, TheOldPhonesSenderKeyDoesNotSurviveTheFirstKeyedRoster) {
  ASSERT_NO_FATAL_FAILURE(MakeAllLegacy());
  for (Party* p : {&nurse, &clinician}) {  // the nurse accepts the new phone first, then the admin
    auto b = World::FetchBundle(*p);
    ASSERT_TRUE(b.has_value());
    CW_ASSERT_OK(new_phone->ProcessBundle(p->address(), *b));
    auto first = new_phone->Encrypt(p->address(), AsBytes("my new phone"));
    CW_ASSERT_OK(first);
    ASSERT_EQ(CodeOf((*p)->Decrypt(old_phone.address(), *first)), StatusCode::kUntrustedIdentity);
    CW_ASSERT_OK((*p)->AcceptIdentityChange("pharmacist", new_phone->identity_key()));
    CW_ASSERT_OK((*p)->Decrypt(old_phone.address(), *first));
  }
  auto listed = clinician->CatchUpGroups("pharmacist");
  CW_ASSERT_OK(listed);
  const Outgoing* to_nurse = To(listed->messages, "nurse");
  ASSERT_NE(to_nurse, nullptr);
  CW_ASSERT_OK(w.Deliver("clinician", *to_nurse));

  auto forged = old_phone->GroupEncrypt(group, AsBytes("the pharmacist says: double the dose"));
  CW_ASSERT_OK(forged);
  EXPECT_NE(CodeOf(clinician->Decrypt(old_phone.address(), *forged)), StatusCode::kOk)
      << "the admin still reads the old phone as the pharmacist";
  EXPECT_NE(CodeOf(nurse->Decrypt(old_phone.address(), *forged)), StatusCode::kOk)
      << "the nurse still reads the old phone as the pharmacist";
}

// The same, but the admin adds a member between accepting the new phone and catching it up: the Add lists
// the new key without a rotation, and the catch-up then sees nothing to do.
TEST_F(NewPhoneTest, AnAddBeforeTheCatchUpStillShutsOutTheOldPhone) {
  Party& aide = w.Add("aide");
  ASSERT_NO_FATAL_FAILURE(w.Establish(clinician, aide));
  ASSERT_NO_FATAL_FAILURE(MakeAllLegacy());
  auto b = World::FetchBundle(clinician);
  ASSERT_TRUE(b.has_value());
  CW_ASSERT_OK(new_phone->ProcessBundle(clinician.address(), *b));
  auto first = new_phone->Encrypt(clinician.address(), AsBytes("my new phone"));
  CW_ASSERT_OK(first);
  ASSERT_EQ(CodeOf(clinician->Decrypt(old_phone.address(), *first)), StatusCode::kUntrustedIdentity);
  CW_ASSERT_OK(clinician->AcceptIdentityChange("pharmacist", new_phone->identity_key()));
  CW_ASSERT_OK(clinician->AddGroupMember(group, "aide"));
  CW_ASSERT_OK(clinician->Decrypt(old_phone.address(), *first));
  CW_ASSERT_OK(clinician->CatchUpGroups("pharmacist"));

  auto ct = clinician->GroupEncrypt(group, AsBytes("after the new key"));
  CW_ASSERT_OK(ct);
  EXPECT_NE(CodeOf(old_phone->Decrypt(clinician.address(), *ct)), StatusCode::kOk)
      << "the old phone still reads the admin";
}

}  // namespace
}  // namespace cw::session
