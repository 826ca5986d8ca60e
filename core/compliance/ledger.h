// ConsentLedger: the verified consent receipts and withdrawals one device holds, answering "is purpose P
// consented by patient X now?". ConsentPolicy: which message purposes need consent (the clinic's policy),
// and the checks the sending and receiving cores run on every message's purpose label.
//
// A receipt enters the ledger only after VerifyReceipt against the session it claims; a withdrawal only
// after VerifyWithdrawal against a receipt already in the ledger. Nothing leaves: withdrawn and lapsed
// receipts stay, so their history can be shown and exported. Patient X consents to purpose P at time t when
// some receipt of X lists P, its consent timestamp is at or before t, it has not lapsed (t < expires_at_ms,
// when set), and no withdrawal of P (or of the whole receipt) is in the ledger. A withdrawal takes effect
// when it is added, whatever time it carries (a back- or post-dated withdrawal changes nothing); a newer
// receipt gives consent again (Kantara: each consent or withdrawal is a new transaction).
//
// Thread rules: not thread-safe; the runtime's owner thread. Ownership: the Verifier and Clock are not owned
// and must outlive the ledger.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/clock.h"
#include "core/base/status.h"
#include "core/compliance/consent.h"

namespace cw::compliance {

class ConsentLedger {
 public:
  ConsentLedger(const Verifier* verifier, const Clock* clock) : verifier_(verifier), clock_(clock) {}

  // Verifies and stores. kAlreadyExists for a receipt id already held (with the same bytes: Ok, idempotent).
  Status AddReceipt(const SignedConsentReceipt& receipt, const ReceiptExpectations& expect);
  // kNotFound when the receipt is not held (yet); otherwise as VerifyWithdrawal. Idempotent.
  Status AddWithdrawal(const ConsentWithdrawal& withdrawal);

  // The state of one purpose of one receipt now; kNotFound for an unknown receipt or purpose.
  Result<ConsentState> StateOf(std::string_view receipt_id, std::string_view purpose) const;
  // Ok when `patient_fingerprint` (IdentityFingerprint of the patient's identity key) consents to `purpose`
  // now; kPermissionDenied "no valid consent for purpose" otherwise.
  Status CheckConsent(std::string_view patient_fingerprint, std::string_view purpose) const;
  bool IsConsented(std::string_view patient_fingerprint, std::string_view purpose) const {
    return CheckConsent(patient_fingerprint, purpose).ok();
  }

  const SignedConsentReceipt* FindReceipt(std::string_view receipt_id) const;
  std::vector<const SignedConsentReceipt*> Receipts() const;
  std::vector<const ConsentWithdrawal*> Withdrawals() const;

 private:
  struct Entry {
    SignedConsentReceipt receipt;
    Digest digest{};
    bool all_withdrawn = false;
    std::set<std::string, std::less<>> withdrawn;
    std::vector<ConsentWithdrawal> withdrawals;
  };
  ConsentState StateAt(const Entry& e, std::string_view purpose, int64_t now) const;

  const Verifier* verifier_;
  const Clock* clock_;
  std::map<std::string, Entry, std::less<>> entries_;  // by receipt id
};

// Which purposes need the receiving patient's consent. The clinic sets it; every purpose not listed follows
// `unlisted_requires_consent` (true by default: a clinic's own purpose nobody thought about fails closed).
class ConsentPolicy {
 public:
  // Labels must be IsValidPurposeLabel; kInvalidArgument otherwise.
  static Result<ConsentPolicy> New(std::vector<std::string> requires_consent,
                                   std::vector<std::string> exempt = {},
                                   bool unlisted_requires_consent = true);
  // A starting point, not legal advice: treatment and scheduling exempt (HIPAA 164.506 allows them without
  // authorization), billing, marketing and anything else need consent.
  static ConsentPolicy HipaaDefault();

  bool RequiresConsent(std::string_view purpose) const;

  // The sending core, before encrypting a message with label `purpose` to the patient: kInvalidArgument
  // for a label that is not a purpose label, kPermissionDenied "no valid consent for purpose" when the
  // policy requires consent and `ledger` holds none.
  Status CheckOutgoing(std::string_view purpose, std::string_view patient_fingerprint,
                       const ConsentLedger& ledger) const;
  // The receiving core, on a decrypted message labelled `purpose` for this device's patient: the same rule,
  // with kPermissionDenied "no valid consent for purpose (incoming message refused)". The runtime drops the
  // message and appends AuditEventType::kMessageRefused.
  Status CheckIncoming(std::string_view purpose, std::string_view patient_fingerprint,
                       const ConsentLedger& ledger) const;

  // Canonical bytes and their digest: what a kPolicyChanged audit entry records.
  Bytes Encode() const;
  Digest PolicyDigest() const;

 private:
  ConsentPolicy() = default;
  std::set<std::string, std::less<>> requires_;
  std::set<std::string, std::less<>> exempt_;
  bool unlisted_requires_ = true;
};

}  // namespace cw::compliance
