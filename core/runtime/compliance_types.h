// The client runtime's compliance vocabulary (issue 6): what Client's consent, audit, export and erasure
// methods take and return. Plain values; see client.h for the methods and core/compliance/ for the records.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/compliance/audit.h"
#include "core/compliance/consent.h"

namespace cw::runtime {

// The default purpose label of SendText: a message between a patient and a care team is treatment unless
// the sender says otherwise (HIPAA 164.506 lets treatment go without authorization).
inline constexpr std::string_view kDefaultPurpose = "treatment";

// What a patient consents to when granting (Client::GrantConsent). The runtime fills in the rest of the
// receipt: its id, time, both identity keys, the safety number, the principal.
struct ConsentGrant {
  std::vector<std::string> purposes;  // purpose labels (compliance::IsValidPurposeLabel), at least one
  std::string jurisdiction = "US";
  std::string collection_method = "in-app consent, Cipherward";
  std::string controller_id = "clinic";    // the clinic's identity (an IsValidId string: an NPI, a registry id)
  std::string controller_name = "Clinic";  // the clinic as the patient knows it
  std::string controller_contact = "Privacy Office";
  std::string policy_url = "https://example.invalid/privacy";
  std::string service = "Secure messaging";
  std::vector<std::string> data_categories{"messages"};
  std::string retention_period = "P6Y";  // ISO 8601 duration
  int64_t expires_at_ms = 0;             // the consent lapses here; 0 = until withdrawn
};

// One consent receipt this device holds, as the ledger sees it now.
struct ConsentRecord {
  std::string receipt_id;
  std::string contact;       // the other party
  bool we_are_patient = false;
  bool countersigned = false;  // false: granted, waiting for the clinician's countersignature
  int64_t consent_timestamp_ms = 0;
  int64_t expires_at_ms = 0;
  std::vector<std::pair<std::string, compliance::ConsentState>> purposes;  // label, state now
  std::string kantara_json;  // compliance::ReceiptToKantaraJson (empty until countersigned)
};

// The clinic's policy as this device applies it (Client::SetCompliancePolicy).
//   clinic = true   a clinician's device: every outgoing message's purpose needs the receiving contact's
//                   (the patient's) valid consent when `requires_consent` says so; incoming is not gated.
//   clinic = false  a patient's device (the default): an incoming message whose purpose needs consent is
//                   refused, acknowledged at the relay, audited and not shown, unless this patient gave that
//                   sender valid consent for it; outgoing is not gated.
// Purposes: listed in requires_consent need consent, listed in exempt do not, any other follows
// unlisted_requires_consent. The default is compliance::ConsentPolicy::HipaaDefault().
struct CompliancePolicy {
  bool clinic = false;
  std::vector<std::string> requires_consent{"billing", "marketing"};
  std::vector<std::string> exempt{"treatment", "scheduling"};
  bool unlisted_requires_consent = true;
  int64_t retention_floor_ms = 0;  // disappearing timers never delete sooner; 0 = no floor
};

// Client::VerifyAudit: the device's chain verified against every checkpoint it holds.
struct AuditStatus {
  std::string chain_id;
  compliance::ChainVerification chain;
  size_t checkpoints = 0;
  size_t peer_heads = 0;  // signed chain heads received from contacts
};

}  // namespace cw::runtime
