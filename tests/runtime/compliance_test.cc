// Issue 6 end to end through the runtime, over a real relay on loopback: consent receipts exchanged and
// countersigned inside the session, consent-gated delivery on both ends, lapse, refused receipts, audit
// tampering found through the runtime's own store, signed exports checked offline, erasure, retention.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "core/compliance/export_bundle.h"
#include "core/runtime/client.h"
#include "core/runtime/codec.h"
#include "core/runtime/compliance_runtime.h"
#include "storage/keystore.h"
#include "storage/sealed_store.h"
#include "tests/runtime/runtime_test_util.h"

namespace cw::runtime {
namespace {

using compliance::AuditEventType;
using compliance::ConsentState;
using testing::TempDir;
using testing::TestRelay;

using testing::kPass;
constexpr int64_t kHourMs = 3600 * 1000;


using testing::ShiftedClock;

// Background errors a client reported (for "refused and recorded" checks).
struct Errors {
  std::mutex mu;
  std::vector<Status> seen;
  bool Has(StatusCode code, std::string_view part) {
    std::lock_guard<std::mutex> l(mu);
    for (const auto& s : seen) {
      if (s.code() == code && s.message().find(part) != std::string::npos) return true;
    }
    return false;
  }
};

using testing::Text;

using testing::Bodies;

size_t CountEvents(Client& c, AuditEventType type) {
  auto trail = c.AuditTrail();
  EXPECT_TRUE(trail.has_value()) << trail.error().ToString();
  size_t n = 0;
  if (trail) {
    for (const auto& e : *trail) n += e.type == type;
  }
  return n;
}

std::optional<ConsentRecord> FindReceipt(Client& c, const std::string& id) {
  auto all = c.ConsentReceipts();
  EXPECT_TRUE(all.has_value()) << all.error().ToString();
  if (all) {
    for (auto& r : *all) {
      if (r.receipt_id == id) return r;
    }
  }
  return std::nullopt;
}

std::optional<ConsentState> StateOf(const ConsentRecord& r, const std::string& purpose) {
  for (const auto& [label, state] : r.purposes) {
    if (label == purpose) return state;
  }
  return std::nullopt;
}

compliance::SigningPublicKey KeyOf(const Client& c) {
  Bytes k;
  EXPECT_TRUE(FromHex(c.Fingerprint(), &k));
  return compliance::SigningPublicKey{compliance::SignatureScheme::kXEdDSA, k};
}

class RuntimeCompliance : public ::testing::Test {
 protected:
  void SetUp() override {
    relay_ = std::make_unique<TestRelay>(dir_.Sub("relay"));
    ASSERT_OK(relay_->Start());
  }

  ClientOptions Options(Errors* errors = nullptr, Clock* clock = nullptr) {
    ClientOptions o;
    o.keystore = storage::KeystoreOptions::MinimumCostForTesting();
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 200;
    o.clock = clock;
    if (errors) {
      o.callbacks.on_error = [errors](const Status& s) {
        std::lock_guard<std::mutex> l(errors->mu);
        errors->seen.push_back(s);
      };
    }
    return o;
  }
  std::unique_ptr<Client> NewClient(const std::string& home, const std::string& name, ClientOptions o) {
    return testing::CreateClient(dir_.Sub(home), name, std::move(o));
  }
  std::unique_ptr<Client> Reopen(const std::string& home, ClientOptions o) {
    return testing::OpenClient(dir_.Sub(home), std::move(o));
  }

  // The clinician invites, the patient accepts; the clinician's device runs the clinic policy.
  void Connect(Client& clinician, Client& patient, bool clinic_policy = true) {
    if (clinician.RelayAddress().empty()) ASSERT_OK(clinician.Register(relay_->address()));
    auto code = clinician.CreateInvite();
    ASSERT_HAS(code);
    if (patient.RelayAddress().empty()) ASSERT_OK(patient.Register(relay_->address()));
    ASSERT_HAS(patient.AcceptInvite(*code, "hello doctor"));
    ASSERT_HAS(clinician.Sync());
    if (clinic_policy) {
      CompliancePolicy p;
      p.clinic = true;
      ASSERT_OK(clinician.SetCompliancePolicy(p));
    }
  }

  // Enough round trips for a request and its answer.
  void Exchange(Client& a, Client& b) {
    for (int i = 0; i < 2; ++i) {
      ASSERT_HAS(a.Sync());
      ASSERT_HAS(b.Sync());
    }
  }

  // The patient grants `purposes` to the clinician; both end up holding the countersigned receipt.
  std::string Grant(Client& patient, Client& clinician, std::vector<std::string> purposes, int64_t expires_at_ms = 0) {
    ConsentGrant g;
    g.purposes = std::move(purposes);
    g.controller_id = "npi:1234567893";
    g.controller_name = "Riverside Clinic";
    g.expires_at_ms = expires_at_ms;
    auto id = patient.GrantConsent(clinician.name(), g);
    EXPECT_TRUE(id.has_value()) << id.error().ToString();
    if (!id) return "";
    Exchange(patient, clinician);
    return *id;
  }

  TempDir dir_;
  std::unique_ptr<TestRelay> relay_;
};

TEST_F(RuntimeCompliance, ConsentIsCountersignedStoredOnBothEndsAndGatesSending) {
  Errors patient_errors;
  auto clinician = NewClient("clinician", "dr.lee", Options());
  auto patient = NewClient("patient", "pat", Options(&patient_errors));
  ASSERT_TRUE(clinician && patient);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));

  auto refused = clinician->SendText("pat", "your invoice is ready", "billing");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kPermissionDenied);
  ASSERT_HAS(clinician->SendText("pat", "treatment needs no consent"));  // "treatment": exempt

  const std::string id = Grant(*patient, *clinician, {"billing", "treatment"});
  ASSERT_FALSE(id.empty());
  for (Client* c : {clinician.get(), patient.get()}) {
    auto r = FindReceipt(*c, id);
    ASSERT_TRUE(r.has_value()) << c->name() << " does not hold the receipt";
    EXPECT_TRUE(r->countersigned) << c->name();
    EXPECT_EQ(StateOf(*r, "billing"), ConsentState::kGiven) << c->name();
    EXPECT_NE(r->kantara_json.find("KI-CR-v1.1.0"), std::string::npos);
    EXPECT_EQ(CountEvents(*c, AuditEventType::kConsentGiven), 1u) << c->name();
  }
  EXPECT_TRUE(FindReceipt(*patient, id)->we_are_patient);
  EXPECT_FALSE(FindReceipt(*clinician, id)->we_are_patient);

  ASSERT_HAS(clinician->SendText("pat", "your invoice is ready", "billing"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(patient->Sync());
  EXPECT_EQ(Bodies(*patient, "dr.lee").back(), "your invoice is ready");
  for (const auto& e : patient_errors.seen) ADD_FAILURE() << "patient reported " << e.ToString();

  // Both stores keep the receipt across a restart, and the gate still opens.
  clinician.reset();
  clinician = Reopen("clinician", Options());
  ASSERT_TRUE(clinician);
  ASSERT_TRUE(FindReceipt(*clinician, id).has_value());
  EXPECT_TRUE(clinician->GetCompliancePolicy()->clinic);
  ASSERT_HAS(clinician->SendText("pat", "second invoice", "billing"));
}

// A file is gated like a text, and before its upload: a refused file puts nothing at the relay.
TEST_F(RuntimeCompliance, AFileIsGatedByItsPurposeBeforeAnythingIsUploaded) {
  auto clinician = NewClient("clinician", "dr.lee", Options());
  auto patient = NewClient("patient", "pat", Options());
  ASSERT_TRUE(clinician && patient);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));
  const std::string path = dir_.Sub("invoice.pdf");
  {
    std::ofstream out(path, std::ios::binary);
    out << std::string(100000, 'x');
  }
  std::atomic<int> reports{0};
  auto count = [&reports](uint64_t, uint64_t) { ++reports; };

  auto refused = clinician->SendFile("pat", path, "billing", count);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kPermissionDenied);
  auto bad = clinician->SendFile("pat", path, "Billing!", count);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(reports.load(), 0) << "nothing was read for upload";
  EXPECT_EQ(relay_->Stats().attachments, 0u) << "nothing was uploaded";
  auto pending = clinician->PendingOutboxCount();
  ASSERT_HAS(pending);
  EXPECT_EQ(*pending, 0u) << "nothing was queued";

  ASSERT_HAS(clinician->SendFile("pat", path));  // the default purpose, treatment, needs no consent
  ASSERT_FALSE(Grant(*patient, *clinician, {"billing"}).empty());
  ASSERT_HAS(clinician->SendFile("pat", path, "billing", count));
  EXPECT_GT(reports.load(), 0);
  EXPECT_EQ(relay_->Stats().attachments, 2u);
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(patient->Sync());
  const auto bodies = Bodies(*patient, "dr.lee");
  EXPECT_EQ(std::count(bodies.begin(), bodies.end(), "invoice.pdf"), 2) << "both files arrived";
}

TEST_F(RuntimeCompliance, WithdrawnPurposeIsRefusedOnBothEnds) {
  Errors patient_errors;
  auto clinician = NewClient("clinician", "dr.lee", Options());
  auto patient = NewClient("patient", "pat", Options(&patient_errors));
  ASSERT_TRUE(clinician && patient);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));
  const std::string id = Grant(*patient, *clinician, {"billing", "treatment"});
  ASSERT_FALSE(id.empty());

  ASSERT_OK(patient->WithdrawConsent(id, {"billing"}));  // as easy as granting: one call
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  for (Client* c : {clinician.get(), patient.get()}) {
    auto r = FindReceipt(*c, id);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(StateOf(*r, "billing"), ConsentState::kWithdrawn) << c->name();
    EXPECT_EQ(StateOf(*r, "treatment"), ConsentState::kGiven) << c->name();
    EXPECT_EQ(CountEvents(*c, AuditEventType::kConsentWithdrawn), 1u) << c->name();
  }
  // Only the patient withdraws.
  EXPECT_EQ(clinician->WithdrawConsent(id).code(), StatusCode::kPermissionDenied);

  // Sending end.
  auto refused = clinician->SendText("pat", "overdue balance", "billing");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kPermissionDenied);

  // Receiving end: a message that bypasses the sender's check is refused, recorded and not shown, and is
  // acknowledged at the relay so it does not come back.
  wire::AppMessage bypass;
  bypass.kind = wire::AppKind::kText;
  bypass.purpose = "billing";
  bypass.payload = SecretBytes(AsBytes("overdue balance"));
  ASSERT_HAS(clinician->SendAppMessageForTesting("pat", bypass));
  ASSERT_HAS(clinician->SendText("pat", "see you on Monday", "treatment"));
  ASSERT_HAS(clinician->Sync());
  auto got = patient->Sync();
  ASSERT_HAS(got);
  EXPECT_EQ(got->received, 1u) << "only the treatment message is shown";
  const auto bodies = Bodies(*patient, "dr.lee");
  EXPECT_EQ(std::count(bodies.begin(), bodies.end(), "overdue balance"), 0);
  EXPECT_EQ(bodies.back(), "see you on Monday");
  EXPECT_EQ(CountEvents(*patient, AuditEventType::kMessageRefused), 1u);
  EXPECT_TRUE(patient_errors.Has(StatusCode::kPermissionDenied, "no valid consent"));
  auto left = patient->PeekRelay();
  ASSERT_HAS(left);
  EXPECT_TRUE(left->empty()) << "the refused message was acknowledged";
}

TEST_F(RuntimeCompliance, LapsedReceiptNoLongerConsents) {
  ShiftedClock clinic_clock;
  auto clinician = NewClient("clinician", "dr.lee", Options(nullptr, &clinic_clock));
  auto patient = NewClient("patient", "pat", Options());
  ASSERT_TRUE(clinician && patient);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));
  const int64_t expires = SystemClock::Default().NowMillis() + kHourMs;
  const std::string id = Grant(*patient, *clinician, {"billing"}, expires);
  ASSERT_FALSE(id.empty());
  ASSERT_HAS(clinician->SendText("pat", "invoice", "billing"));

  clinic_clock.Advance(2 * kHourMs);
  auto lapsed = clinician->SendText("pat", "late invoice", "billing");
  ASSERT_FALSE(lapsed.has_value());
  EXPECT_EQ(lapsed.error().code(), StatusCode::kPermissionDenied);
  auto r = FindReceipt(*clinician, id);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(StateOf(*r, "billing"), ConsentState::kLapsed);
}

TEST_F(RuntimeCompliance, ReceiptSignedByAnotherKeyOrForAnotherSessionIsRejected) {
  Errors clinic_errors, other_errors;
  auto clinician = NewClient("clinician", "dr.lee", Options(&clinic_errors));
  auto patient = NewClient("patient", "pat", Options());
  auto other = NewClient("other", "pat2", Options(&other_errors));
  ASSERT_TRUE(clinician && patient && other);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *other, /*clinic_policy=*/false));

  // Signed by a key that is not the patient's identity key, though it names the real session.
  auto mallory = compliance::Ed25519Signer::FromSeed(Bytes(32, 7));
  ASSERT_HAS(mallory);
  auto sn = clinician->GetSafetyNumber("pat");
  ASSERT_HAS(sn);
  compliance::ConsentReceipt forged;
  forged.receipt_id = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0";
  forged.consent_timestamp_ms = SystemClock::Default().NowMillis();
  forged.jurisdiction = "US";
  forged.collection_method = "forged";
  forged.policy_url = "https://example.invalid";
  forged.binding.patient_identity_key = KeyOf(*patient).key;
  forged.binding.clinician_identity_key = KeyOf(*clinician).key;
  forged.binding.safety_number = sn->digits;
  forged.principal_id = compliance::IdentityFingerprint(forged.binding.patient_identity_key);
  forged.controllers = {compliance::Controller{"clinic", "Clinic", "Office", "", "", "", ""}};
  compliance::Purpose p;
  p.purpose = "billing";
  p.purpose_category = "Payment";
  p.termination = "when withdrawn";
  p.pii_categories = {"messages"};
  forged.services = {compliance::Service{"messaging", {p}}};
  forged.retention_period = "P6Y";
  forged.withdrawal_method = "in the app";
  forged.patient_key = (*mallory)->public_key();
  forged.clinician_key = KeyOf(*clinician);
  auto signed_forged = compliance::SignReceipt(forged, **mallory);
  ASSERT_HAS(signed_forged);
  auto bytes = compliance::EncodeReceiptRequest(*signed_forged);
  ASSERT_HAS(bytes);
  wire::AppMessage m;
  m.kind = wire::AppKind::kConsent;
  m.payload = SecretBytes(*bytes);
  ASSERT_HAS(patient->SendAppMessageForTesting("dr.lee", m));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  EXPECT_FALSE(FindReceipt(*clinician, forged.receipt_id).has_value());
  EXPECT_TRUE(clinic_errors.Has(StatusCode::kBadSignature, "consent receipt refused"));
  EXPECT_FALSE(clinician->SendText("pat", "invoice", "billing").has_value());

  // A genuine countersigned receipt of pat's session, replayed by the clinician into pat2's session.
  const std::string id = Grant(*patient, *clinician, {"billing"});
  ASSERT_FALSE(id.empty());
  auto exported = clinician->ExportSigned();
  ASSERT_HAS(exported);
  compliance::StandardVerifier verifier;
  auto verified = compliance::VerifyExport(*exported, {KeyOf(*clinician), {}}, verifier);
  ASSERT_HAS(verified);
  ASSERT_EQ(verified->contents.receipts.size(), 1u);
  auto genuine = compliance::EncodeSignedReceipt(verified->contents.receipts[0]);
  ASSERT_HAS(genuine);
  m.payload = SecretBytes(*genuine);
  ASSERT_HAS(clinician->SendAppMessageForTesting("pat2", m));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(other->Sync());
  EXPECT_FALSE(FindReceipt(*other, id).has_value());
  EXPECT_TRUE(other_errors.Has(StatusCode::kPermissionDenied, "consent receipt refused"));
}

// Closes a client's store after `tamper` ran on it directly (as someone with the master key's store open).
void TamperStore(const std::string& home, const std::function<void(storage::SealedStore&)>& tamper) {
  auto ks = storage::Keystore::Open(home + "/keystore", storage::KeystoreOptions::MinimumCostForTesting());
  ASSERT_HAS(ks);
  ASSERT_OK((*ks)->Unlock(kPass));
  auto store = storage::SealedStore::Open(home + "/store", ks->get());
  ASSERT_HAS(store);
  tamper(**store);
}

std::vector<std::string> EntryKeys(storage::SealedStore& s) {
  auto keys = s.ListKeys(session::Table::kMeta, kAuditEntryPrefix);
  EXPECT_TRUE(keys.has_value());
  return keys ? *keys : std::vector<std::string>{};
}

TEST_F(RuntimeCompliance, AuditTamperingInTheStoreIsDetected) {
  {
    auto clinician = NewClient("clinician", "dr.lee", Options());
    auto patient = NewClient("patient", "pat", Options());
    ASSERT_TRUE(clinician && patient);
    ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));
    ASSERT_HAS(patient->Sync());
    for (int i = 0; i < 3; ++i) ASSERT_HAS(patient->SendText("dr.lee", "update " + std::to_string(i)));
    ASSERT_HAS(patient->Sync());
    auto ok = patient->VerifyAudit();
    ASSERT_HAS(ok);
    EXPECT_GE(ok->chain.entries, 6u);
    EXPECT_GE(CountEvents(*patient, AuditEventType::kMessageSent), 4u);
    EXPECT_EQ(CountEvents(*patient, AuditEventType::kSessionEstablished), 1u);
  }  // closing signs a checkpoint over everything

  const std::string original = dir_.Sub("patient");
  auto variant = [&](const std::string& name, const std::function<void(storage::SealedStore&)>& tamper) {
    const std::string home = dir_.Sub(name);
    std::filesystem::copy(original, home, std::filesystem::copy_options::recursive);
    TamperStore(home, tamper);
    auto c = Client::Open(home, kPass, Options());
    ASSERT_HAS(c);  // the client still opens: the user keeps their messages
    auto v = (*c)->VerifyAudit();
    ASSERT_FALSE(v.has_value()) << name << " went unnoticed";
    EXPECT_EQ(v.error().code(), StatusCode::kTampered) << name << ": " << v.error().ToString();
  };
  variant("modified", [](storage::SealedStore& s) {  // entry 2 replaced by a changed copy of entry 3
    auto keys = EntryKeys(s);
    ASSERT_GE(keys.size(), 4u);
    auto third = s.Get(session::Table::kMeta, keys[2]);
    ASSERT_TRUE(third && *third);
    auto e = compliance::DecodeAuditEntry((*third)->reveal());
    ASSERT_HAS(e);
    e->sequence = 2;
    e->code += 1;
    auto rec = compliance::EncodeAuditEntry(*e);
    ASSERT_HAS(rec);
    session::WriteBatch b;
    b.writes.push_back({session::Table::kMeta, keys[1], SecretBytes(*rec)});
    ASSERT_OK(s.Commit(std::move(b)));
  });
  variant("deleted", [](storage::SealedStore& s) {
    auto keys = EntryKeys(s);
    ASSERT_GE(keys.size(), 4u);
    session::WriteBatch b;
    b.writes.push_back({session::Table::kMeta, keys[2], std::nullopt});
    ASSERT_OK(s.Commit(std::move(b)));
  });
  variant("reordered", [](storage::SealedStore& s) {  // entries 2 and 3 swap places
    auto keys = EntryKeys(s);
    ASSERT_GE(keys.size(), 4u);
    auto a = s.Get(session::Table::kMeta, keys[1]);
    auto b3 = s.Get(session::Table::kMeta, keys[2]);
    ASSERT_TRUE(a && *a && b3 && *b3);
    session::WriteBatch b;
    b.writes.push_back({session::Table::kMeta, keys[1], std::move(**b3)});
    b.writes.push_back({session::Table::kMeta, keys[2], std::move(**a)});
    ASSERT_OK(s.Commit(std::move(b)));
  });
  variant("truncated", [](storage::SealedStore& s) {  // the last two entries, which a checkpoint covers
    auto keys = EntryKeys(s);
    ASSERT_GE(keys.size(), 4u);
    session::WriteBatch b;
    b.writes.push_back({session::Table::kMeta, keys[keys.size() - 1], std::nullopt});
    b.writes.push_back({session::Table::kMeta, keys[keys.size() - 2], std::nullopt});
    ASSERT_OK(s.Commit(std::move(b)));
  });
}

TEST_F(RuntimeCompliance, SignedExportVerifiesOfflineAndTamperingIsRejected) {
  auto clinician = NewClient("clinician", "dr.lee", Options());
  auto patient = NewClient("patient", "pat", Options());
  ASSERT_TRUE(clinician && patient);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));
  const std::string id = Grant(*patient, *clinician, {"billing"});
  ASSERT_FALSE(id.empty());
  ASSERT_OK(patient->WithdrawConsent(id));

  auto bundle = patient->ExportSigned();
  ASSERT_HAS(bundle);
  compliance::StandardVerifier verifier;
  const compliance::ExportTrust trust{KeyOf(*patient), {KeyOf(*patient), KeyOf(*clinician)}};
  auto v = compliance::VerifyExport(*bundle, trust, verifier);
  ASSERT_HAS(v);
  const std::string transcript(v->contents.transcript_json.begin(), v->contents.transcript_json.end());
  EXPECT_NE(transcript.find("hello doctor"), std::string::npos);
  EXPECT_EQ(v->contents.receipts.size(), 1u);
  EXPECT_EQ(v->contents.withdrawals.size(), 1u);
  EXPECT_EQ(v->chain.unanchored_tail, 0u);
  EXPECT_EQ(v->contents.audit_entries.back().type, AuditEventType::kExport);

  // Another device's key is not the exporter; any flipped byte fails.
  EXPECT_FALSE(compliance::VerifyExport(*bundle, {KeyOf(*clinician), {}}, verifier).has_value());
  for (size_t pos : {size_t{10}, bundle->size() / 2, bundle->size() - 5}) {
    Bytes tampered = *bundle;
    tampered[pos] ^= 0x01;
    EXPECT_FALSE(compliance::VerifyExport(tampered, trust, verifier).has_value()) << "flipped byte " << pos;
  }
  EXPECT_EQ(CountEvents(*patient, AuditEventType::kExport), 1u);
}

TEST_F(RuntimeCompliance, ErasureLeavesNothingReadableAndThePeerGetsTheReceipt) {
  auto clinician = NewClient("clinician", "dr.lee", Options());
  auto patient = NewClient("patient", "pat", Options());
  ASSERT_TRUE(clinician && patient);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));
  ASSERT_HAS(clinician->SendText("pat", "your results are normal"));
  ASSERT_HAS(clinician->Sync());
  ASSERT_HAS(patient->Sync());
  ASSERT_EQ(Bodies(*patient, "dr.lee").size(), 2u);

  auto erasure = patient->EraseConversation("dr.lee");
  ASSERT_HAS(erasure);
  EXPECT_TRUE(Bodies(*patient, "dr.lee").empty());
  auto json = patient->ExportJson();
  ASSERT_HAS(json);
  EXPECT_EQ(Text(*json).find("your results are normal"), std::string::npos);
  EXPECT_EQ(Text(*json).find("hello doctor"), std::string::npos);
  EXPECT_EQ(CountEvents(*patient, AuditEventType::kErasure), 1u);

  // After a restart too: the conversation key is gone, so no row can be opened again.
  patient.reset();
  patient = Reopen("patient", Options());
  ASSERT_TRUE(patient);
  EXPECT_TRUE(Bodies(*patient, "dr.lee").empty());
  auto bundle = patient->ExportSigned();
  ASSERT_HAS(bundle);
  compliance::StandardVerifier verifier;
  auto v = compliance::VerifyExport(*bundle, {KeyOf(*patient), {}}, verifier);
  ASSERT_HAS(v);
  ASSERT_EQ(v->contents.erasures.size(), 1u);
  EXPECT_EQ(v->contents.erasures[0].erasure_id, *erasure);

  // The clinician's device verifies the patient's signed erasure receipt and records it.
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  auto trail = clinician->AuditTrail();
  ASSERT_HAS(trail);
  bool recorded = false;
  for (const auto& e : *trail) recorded |= e.type == AuditEventType::kErasure && e.ref == *erasure;
  EXPECT_TRUE(recorded);
}

TEST_F(RuntimeCompliance, RetentionFloorStretchesTimersAndRecordsTheConflict) {
  auto clinician = NewClient("clinician", "dr.lee", Options());
  auto patient = NewClient("patient", "pat", Options());
  ASSERT_TRUE(clinician && patient);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient, /*clinic_policy=*/false));
  CompliancePolicy p;
  p.clinic = true;
  p.retention_floor_ms = 24 * kHourMs;
  ASSERT_OK(clinician->SetCompliancePolicy(p));
  auto t = clinician->SetDisappearingTimer("pat", kHourMs);
  ASSERT_HAS(t);
  EXPECT_EQ(*t, 24 * kHourMs);
  auto longer = clinician->SetDisappearingTimer("pat", 48 * kHourMs);
  ASSERT_HAS(longer);
  EXPECT_EQ(*longer, 48 * kHourMs);
  EXPECT_EQ(CountEvents(*clinician, AuditEventType::kRetentionConflict), 1u);
  EXPECT_EQ(CountEvents(*clinician, AuditEventType::kPolicyChanged), 1u);
}

TEST_F(RuntimeCompliance, SignedChainHeadsAreExchangedInsideTheSession) {
  auto clinician = NewClient("clinician", "dr.lee", Options());
  auto patient = NewClient("patient", "pat", Options());
  ASSERT_TRUE(clinician && patient);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));
  ASSERT_OK(patient->SendAuditHead("dr.lee"));
  ASSERT_HAS(patient->Sync());
  ASSERT_HAS(clinician->Sync());
  auto st = clinician->VerifyAudit();
  ASSERT_HAS(st);
  EXPECT_EQ(st->peer_heads, 1u);
  EXPECT_EQ(CountEvents(*clinician, AuditEventType::kPeerChainHead), 1u);
}

TEST_F(RuntimeCompliance, AControlMessageCommittedButNotHandledIsHandledAtTheNextOpen) {
  auto clinician = NewClient("clinician", "dr.lee", Options());
  auto patient = NewClient("patient", "pat", Options());
  ASSERT_TRUE(clinician && patient);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));
  ASSERT_HAS(patient->Sync());
  // A genuine signed head of the clinician's chain, taken from its export.
  auto exported = clinician->ExportSigned();
  ASSERT_HAS(exported);
  compliance::StandardVerifier verifier;
  auto verified = compliance::VerifyExport(*exported, {KeyOf(*clinician), {}}, verifier);
  ASSERT_HAS(verified);
  auto head = compliance::EncodeCheckpoint(verified->contents.checkpoints.back());
  ASSERT_HAS(head);
  wire::AppMessage m;
  m.kind = wire::AppKind::kAuditHead;
  m.payload = SecretBytes(*head);
  auto encoded = wire::EncodeAppMessage(m);
  ASSERT_HAS(encoded);
  patient.reset();

  // As the store is after the decrypt batch committed and before the process handled the message.
  TamperStore(dir_.Sub("patient"), [&](storage::SealedStore& s) {
    Bytes value = ToBytes("dr.lee");
    value.push_back(0);
    value.insert(value.end(), encoded->reveal().begin(), encoded->reveal().end());
    session::WriteBatch b;
    b.writes.push_back({session::Table::kMeta, std::string(kInboxPrefix) + "00aa11bb", SecretBytes(value)});
    ASSERT_OK(s.Commit(std::move(b)));
  });
  patient = Reopen("patient", Options());
  ASSERT_TRUE(patient);
  auto st = patient->VerifyAudit();
  ASSERT_HAS(st);
  EXPECT_EQ(st->peer_heads, 1u);
  EXPECT_EQ(CountEvents(*patient, AuditEventType::kPeerChainHead), 1u);
  patient.reset();
  TamperStore(dir_.Sub("patient"), [](storage::SealedStore& s) {
    auto left = s.ListKeys(session::Table::kMeta, kInboxPrefix);
    ASSERT_HAS(left);
    EXPECT_TRUE(left->empty()) << "a handled message leaves the inbox";
  });
}

// An invite answer binds only the token its envelope came with. Handled after a restart (the decrypt batch
// committed, the process died before handling it), it is checked the same way: the inbox record keeps the
// token (found in review: it kept none, and the answer was then taken whatever token it came with).
TEST_F(RuntimeCompliance, AnInviteAnswerHandledAfterARestartIsCheckedAgainstTheTokenItCameWith) {
  auto clinician = NewClient("clinician", "dr.lee", Options());
  auto patient = NewClient("patient", "pat", Options());
  ASSERT_TRUE(clinician && patient);
  ASSERT_NO_FATAL_FAILURE(Connect(*clinician, *patient));
  auto code = clinician->CreateInvite();
  ASSERT_HAS(code);
  auto invite = DecodeInvite(*code);
  ASSERT_HAS(invite);
  wire::AppMessage answer;
  answer.kind = wire::AppKind::kInviteAnswer;
  answer.payload = SecretBytes(invite->card.token);
  auto encoded = wire::EncodeAppMessage(answer);
  ASSERT_HAS(encoded);
  clinician.reset();
  // The store as it is after pat's answer committed and before it was handled.
  auto committed_unhandled = [&](ByteView arrived_with, const std::string& relay_id) {
    TamperStore(dir_.Sub("clinician"), [&](storage::SealedStore& s) {
      Bytes value = ToBytes("pat");
      value.push_back(0);
      value.insert(value.end(), arrived_with.begin(), arrived_with.end());
      value.insert(value.end(), encoded->reveal().begin(), encoded->reveal().end());
      session::WriteBatch b;
      b.writes.push_back(
          {session::Table::kMeta, std::string(kInboxWithTokenPrefix) + relay_id, SecretBytes(value)});
      ASSERT_OK(s.Commit(std::move(b)));
    });
  };

  // Deposited with another token than the one it names (pat's own): refused, the invite stays open.
  committed_unhandled(Bytes(kInboxTokenSize, 0x11), "00aa11bb");
  clinician = Reopen("clinician", Options());
  ASSERT_TRUE(clinician);
  auto open = clinician->OpenInvites();
  ASSERT_HAS(open);
  EXPECT_EQ(open->size(), 1u) << "an answer handled after a restart bound a token it did not come with";
  clinician.reset();

  // Deposited with the token it names: bound, as it would have been at once. Beside it a record too short to
  // hold a token (no build writes one): dropped, not re-read at every open.
  committed_unhandled(invite->card.token, "00aa11cc");
  TamperStore(dir_.Sub("clinician"), [&](storage::SealedStore& s) {
    session::WriteBatch b;
    b.writes.push_back({session::Table::kMeta, std::string(kInboxWithTokenPrefix) + "00aa11dd",
                        SecretBytes(ToBytes(std::string("pat\0short", 9)))});
    ASSERT_OK(s.Commit(std::move(b)));
  });
  clinician = Reopen("clinician", Options());
  ASSERT_TRUE(clinician);
  open = clinician->OpenInvites();
  ASSERT_HAS(open);
  EXPECT_TRUE(open->empty()) << "the answer kept in the inbox was not handled";
  clinician.reset();
  TamperStore(dir_.Sub("clinician"), [](storage::SealedStore& s) {
    auto left = s.ListKeys(session::Table::kMeta, kInboxWithTokenPrefix);
    ASSERT_HAS(left);
    EXPECT_TRUE(left->empty()) << "a handled, refused or unreadable record leaves the inbox";
  });
}

TEST_F(RuntimeCompliance, UnlockFailuresAreRecordedAtTheNextUnlock) {
  { ASSERT_TRUE(NewClient("patient", "pat", Options())); }
  auto wrong = Client::Open(dir_.Sub("patient"), AsBytes("wrong passphrase"), Options());
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().code(), StatusCode::kPermissionDenied);
  auto c = Reopen("patient", Options());
  ASSERT_TRUE(c);
  auto trail = c->AuditTrail();
  ASSERT_HAS(trail);
  ASSERT_GE(trail->size(), 3u);
  const auto& failed = (*trail)[trail->size() - 2];
  EXPECT_EQ(failed.type, AuditEventType::kUnlockFailed);
  EXPECT_EQ(failed.code, 1u);
  EXPECT_EQ(trail->back().type, AuditEventType::kUnlockSucceeded);
  auto ok = c->VerifyAudit();
  ASSERT_HAS(ok);
}

}  // namespace
}  // namespace cw::runtime
