// A fixed, deterministic compliance world for the consent_receipt and audit_chain fuzz targets and their
// corpus generator: Ed25519 parties from fixed seeds, one signed and countersigned receipt, one withdrawal,
// and an audit chain of 12 entries with checkpoints after 4 and 8. Ed25519 signatures are deterministic, so
// every byte is the same on every run.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/base/clock.h"
#include "core/compliance/audit.h"
#include "core/compliance/consent.h"
#include "core/compliance/signing.h"

namespace cw::fuzz::compliance {

using namespace cw::compliance;

inline constexpr char kChainId[] = "device:fuzz:1";

template <typename T>
T Must(Result<T> r) {
  if (!r) {
    std::fprintf(stderr, "compliance fixture: %s\n", r.error().ToString().c_str());
    std::abort();
  }
  return std::move(*r);
}

struct World {
  std::unique_ptr<Ed25519Signer> patient, clinician, device;
  StandardVerifier verifier;
  SessionBinding session;
  ReceiptExpectations expect;
  SignedConsentReceipt receipt;
  Bytes receipt_bytes;     // EncodeSignedReceipt(receipt)
  Bytes withdrawal_bytes;  // a withdrawal of "marketing"
  std::vector<Bytes> entries;
  std::vector<Bytes> checkpoints;

  World() {
    patient = Must(Ed25519Signer::FromSeed(Bytes(32, 1)));
    clinician = Must(Ed25519Signer::FromSeed(Bytes(32, 2)));
    device = Must(Ed25519Signer::FromSeed(Bytes(32, 9)));
    Bytes pk(kIdentityKeySize, 0x11), ck(kIdentityKeySize, 0x22);
    pk[0] = ck[0] = 0x05;
    session = SessionBinding{pk, ck, std::string(60, '7')};
    expect = ReceiptExpectations{session, patient->public_key(), clinician->public_key()};

    ConsentReceipt r;
    r.receipt_id = "0123456789abcdef0123456789abcdef";
    r.consent_timestamp_ms = 1'700'000'000'000;
    r.jurisdiction = "US-CA";
    r.collection_method = "in-app consent screen";
    r.policy_url = "https://riverside.example/privacy";
    r.principal_id = IdentityFingerprint(pk);
    Controller c;
    c.id = "npi:1234567893";
    c.name = "Riverside Clinic";
    c.contact = "Privacy Office";
    r.controllers = {c};
    Service s;
    s.service = "Secure messaging";
    for (const char* label : {"treatment", "billing", "marketing", "x-research"}) {
      Purpose p;
      p.purpose = label;
      p.purpose_category = "Health care";
      p.pii_categories = {"messages"};
      p.termination = "until withdrawn";
      s.purposes.push_back(p);
    }
    s.purposes[3].third_party_disclosure = true;
    s.purposes[3].third_party_name = "University Hospital";
    r.services = {s};
    r.retention_period = "P6Y";
    r.expires_at_ms = r.consent_timestamp_ms + 365LL * 24 * 3600 * 1000;
    r.withdrawal_method = "Settings > Consent > Withdraw";
    r.binding = session;
    r.patient_key = patient->public_key();
    r.clinician_key = clinician->public_key();
    receipt = Must(SignReceipt(r, *patient));
    if (!CountersignReceipt(&receipt, session, *clinician, verifier).ok()) std::abort();
    receipt_bytes = Must(EncodeSignedReceipt(receipt));
    FakeClock clock(1'700'000'500'000);
    withdrawal_bytes = Must(EncodeWithdrawal(Must(Withdraw(receipt, {"marketing"}, clock, *patient))));

    InMemoryAuditSink sink;
    AuditLogOptions o;
    o.chain_id = kChainId;
    o.clock = &clock;
    o.signer = device.get();
    o.verifier = &verifier;
    o.checkpoint_interval = 4;
    auto log = Must(AuditLog::Open(&sink, o));
    for (int i = 0; i < 12; ++i) {
      clock.Advance(1000);
      AuditEvent e;
      e.type = static_cast<AuditEventType>(1 + i % kMaxAuditEventType);
      e.subject = "conv" + std::to_string(i % 3);
      e.ref = "msg-" + std::to_string(i);
      e.code = static_cast<uint64_t>(i);
      if (i % 4 == 0) e.digest = Bytes(kDigestSize, static_cast<uint8_t>(i));
      Must(log->Append(e));
    }
    entries = sink.entries();
    checkpoints = sink.checkpoints();
  }
};

inline const World& TheWorld() {
  static const World* world = new World();
  return *world;
}

// audit_chain input modes (the first byte).
enum class ChainMode : uint8_t {
  kRecords = 0,  // the rest is records, each u16 big-endian length + bytes; even-numbered ones are entries
  kMutate = 1,   // the rest is operations applied to the fixture chain
};
// kMutate operations: op byte, then arguments.
enum class ChainOp : uint8_t {
  kFlip = 0,            // entry index, offset, xor mask
  kDelete = 1,          // entry index
  kSwap = 2,            // entry index (with the next)
  kDuplicate = 3,       // entry index
  kTruncate = 4,        // new length
  kDropCheckpoint = 5,  // checkpoint index
  kFlipCheckpoint = 6,  // checkpoint index, offset, xor mask
};

}  // namespace cw::fuzz::compliance
