// Direct P2P links (core/runtime/direct_links.h) end to end over loopback, next to a real relay: two clients
// that both listen talk directly, keep talking with the relay down, fall back to the relay when the peer's
// listener is gone, and refuse links from keys no contact announced.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/runtime/client.h"
#include "core/wire/direct.h"
#include "tests/runtime/runtime_test_util.h"
#include "transport/tcp_transport.h"

namespace cw::runtime {
namespace {

using testing::kPass;
using testing::TempDir;
using testing::TestRelay;
using testing::Text;

constexpr char kListen[] = "127.0.0.1:0";

// What a client's callbacks saw, for waiting on (bounded waits only: a safety net against hangs).
struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> texts;

  size_t count() {
    std::lock_guard<std::mutex> lock(mu);
    return texts.size();
  }
  bool WaitCount(size_t n) {
    return testing::WaitFor(mu, cv, [&] { return texts.size() >= n; });
  }
};

ClientOptions Options(Seen* seen, const std::string& listen) {
  ClientOptions o;
  o.keystore = storage::KeystoreOptions::MinimumCostForTesting();
  o.reconnect_min_ms = 20;
  o.reconnect_max_ms = 200;
  o.direct_listen = listen;
  o.direct_ack_timeout_ms = 1'000;
  o.callbacks.on_message = [seen](const IncomingMessage& m) {
    std::lock_guard<std::mutex> lock(seen->mu);
    seen->texts.push_back(Text(m.text));
    seen->cv.notify_all();
  };
  return o;
}

using testing::Bodies;

// Polls (bounded) until `pred` holds.
template <typename Pred>
bool Eventually(Pred pred) {
  for (int i = 0; i < 3000; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Whether row `row` of the conversation with `contact` (an outgoing message) has its delivery receipt.
bool Delivered(Client& c, const std::string& contact, size_t row) {
  auto h = c.History(contact);
  return h && h->size() > row && h->at(row).status == storage::MessageStatus::kDelivered;
}

bool IsDirect(Client& c, const std::string& contact) {
  auto contacts = c.Contacts();
  if (!contacts) return false;
  return std::any_of(contacts->begin(), contacts->end(),
                     [&](const ContactInfo& i) { return i.name == contact && i.direct; });
}

size_t Pending(Client& c) { return c.PendingOutboxCount().value_or(999); }

class DirectE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    relay_ = std::make_unique<TestRelay>(dir_.Sub("relay"));
    ASSERT_OK(relay_->Start());
  }

  std::unique_ptr<Client> New(const std::string& home, const std::string& name, ClientOptions o) {
    return testing::CreateClient(dir_.Sub(home), name, std::move(o));
  }
  std::unique_ptr<Client> Reopen(const std::string& home, ClientOptions o) {
    return testing::OpenClient(dir_.Sub(home), std::move(o));
  }

  // dr.lee invites pat through the relay; both then run in the background and, since both listen, end up
  // with a direct link each way (the announcements travel through the relay first).
  void Pair(Client& doctor, Client& patient) {
    ASSERT_OK(doctor.Register(relay_->address()));
    auto code = doctor.CreateInvite();
    ASSERT_HAS(code);
    ASSERT_OK(patient.Register(relay_->address()));
    ASSERT_HAS(patient.AcceptInvite(*code, "hello doctor"));
    ASSERT_HAS(doctor.Sync());
    ASSERT_OK(doctor.StartBackground());
    ASSERT_OK(patient.StartBackground());
    ASSERT_TRUE(Eventually([&] { return IsDirect(doctor, "pat") && IsDirect(patient, "dr.lee"); }));
  }

  // Pair, then ann (who does not listen: relay only) accepts an invite from dr.lee, whose callbacks fill
  // `doctor_seen`.
  void PairThenAnn(Client& doctor, Client& patient, Client& ann, Seen& doctor_seen) {
    ASSERT_NO_FATAL_FAILURE(Pair(doctor, patient));
    auto code = doctor.CreateInvite();
    ASSERT_HAS(code);
    ASSERT_HAS(ann.AcceptInvite(*code, "hi from ann"));
    ASSERT_TRUE(doctor_seen.WaitCount(2));  // "hello doctor" (Pair) and ann's first message
  }

  TempDir dir_;
  std::unique_ptr<TestRelay> relay_;
};

TEST_F(DirectE2E, ListeningIsOffByDefault) {
  Seen seen;
  auto c = New("c", "dr.lee", Options(&seen, ""));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->DirectEndpoint(), "");
  Seen seen2;
  auto d = New("d", "pat", Options(&seen2, kListen));
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->DirectEndpoint().starts_with("127.0.0.1:"));
  EXPECT_NE(d->DirectEndpoint(), "127.0.0.1:0");
}

TEST_F(DirectE2E, TwoListeningClientsConverseDirectly) {
  Seen doc_seen, pat_seen;
  auto doctor = New("doctor", "dr.lee", Options(&doc_seen, kListen));
  auto patient = New("patient", "pat", Options(&pat_seen, kListen));
  ASSERT_TRUE(doctor && patient);
  Pair(*doctor, *patient);
  // Let the set-up traffic through the relay settle, then count the relay's commands: the conversation
  // below must not add one (no deposit, no fetch, no ack).
  ASSERT_TRUE(Eventually([&] {
    return Pending(*doctor) == 0 && Pending(*patient) == 0 && relay_->Stats().queued_messages == 0;
  }));
  const uint64_t commands_before = relay_->Stats().commands;
  const DirectStats doc_before = doctor->GetDirectStats().value();
  const DirectStats pat_before = patient->GetDirectStats().value();

  for (const char* t : {"how are you feeling today?", "any dizziness?", "take 5 mg tonight"}) {
    ASSERT_HAS(doctor->SendText("pat", t));
  }
  ASSERT_TRUE(pat_seen.WaitCount(3));
  for (const char* t : {"better, thanks", "no dizziness"}) ASSERT_HAS(patient->SendText("dr.lee", t));
  ASSERT_TRUE(doc_seen.WaitCount(3));  // "hello doctor" came through the relay in Pair
  // Everything, delivery receipts included (they wait ClientOptions::delivery_receipt_delay_ms for
  // company), went and was acked (after each receiver's durable commit).
  ASSERT_TRUE(Eventually([&] {
    return Delivered(*doctor, "pat", 3) && Delivered(*patient, "dr.lee", 5) && Pending(*doctor) == 0 &&
           Pending(*patient) == 0;
  }));

  EXPECT_EQ(relay_->Stats().commands, commands_before);
  EXPECT_EQ(relay_->Stats().queued_messages, 0u);
  const DirectStats doc_after = doctor->GetDirectStats().value();
  const DirectStats pat_after = patient->GetDirectStats().value();
  EXPECT_GE(doc_after.delivered - doc_before.delivered, 3u);  // the texts, and receipts for pat's replies
  EXPECT_GE(pat_after.received - pat_before.received, 3u);
  EXPECT_GE(pat_after.delivered - pat_before.delivered, 2u);
  EXPECT_GE(doc_after.received - doc_before.received, 2u);

  const std::vector<std::string> expected{"hello doctor", "how are you feeling today?", "any dizziness?",
                                          "take 5 mg tonight", "better, thanks", "no dizziness"};
  EXPECT_EQ(Bodies(*doctor, "pat"), expected);
  EXPECT_EQ(Bodies(*patient, "dr.lee"), expected);
  auto sent = doctor->History("pat");
  ASSERT_HAS(sent);
  EXPECT_EQ(sent->at(1).status, storage::MessageStatus::kDelivered);  // pat's delivery receipt came back directly
}

TEST_F(DirectE2E, RelayDownDirectStillFlowsAndAGonePeerFallsBackToTheRelay) {
  Seen doc_seen, pat_seen;
  auto doctor = New("doctor", "dr.lee", Options(&doc_seen, kListen));
  auto patient = New("patient", "pat", Options(&pat_seen, kListen));
  ASSERT_TRUE(doctor && patient);
  Pair(*doctor, *patient);

  relay_->Stop();
  ASSERT_HAS(doctor->SendText("pat", "relay is down"));
  ASSERT_TRUE(pat_seen.WaitCount(1));
  ASSERT_HAS(patient->SendText("dr.lee", "still here"));
  ASSERT_TRUE(doc_seen.WaitCount(2));
  // Both delivery receipts (each waits a moment for company) went directly too.
  ASSERT_TRUE(Eventually([&] {
    return Delivered(*doctor, "pat", 1) && Delivered(*patient, "dr.lee", 2) && Pending(*doctor) == 0 &&
           Pending(*patient) == 0;
  }));

  // The patient's app restarts without listening: the doctor's link to it is gone, so the next messages
  // wait in the outbox for the relay.
  patient.reset();
  Seen pat2_seen;
  patient = Reopen("patient", Options(&pat2_seen, ""));
  ASSERT_TRUE(patient);
  ASSERT_TRUE(Eventually([&] { return !IsDirect(*doctor, "pat"); }));
  ASSERT_HAS(doctor->SendText("pat", "after your restart"));
  ASSERT_HAS(doctor->SendText("pat", "second after restart"));
  EXPECT_EQ(Pending(*doctor), 2u);

  ASSERT_OK(relay_->Start());
  ASSERT_TRUE(Eventually([&] { return Pending(*doctor) == 0; }));
  auto got = patient->Sync();
  ASSERT_HAS(got);
  EXPECT_EQ(got->received, 2u);
  EXPECT_FALSE(IsDirect(*patient, "dr.lee"));

  // Each message once, on both sides, in order.
  const std::vector<std::string> expected{"hello doctor", "relay is down", "still here", "after your restart",
                                          "second after restart"};
  EXPECT_EQ(Bodies(*patient, "dr.lee"), expected);
  ASSERT_HAS(doctor->Sync());
  EXPECT_EQ(Bodies(*doctor, "pat"), expected);
}

// Found in review: revoking or removing a contact stopped its deposits at the relay but not its direct link,
// over which its later messages still reached us (and a removed contact came back as a contact). Now the
// link is closed at once, each new one it opens is refused, and what it sends waits for the relay.
void ExpectRevokedContactsLinkRefused(Client& doctor, Client& patient, Seen& doc_seen, TestRelay& relay,
                                      bool remove) {
  const size_t before = doc_seen.count();
  ASSERT_OK(remove ? doctor.RemoveContact("pat") : doctor.RevokeContact("pat"));
  relay.Stop();  // whatever reaches the doctor now came over a direct link
  ASSERT_TRUE(Eventually([&] { return !IsDirect(patient, "dr.lee"); }));
  const uint64_t refused = doctor.GetDirectStats().value().refused;
  ASSERT_HAS(patient.SendText("dr.lee", "after revocation"));
  // The patient's client keeps reconnecting; each attempt is refused.
  ASSERT_TRUE(Eventually([&] { return doctor.GetDirectStats().value().refused >= refused + 2; }));
  EXPECT_FALSE(IsDirect(patient, "dr.lee"));
  EXPECT_EQ(doc_seen.count(), before);
  EXPECT_EQ(Pending(patient), 1u);
  auto contacts = doctor.Contacts();
  ASSERT_HAS(contacts);
  const bool listed =
      std::any_of(contacts->begin(), contacts->end(), [](const ContactInfo& c) { return c.name == "pat"; });
  EXPECT_EQ(listed, !remove);
}

TEST_F(DirectE2E, ARevokedOrRemovedContactsDirectLinkIsRefused) {
  for (const bool remove : {false, true}) {
    SCOPED_TRACE(remove ? "removed" : "revoked");
    if (remove) ASSERT_OK(relay_->Start());  // the first round stopped it
    const std::string round = remove ? "-removed" : "-revoked";
    Seen doc_seen, pat_seen;
    auto doctor = New("doctor" + round, "dr.lee", Options(&doc_seen, kListen));
    auto patient = New("patient" + round, "pat", Options(&pat_seen, kListen));
    ASSERT_TRUE(doctor && patient);
    ASSERT_NO_FATAL_FAILURE(Pair(*doctor, *patient));
    ASSERT_TRUE(Eventually([&] { return Pending(*doctor) == 0 && Pending(*patient) == 0; }));
    ExpectRevokedContactsLinkRefused(*doctor, *patient, doc_seen, *relay_, remove);
  }
}

TEST_F(DirectE2E, ALinkFromAKeyNoContactAnnouncedIsRefused) {
  Seen doc_seen, pat_seen;
  auto doctor = New("doctor", "dr.lee", Options(&doc_seen, kListen));
  auto patient = New("patient", "pat", Options(&pat_seen, kListen));
  ASSERT_TRUE(doctor && patient);
  Pair(*doctor, *patient);
  const DirectStats before = doctor->GetDirectStats().value();
  const auto history_before = Bodies(*doctor, "pat");

  // An impostor that knows the doctor's address and link key (both are no secret to contacts) but holds no
  // key any contact announced.
  auto impostor = transport::TcpTransport::New(transport::StaticKeyPair::Generate(SystemRandom::Default()));
  ASSERT_HAS(impostor);
  auto ep = transport::Endpoint::Parse("cw://" + doctor->LinkKeyHex() + "@" + doctor->DirectEndpoint());
  ASSERT_HAS(ep);
  std::mutex mu;
  std::condition_variable cv;
  bool closed = false;
  transport::ConnectionCallbacks cbs;
  cbs.on_closed = [&](Status) {
    std::lock_guard<std::mutex> lock(mu);
    closed = true;
    cv.notify_all();
  };
  ASSERT_OK(transport::RunSync(**impostor, [&]() -> Status {
    return (*impostor)->Connect(*ep, cbs, [&](Result<std::shared_ptr<transport::Connection>> c) {
      if (!c) {
        std::lock_guard<std::mutex> lock(mu);
        closed = true;  // refused during the handshake: as good
        cv.notify_all();
        return;
      }
      wire::DirectFrame f;
      f.type = wire::DirectFrameType::kDeliver;
      f.id.fill(9);
      f.envelope = Bytes(200, 0x42);
      (void)(*c)->Send(wire::EncodeDirectFrame(f).value());
    });
  }));
  ASSERT_TRUE(testing::WaitFor(mu, cv, [&] { return closed; }));
  ASSERT_OK((*impostor)->Shutdown());

  const DirectStats after = doctor->GetDirectStats().value();
  EXPECT_EQ(after.refused, before.refused + 1);
  EXPECT_EQ(after.received, before.received);
  EXPECT_EQ(Bodies(*doctor, "pat"), history_before);
  EXPECT_TRUE(IsDirect(*doctor, "pat"));  // the real contact's link is untouched
}

TEST_F(DirectE2E, AnAnnouncedKeyTheListenerCannotProveFailsTheHandshakeAndTheRelayIsUsed) {
  Seen doc_seen, pat_seen;
  auto doctor = New("doctor", "dr.lee", Options(&doc_seen, kListen));
  auto patient = New("patient", "pat", Options(&pat_seen, kListen));
  ASSERT_TRUE(doctor && patient);
  Pair(*doctor, *patient);

  // The doctor's device announces its real endpoint with a link key it does not hold.
  wire::DirectEndpoint forged;
  SystemRandom::Default().Fill(forged.link_key.data(), forged.link_key.size());
  const std::string here = doctor->DirectEndpoint();
  forged.host = here.substr(0, here.rfind(':'));
  forged.port = static_cast<uint16_t>(std::stoi(here.substr(here.rfind(':') + 1)));
  wire::AppMessage m;
  m.kind = wire::AppKind::kDirectEndpoint;
  m.payload = SecretBytes(wire::EncodeDirectEndpoint(forged).value());
  ASSERT_HAS(doctor->SendAppMessageForTesting("pat", m));
  // The patient drops its link and can no longer make one: the doctor cannot prove the pinned key.
  ASSERT_TRUE(Eventually([&] { return !IsDirect(*patient, "dr.lee"); }));
  const DirectStats before = patient->GetDirectStats().value();

  ASSERT_HAS(patient->SendText("dr.lee", "through the relay"));
  ASSERT_TRUE(doc_seen.WaitCount(2));
  ASSERT_TRUE(Eventually([&] { return Pending(*patient) == 0; }));
  EXPECT_EQ(patient->GetDirectStats().value().delivered, before.delivered);
  EXPECT_FALSE(IsDirect(*patient, "dr.lee"));
  EXPECT_EQ(Bodies(*doctor, "pat").back(), "through the relay");
}

TEST_F(DirectE2E, LockClosesDirectLinksAndUnlockReopensThem) {
  Seen doc_seen, pat_seen;
  auto doctor = New("doctor", "dr.lee", Options(&doc_seen, kListen));
  auto patient = New("patient", "pat", Options(&pat_seen, kListen));
  ASSERT_TRUE(doctor && patient);
  Pair(*doctor, *patient);
  const std::string endpoint = patient->DirectEndpoint();

  ASSERT_OK(patient->Lock());
  EXPECT_EQ(patient->DirectEndpoint(), "");  // locked: refused like any call
  ASSERT_TRUE(Eventually([&] { return !IsDirect(*doctor, "pat"); }));
  ASSERT_HAS(doctor->SendText("pat", "while you were locked"));
  ASSERT_TRUE(Eventually([&] { return Pending(*doctor) == 0; }));  // went to the relay
  EXPECT_EQ(pat_seen.count(), 0u);

  ASSERT_OK(patient->Unlock(kPass));
  EXPECT_EQ(patient->DirectEndpoint(), endpoint);  // the same port again: no new announcement needed
  ASSERT_TRUE(pat_seen.WaitCount(1));
  ASSERT_TRUE(Eventually([&] { return IsDirect(*doctor, "pat") && IsDirect(*patient, "dr.lee"); }));
  EXPECT_EQ(Bodies(*patient, "dr.lee").back(), "while you were locked");
}

// Whether `contact`'s copy of row `row` (an outgoing message of theirs) shows our read receipt.
bool ReadByContact(Client& c, const std::string& contact, size_t row) {
  auto h = c.History(contact);
  return h && h->size() > row && h->at(row).status == storage::MessageStatus::kRead;
}

std::vector<std::string> GroupBodies(Client& c, const std::string& group_id) {
  std::vector<std::string> out;
  auto h = c.GroupHistory(group_id);
  EXPECT_TRUE(h.has_value()) << h.error().ToString();
  if (h) {
    for (const auto& m : *h) out.push_back(Text(m.body));
  }
  return out;
}

// With the relay down, messages that need it (to a contact without a direct link, and group texts) wait in the
// outbox, and must not hold up a 1:1 text and a read receipt to a contact that is linked directly. The outbox is
// flushed in byte order of conversation ids ("ctl:", "dm:", "group:"), so "dm:ann" comes before "dm:pat".
TEST_F(DirectE2E, MessagesWaitingForTheRelayDoNotHoldUpOtherConversationsOverADirectLink) {
  Seen doc_seen, pat_seen, ann_seen;
  auto doctor = New("doctor", "dr.lee", Options(&doc_seen, kListen));
  auto patient = New("patient", "pat", Options(&pat_seen, kListen));
  auto ann = New("ann", "ann", Options(&ann_seen, ""));  // does not listen: relay only
  ASSERT_TRUE(doctor && patient && ann);
  ASSERT_NO_FATAL_FAILURE(PairThenAnn(*doctor, *patient, *ann, doc_seen));

  constexpr size_t kGroups = 3;
  std::vector<std::string> groups;
  for (size_t i = 0; i < kGroups; ++i) {
    std::vector<std::string> members{"ann"};
    if (i == 0) members.push_back("pat");
    auto g = doctor->CreateGroup("ward " + std::to_string(i), members);
    ASSERT_HAS(g);
    groups.push_back(g->group_id);
  }
  ASSERT_TRUE(Eventually([&] { return Pending(*doctor) == 0; }));
  ASSERT_HAS(ann->Sync());  // ann holds every group's sender key, and sends its own
  ASSERT_TRUE(Eventually([&] { return Pending(*ann) == 0 && Pending(*doctor) == 0 && Pending(*patient) == 0; }));

  relay_->Stop();
  ASSERT_TRUE(Eventually([&] { return !doctor->connected(); }));
  ASSERT_HAS(doctor->SendGroupText(groups[0], "ward 0 first"));
  for (size_t i = 1; i < kGroups; ++i) ASSERT_HAS(doctor->SendGroupText(groups[i], "ward " + std::to_string(i)));
  ASSERT_HAS(doctor->SendText("ann", "for ann 1"));
  ASSERT_HAS(doctor->SendText("ann", "for ann 2"));
  ASSERT_HAS(doctor->SendGroupText(groups[0], "ward 0 second"));
  const size_t waiting = kGroups + 3;

  // A text (conversation dm:pat) and a read receipt (the control conversation with pat) go directly.
  const uint64_t hello = doctor->History("pat").value().at(0).sequence;
  ASSERT_HAS(doctor->SendText("pat", "relay is down"));
  ASSERT_HAS(doctor->MarkRead("pat", hello));
  ASSERT_TRUE(pat_seen.WaitCount(1));
  EXPECT_EQ(Bodies(*patient, "dr.lee").back(), "relay is down");
  ASSERT_TRUE(Eventually([&] { return ReadByContact(*patient, "dr.lee", 0); }));
  ASSERT_TRUE(Eventually([&] { return Delivered(*doctor, "pat", 1); }));  // pat's receipt came back directly
  EXPECT_GE(Pending(*doctor), waiting);  // what needs the relay waits for it
  EXPECT_EQ(GroupBodies(*patient, groups[0]), std::vector<std::string>{});

  // The relay comes back: what waited goes, once each and in order within each conversation.
  ASSERT_OK(relay_->Start());
  ASSERT_TRUE(Eventually([&] { return Pending(*doctor) == 0; }));
  auto got = ann->Sync();
  ASSERT_HAS(got);
  EXPECT_EQ(got->received, waiting);
  EXPECT_EQ(Bodies(*ann, "dr.lee"), (std::vector<std::string>{"hi from ann", "for ann 1", "for ann 2"}));
  EXPECT_EQ(Bodies(*doctor, "ann"), (std::vector<std::string>{"hi from ann", "for ann 1", "for ann 2"}));
  const std::vector<std::string> ward0{"ward 0 first", "ward 0 second"};
  EXPECT_EQ(GroupBodies(*ann, groups[0]), ward0);
  for (size_t i = 1; i < kGroups; ++i) {
    EXPECT_EQ(GroupBodies(*ann, groups[i]), std::vector<std::string>{"ward " + std::to_string(i)});
  }
  ASSERT_TRUE(Eventually([&] { return GroupBodies(*patient, groups[0]).size() >= 2; }));
  EXPECT_EQ(GroupBodies(*patient, groups[0]), ward0);
  EXPECT_EQ(Bodies(*patient, "dr.lee"), (std::vector<std::string>{"hello doctor", "relay is down"}));
}

// A pass that fails (the relay is down and an entry for it is first) does not wait for the entries whose
// commits are not synced yet; they still go once they are. Here a text written while pat's direct link was
// down, for which no sync was asked then, goes over the link when it is back, before the relay returns.
TEST_F(DirectE2E, AnEntryNotYetDurableWhenAPassFailedGoesOnceItIs) {
  Seen doc_seen, pat_seen, ann_seen;
  auto doctor = New("doctor", "dr.lee", Options(&doc_seen, kListen));
  ClientOptions po = Options(&pat_seen, kListen);
  po.send_delivery_receipts = false;
  auto patient = New("patient", "pat", po);
  auto ann = New("ann", "ann", Options(&ann_seen, ""));  // does not listen: relay only
  ASSERT_TRUE(doctor && patient && ann);
  ASSERT_NO_FATAL_FAILURE(PairThenAnn(*doctor, *patient, *ann, doc_seen));
  ASSERT_TRUE(Eventually([&] { return Pending(*doctor) == 0; }));

  relay_->Stop();
  ASSERT_TRUE(Eventually([&] { return !doctor->connected(); }));
  ASSERT_HAS(doctor->SendText("ann", "for ann"));  // relay only: every pass fails on it
  ASSERT_HAS(doctor->SendText("pat", "first"));
  ASSERT_TRUE(pat_seen.WaitCount(1));
  ASSERT_OK(patient->Lock());
  ASSERT_TRUE(Eventually([&] { return !IsDirect(*doctor, "pat"); }));
  ASSERT_HAS(doctor->SendText("pat", "while your link was down"));  // nothing can carry it: no sync asked
  ASSERT_OK(patient->Unlock(kPass));
  ASSERT_TRUE(Eventually([&] { return IsDirect(*doctor, "pat"); }));
  EXPECT_TRUE(pat_seen.WaitCount(2)) << "still pending: " << Pending(*doctor);
  EXPECT_EQ(Bodies(*patient, "dr.lee"),
            (std::vector<std::string>{"hello doctor", "first", "while your link was down"}));

  ASSERT_OK(relay_->Start());
  ASSERT_TRUE(Eventually([&] { return Pending(*doctor) == 0; }));
  ASSERT_HAS(ann->Sync());
  EXPECT_EQ(Bodies(*ann, "dr.lee"), (std::vector<std::string>{"hi from ann", "for ann"}));
}

}  // namespace
}  // namespace cw::runtime
