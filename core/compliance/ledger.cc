#include "core/compliance/ledger.h"

#include "core/compliance/canonical.h"

namespace cw::compliance {

namespace {
bool HasPurpose(const ConsentReceipt& r, std::string_view label) {
  for (const auto& s : r.services) {
    for (const auto& p : s.purposes) {
      if (p.purpose == label) return true;
    }
  }
  return false;
}
}  // namespace

Status ConsentLedger::AddReceipt(const SignedConsentReceipt& receipt, const ReceiptExpectations& expect) {
  CW_RETURN_IF_ERROR(VerifyReceipt(receipt, expect, *verifier_));
  const Digest digest = ReceiptDigest(receipt);
  auto it = entries_.find(receipt.receipt.receipt_id);
  if (it != entries_.end()) {
    if (it->second.digest == digest) return Status::Ok();
    return Status(StatusCode::kAlreadyExists, "another receipt with this id is held");
  }
  Entry e;
  e.receipt = receipt;
  e.digest = digest;
  entries_.emplace(receipt.receipt.receipt_id, std::move(e));
  return Status::Ok();
}

Status ConsentLedger::AddWithdrawal(const ConsentWithdrawal& w) {
  auto it = entries_.find(w.receipt_id);
  if (it == entries_.end()) return Status(StatusCode::kNotFound, "withdrawal for a receipt not held");
  Entry& e = it->second;
  CW_RETURN_IF_ERROR(VerifyWithdrawal(w, e.receipt, *verifier_));
  for (const auto& held : e.withdrawals) {
    if (held.signature == w.signature) return Status::Ok();
  }
  if (w.purposes.empty()) {
    e.all_withdrawn = true;
  } else {
    e.withdrawn.insert(w.purposes.begin(), w.purposes.end());
  }
  e.withdrawals.push_back(w);
  return Status::Ok();
}

ConsentState ConsentLedger::StateAt(const Entry& e, std::string_view purpose, int64_t now) const {
  if (e.all_withdrawn || e.withdrawn.count(purpose) > 0) return ConsentState::kWithdrawn;
  if (e.receipt.receipt.expires_at_ms != 0 && now >= e.receipt.receipt.expires_at_ms)
    return ConsentState::kLapsed;
  return ConsentState::kGiven;
}

Result<ConsentState> ConsentLedger::StateOf(std::string_view receipt_id, std::string_view purpose) const {
  auto it = entries_.find(receipt_id);
  if (it == entries_.end() || !HasPurpose(it->second.receipt.receipt, purpose)) {
    return Error(StatusCode::kNotFound, "no such receipt or purpose");
  }
  return StateAt(it->second, purpose, clock_->NowMillis());
}

Status ConsentLedger::CheckConsent(std::string_view patient_fingerprint, std::string_view purpose) const {
  const int64_t now = clock_->NowMillis();
  for (const auto& [id, e] : entries_) {
    const ConsentReceipt& r = e.receipt.receipt;
    if (r.principal_id != patient_fingerprint || !HasPurpose(r, purpose)) continue;
    if (r.consent_timestamp_ms > now) continue;  // not given yet
    if (StateAt(e, purpose, now) == ConsentState::kGiven) return Status::Ok();
  }
  return Status(StatusCode::kPermissionDenied, "no valid consent for purpose");
}

const SignedConsentReceipt* ConsentLedger::FindReceipt(std::string_view receipt_id) const {
  auto it = entries_.find(receipt_id);
  return it == entries_.end() ? nullptr : &it->second.receipt;
}

std::vector<const SignedConsentReceipt*> ConsentLedger::Receipts() const {
  std::vector<const SignedConsentReceipt*> out;
  for (const auto& [id, e] : entries_) out.push_back(&e.receipt);
  return out;
}

std::vector<const ConsentWithdrawal*> ConsentLedger::Withdrawals() const {
  std::vector<const ConsentWithdrawal*> out;
  for (const auto& [id, e] : entries_) {
    for (const auto& w : e.withdrawals) out.push_back(&w);
  }
  return out;
}

Result<ConsentPolicy> ConsentPolicy::New(std::vector<std::string> requires_consent,
                                         std::vector<std::string> exempt, bool unlisted_requires_consent) {
  ConsentPolicy p;
  for (auto& label : requires_consent) {
    if (!IsValidPurposeLabel(label)) return Error(StatusCode::kInvalidArgument, "not a purpose label");
    p.requires_.insert(std::move(label));
  }
  for (auto& label : exempt) {
    if (!IsValidPurposeLabel(label)) return Error(StatusCode::kInvalidArgument, "not a purpose label");
    if (p.requires_.count(label) > 0) {
      return Error(StatusCode::kInvalidArgument, "a purpose cannot both need consent and be exempt");
    }
    p.exempt_.insert(std::move(label));
  }
  p.unlisted_requires_ = unlisted_requires_consent;
  return p;
}

ConsentPolicy ConsentPolicy::HipaaDefault() {
  return *New({std::string(kPurposeBilling), std::string(kPurposeMarketing)},
              {std::string(kPurposeTreatment), std::string(kPurposeScheduling)}, true);
}

bool ConsentPolicy::RequiresConsent(std::string_view purpose) const {
  if (requires_.count(purpose) > 0) return true;
  if (exempt_.count(purpose) > 0) return false;
  return unlisted_requires_;
}

Status ConsentPolicy::CheckOutgoing(std::string_view purpose, std::string_view patient_fingerprint,
                                    const ConsentLedger& ledger) const {
  if (!IsValidPurposeLabel(purpose))
    return Status(StatusCode::kInvalidArgument, "message has no valid purpose label");
  if (!RequiresConsent(purpose)) return Status::Ok();
  return ledger.CheckConsent(patient_fingerprint, purpose);
}

Status ConsentPolicy::CheckIncoming(std::string_view purpose, std::string_view patient_fingerprint,
                                    const ConsentLedger& ledger) const {
  // A peer chose these bytes: a malformed label is refused like a missing consent, never trusted.
  if (!IsValidPurposeLabel(purpose))
    return Status(StatusCode::kPermissionDenied, "message has no valid purpose label");
  if (!RequiresConsent(purpose)) return Status::Ok();
  if (ledger.IsConsented(patient_fingerprint, purpose)) return Status::Ok();
  return Status(StatusCode::kPermissionDenied, "no valid consent for purpose (incoming message refused)");
}

Bytes ConsentPolicy::Encode() const {
  internal::Packer p;
  p.Array(4).Uint(1).Array(static_cast<uint32_t>(requires_.size()));
  for (const auto& s : requires_) p.Str(s);
  p.Array(static_cast<uint32_t>(exempt_.size()));
  for (const auto& s : exempt_) p.Str(s);
  p.Bool(unlisted_requires_);
  return p.Take();
}

Digest ConsentPolicy::PolicyDigest() const {
  const Bytes b = Encode();
  return Blake2b256({AsBytes("cipherward-consent-policy-v1"), b});
}

}  // namespace cw::compliance
