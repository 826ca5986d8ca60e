// Receipts, the disappearing-message sweeper and contact revocation, end to end over a real relay
// (RelayService on RocksDB behind RelayServer on TcpTransport, on loopback).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/runtime/client.h"
#include "core/runtime/codec.h"
#include "core/wire/app_message.h"
#include "core/wire/receipt.h"
#include "tests/runtime/runtime_test_util.h"

namespace cw::runtime {
namespace {

using testing::TempDir;
using testing::TestRelay;

using testing::kPass;


using testing::Fast;

// What a client's callbacks saw.
struct Seen {
  std::mutex mu;
  std::vector<ReceiptEvent> receipts;
  std::vector<Status> errors;
  void Wire(ClientOptions* o) {
    o->callbacks.on_receipt = [this](const ReceiptEvent& e) {
      std::lock_guard<std::mutex> l(mu);
      receipts.push_back(e);
    };
    o->callbacks.on_error = [this](const Status& s) {
      std::lock_guard<std::mutex> l(mu);
      errors.push_back(s);
    };
  }
  std::vector<ReceiptEvent> Receipts() {
    std::lock_guard<std::mutex> l(mu);
    return receipts;
  }
  bool HasError(StatusCode code) {
    std::lock_guard<std::mutex> l(mu);
    return std::any_of(errors.begin(), errors.end(), [code](const Status& s) { return s.code() == code; });
  }
};

size_t CountAudit(Client& c, compliance::AuditEventType type, uint64_t code) {
  auto trail = c.AuditTrail();
  EXPECT_TRUE(trail.has_value());
  if (!trail) return 0;
  return static_cast<size_t>(std::count_if(trail->begin(), trail->end(), [&](const compliance::AuditEntry& e) {
    return e.type == type && e.code == code;
  }));
}

class ReceiptsE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    relay_ = std::make_unique<TestRelay>(dir_.Sub("relay"));
    ASSERT_OK(relay_->Start());
  }

  // Fast() options whose errors `seen` records.
  static ClientOptions Watched(Seen& seen) {
    ClientOptions o = Fast();
    seen.Wire(&o);
    return o;
  }
  std::unique_ptr<Client> NewClient(const std::string& home, const std::string& name, ClientOptions o = Fast()) {
    return testing::CreateClient(dir_.Sub(home), name, std::move(o));
  }

  // The clinician invites; the patient accepts with "hello doctor"; the clinician stores it (row 1).
  void Connect(Client& clinician, Client& patient) {
    ASSERT_OK(clinician.Register(relay_->address()));
    auto code = clinician.CreateInvite();
    ASSERT_HAS(code);
    ASSERT_OK(patient.Register(relay_->address()));
    ASSERT_HAS(patient.AcceptInvite(*code, "hello doctor"));
    auto sync = clinician.Sync();
    ASSERT_HAS(sync);
    ASSERT_EQ(sync->received, 1u);
  }

  // A text from `sender` to `to`, whose deposit token was revoked: refused by the relay, marked failed, and
  // reported (`seen` is wired to the sender).
  void ExpectRefusedAtTheRelay(Client& sender, const std::string& to, Seen& seen) {
    auto seq = sender.SendText(to, "are you there?");
    ASSERT_HAS(seq);
    auto sync = sender.Sync();
    ASSERT_HAS(sync);
    EXPECT_EQ(sync->sent, 0u);
    EXPECT_TRUE(seen.HasError(StatusCode::kPermissionDenied));
    EXPECT_EQ(StatusOf(sender, to, *seq), storage::MessageStatus::kFailed);
  }

  storage::MessageStatus StatusOf(Client& c, const std::string& contact, uint64_t sequence) {
    auto h = c.History(contact);
    EXPECT_TRUE(h.has_value());
    if (h) {
      for (const auto& m : *h) {
        if (m.sequence == sequence) return m.status;
      }
    }
    ADD_FAILURE() << "no row " << sequence;
    return storage::MessageStatus::kFailed;
  }

  TempDir dir_;
  std::unique_ptr<TestRelay> relay_;
};

TEST_F(ReceiptsE2E, DeliveredThenReadReachTheSenderOnce) {
  Seen seen;
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat", Watched(seen));
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);

  // Storing "hello doctor" made the clinician's device send a delivery receipt (the patient's link, still
  // up from AcceptInvite, may have had it pushed already; Sync fetches it otherwise).
  ASSERT_HAS(patient->Sync());
  EXPECT_EQ(StatusOf(*patient, "dr.lee", 1), storage::MessageStatus::kDelivered);
  auto r = seen.Receipts();
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].contact, "dr.lee");
  EXPECT_EQ(r[0].sequence, 1u);
  EXPECT_EQ(r[0].type, wire::ReceiptType::kDelivered);
  // A receipt is never receipted: nothing waits for the clinician.
  auto waiting = clinician->PeekRelay();
  ASSERT_HAS(waiting);
  EXPECT_TRUE(waiting->empty());

  auto marked = clinician->MarkRead("pat", 1);
  ASSERT_HAS(marked);
  EXPECT_EQ(*marked, 1u);
  auto again = clinician->MarkRead("pat", 1);
  ASSERT_HAS(again);
  EXPECT_EQ(*again, 0u);  // already read: no second receipt
  EXPECT_EQ(CountAudit(*clinician, compliance::AuditEventType::kMessageRead, 0), 1u);
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(patient->Sync());
  EXPECT_EQ(StatusOf(*patient, "dr.lee", 1), storage::MessageStatus::kRead);
  r = seen.Receipts();
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[1].type, wire::ReceiptType::kRead);
  EXPECT_EQ(r[1].sequence, 1u);
  EXPECT_EQ(CountAudit(*patient, compliance::AuditEventType::kMessageRead, 1), 1u);

  // Receipts are not chat: both transcripts hold the one message.
  auto ph = patient->History("dr.lee");
  auto ch = clinician->History("pat");
  ASSERT_HAS(ph);
  ASSERT_HAS(ch);
  EXPECT_EQ(ph->size(), 1u);
  EXPECT_EQ(ch->size(), 1u);
  EXPECT_FALSE(seen.HasError(StatusCode::kMalformed));
}

// A callback may lock its client (the app goes to the background while a receipt is shown). The client
// locks at once, but the receipt being handled, and the others in the same message, finish on objects that
// are still there (before, the lock destroyed them under the caller: a crash on the next event). Nothing is
// lost: what was not acknowledged waits at the relay and is handled once after Unlock.
TEST_F(ReceiptsE2E, ACallbackThatLocksItsClientLocksItOnceTheCallbackReturns) {
  std::atomic<bool> lock_on_read{true};
  std::atomic<Client*> self{nullptr};
  std::atomic<int> locks{0};
  ClientOptions po = Fast();
  po.callbacks.on_receipt = [&](const ReceiptEvent& e) {
    if (e.type != wire::ReceiptType::kRead || !lock_on_read || !self) return;
    EXPECT_TRUE(self.load()->Lock().ok());
    ++locks;
  };
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat", std::move(po));
  ASSERT_TRUE(clinician && patient);
  self = patient.get();
  Connect(*clinician, *patient);
  ASSERT_HAS(patient->SendText("dr.lee", "two"));
  ASSERT_HAS(patient->SendText("dr.lee", "three"));
  ASSERT_HAS(patient->Sync());
  auto got = clinician->Sync();
  ASSERT_HAS(got);
  ASSERT_EQ(got->received, 2u);
  // One read receipt for all three messages: the patient handles three events from one message.
  auto marked = clinician->MarkRead("pat", 3);
  ASSERT_HAS(marked);
  ASSERT_HAS(clinician->Sync());

  // Pushed to the patient's open link, or fetched here; either way the first read event locks it.
  (void)patient->Sync();
  for (int i = 0; i < 1000 && !patient->locked(); ++i) {  // a bound, not a timing
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_TRUE(patient->locked());
  EXPECT_GE(locks.load(), 1);
  EXPECT_EQ(patient->History("dr.lee").error().code(), StatusCode::kPermissionDenied);

  lock_on_read = false;
  ASSERT_OK(patient->Unlock(kPass));
  ASSERT_HAS(patient->Sync());
  for (uint64_t seq : {1, 2, 3})
    EXPECT_EQ(StatusOf(*patient, "dr.lee", seq), storage::MessageStatus::kRead) << seq;
  auto waiting = clinician->PeekRelay();
  ASSERT_HAS(waiting);
  EXPECT_TRUE(waiting->empty());
}

// A message callback that locks its client: the message is stored, and its delivery receipt (queued by
// the delivery after the callback returned) is committed by the lock and reaches the sender after Unlock.
TEST_F(ReceiptsE2E, AMessageCallbackThatLocksStillGetsTheMessageItsDeliveryReceipt) {
  std::atomic<Client*> self{nullptr};
  std::atomic<bool> lock_on_message{false};
  ClientOptions co = Fast();
  co.delivery_receipt_delay_ms = 1;  // queued (as by default), and due while the client is locked
  co.callbacks.on_message = [&](const IncomingMessage&) {
    if (lock_on_message && self) {
      EXPECT_TRUE(self.load()->Lock().ok());
    }
  };
  Seen seen;
  auto clinician = NewClient("clinician", "dr.lee", std::move(co));
  auto patient = NewClient("patient", "pat", Watched(seen));
  ASSERT_TRUE(clinician && patient);
  self = clinician.get();
  Connect(*clinician, *patient);
  ASSERT_HAS(patient->Sync());
  lock_on_message = true;
  auto seq = patient->SendText("dr.lee", "locks the clinician");
  ASSERT_HAS(seq);
  ASSERT_HAS(patient->Sync());
  (void)clinician->Sync();
  for (int i = 0; i < 1000 && !clinician->locked(); ++i) {  // a bound, not a timing
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(clinician->locked());
  // Room for the receipt timer to come due while locked (a timer that found the receipt still queued then
  // dropped it).
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  lock_on_message = false;
  ASSERT_OK(clinician->Unlock(kPass));
  ASSERT_HAS(clinician->Sync());
  EXPECT_EQ(testing::Bodies(*clinician, "pat").back(), "locks the clinician");
  ASSERT_HAS(patient->Sync());
  EXPECT_EQ(StatusOf(*patient, "dr.lee", *seq), storage::MessageStatus::kDelivered);
}

TEST_F(ReceiptsE2E, ErasureForgetsReceiptRecords) {
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_HAS(clinician->EraseConversation("pat"));
  // "hello doctor" was unread; after the erasure nothing is left to mark or to receipt.
  auto marked = clinician->MarkRead("pat", 1);
  ASSERT_HAS(marked);
  EXPECT_EQ(*marked, 0u);
  EXPECT_EQ(CountAudit(*clinician, compliance::AuditEventType::kMessageRead, 0), 0u);
}

TEST_F(ReceiptsE2E, ReceiptsCanBeTurnedOff) {
  Seen seen;
  ClientOptions co = Fast();
  co.send_delivery_receipts = false;
  co.send_read_receipts = false;
  ClientOptions po = Fast();
  seen.Wire(&po);
  auto clinician = NewClient("clinician", "dr.lee", std::move(co));
  auto patient = NewClient("patient", "pat", std::move(po));
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  auto marked = clinician->MarkRead("pat", 1);
  ASSERT_HAS(marked);
  EXPECT_EQ(*marked, 1u);  // still marked (and audited) here
  EXPECT_EQ(CountAudit(*clinician, compliance::AuditEventType::kMessageRead, 0), 1u);
  ASSERT_HAS(clinician->Sync());
  auto waiting = patient->PeekRelay();
  ASSERT_HAS(waiting);
  EXPECT_TRUE(waiting->empty());
  ASSERT_HAS(patient->Sync());
  EXPECT_EQ(StatusOf(*patient, "dr.lee", 1), storage::MessageStatus::kSent);
  EXPECT_TRUE(seen.Receipts().empty());
}

TEST_F(ReceiptsE2E, MalformedOrForeignReceiptsChangeNothing) {
  Seen seen;
  ClientOptions co = Fast();
  seen.Wire(&co);
  ClientOptions po = Fast();
  po.send_delivery_receipts = false;  // only the forged receipts below reach the clinician
  auto clinician = NewClient("clinician", "dr.lee", std::move(co));
  auto patient = NewClient("patient", "pat", std::move(po));
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_HAS(clinician->SendText("pat", "take two tablets"));
  ASSERT_HAS(clinician->Sync());

  wire::AppMessage garbage;
  garbage.kind = wire::AppKind::kReceipt;
  garbage.payload = SecretBytes(AsBytes("not a receipt"));
  ASSERT_HAS(patient->SendAppMessageForTesting("dr.lee", garbage));
  // A well-formed receipt for a message the clinician never sent.
  wire::Receipt unknown;
  unknown.type = wire::ReceiptType::kRead;
  unknown.refs.push_back(wire::ReceiptRef{});
  auto payload = wire::EncodeReceipt(unknown);
  ASSERT_HAS(payload);
  wire::AppMessage stray;
  stray.kind = wire::AppKind::kReceipt;
  stray.payload = SecretBytes(*payload);
  ASSERT_HAS(patient->SendAppMessageForTesting("dr.lee", stray));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());

  EXPECT_TRUE(seen.HasError(StatusCode::kMalformed));
  EXPECT_TRUE(seen.Receipts().empty());
  auto h = clinician->History("pat");
  ASSERT_HAS(h);
  ASSERT_EQ(h->size(), 2u);  // hello doctor, take two tablets: neither receipt became a row
  EXPECT_NE(h->back().status, storage::MessageStatus::kRead);
}

TEST_F(ReceiptsE2E, SweeperDeletesExpiredRowsOnTheLoop) {
  std::mutex mu;
  std::condition_variable cv;
  size_t disappeared = 0;
  ClientOptions po = Fast();
  po.sweep_interval_ms = 20;
  po.callbacks.on_disappeared = [&](size_t rows) {
    std::lock_guard<std::mutex> l(mu);
    disappeared += rows;
    cv.notify_all();
  };
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat", std::move(po));
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  // The sweeper stops while locked and starts again on Unlock.
  ASSERT_OK(patient->Lock());
  ASSERT_OK(patient->Unlock(kPass));
  auto timer = patient->SetDisappearingTimer("dr.lee", 50);
  ASSERT_HAS(timer);
  EXPECT_EQ(*timer, 50);
  ASSERT_HAS(patient->SendText("dr.lee", "this disappears"));
  // A row past its expiry is hidden at once; the loop's sweeper deletes it (bounded wait, a safety net).
  EXPECT_TRUE(testing::WaitFor(mu, cv, [&] { return disappeared >= 1; }));
  auto swept = patient->SweepNow();
  ASSERT_HAS(swept);
  EXPECT_EQ(*swept, 0u) << "the sweeper already deleted it";
  auto h = patient->History("dr.lee");
  ASSERT_HAS(h);
  ASSERT_EQ(h->size(), 1u);  // "hello doctor", from before the timer, keeps no expiry
  EXPECT_EQ(h->front().expires_at_ms, 0);
  {
    std::lock_guard<std::mutex> l(mu);
    EXPECT_EQ(disappeared, 1u);
  }
}

// A message that disappeared unread is not reported read: marking the conversation read afterwards sends no
// read receipt for it and records no kMessageRead.
TEST_F(ReceiptsE2E, AMessageThatDisappearedUnreadIsNeverMarkedRead) {
  std::mutex mu;
  std::condition_variable cv;
  size_t disappeared = 0;
  ClientOptions co = Fast();
  co.sweep_interval_ms = 20;
  co.callbacks.on_disappeared = [&](size_t rows) {
    std::lock_guard<std::mutex> l(mu);
    disappeared += rows;
    cv.notify_all();
  };
  auto clinician = NewClient("clinician", "dr.lee", std::move(co));
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_HAS(clinician->MarkRead("pat", 1));  // "hello doctor"
  const size_t reads_before = CountAudit(*clinician, compliance::AuditEventType::kMessageRead, 0);
  ASSERT_HAS(clinician->SetDisappearingTimer("pat", 50));
  ASSERT_HAS(patient->SendText("dr.lee", "this disappears unread"));
  ASSERT_HAS(patient->Sync());
  auto got = clinician->Sync();
  ASSERT_HAS(got);
  ASSERT_EQ(got->received, 1u);
  EXPECT_TRUE(testing::WaitFor(mu, cv, [&] { return disappeared >= 1; }));
  auto marked = clinician->MarkRead("pat", 100);
  ASSERT_HAS(marked);
  EXPECT_EQ(*marked, 0u);
  EXPECT_EQ(CountAudit(*clinician, compliance::AuditEventType::kMessageRead, 0), reads_before);
}

TEST_F(ReceiptsE2E, RetentionFloorKeepsRowsAndRecordsTheConflict) {
  constexpr int64_t kFloorMs = 3'600'000;
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  CompliancePolicy p;
  p.clinic = true;
  p.retention_floor_ms = kFloorMs;
  ASSERT_OK(clinician->SetCompliancePolicy(p));
  auto timer = clinician->SetDisappearingTimer("pat", 10);
  ASSERT_HAS(timer);
  EXPECT_EQ(*timer, kFloorMs);
  EXPECT_EQ(CountAudit(*clinician, compliance::AuditEventType::kRetentionConflict, kFloorMs - 10), 1u);
  auto seq = clinician->SendText("pat", "kept for the record");
  ASSERT_HAS(seq);
  auto swept = clinician->SweepNow();
  ASSERT_HAS(swept);
  EXPECT_EQ(*swept, 0u);
  auto h = clinician->History("pat");
  ASSERT_HAS(h);
  ASSERT_EQ(h->size(), 2u);
  EXPECT_GE(h->back().expires_at_ms - h->back().sent_at_ms, kFloorMs);
}

TEST_F(ReceiptsE2E, RevokedContactsDepositsAreRefused) {
  Seen seen;
  auto clinician = NewClient("clinician", "dr.lee", Watched(seen));
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_HAS(patient->Sync());  // takes the delivery receipt: nothing of the clinician's is left in flight

  // The patient accepted the clinician's invite, so it knows the token it gave the clinician.
  ASSERT_OK(patient->RevokeContact("dr.lee"));
  ExpectRefusedAtTheRelay(*clinician, "pat", seen);
  auto got = patient->Sync();
  ASSERT_HAS(got);
  EXPECT_EQ(got->received, 0u);
  // The patient can still write to the clinician.
  ASSERT_HAS(patient->SendText("dr.lee", "I revoked you by mistake?"));
  ASSERT_HAS(patient->Sync());
  auto in = clinician->Sync();
  ASSERT_HAS(in);
  EXPECT_EQ(in->received, 1u);

  EXPECT_EQ(patient->RevokeContact("nobody").code(), StatusCode::kNotFound);
}

// The clinic is usually the inviter: it learns from the patient's first message (inside the sealed envelope)
// which of its invite tokens the patient holds, and revokes exactly that one, also after a restart.
TEST_F(ReceiptsE2E, TheInviterRevokesTheContactThatAnsweredItsInvite) {
  Seen seen;
  auto clinician = NewClient("clinician", "dr.lee");
  auto patient = NewClient("patient", "pat", Watched(seen));
  auto other = NewClient("other", "sam");
  ASSERT_TRUE(clinician && patient && other);
  Connect(*clinician, *patient);
  ASSERT_HAS(patient->Sync());  // reports the first message's send: the count below is the new one's alone
  auto code = clinician->CreateInvite();
  ASSERT_HAS(code);
  ASSERT_OK(other->Register(relay_->address()));
  ASSERT_HAS(other->AcceptInvite(*code, "hello from sam"));
  ASSERT_HAS(clinician->Sync());

  clinician.reset();
  clinician = testing::OpenClient(dir_.Sub("clinician"), Fast());
  ASSERT_TRUE(clinician);
  ASSERT_OK(clinician->RevokeContact("pat"));
  ExpectRefusedAtTheRelay(*patient, "dr.lee", seen);
  // The other patient's invite is untouched, and the clinician can still write to the revoked one.
  ASSERT_HAS(other->SendText("dr.lee", "see you tomorrow"));
  ASSERT_HAS(other->Sync());
  ASSERT_HAS(clinician->SendText("pat", "please call the clinic"));
  ASSERT_HAS(clinician->Sync());
  auto in = clinician->Sync();
  ASSERT_HAS(in);
  auto h = clinician->History("sam");
  ASSERT_HAS(h);
  EXPECT_EQ(testing::Text(h->back().body), "see you tomorrow");
  auto got = patient->Sync();
  ASSERT_HAS(got);
  EXPECT_EQ(got->received, 1u);
  // Only once: the token is no longer ours to revoke.
  EXPECT_EQ(clinician->RevokeContact("pat").code(), StatusCode::kNotFound);
}

// An invite answer is believed only for an open invite of ours, and only when it came with the token it names
// (an answer is sent with its invite's token): neither a token that is no invite nor another open invite's
// changes anything. A new phone that answers a code made for it is bound to it, and the token the contact
// held before is revoked at the relay. Revoking, then removing, forgets the contact.
TEST_F(ReceiptsE2E, AnInviteAnswerBindsOnlyAnOpenInviteAndRetiresTheTokenItReplaces) {
  Seen clinic_seen, patient_seen;
  auto clinician = NewClient("clinician", "dr.lee", Watched(clinic_seen));
  auto patient = NewClient("patient", "pat", Watched(patient_seen));
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_HAS(patient->Sync());

  wire::AppMessage answer;
  answer.kind = wire::AppKind::kInviteAnswer;
  answer.payload = SecretBytes(Bytes(32, 0x5a));
  ASSERT_HAS(patient->SendAppMessageForTesting("dr.lee", answer));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  EXPECT_TRUE(clinic_seen.HasError(StatusCode::kPermissionDenied)) << "a token that is no open invite";
  auto code = clinician->CreateInvite();
  ASSERT_HAS(code);
  auto invite = DecodeInvite(*code);
  ASSERT_HAS(invite);
  answer.payload = SecretBytes(invite->card.token);
  ASSERT_HAS(patient->SendAppMessageForTesting("dr.lee", answer));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  auto open = clinician->OpenInvites();
  ASSERT_HAS(open);
  EXPECT_EQ(open->size(), 1u) << "an answer sent with another token bound the invite it names";

  // The patient's new phone answers the code made for it: once the clinician accepts its key, the old phone's
  // token is revoked (its request goes out after the answer is handled: bounded wait for the relay to
  // refuse).
  auto for_pat = clinician->CreateInviteForNewDevice("pat");
  ASSERT_HAS(for_pat);
  auto phone = NewClient("patient-phone2", "pat");
  ASSERT_TRUE(phone);
  ASSERT_HAS(phone->AcceptInvite(*for_pat, "new phone"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_OK(clinician->AcceptIdentityChange("pat"));
  ASSERT_HAS(clinician->Sync());
  bool refused = false;
  for (int i = 0; i < 50 && !refused; ++i) {
    auto seq = patient->SendText("dr.lee", "ping " + std::to_string(i));
    ASSERT_HAS(seq);
    (void)patient->Sync();
    refused = StatusOf(*patient, "dr.lee", *seq) == storage::MessageStatus::kFailed;
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(refused) << "the replaced token was not revoked";
  EXPECT_TRUE(patient_seen.HasError(StatusCode::kPermissionDenied));

  // RevokeContact now revokes the newer token; once done, removing still forgets the contact.
  ASSERT_OK(clinician->RevokeContact("pat"));
  EXPECT_EQ(clinician->RevokeContact("pat").code(), StatusCode::kNotFound);
  ASSERT_OK(clinician->RemoveContact("pat"));
  auto contacts = clinician->Contacts();
  ASSERT_HAS(contacts);
  EXPECT_TRUE(contacts->empty());
}

constexpr int64_t kHourMs = 3600 * 1000;

// Invites expire at the relay: an expired code admits nobody (a leaked QR code), whether or not the inviter
// is online. Cancelling revokes at once. What is open survives a restart, and is listed by an id that is not
// the token.
TEST_F(ReceiptsE2E, AnExpiredInviteAdmitsNobodyAndACancelledOneAtOnce) {
  testing::ShiftedClock clock;  // the relay's and the clinician's
  relay_->Stop();
  relay_->UseClock(&clock);
  ASSERT_OK(relay_->Start());
  Seen patient_seen;
  ClientOptions co = Fast();
  co.clock = &clock;
  auto clinician = NewClient("clinician", "dr.lee", co);
  auto patient = NewClient("patient", "pat", Watched(patient_seen));
  ASSERT_TRUE(clinician && patient);
  ASSERT_OK(clinician->Register(relay_->address()));
  auto hour = clinician->CreateInviteValidFor(kHourMs);
  auto week = clinician->CreateInvite();
  auto forever = clinician->CreateInviteValidFor(0);
  ASSERT_TRUE(hour && week && forever);
  EXPECT_EQ(clinician->CreateInviteValidFor(-1).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(clinician->CreateInviteValidFor(400LL * 24 * kHourMs).error().code(), StatusCode::kInvalidArgument);
  auto open = clinician->OpenInvites();
  ASSERT_HAS(open);
  ASSERT_EQ(open->size(), 3u);
  EXPECT_EQ((*open)[0].expires_ms - (*open)[0].created_ms, kHourMs);
  EXPECT_EQ((*open)[1].expires_ms - (*open)[1].created_ms, kDefaultInviteValidForMs);
  EXPECT_EQ((*open)[2].expires_ms, 0);
  auto hour_card = DecodeInvite(*hour)->card;
  auto week_card = DecodeInvite(*week)->card;
  EXPECT_EQ((*open)[0].id, InviteIdOf(hour_card.token));
  EXPECT_EQ((*open)[0].id.size(), 12u);
  EXPECT_EQ(ToHex(hour_card.token).find((*open)[0].id), std::string::npos) << "the id is not the token";
  ASSERT_TRUE(relay_->Admits(hour_card));

  // Two hours on: the relay refuses the hour invite's token by itself (nothing was revoked).
  clock.Advance(2 * kHourMs);
  EXPECT_FALSE(relay_->Admits(hour_card));
  EXPECT_TRUE(relay_->Admits(week_card));
  open = clinician->OpenInvites();
  ASSERT_HAS(open);
  ASSERT_EQ(open->size(), 2u);
  ASSERT_OK(patient->Register(relay_->address()));
  ASSERT_HAS(patient->AcceptInvite(*hour, "hello doctor"));
  auto sync = patient->Sync();
  ASSERT_HAS(sync);
  EXPECT_EQ(sync->sent, 0u);
  EXPECT_TRUE(patient_seen.HasError(StatusCode::kPermissionDenied));
  auto got = clinician->Sync();
  ASSERT_HAS(got);
  EXPECT_EQ(got->received, 0u);

  const std::string week_id = (*open)[0].id;
  ASSERT_OK(clinician->CancelInvite(week_id));
  EXPECT_FALSE(relay_->Admits(week_card));
  EXPECT_EQ(clinician->CancelInvite(week_id).code(), StatusCode::kNotFound);
  // An expired invite is not listed, but it can still be cancelled (a stranger may have claimed it in time).
  ASSERT_OK(clinician->CancelInvite(InviteIdOf(hour_card.token)));
  EXPECT_EQ(clinician->CancelInvite(InviteIdOf(hour_card.token)).code(), StatusCode::kNotFound);

  clinician.reset();
  clinician = testing::OpenClient(dir_.Sub("clinician"), co);
  ASSERT_TRUE(clinician);
  open = clinician->OpenInvites();
  ASSERT_HAS(open);
  ASSERT_EQ(open->size(), 1u);
  EXPECT_EQ((*open)[0].expires_ms, 0);
  auto sam = NewClient("sam", "sam");
  ASSERT_TRUE(sam);
  ASSERT_OK(sam->Register(relay_->address()));
  ASSERT_HAS(sam->AcceptInvite(*forever, "hello from sam"));
  ASSERT_HAS(sam->Sync());
  ASSERT_HAS(clinician->Sync());
  (void)clinician->Sync();  // the invite answer follows the first message
  EXPECT_EQ(testing::Bodies(*clinician, "sam"), std::vector<std::string>{"hello from sam"});
  open = clinician->OpenInvites();
  ASSERT_HAS(open);
  EXPECT_TRUE(open->empty()) << "an answered invite is no longer open";
}

// An invite answered in time while the inviter's device was away keeps working after its expiry: the first
// deposit claimed the token at the relay, and the answer, read after the expiry, binds the contact (so
// revoking the contact works).
TEST_F(ReceiptsE2E, AnInviteAnsweredInTimeBindsWhenReadAfterItExpired) {
  testing::ShiftedClock clock;
  relay_->Stop();
  relay_->UseClock(&clock);
  ASSERT_OK(relay_->Start());
  ClientOptions co = Fast();
  co.clock = &clock;
  Seen patient_seen;
  auto clinician = NewClient("clinician", "dr.lee", co);
  auto patient = NewClient("patient", "pat", Watched(patient_seen));
  ASSERT_TRUE(clinician && patient);
  ASSERT_OK(clinician->Register(relay_->address()));
  auto code = clinician->CreateInviteValidFor(kHourMs);
  ASSERT_HAS(code);
  clinician.reset();
  ASSERT_OK(patient->Register(relay_->address()));
  ASSERT_HAS(patient->AcceptInvite(*code, "hello doctor"));
  ASSERT_HAS(patient->Sync());

  clock.Advance(2 * kHourMs);
  EXPECT_TRUE(relay_->Admits(DecodeInvite(*code)->card)) << "claimed in time: kept past the expiry";
  ASSERT_HAS(patient->SendText("dr.lee", "are you there?"));
  auto sent = patient->Sync();
  ASSERT_HAS(sent);
  EXPECT_EQ(sent->sent, 1u);
  clinician = testing::OpenClient(dir_.Sub("clinician"), co);
  ASSERT_TRUE(clinician);
  ASSERT_HAS(clinician->Sync());
  (void)clinician->Sync();
  EXPECT_EQ(testing::Bodies(*clinician, "pat"), (std::vector<std::string>{"hello doctor", "are you there?"}));
  const Status revoked = clinician->RevokeContact("pat");
  ASSERT_TRUE(revoked.ok()) << "the answer read after the expiry bound no contact: " << revoked.ToString();
  ExpectRefusedAtTheRelay(*patient, "dr.lee", patient_seen);
}

TEST_F(ReceiptsE2E, RemoveContactRevokesAndForgets) {
  ClientOptions co = Fast();
  co.send_delivery_receipts = false;  // nothing of the clinician's waits at the relay before the removal
  auto clinician = NewClient("clinician", "dr.lee", std::move(co));
  auto patient = NewClient("patient", "pat");
  ASSERT_TRUE(clinician && patient);
  Connect(*clinician, *patient);
  ASSERT_OK(patient->RemoveContact("dr.lee"));
  auto contacts = patient->Contacts();
  ASSERT_HAS(contacts);
  EXPECT_TRUE(contacts->empty());
  EXPECT_EQ(patient->SendText("dr.lee", "hi").error().code(), StatusCode::kNotFound);
  ASSERT_HAS(clinician->SendText("pat", "still there?"));
  ASSERT_HAS(clinician->Sync());
  auto waiting = patient->PeekRelay();
  ASSERT_HAS(waiting);
  EXPECT_TRUE(waiting->empty());
}

}  // namespace
}  // namespace cw::runtime
