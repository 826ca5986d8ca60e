// End to end over loopback with a real relay (RelayService on RocksDB behind RelayServer on TcpTransport):
// invitations, messages both ways, restarts of a client and of the relay, identity changes, bad input.
#include "core/runtime/client.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <condition_variable>
#include <msgpack.hpp>
#include <mutex>
#include <string>
#include <vector>

#include "core/runtime/codec.h"
#include "core/wire/padding.h"
#include "tests/relay/link_client.h"
#include "tests/runtime/runtime_test_util.h"

namespace cw::runtime {
namespace {

using testing::TempDir;
using testing::TestRelay;

using testing::kPass;

using testing::Text;

using testing::Bodies;

using testing::Fast;

class RuntimeE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    relay_ = std::make_unique<TestRelay>(dir_.Sub("relay"));
    ASSERT_OK(relay_->Start());
  }

  std::unique_ptr<Client> NewClient(const std::string& home, const std::string& name, ClientOptions o = Fast()) {
    return testing::CreateClient(dir_.Sub(home), name, std::move(o));
  }
  std::unique_ptr<Client> Reopen(const std::string& home, ClientOptions o = Fast()) {
    return testing::OpenClient(dir_.Sub(home), std::move(o));
  }

  // Clinician registers and invites; the patient accepts with `hello`; the clinician receives it.
  void Connect(Client& clinician, Client& patient, const std::string& hello = "hello doctor") {
    ASSERT_OK(clinician.Register(relay_->address()));
    auto code = clinician.CreateInvite();
    ASSERT_HAS(code);
    ASSERT_OK(patient.Register(relay_->address()));
    auto contact = patient.AcceptInvite(*code, hello);
    ASSERT_HAS(contact);
    EXPECT_EQ(*contact, clinician.name());
    auto sync = clinician.Sync();
    ASSERT_HAS(sync);
    EXPECT_EQ(sync->received, 1u);
  }

  // Deposits `sealed` into `card`'s mailbox with its token over a link of the test's own, as any holder of
  // the token may: what a hostile or differently versioned sender's client would send.
  void DepositRaw(const ContactCard& card, Bytes sealed) {
    auto relay_endpoint = transport::Endpoint::Parse(relay_->address());
    ASSERT_HAS(relay_endpoint);
    relay::testing::LinkClient link(7, *relay_endpoint);
    ASSERT_TRUE(link.connected());
    relay::Deposit dep;
    dep.mailbox = card.mailbox;
    dep.token = card.token;
    dep.message_id.fill(9);
    dep.envelope = std::move(sealed);
    link.Send(dep);
    ASSERT_EQ(link.NextResponse().code, relay::ResponseCode::kOk);
  }

  TempDir dir_;
  std::unique_ptr<TestRelay> relay_;
};

TEST_F(RuntimeE2E, TwoClientsConverse) {
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);

  ASSERT_HAS(clinician->SendText("pat", "how are you feeling today?"));
  auto s = clinician->Sync();
  ASSERT_HAS(s);
  EXPECT_EQ(s->pending, 0u);
  auto r = patient->Sync();
  ASSERT_HAS(r);
  EXPECT_EQ(r->received, 1u);
  ASSERT_HAS(patient->SendText("dr.lee", "better, thanks"));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());

  EXPECT_EQ(Bodies(*clinician, "pat"),
            (std::vector<std::string>{"hello doctor", "how are you feeling today?", "better, thanks"}));
  EXPECT_EQ(Bodies(*patient, "dr.lee"),
            (std::vector<std::string>{"hello doctor", "how are you feeling today?", "better, thanks"}));

  auto a = clinician->GetSafetyNumber("pat");
  auto b = patient->GetSafetyNumber("dr.lee");
  ASSERT_HAS(a);
  ASSERT_HAS(b);
  EXPECT_EQ(a->digits, b->digits);
  EXPECT_EQ(a->digits.size(), 60u);
  ASSERT_OK(clinician->SetVerified("pat", true));
  auto trail = clinician->AuditTrail();
  ASSERT_HAS(trail);
  EXPECT_EQ(std::count_if(trail->begin(), trail->end(),
                          [](const compliance::AuditEntry& e) {
                            return e.type == compliance::AuditEventType::kVerification && e.code == 1;
                          }),
            1);
  auto contacts = clinician->Contacts();
  ASSERT_HAS(contacts);
  ASSERT_EQ(contacts->size(), 1u);
  EXPECT_EQ((*contacts)[0].trust, session::TrustState::kVerified);
  EXPECT_EQ((*contacts)[0].fingerprint, patient->Fingerprint());
}

// A device that catches up on many messages acknowledges them a burst at a time, not with one command each:
// a thousand waiting messages would otherwise be a thousand commands, past the relay's cap on commands in
// flight on one link. Every one is still acknowledged: none is left at the relay.
TEST_F(RuntimeE2E, CatchingUpAcknowledgesManyMessagesPerCommand) {
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  clinician.reset();                 // offline while the patient writes
  constexpr size_t kMessages = 130;  // three fetch pages
  for (size_t i = 0; i < kMessages; ++i)
    ASSERT_HAS(patient->SendText("dr.lee", "update " + std::to_string(i)));
  auto sent = patient->Sync();
  ASSERT_HAS(sent);
  EXPECT_EQ(sent->pending, 0u);
  EXPECT_EQ(relay_->Stats().queued_messages, kMessages);
  patient.reset();  // offline too: only the clinician acknowledges anything from here on
  clinician = Reopen("clinician");
  ASSERT_TRUE(clinician);
  const size_t acks_before = relay_->AnsweredCommands(relay::CommandType::kAck);
  auto got = clinician->Sync();
  ASSERT_HAS(got);
  EXPECT_EQ(got->received, kMessages);
  const size_t acks = relay_->AnsweredCommands(relay::CommandType::kAck) - acks_before;
  EXPECT_GE(acks, 1u);
  EXPECT_LE(acks, kMessages / 8) << "about one acknowledgement per message";
  patient = Reopen("patient");
  ASSERT_TRUE(patient);
  ASSERT_HAS(patient->Sync());  // takes the clinician's delivery receipts
  EXPECT_EQ(relay_->Stats().queued_messages, 0u);
}

TEST_F(RuntimeE2E, BackgroundClientGetsPushedMessages) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> got;
  ClientOptions o = Fast();
  o.callbacks.on_message = [&](const IncomingMessage& m) {
    std::lock_guard<std::mutex> lock(mu);
    got.push_back(m.contact + ": " + Text(m.text));
    cv.notify_all();
  };
  auto clinician = NewClient("clinician", "dr.lee", std::move(o));
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  ASSERT_OK(clinician->Register(relay_->address()));
  ASSERT_OK(clinician->StartBackground());
  auto code = clinician->CreateInvite();
  ASSERT_HAS(code);
  ASSERT_HAS(patient->AcceptInvite(*code, "first"));
  ASSERT_HAS(patient->SendText("dr.lee", "second"));
  ASSERT_HAS(patient->Sync());
  ASSERT_TRUE(testing::WaitFor(mu, cv, [&] { return got.size() >= 2; }));
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(got, (std::vector<std::string>{"pat: first", "pat: second"}));
}

TEST_F(RuntimeE2E, PatientRestartsMidConversationLosesAndDuplicatesNothing) {
  auto clinician = NewClient("clinician", "dr.lee");
  ClientOptions quiet = Fast();
  quiet.send_delivery_receipts = false;  // the relay's queue below holds only the clinician's messages
  auto patient = NewClient("patient", "pat", quiet);
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_HAS(clinician->SendText("pat", "one"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(patient->Sync());

  patient.reset();  // the patient's app is closed
  for (const char* t : {"two", "three", "four"}) ASSERT_HAS(clinician->SendText("pat", t));
  auto s = clinician->Sync();
  ASSERT_HAS(s);
  EXPECT_EQ(s->pending, 0u);
  EXPECT_EQ(relay_->Stats().queued_messages, 3u);

  patient = Reopen("patient", quiet);
  ASSERT_TRUE(patient);
  auto r = patient->Sync();
  ASSERT_HAS(r);
  EXPECT_EQ(r->received, 3u);
  auto again = patient->Sync();
  ASSERT_HAS(again);
  EXPECT_EQ(again->received, 0u);
  EXPECT_EQ(relay_->Stats().queued_messages, 0u);
  EXPECT_EQ(Bodies(*patient, "dr.lee"), (std::vector<std::string>{"hello doctor", "one", "two", "three", "four"}));

  // The conversation goes on after the restart, both ways.
  ASSERT_HAS(patient->SendText("dr.lee", "got them all"));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat").back(), "got them all");
}

TEST_F(RuntimeE2E, RelayRestartLosesNothingAndOutboxRetries) {
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_HAS(clinician->SendText("pat", "before restart"));
  ASSERT_HAS(clinician->Sync());

  relay_->Stop();
  ASSERT_HAS(clinician->SendText("pat", "while the relay is down"));
  auto down = clinician->Sync(3000);
  ASSERT_FALSE(down.has_value());
  EXPECT_EQ(down.error().code(), StatusCode::kUnavailable);
  auto pending = clinician->PendingOutboxCount();
  ASSERT_HAS(pending);
  EXPECT_EQ(*pending, 1u);

  // A restarted clinician still has the message queued: the outbox is durable.
  clinician.reset();
  clinician = Reopen("clinician");
  ASSERT_TRUE(clinician);
  ASSERT_OK(relay_->Start());
  auto up = clinician->Sync();
  ASSERT_HAS(up);
  EXPECT_EQ(up->sent, 1u);
  EXPECT_EQ(up->pending, 0u);

  auto r = patient->Sync();
  ASSERT_HAS(r);
  EXPECT_EQ(r->received, 2u);
  EXPECT_EQ(Bodies(*patient, "dr.lee"),
            (std::vector<std::string>{"hello doctor", "before restart", "while the relay is down"}));
}

TEST_F(RuntimeE2E, BackgroundOutboxFlushesWhenRelayReturns) {
  std::mutex mu;
  std::condition_variable cv;
  int sent = 0;
  ClientOptions o = Fast();
  o.callbacks.on_sent = [&](const std::string&, uint64_t) {
    std::lock_guard<std::mutex> lock(mu);
    ++sent;
    cv.notify_all();
  };
  auto clinician = NewClient("clinician", "dr.lee", std::move(o));
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_OK(clinician->StartBackground());
  relay_->Stop();
  ASSERT_HAS(clinician->SendText("pat", "queued while down"));
  ASSERT_OK(relay_->Start());
  ASSERT_TRUE(testing::WaitFor(mu, cv, [&] { return sent >= 1; }));
  auto r = patient->Sync();
  ASSERT_HAS(r);
  EXPECT_EQ(Bodies(*patient, "dr.lee").back(), "queued while down");
}

TEST_F(RuntimeE2E, IdentityChangeBlocksSendingUntilAccepted) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<IdentityChangeEvent> changes;
  ClientOptions o = Fast();
  o.callbacks.on_identity_change = [&](const IdentityChangeEvent& e) {
    std::lock_guard<std::mutex> lock(mu);
    changes.push_back(e);
    cv.notify_all();
  };
  auto clinician = NewClient("clinician", "dr.lee", std::move(o));
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  const std::string old_fp = patient->Fingerprint();

  // The patient loses the phone and sets up again under the same name from an invite for a new device.
  patient.reset();
  auto phone2 = NewClient("patient2", "pat");
  ASSERT_TRUE(phone2);
  auto code = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(code);
  ASSERT_HAS(phone2->AcceptInvite(*code, "new phone, same me"));

  ASSERT_HAS(clinician->Sync());
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(changes.size(), 1u);
    EXPECT_EQ(changes[0].contact, "pat");
    EXPECT_EQ(changes[0].new_fingerprint, phone2->Fingerprint());
    EXPECT_NE(changes[0].new_fingerprint, old_fp);
  }
  {  // the change is in the clinician's audit trail, naming the patient by the key it had
    Bytes old_key;
    ASSERT_TRUE(FromHex(old_fp, &old_key));
    auto trail = clinician->AuditTrail();
    ASSERT_HAS(trail);
    EXPECT_EQ(std::count_if(trail->begin(), trail->end(),
                            [&](const compliance::AuditEntry& e) {
                              return e.type == compliance::AuditEventType::kIdentityKeyChanged &&
                                     e.subject == compliance::IdentityFingerprint(old_key);
                            }),
              1);
  }
  auto blocked = clinician->SendText("pat", "are you still you?");
  ASSERT_FALSE(blocked.has_value());
  EXPECT_EQ(blocked.error().code(), StatusCode::kUntrustedIdentity);
  EXPECT_EQ(Bodies(*clinician, "pat"), (std::vector<std::string>{"hello doctor"}));  // the new message waits

  ASSERT_OK(clinician->AcceptIdentityChange("pat"));
  auto s = clinician->Sync();
  ASSERT_HAS(s);
  EXPECT_EQ(s->received, 1u);
  EXPECT_EQ(Bodies(*clinician, "pat").back(), "new phone, same me");
  ASSERT_HAS(clinician->SendText("pat", "welcome back"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(phone2->Sync());
  EXPECT_EQ(Bodies(*phone2, "dr.lee").back(), "welcome back");
}

// The codes of `c`'s audit entries of identity changes for the contact whose trusted key is `key`, in order.
Result<std::vector<uint64_t>> IdentityChangeCodes(Client& c, const Bytes& key) {
  CW_ASSIGN_OR_RETURN(auto trail, c.AuditTrail());
  std::vector<uint64_t> codes;
  for (const auto& e : trail) {
    if (e.type == compliance::AuditEventType::kIdentityKeyChanged &&
        e.subject == compliance::IdentityFingerprint(key)) {
      codes.push_back(e.code);
    }
  }
  return codes;
}

TEST_F(RuntimeE2E, AnIdentityChangeTheUserRejectsUnblocksTheContactAndDropsTheImpostorsMessages) {
  std::mutex mu;
  std::condition_variable cv;
  int changes = 0;
  ClientOptions o = Fast();
  o.callbacks.on_identity_change = [&](const IdentityChangeEvent&) {
    std::lock_guard<std::mutex> lock(mu);
    ++changes;
    cv.notify_all();
  };
  auto clinician = NewClient("clinician", "dr.lee", std::move(o));
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_OK(clinician->SetVerified("pat", true));

  // An invite the clinician made for the patient's new phone reaches someone else, who answers it under the
  // patient's name with another key.
  auto code = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(code);
  auto impostor = NewClient("impostor", "pat");
  ASSERT_TRUE(impostor);
  ASSERT_HAS(impostor->AcceptInvite(*code, "it's me, new phone"));
  ASSERT_HAS(clinician->Sync());
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(changes, 1);
  }
  EXPECT_EQ(clinician->SendText("pat", "is that you?").error().code(), StatusCode::kUntrustedIdentity);
  ASSERT_HAS(patient->SendText("dr.lee", "still me, same phone"));  // waits too, until the user decides
  ASSERT_HAS(patient->Sync());                                      // (deposited by now)

  // The safety numbers do not match the patient's: the clinician rejects the change.
  ASSERT_OK(clinician->RejectIdentityChange("pat"));
  auto contacts = clinician->Contacts();
  ASSERT_HAS(contacts);
  ASSERT_EQ(contacts->size(), 1u);
  EXPECT_EQ((*contacts)[0].trust, session::TrustState::kVerified);  // as before the change
  EXPECT_EQ((*contacts)[0].fingerprint, patient->Fingerprint());
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat"), (std::vector<std::string>{"hello doctor", "still me, same phone"}));
  ASSERT_HAS(clinician->SendText("pat", "thanks, all good"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(patient->Sync());
  EXPECT_EQ(Bodies(*patient, "dr.lee").back(), "thanks, all good");

  // The rejected key is not asked about again: what it sends is dropped, and nothing waits at the relay.
  ASSERT_HAS(impostor->SendText("dr.lee", "please accept me"));
  ASSERT_HAS(impostor->Sync());
  ASSERT_HAS(clinician->Sync());
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(changes, 1);
  }
  EXPECT_EQ(Bodies(*clinician, "pat"),
            (std::vector<std::string>{"hello doctor", "still me, same phone", "thanks, all good"}));
  auto left = clinician->PeekRelay();
  ASSERT_HAS(left);
  EXPECT_TRUE(left->empty()) << left->size() << " envelope(s) left at the relay";
  EXPECT_EQ(clinician->RejectIdentityChange("pat").code(), StatusCode::kInvalidArgument);

  // The audit trail has the change and the user's decision, naming the patient by the key kept.
  Bytes kept;
  ASSERT_TRUE(FromHex(patient->Fingerprint(), &kept));
  auto codes = IdentityChangeCodes(*clinician, kept);
  ASSERT_HAS(codes);
  EXPECT_EQ(*codes, (std::vector<uint64_t>{0, 2}));  // detected, rejected
}

TEST_F(RuntimeE2E, ARejectionTakenBackLetsTheContactsRealNewPhoneIn) {
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  EXPECT_EQ(clinician->ReconsiderIdentityChange("pat").error().code(), StatusCode::kNotFound);

  // The patient's new phone answers an invite for it; the clinician rejects it by mistake, and what it sends
  // next is dropped.
  auto code = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(code);
  auto phone = NewClient("patient-phone2", "pat");
  ASSERT_TRUE(phone);
  ASSERT_HAS(phone->AcceptInvite(*code, "new phone"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_OK(clinician->RejectIdentityChange("pat"));
  ASSERT_HAS(phone->SendText("dr.lee", "it really is my new phone"));
  ASSERT_HAS(phone->Sync());
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat"), (std::vector<std::string>{"hello doctor"}));

  // Taken back, the change awaits a decision again, with the new phone's safety number to compare.
  auto number = clinician->ReconsiderIdentityChange("pat");
  ASSERT_HAS(number);
  auto theirs = phone->GetSafetyNumber("dr.lee");
  ASSERT_HAS(theirs);
  EXPECT_EQ(number->digits, theirs->digits);
  EXPECT_EQ(clinician->ReconsiderIdentityChange("pat").error().code(), StatusCode::kInvalidArgument);
  ASSERT_HAS(phone->SendText("dr.lee", "please check the numbers"));
  ASSERT_HAS(phone->Sync());
  ASSERT_OK(clinician->AcceptIdentityChange("pat"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat").back(), "please check the numbers");
  ASSERT_HAS(clinician->SendText("pat", "numbers match, welcome back"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(phone->Sync());
  EXPECT_EQ(Bodies(*phone, "dr.lee").back(), "numbers match, welcome back");

  // The trail has each step: detected, rejected, rejection taken back, accepted.
  Bytes kept;
  ASSERT_TRUE(FromHex(patient->Fingerprint(), &kept));
  auto codes = IdentityChangeCodes(*clinician, kept);
  ASSERT_HAS(codes);
  EXPECT_EQ(*codes, (std::vector<uint64_t>{0, 2, 3, 1}));
}

TEST_F(RuntimeE2E, AContactCannotWriteAsAnotherContact) {
  std::mutex mu;
  int changes = 0;
  ClientOptions o = Fast();
  o.callbacks.on_identity_change = [&](const IdentityChangeEvent&) {
    std::lock_guard<std::mutex> lock(mu);
    ++changes;
  };
  auto clinician = NewClient("clinician", "dr.lee", std::move(o));
  auto patient = NewClient("patient", "pat");
  auto eve = NewClient("eve", "eve");
  ASSERT_TRUE(clinician && patient && eve);
  Connect(*clinician, *patient);
  auto code = clinician->CreateInvite();
  ASSERT_HAS(code);
  ASSERT_HAS(eve->AcceptInvite(*code, "hello, eve here"));
  ASSERT_HAS(clinician->Sync());  // eve's answer binds the invite's token to her

  // Eve's code, hence her deposit token, in a client that calls itself "pat": the sealed envelope names
  // the sender, and it used to be believed, so a change of the patient's identity key was raised (which
  // blocked the conversation until the clinician decided).
  auto as_patient = NewClient("as-patient", "pat");
  ASSERT_TRUE(as_patient);
  ASSERT_HAS(as_patient->AcceptInvite(*code, "it's pat, new phone"));
  ASSERT_HAS(clinician->Sync());
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(changes, 0);
  }
  ASSERT_HAS(clinician->SendText("pat", "still reachable"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(patient->Sync());
  EXPECT_EQ(Bodies(*patient, "dr.lee").back(), "still reachable");
  EXPECT_EQ(Bodies(*clinician, "pat"), (std::vector<std::string>{"hello doctor", "still reachable"}));
  ASSERT_HAS(clinician->Sync());       // the patient's delivery receipt
  auto left = clinician->PeekRelay();  // and nothing of the impostor's waits
  ASSERT_HAS(left);
  EXPECT_TRUE(left->empty()) << left->size();
}

TEST_F(RuntimeE2E, RelayHoldsOnlySealedPaddedEnvelopes) {
  ClientOptions co = Fast();
  co.send_delivery_receipts = false;  // only the two messages below wait at the relay
  auto clinician = NewClient("clinician", "dr.lee", std::move(co));
  ClientOptions o = Fast();
  o.callbacks.on_error = [](const Status& s) { ADD_FAILURE() << s.ToString(); };
  auto patient = NewClient("patient", "pat", std::move(o));
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  patient.reset();
  ASSERT_HAS(clinician->SendText("pat", "a"));
  ASSERT_HAS(clinician->SendText("pat", "blood pressure 120/80, continue the current dose"));
  ASSERT_HAS(clinician->Sync());
  patient = Reopen("patient");  // offline while the messages arrived; peeking is its first relay call
  ASSERT_TRUE(patient);
  auto peeked = patient->PeekRelay();
  ASSERT_HAS(peeked);
  ASSERT_EQ(peeked->size(), 2u);
  EXPECT_EQ((*peeked)[0].envelope.size(), (*peeked)[1].envelope.size());  // one size bucket
  for (const auto& p : *peeked) {
    const std::string raw(p.envelope.begin(), p.envelope.end());
    EXPECT_EQ(raw.find("dr.lee"), std::string::npos);
    EXPECT_EQ(raw.find("blood"), std::string::npos);
  }
  // Peeking acknowledged nothing.
  auto r = patient->Sync();
  ASSERT_HAS(r);
  EXPECT_EQ(r->received, 2u);
}

// An AcceptInvite refused with `code`, its message naming the reason in `words`.
void ExpectRefused(const Result<std::string>& r, StatusCode code, const std::string& words) {
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), code);
  EXPECT_NE(r.error().message().find(words), std::string::npos) << r.error().ToString();
}

// Contacts are known by the names they chose. An invite that would collide is refused with the reason, and
// the contact already known keeps working.
TEST_F(RuntimeE2E, AnInviteThatCollidesWithAKnownNameIsRefusedWithTheReason) {
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);

  auto own = clinician->CreateInvite();
  ASSERT_HAS(own);
  ExpectRefused(clinician->AcceptInvite(*own, "hi me"), StatusCode::kInvalidArgument, "our own invite");

  // A registered stranger of `name`, and an invite of theirs.
  auto stranger = [&](const std::string& home, const std::string& name, std::string* code) {
    auto c = NewClient(home, name);
    if (!c || !c->Register(relay_->address()).ok()) return std::unique_ptr<Client>();
    auto invite = c->CreateInvite();
    if (!invite) return std::unique_ptr<Client>();
    *code = *invite;
    return c;
  };
  // Another clinician who is also called dr.lee: a different identity key under a known name.
  std::string code;
  auto namesake = stranger("namesake", "dr.lee", &code);
  ASSERT_TRUE(namesake);
  ExpectRefused(patient->AcceptInvite(code, "which one are you?"), StatusCode::kAlreadyExists,
                "known under another identity key");
  // Someone who shares the patient's own name.
  std::string code2;
  auto other_pat = stranger("other-pat", "pat", &code2);
  ASSERT_TRUE(other_pat);
  ExpectRefused(patient->AcceptInvite(code2, "hello pat"), StatusCode::kAlreadyExists, "your own name");

  // Nothing reached the namesakes, and the first dr.lee still hears from the patient.
  ASSERT_HAS(patient->SendText("dr.lee", "still you?"));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat"), (std::vector<std::string>{"hello doctor", "still you?"}));
  for (Client* c : {namesake.get(), other_pat.get()}) {
    ASSERT_HAS(c->Sync());
    auto theirs = c->Contacts();
    ASSERT_HAS(theirs);
    EXPECT_TRUE(theirs->empty());
  }
  auto contacts = patient->Contacts();
  ASSERT_HAS(contacts);
  ASSERT_EQ(contacts->size(), 1u);
  EXPECT_EQ((*contacts)[0].fingerprint, clinician->Fingerprint());

  // Removing the first dr.lee does not let the namesake's invite pass as a change of their identity key.
  ASSERT_OK(patient->RemoveContact("dr.lee"));
  ExpectRefused(patient->AcceptInvite(code, "and now?"), StatusCode::kAlreadyExists,
                "known under another identity key");
}

TEST_F(RuntimeE2E, BadInputGetsClearErrors) {
  auto clinician = NewClient("clinician", "dr.lee");
  ASSERT_TRUE(clinician);
  auto bad = clinician->AcceptInvite("cwi1.not-a-real-code", "hi");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kMalformed);
  EXPECT_EQ(clinician->SendText("nobody", "hi").error().code(), StatusCode::kNotFound);
  clinician.reset();

  auto wrong = Client::Open(dir_.Sub("clinician"), AsBytes("wrong passphrase"), Fast());
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().code(), StatusCode::kPermissionDenied);
  auto none = Client::Open(dir_.Sub("nobody"), kPass, Fast());
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(Client::Create(dir_.Sub("clinician"), "again", kPass, Fast()).error().code(), StatusCode::kAlreadyExists);

  auto c = Reopen("clinician");
  ASSERT_TRUE(c);
  relay_->Stop();
  Status unreachable = c->Register(relay_->address(), 5000);
  EXPECT_EQ(unreachable.code(), StatusCode::kUnavailable) << unreachable.ToString();
  EXPECT_EQ(c->RelayAddress(), "");
}

TEST_F(RuntimeE2E, AnInviteAlteredOnTheWayIsRefusedBeforeAnythingHappens) {
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat");
  auto eve = NewClient("eve", "eve");
  ASSERT_TRUE(clinician && patient && eve);
  ASSERT_OK(clinician->Register(relay_->address()));
  ASSERT_OK(eve->Register(relay_->address()));
  auto code = clinician->CreateInvite();
  auto eves_code = eve->CreateInvite();
  ASSERT_HAS(code);
  ASSERT_HAS(eves_code);
  auto genuine = DecodeInvite(*code);
  auto eves = DecodeInvite(*eves_code);
  ASSERT_HAS(genuine);
  ASSERT_HAS(eves);
  ASSERT_OK(VerifyInvite(*genuine));

  // Whoever carries the code (a mail server, a chat app) keeps dr.lee's identity key, which the patient
  // will check by safety numbers, and swaps what those numbers do not show: the box key that hides who
  // writes from the relay, the mailbox the patient writes to, or the name.
  std::vector<Invite> altered(3, *genuine);
  altered[0].card.box_key = eves->card.box_key;
  altered[1].card.mailbox = eves->card.mailbox;
  altered[1].card.token = eves->card.token;
  altered[2].name = "dr.leigh";
  for (const Invite& a : altered) {
    ExpectRefused(patient->AcceptInvite(EncodeInvite(a), "hello doctor"), StatusCode::kBadSignature,
                  "not signed by the identity it names");
  }
  // Re-signed by someone else's key, it still names dr.lee's.
  Invite resigned = altered[0];
  resigned.signature = eves->signature;
  ExpectRefused(patient->AcceptInvite(EncodeInvite(resigned), "hello doctor"), StatusCode::kBadSignature,
                "not signed");

  // Nothing happened: the patient did not even register, nothing reached eve, and the genuine code works.
  EXPECT_EQ(patient->RelayAddress(), "");
  auto contacts = patient->Contacts();
  ASSERT_HAS(contacts);
  EXPECT_TRUE(contacts->empty());
  auto eve_sync = eve->Sync();
  ASSERT_HAS(eve_sync);
  EXPECT_EQ(eve_sync->received, 0u);
  ASSERT_HAS(patient->AcceptInvite(*code, "hello doctor"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat"), (std::vector<std::string>{"hello doctor"}));
}

// Found in review: any invite code of ours in the wrong hands, answered under an existing contact's name with
// another key, raised a forged identity change that blocked that conversation until the user decided. Codes
// are now for new contacts, or for one named contact's new device.
TEST_F(RuntimeE2E, AnInviteCodeAdmitsOnlyTheNamesItIsFor) {
  std::mutex mu;
  std::vector<std::string> errors;
  int changes = 0;
  ClientOptions o = Fast();
  o.callbacks.on_error = [&](const Status& s) {
    std::lock_guard<std::mutex> lock(mu);
    errors.push_back(s.message());
  };
  o.callbacks.on_identity_change = [&](const IdentityChangeEvent&) {
    std::lock_guard<std::mutex> lock(mu);
    ++changes;
  };
  auto clinician = NewClient("clinician", "dr.lee", std::move(o));
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  const auto dropped_because = [&](const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    return std::any_of(errors.begin(), errors.end(),
                       [&](const std::string& e) { return e.find(why) != std::string::npos; });
  };

  // A code for a new contact, answered under the patient's name (by her new phone, or by anyone who got the
  // code): dropped, and nothing changes.
  auto for_new = clinician->CreateInvite();
  ASSERT_HAS(for_new);
  auto phone = NewClient("patient-phone2", "pat");
  ASSERT_TRUE(phone);
  ASSERT_HAS(phone->AcceptInvite(*for_new, "it's me, new phone"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_TRUE(
      dropped_because("an invite for a new contact was answered under the name of an existing contact"));
  // A code for the patient's new device says so, signed: anyone else's client refuses it.
  auto for_device = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(for_device);
  auto stranger = NewClient("stranger", "sam");
  ASSERT_TRUE(stranger);
  auto refused = stranger->AcceptInvite(*for_device, "hello");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kPermissionDenied);
  ASSERT_HAS(clinician->Sync());
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(changes, 0);
  }
  auto contacts = clinician->Contacts();
  ASSERT_HAS(contacts);
  ASSERT_EQ(contacts->size(), 1u);
  EXPECT_EQ((*contacts)[0].trust, session::TrustState::kTrusted);
  auto left = clinician->PeekRelay();
  ASSERT_HAS(left);
  EXPECT_TRUE(left->empty());
  ASSERT_HAS(clinician->SendText("pat", "still talking to you"));  // the conversation was never blocked
  EXPECT_EQ(clinician->CreateInviteForNewDevice("nobody").error().code(), StatusCode::kNotFound);
  auto open = clinician->OpenInvites();
  ASSERT_HAS(open);
  ASSERT_EQ(open->size(), 2u);  // neither was answered by whom it admits
  EXPECT_EQ((*open)[1].for_contact, "pat");

  // Each still admits whom it is for.
  auto newcomer = NewClient("newcomer", "ines");
  ASSERT_TRUE(newcomer);
  ASSERT_HAS(newcomer->AcceptInvite(*for_new, "hello, I'm new"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "ines"), (std::vector<std::string>{"hello, I'm new"}));
  // The new phone answers the code for it, though it answered the code for new contacts first (it holds the
  // clinician as a contact already; the code says it is for this phone's name): the change awaits the user,
  // who compares and accepts, and the two talk both ways.
  ASSERT_HAS(phone->AcceptInvite(*for_device, "new phone, the right code"));
  ASSERT_HAS(clinician->Sync());
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(changes, 1);
  }
  ASSERT_OK(clinician->AcceptIdentityChange("pat"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat").back(), "new phone, the right code");
  ASSERT_HAS(clinician->SendText("pat", "welcome back"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(phone->Sync());
  EXPECT_EQ(Bodies(*phone, "dr.lee").back(), "welcome back");
  // A code for new contacts is still refused by a contact: answered under its name, it would be dropped.
  auto another = clinician->CreateInvite();
  ASSERT_HAS(another);
  EXPECT_EQ(phone->AcceptInvite(*another, "again").error().code(), StatusCode::kAlreadyExists);
  // So is a code for this phone's own name once the clinician wrote to it: it reaches the clinician already,
  // and a stale code (answered, cancelled) would cut it off.
  EXPECT_EQ(phone->AcceptInvite(*for_device, "again").error().code(), StatusCode::kAlreadyExists);
  auto fresh = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(fresh);
  EXPECT_EQ(phone->AcceptInvite(*fresh, "again").error().code(), StatusCode::kAlreadyExists);
}

// Watches a client's reports and identity changes.
struct Watch {
  std::mutex mu;
  std::vector<std::string> errors;
  int changes = 0;
  ClientOptions Options() {
    ClientOptions o = Fast();
    o.callbacks.on_error = [this](const Status& s) {
      std::lock_guard<std::mutex> lock(mu);
      errors.push_back(s.message());
    };
    o.callbacks.on_identity_change = [this](const IdentityChangeEvent&) {
      std::lock_guard<std::mutex> lock(mu);
      ++changes;
    };
    return o;
  }
  int Changes() {
    std::lock_guard<std::mutex> lock(mu);
    return changes;
  }
  std::string All() {
    std::lock_guard<std::mutex> lock(mu);
    std::string out;
    for (auto& e : errors) out += e + "\n";
    return out;
  }
};

// pat's new phone answered a code for it: the clinician sees the one change, accepts it, and reads `last`.
void AcceptNewPhone(Client& clinician, Watch& w, const std::string& last) {
  ASSERT_HAS(clinician.Sync());
  ASSERT_EQ(w.Changes(), 1) << w.All();
  ASSERT_OK(clinician.AcceptIdentityChange("pat"));
  ASSERT_HAS(clinician.Sync());
  EXPECT_EQ(Bodies(clinician, "pat").back(), last);
}

// The clinician's reply reaches pat's `phone`.
void ExpectReplyReaches(Client& clinician, Client& phone) {
  ASSERT_HAS(clinician.SendText("pat", "welcome back"));
  ASSERT_HAS(clinician.Sync());
  ASSERT_HAS(phone.Sync());
  EXPECT_EQ(Bodies(phone, "dr.lee").back(), "welcome back");
}

// Found in review: a revoked contact has no my_token, and a code for new contacts admitted its name.
TEST_F(RuntimeE2E, ANewContactCodeCannotRaiseAChangeOfARevokedContact) {
  Watch w;
  auto clinician = NewClient("clinician", "dr.lee", w.Options());
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_OK(clinician->RevokeContact("pat"));
  auto code = clinician->CreateInvite();
  ASSERT_HAS(code);
  auto impostor = NewClient("impostor", "pat");
  ASSERT_TRUE(impostor);
  ASSERT_HAS(impostor->AcceptInvite(*code, "it's pat, trust me"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(w.Changes(), 0) << w.All();
  auto contacts = clinician->Contacts();
  ASSERT_HAS(contacts);
  for (auto& c : *contacts) EXPECT_EQ(c.trust, session::TrustState::kTrusted) << c.name;
}

// Found in review: a removed contact's key is still the engine's, and a code for new contacts admitted its
// name.
TEST_F(RuntimeE2E, ANewContactCodeCannotRaiseAChangeOfARemovedContact) {
  Watch w;
  auto clinician = NewClient("clinician", "dr.lee", w.Options());
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_OK(clinician->RemoveContact("pat"));
  auto code = clinician->CreateInvite();
  ASSERT_HAS(code);
  auto impostor = NewClient("impostor", "pat");
  ASSERT_TRUE(impostor);
  ASSERT_HAS(impostor->AcceptInvite(*code, "it's pat, trust me"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(w.Changes(), 0) << w.All();

  // The removed patient's new phone comes back with a code made for it: the change awaits the user.
  auto for_pat = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(for_pat);
  auto phone = NewClient("patient-phone2", "pat");
  ASSERT_TRUE(phone);
  ASSERT_HAS(phone->AcceptInvite(*for_pat, "back, on a new phone"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(w.Changes(), 1) << w.All();
  ASSERT_OK(clinician->AcceptIdentityChange("pat"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat").back(), "back, on a new phone");
}

// Found in review: a device invite outlived its contact, and raised a change of a contact that was gone.
TEST_F(RuntimeE2E, ADeviceInviteOfARemovedContactAdmitsNobody) {
  Watch w;
  auto clinician = NewClient("clinician", "dr.lee", w.Options());
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  auto code = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(code);
  ASSERT_OK(clinician->RemoveContact("pat"));
  auto open = clinician->OpenInvites();
  ASSERT_HAS(open);
  EXPECT_EQ(open->size(), 0u) << "the device invite of a removed contact is still open";
  auto phone = NewClient("phone", "pat");
  ASSERT_TRUE(phone);
  ASSERT_HAS(phone->AcceptInvite(*code, "new phone"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(w.Changes(), 0) << w.All();
}

// A code cancelled while the inviter was away from the relay is revoked there only at the next connection, so
// what its holders deposited meanwhile still arrives. Found in review: a retired token admitted any name, so
// a leaked code, cancelled, still raised a forged change of an existing contact. A cancelled code admits
// nobody, as cancelling promises, whether it was for new contacts or for a contact's new device.
TEST_F(RuntimeE2E, ACancelledCodeAdmitsNobodyEvenBeforeTheRelayIsTold) {
  Watch w;
  auto clinician = NewClient("clinician", "dr.lee", w.Options());
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  auto code = clinician->CreateInvite();
  auto device_code = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(code);
  ASSERT_HAS(device_code);
  auto open = clinician->OpenInvites();
  ASSERT_HAS(open);
  ASSERT_EQ(open->size(), 2u);
  clinician.reset();  // the clinician's app is closed

  auto impostor = NewClient("impostor", "pat");
  auto phone = NewClient("phone", "pat");
  auto newcomer = NewClient("newcomer", "sam");
  ASSERT_TRUE(impostor && phone && newcomer);
  ASSERT_HAS(impostor->AcceptInvite(*code, "it's pat, trust me"));
  ASSERT_HAS(phone->AcceptInvite(*device_code, "pat, on a phone you never saw"));
  ASSERT_HAS(newcomer->AcceptInvite(*code, "hello, I'm new"));

  relay_->Stop();
  clinician = Reopen("clinician", w.Options());
  ASSERT_TRUE(clinician);
  for (const auto& invite : *open) {
    EXPECT_FALSE(clinician->CancelInvite(invite.id, 3000).ok()) << "the relay was down: the revocation waits";
  }
  auto still_open = clinician->OpenInvites();
  ASSERT_HAS(still_open);
  EXPECT_TRUE(still_open->empty()) << "the cancellations stand here at once";

  ASSERT_OK(relay_->Start());
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(w.Changes(), 0) << w.All();
  auto contacts = clinician->Contacts();
  ASSERT_HAS(contacts);
  ASSERT_EQ(contacts->size(), 1u);
  EXPECT_EQ(contacts->front().name, "pat");
  EXPECT_EQ(contacts->front().trust, session::TrustState::kTrusted);
  EXPECT_EQ(Bodies(*clinician, "pat"), (std::vector<std::string>{"hello doctor"}));
}

// Found in review: a code for a new device taken from a contact that never wrote to us revoked our token for
// it, cutting the two off both ways when the code was stale; and the stale code's answer, refused, then sent
// again after a restart with a fresh code's token, bound the stale token at the inviter, which revoked the
// fresh one. Our token stays; a stale card is refused, visibly; an answer binds only the token it came with.
TEST_F(RuntimeE2E, AStaleCodeForANewDeviceDoesNotCutTheNewPhoneOff) {
  testing::ShiftedClock clock;  // the relay's and the clinician's
  relay_->Stop();
  relay_->UseClock(&clock);
  ASSERT_OK(relay_->Start());
  Watch w;
  ClientOptions o = w.Options();
  o.clock = &clock;
  o.send_delivery_receipts = false;  // a receipt would be the clinician writing to the phone
  auto clinician = NewClient("clinician", "dr.lee", o);
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  constexpr int64_t kHourMs = 3600 * 1000;
  auto stale = clinician->CreateInviteForNewDevice("pat", kHourMs);
  auto fresh = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(stale);
  ASSERT_HAS(fresh);
  auto phone = NewClient("patient-phone2", "pat");
  ASSERT_TRUE(phone);
  ASSERT_HAS(phone->AcceptInvite(*fresh, "new phone"));
  ASSERT_NO_FATAL_FAILURE(AcceptNewPhone(*clinician, w, "new phone"));

  // Before the clinician wrote to it, the phone takes the stale code (an old QR scanned again, lapsed at the
  // relay unanswered): what it sends now is refused there, and it says so.
  clock.Advance(2 * kHourMs);
  ASSERT_HAS(phone->AcceptInvite(*stale, "stale code"));
  ASSERT_HAS(phone->SendText("dr.lee", "lost"));
  (void)phone->Sync();
  auto history = phone->History("dr.lee");
  ASSERT_HAS(history);
  ASSERT_FALSE(history->empty());
  EXPECT_EQ(history->back().status, storage::MessageStatus::kFailed);
  // A fresh code brings it back, across a restart that sends the stale answer again.
  auto again = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(again);
  ASSERT_HAS(phone->AcceptInvite(*again, "back"));
  phone.reset();
  phone = Reopen("patient-phone2");
  ASSERT_TRUE(phone);
  (void)phone->Sync();
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(phone->SendText("dr.lee", "still here"));
  ASSERT_HAS(phone->Sync());
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat").back(), "still here");
  ExpectReplyReaches(*clinician, *phone);
}

// A lost phone: the clinician revokes it, then makes the new phone's code. A code made before the revocation
// is withdrawn with it: answered under the old, still trusted key (the stolen phone itself), it would have
// undone the revocation unasked (found in review).
TEST_F(RuntimeE2E, ALostPhoneIsRevokedFirstThenTheNewPhoneComesInWithItsCode) {
  Watch w;
  ClientOptions o = w.Options();
  o.send_delivery_receipts = false;  // so the old phone's own client still takes a device code of its name
  auto clinician = NewClient("clinician", "dr.lee", o);
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  auto before = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(before);
  ASSERT_OK(clinician->RevokeContact("pat"));  // the old phone was stolen
  ASSERT_HAS(patient->AcceptInvite(*before, "let me back in"));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat").back(), "hello doctor") << w.All();
  auto code = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(code);
  auto phone = NewClient("patient-phone2", "pat");
  ASSERT_TRUE(phone);
  ASSERT_HAS(phone->AcceptInvite(*code, "new phone"));
  ASSERT_NO_FATAL_FAILURE(AcceptNewPhone(*clinician, w, "new phone"));
  ExpectReplyReaches(*clinician, *phone);
}

// Found in review: a second code of the same inviter, answered while the inviter was away (a re-scan, a code
// sent again because "nothing happened"), replaced how the two reached each other and cut them off. It is
// refused.
TEST_F(RuntimeE2E, ASecondCodeOfTheSameInviterIsRefusedAndNothingIsCutOff) {
  Watch w;
  auto clinician = NewClient("clinician", "dr.lee", w.Options());
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  ASSERT_OK(clinician->Register(relay_->address()));
  auto first = clinician->CreateInvite();
  auto second = clinician->CreateInvite();
  ASSERT_HAS(first);
  ASSERT_HAS(second);
  ASSERT_OK(patient->Register(relay_->address()));
  ASSERT_HAS(patient->AcceptInvite(*first, "hello doctor"));
  auto again = patient->AcceptInvite(*second, "hello again");
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), StatusCode::kAlreadyExists);
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(clinician->SendText("pat", "reply from the doctor"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(patient->Sync());
  auto got = Bodies(*patient, "dr.lee");
  EXPECT_TRUE(std::find(got.begin(), got.end(), "reply from the doctor") != got.end())
      << "the patient no longer receives the clinician";
  ASSERT_HAS(patient->SendText("dr.lee", "still there?"));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  auto mine = Bodies(*clinician, "pat");
  EXPECT_EQ(mine.back(), "still there?") << w.All();
  // After the patient's next link up, the token the clinician holds (retired by the re-accept) is revoked.
  patient.reset();
  patient = Reopen("patient");
  ASSERT_TRUE(patient);
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->SendText("pat", "second reply"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(patient->Sync());
  got = Bodies(*patient, "dr.lee");
  EXPECT_EQ(got.back(), "second reply") << "clinician -> patient cut off too";
}

// Found in review: a contact holding a code made for another contact's new device could name it in its invite
// answer and take it, which retired the real new phone's way in.
TEST_F(RuntimeE2E, AContactCannotTakeAnInviteMadeForAnother) {
  Watch w;
  auto clinician = NewClient("clinician", "dr.lee", w.Options());
  auto patient = NewClient("patient", "pat");
  auto nurse = NewClient("nurse", "nina");
  ASSERT_TRUE(clinician && patient && nurse);
  Connect(*clinician, *patient);
  Connect(*clinician, *nurse, "hello from the nurse");
  auto for_nina = clinician->CreateInviteForNewDevice("nina");
  ASSERT_HAS(for_nina);
  wire::AppMessage answer;
  answer.kind = wire::AppKind::kInviteAnswer;
  answer.payload = SecretBytes(DecodeInvite(*for_nina)->card.token);
  ASSERT_HAS(patient->SendAppMessageForTesting("dr.lee", answer));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  // Sent with the patient's own token, it binds nothing (and named another contact's invite besides).
  EXPECT_NE(w.All().find("an invite answer came with another deposit token than it names"), std::string::npos)
      << w.All();
  auto open = clinician->OpenInvites();
  ASSERT_HAS(open);
  ASSERT_EQ(open->size(), 1u);
  EXPECT_EQ((*open)[0].for_contact, "nina");
  ASSERT_HAS(patient->SendText("dr.lee", "my own token still works"));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(Bodies(*clinician, "pat").back(), "my own token still works");
}

TEST_F(RuntimeE2E, AMessageNamingAnotherDeviceIsDroppedForThatReason) {
  std::mutex mu;
  std::vector<std::string> errors;
  ClientOptions o = Fast();
  o.callbacks.on_error = [&](const Status& s) {
    std::lock_guard<std::mutex> lock(mu);
    errors.push_back(s.message());
  };
  auto clinician = NewClient("clinician", "dr.lee", std::move(o));
  ASSERT_TRUE(clinician);
  ASSERT_OK(clinician->Register(relay_->address()));
  auto code = clinician->CreateInvite();
  ASSERT_HAS(code);
  auto card = DecodeInvite(*code)->card;

  // Whoever holds a deposit token writes the sealed envelope, device number included: one per number would
  // be a session of its own, each caught up on our groups. Every identity is one device, number 1.
  EnvelopeContent ec;
  ec.message.type = session::MessageType::kPreKey;
  ec.message.body = Bytes(120, 0x33);
  ec.sender = "pat";
  ec.sender_device = 2;
  ec.token = card.token;
  auto sealed = SealEnvelope(ec, card.box_key);
  ASSERT_HAS(sealed);
  ASSERT_NO_FATAL_FAILURE(DepositRaw(card, std::move(*sealed)));

  auto sync = clinician->Sync();
  ASSERT_HAS(sync);
  EXPECT_EQ(sync->received, 0u);
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_TRUE(std::any_of(errors.begin(), errors.end(), [](const std::string& e) {
      return e.find("device number") != std::string::npos;
    })) << ::testing::PrintToString(errors);
  }
  auto left = clinician->PeekRelay();
  ASSERT_HAS(left);
  EXPECT_TRUE(left->empty());
  auto contacts = clinician->Contacts();
  ASSERT_HAS(contacts);
  EXPECT_TRUE(contacts->empty());
}

// An invite of fixed bytes (its signature verifies nothing), for the codec alone.
Invite SampleInvite() {
  Invite inv;
  inv.card.relay = "cw://" + std::string(64, 'a') + "@127.0.0.1:7400";
  inv.card.mailbox.fill(1);
  inv.card.token.fill(2);
  inv.card.box_key.fill(3);
  inv.identity_key.fill(5);
  inv.name = "dr.lee";
  inv.signature.fill(6);
  return inv;
}

// Found in review: an envelope of another version was acknowledged, so the relay deleted it unread.
TEST_F(RuntimeE2E, AnEnvelopeOfAnotherVersionWaitsAtTheRelay) {
  auto clinician = NewClient("clinician", "dr.lee");
  ASSERT_TRUE(clinician);
  ASSERT_OK(clinician->Register(relay_->address()));
  auto code = clinician->CreateInvite();
  ASSERT_HAS(code);
  auto card = DecodeInvite(*code)->card;
  // The version-1 layout: [1, type, group, sender, device, ciphertext, sent at, card].
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array(8);
  pk.pack_uint8(1);
  pk.pack_uint8(static_cast<uint8_t>(session::MessageType::kPreKey));
  pk.pack(std::string());
  pk.pack(std::string("pat"));
  pk.pack_uint32(1);
  const Bytes body(120, 0x33);
  pk.pack_bin(static_cast<uint32_t>(body.size()));
  pk.pack_bin_body(reinterpret_cast<const char*>(body.data()), static_cast<uint32_t>(body.size()));
  pk.pack_int64(1);
  pk.pack_nil();
  auto padded = wire::Pad(ByteView(reinterpret_cast<const uint8_t*>(buf.data()), buf.size()));
  ASSERT_HAS(padded);
  Bytes sealed(padded->size() + crypto_box_SEALBYTES);
  ASSERT_EQ(crypto_box_seal(sealed.data(), padded->reveal().data(), padded->size(), card.box_key.data()), 0);
  ASSERT_NO_FATAL_FAILURE(DepositRaw(card, std::move(sealed)));
  auto sync = clinician->Sync();
  ASSERT_HAS(sync);
  EXPECT_EQ(sync->received, 0u);
  auto left = clinician->PeekRelay();
  ASSERT_HAS(left);
  EXPECT_EQ(left->size(), 1u);
}

TEST(InviteCode, RoundTripsAndRejectsGarbage) {
  const Invite inv = SampleInvite();
  const std::string code = EncodeInvite(inv);
  EXPECT_LT(code.size(), 400u);
  auto back = DecodeInvite("  " + code + "\n");
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, inv);
  EXPECT_EQ(DecodeInvite("").error().code(), StatusCode::kMalformed);
  EXPECT_EQ(DecodeInvite("cwi1.").error().code(), StatusCode::kMalformed);
  EXPECT_EQ(DecodeInvite(code.substr(0, code.size() - 5)).error().code(), StatusCode::kMalformed);
  EXPECT_EQ(DecodeInvite("xyz" + code).error().code(), StatusCode::kMalformed);
  std::string flipped = code;
  flipped[10] = flipped[10] == 'A' ? 'B' : 'A';
  auto f = DecodeInvite(flipped);
  if (f) {
    EXPECT_NE(*f, inv);
  }
}

// "cwi1." + base64url of a msgpack array whose first element is `version`, the rest as EncodeInvite writes.
// With `for_device`, that name follows the inviter's (as version 3 writes it).
std::string CodeOfVersion(const Invite& inv, uint8_t version, bool signed_fields,
                          const char* for_device = nullptr) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_array((signed_fields ? 8 : 7) + (for_device ? 1 : 0));
  pk.pack_uint8(version);
  pk.pack(inv.card.relay);
  for (ByteView b : {ByteView(inv.card.mailbox), ByteView(inv.card.token), ByteView(inv.card.box_key),
                     ByteView(inv.identity_key)}) {
    pk.pack_bin(static_cast<uint32_t>(b.size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(b.data()), static_cast<uint32_t>(b.size()));
  }
  pk.pack(inv.name);
  if (for_device) pk.pack(std::string(for_device));
  if (signed_fields) {
    pk.pack_bin(static_cast<uint32_t>(inv.signature.size()));
    pk.pack_bin_body(reinterpret_cast<const char*>(inv.signature.data()),
                     static_cast<uint32_t>(inv.signature.size()));
  }
  std::string b64(sodium_base64_encoded_len(buf.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(b64.data(), b64.size(), reinterpret_cast<const unsigned char*>(buf.data()), buf.size(),
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  b64.resize(b64.size() - 1);
  return "cwi1." + b64;
}

TEST(InviteCode, AnUnsignedCodeOfVersionOneIsRefusedAsOlderAndANewerOneAsNewer) {
  const Invite inv = SampleInvite();
  ASSERT_EQ(CodeOfVersion(inv, 2, true), EncodeInvite(inv));  // the helper writes what the encoder writes

  auto v1 = DecodeInvite(CodeOfVersion(inv, 1, false));
  ASSERT_FALSE(v1.has_value());
  EXPECT_EQ(v1.error().code(), StatusCode::kUnsupportedVersion);
  EXPECT_NE(v1.error().message().find("older version"), std::string::npos) << v1.error().message();
  auto v4 = DecodeInvite(CodeOfVersion(inv, 4, true, "pat"));
  ASSERT_FALSE(v4.has_value());
  EXPECT_EQ(v4.error().code(), StatusCode::kUnsupportedVersion);
  EXPECT_NE(v4.error().message().find("newer version"), std::string::npos) << v4.error().message();
  // Version 2 without its signature is no invite at all; nor is version 3 without the name it is for, or
  // version 2 with one.
  EXPECT_EQ(DecodeInvite(CodeOfVersion(inv, 2, false)).error().code(), StatusCode::kMalformed);
  EXPECT_EQ(DecodeInvite(CodeOfVersion(inv, 3, true)).error().code(), StatusCode::kMalformed);
  EXPECT_EQ(DecodeInvite(CodeOfVersion(inv, 2, true, "pat")).error().code(), StatusCode::kMalformed);
}

// A code for a contact's new device is version 3 and names that contact; a code for new contacts stays
// version 2, which every signed-invite version reads. The signature covers the name it is for, so it cannot
// be cleared or changed on the way.
TEST(InviteCode, ACodeForANewDeviceNamesItsContactUnderTheSignature) {
  const auto signed_bytes = [](const Invite& i) {
    const SecretBytes b = InviteSignedBytes(i);
    return Bytes(b.reveal().begin(), b.reveal().end());
  };
  Invite inv = SampleInvite();
  const Bytes for_new_contacts = signed_bytes(inv);
  inv.for_device_of = "pat";
  EXPECT_EQ(EncodeInvite(inv), CodeOfVersion(inv, 3, true, "pat"));
  auto back = DecodeInvite(EncodeInvite(inv));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, inv);
  EXPECT_NE(signed_bytes(inv), for_new_contacts);
  Invite other = inv;
  other.for_device_of = "sam";
  EXPECT_NE(signed_bytes(other), signed_bytes(inv));
  inv.for_device_of = std::string(256, 'n');
  inv.name = std::string(256, 'm');
  inv.card.relay = std::string(200, 'r');
  EXPECT_LE(EncodeInvite(inv).size(), kMaxInviteCodeSize);  // the longest code still decodes
  EXPECT_TRUE(DecodeInvite(EncodeInvite(inv)).has_value());
}

TEST(RuntimeEnvelope, SealsToTheRecipientOnly) {
  BoxPublicKey pk{}, other_pk{};
  SecretBytes sk(crypto_box_SECRETKEYBYTES), other_sk(crypto_box_SECRETKEYBYTES);
  crypto_box_keypair(pk.data(), sk.reveal_mutable().data());
  crypto_box_keypair(other_pk.data(), other_sk.reveal_mutable().data());
  EnvelopeContent c;
  c.message.type = session::MessageType::kSignal;
  c.message.body = Bytes(100, 0x33);
  c.sender = "dr.lee";
  c.sent_at_ms = 1234;
  c.card = ContactCard{"cw://x@h:1", {}, {}, {}};
  auto sealed = SealEnvelope(c, pk);
  ASSERT_TRUE(sealed.has_value());
  auto opened = OpenEnvelope(*sealed, pk, sk);
  ASSERT_TRUE(opened.has_value()) << opened.error().ToString();
  EXPECT_EQ(opened->sender, "dr.lee");
  EXPECT_EQ(opened->message.body, c.message.body);
  EXPECT_EQ(opened->sent_at_ms, 1234);
  ASSERT_TRUE(opened->card.has_value());
  EXPECT_EQ(*opened->card, *c.card);
  EXPECT_EQ(OpenEnvelope(*sealed, other_pk, other_sk).error().code(), StatusCode::kTampered);
  Bytes cut(sealed->begin(), sealed->end() - 1);
  EXPECT_EQ(OpenEnvelope(cut, pk, sk).error().code(), StatusCode::kTampered);
}

// Lock wipes the keys and refuses every call until the passphrase is given again; what arrived meanwhile
// waited at the relay and is received after unlocking. A wrong passphrase leaves it locked.
TEST_F(RuntimeE2E, LockRefusesEveryCallUntilUnlockedAndLosesNothing) {
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_OK(clinician->Lock());
  ASSERT_OK(clinician->Lock());  // idempotent
  EXPECT_TRUE(clinician->locked());
  auto refused = [](StatusCode c) { return c == StatusCode::kPermissionDenied; };
  EXPECT_TRUE(refused(clinician->SendText("pat", "while locked").error().code()));
  EXPECT_TRUE(refused(clinician->History("pat").error().code()));
  EXPECT_TRUE(refused(clinician->Contacts().error().code()));
  EXPECT_TRUE(refused(clinician->GetSafetyNumber("pat").error().code()));
  EXPECT_TRUE(refused(clinician->Sync().error().code()));
  EXPECT_TRUE(refused(clinician->ExportJson().error().code()));
  EXPECT_TRUE(refused(clinician->StartBackground().code()));
  EXPECT_FALSE(clinician->connected());

  ASSERT_HAS(patient->SendText("dr.lee", "sent while the clinician was locked"));
  ASSERT_HAS(patient->Sync());

  const Status wrong = clinician->Unlock(AsBytes("not the passphrase"));
  EXPECT_EQ(wrong.code(), StatusCode::kPermissionDenied) << wrong.ToString();
  EXPECT_TRUE(clinician->locked());
  EXPECT_TRUE(refused(clinician->History("pat").error().code()));

  ASSERT_OK(clinician->Unlock(kPass));
  EXPECT_FALSE(clinician->locked());
  auto sync = clinician->Sync();
  ASSERT_HAS(sync);
  EXPECT_EQ(sync->received, 1u);
  EXPECT_EQ(Bodies(*clinician, "pat"),
            (std::vector<std::string>{"hello doctor", "sent while the clinician was locked"}));
  ASSERT_HAS(clinician->SendText("pat", "and a reply after unlocking"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(patient->Sync());
  EXPECT_EQ(Bodies(*patient, "dr.lee").back(), "and a reply after unlocking");
}

// Automatic logoff: a background client with no calls locks itself and says so; after Unlock it is back in
// the background and pushed messages arrive again.
TEST_F(RuntimeE2E, AnIdleClientLocksItselfAndResumesAfterUnlock) {
  std::mutex mu;
  std::condition_variable cv;
  bool locked_itself = false;
  std::vector<std::string> got;
  ClientOptions o = Fast();
  o.auto_lock_after_ms = 300;
  o.callbacks.on_lock = [&] {
    std::lock_guard<std::mutex> lock(mu);
    locked_itself = true;
    cv.notify_all();
  };
  o.callbacks.on_message = [&](const IncomingMessage& m) {
    std::lock_guard<std::mutex> lock(mu);
    got.push_back(Text(m.text));
    cv.notify_all();
  };
  auto clinician = NewClient("clinician", "dr.lee", std::move(o));
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_OK(clinician->StartBackground());
  ASSERT_TRUE(testing::WaitFor(mu, cv, [&] { return locked_itself; })) << "never locked itself";
  EXPECT_TRUE(clinician->locked());
  EXPECT_EQ(clinician->History("pat").error().code(), StatusCode::kPermissionDenied);

  ASSERT_OK(clinician->Unlock(kPass));
  // The audit trail says it was an automatic logoff (code 1), and the unlock that followed.
  auto trail = clinician->AuditTrail();
  ASSERT_HAS(trail);
  bool automatic = false;
  for (const auto& e : *trail) automatic |= e.type == compliance::AuditEventType::kLocked && e.code == 1;
  EXPECT_TRUE(automatic);
  EXPECT_EQ(trail->back().type, compliance::AuditEventType::kUnlockSucceeded);
  ASSERT_HAS(patient->SendText("dr.lee", "pushed after unlocking"));
  ASSERT_HAS(patient->Sync());
  // The idle timer may lock it again before the message arrives (300 ms is short on a loaded machine): the
  // message then waits at the relay, and the next Unlock's background link fetches it.
  auto arrived = [&] { return std::find(got.begin(), got.end(), "pushed after unlocking") != got.end(); };
  bool pushed = false;
  for (int attempt = 0; attempt < 30 && !pushed; ++attempt) {
    if (clinician->locked()) ASSERT_OK(clinician->Unlock(kPass));
    pushed = testing::WaitFor(mu, cv, arrived, /*seconds=*/1);
  }
  EXPECT_TRUE(pushed) << "the background link did not come back";
}

}  // namespace
}  // namespace cw::runtime
