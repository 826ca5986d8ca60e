// Consent receipts: the Kantara Consent Receipt v1.1 fields and the ISO/IEC TS 27560 record structure,
// bound to one Signal session, signed by the patient and countersigned by the clinician's device.
//
// A receipt is a value (ConsentReceipt). EncodeReceipt gives its canonical msgpack bytes (see canonical.h:
// one byte string per value, so the signatures cover the value). SignReceipt has the patient sign those
// bytes; CountersignReceipt has the clinician sign the bytes and the patient's signature. The signed form
// (SignedConsentReceipt) travels end to end and is stored on both devices; DecodeSignedReceipt parses it
// from untrusted bytes with tight limits, VerifyReceipt checks it against the session it claims.
//
// Life cycle (ISO/IEC TS 27560 events): a verified receipt is *given* from its consent timestamp; it is
// *withdrawn* (for all its purposes or some of them) by a ConsentWithdrawal the patient signs, a new
// transaction that is exactly as easy to make as the receipt (GDPR Art. 7(3)); it *lapses* at expires_at_ms.
// ConsentLedger (ledger.h) answers what is consented now.
//
// Wire layout (msgpack arrays, positional; docs/compliance.md lists every field):
//   receipt    [1, header, principal_id, controllers, services, sensitivity, retention, binding, signers]
//   signed     [1, receipt bytes (bin), patient signature (bin), clinician signature (bin)]
//   request    [1, receipt bytes (bin), patient signature (bin)]  (before the clinician countersigns)
//   withdrawal [1, receipt_id, receipt_digest, withdrawn_at_ms, purposes, signer, signature]
//
// Errors: kInvalidArgument (building or signing a receipt that breaks a rule below), kMalformed (bytes that
// do not parse, break a rule, or are not canonical), kUnsupportedVersion, kBadSignature (a signature that
// does not verify, or a signer other than the party the session says), kPermissionDenied (a receipt bound
// to another session). Messages never hold a patient identifier.
//
// Thread rules: free functions over values; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/base/status.h"
#include "core/compliance/signing.h"

namespace cw::compliance {

inline constexpr uint8_t kReceiptFormatVersion = 1;
inline constexpr std::string_view kKantaraVersion = "KI-CR-v1.1.0";
inline constexpr size_t kMaxReceiptSize = 32 * 1024;
inline constexpr size_t kMaxTextSize = 1024;  // every free-text field (names, URL, methods, termination)
inline constexpr size_t kMaxControllers = 4;
inline constexpr size_t kMaxServices = 8;
inline constexpr size_t kMaxPurposesPerService = 16;
inline constexpr size_t kMaxCategories = 16;
inline constexpr size_t kIdentityKeySize = 33;  // a Signal identity key: 0x05 || Curve25519 public key
inline constexpr size_t kSafetyNumberDigits = 60;

// The session a receipt belongs to: both identity keys and the safety number both sides compare. A receipt
// copied into another session (another patient, a re-keyed clinician, a replaced identity) does not verify.
struct SessionBinding {
  Bytes patient_identity_key;    // kIdentityKeySize bytes
  Bytes clinician_identity_key;  // kIdentityKeySize bytes
  std::string safety_number;     // kSafetyNumberDigits decimal digits
  friend bool operator==(const SessionBinding&, const SessionBinding&) = default;
};

// Kantara piiControllers[] entry: the clinic (the controller), its identity and its contact.
struct Controller {
  std::string id;       // the clinic's identity: an IsValidId string (an NPI, a registry id, a fingerprint)
  std::string name;     // piiController
  std::string contact;  // contact: a person or office
  std::string address;
  std::string email;
  std::string phone;
  std::string url;  // piiControllerUrl
  friend bool operator==(const Controller&, const Controller&) = default;
};

enum class ConsentType : uint8_t {
  kExplicit = 1,  // Kantara "EXPLICIT": the patient acted (what health data needs, GDPR Art. 9(2)(a))
  kImplied = 2,   // Kantara "IMPLIED"
};

struct Purpose {
  std::string purpose;           // the purpose label messages carry (IsValidPurposeLabel): "treatment", ...
  std::string purpose_category;  // Kantara purposeCategory, e.g. "Health care delivery"
  ConsentType consent_type = ConsentType::kExplicit;
  std::vector<std::string> pii_categories;  // data categories, e.g. "messages", "lab results"
  bool primary_purpose = true;
  std::string termination;  // Kantara termination: when this purpose's consent ends, in words
  bool third_party_disclosure = false;
  std::string third_party_name;  // required when third_party_disclosure
  friend bool operator==(const Purpose&, const Purpose&) = default;
};

struct Service {
  std::string service;  // e.g. "Secure messaging with Riverside Clinic"
  std::vector<Purpose> purposes;
  friend bool operator==(const Service&, const Service&) = default;
};

struct ConsentReceipt {
  // Header (Kantara / ISO 27560 record header).
  std::string version = std::string(kKantaraVersion);
  std::string receipt_id;  // IsValidId; NewReceiptId gives 128 random bits in hex
  int64_t consent_timestamp_ms = 0;
  std::string jurisdiction;       // e.g. "US-CA", "EU-DE"
  std::string collection_method;  // e.g. "in-app consent screen, read aloud by clinician"
  std::string language = "en";
  std::string policy_url;
  // Parties.
  std::string principal_id;  // IdentityFingerprint(binding.patient_identity_key); checked, not trusted
  std::vector<Controller> controllers;  // at least one
  // Processing.
  std::vector<Service> services;                      // at least one, each with at least one purpose
  bool sensitive = true;                              // must be true: this is health data
  std::vector<std::string> spi_categories{"health"};  // must include "health"
  std::string retention_period;                       // ISO 8601 duration of record retention, e.g. "P6Y"
  int64_t expires_at_ms = 0;                          // the consent lapses here; 0 = until withdrawn
  std::string withdrawal_method;                      // how to withdraw, in words (ISO 27560)
  std::string lawful_basis = "GDPR Art. 9(2)(a) explicit consent";
  // Binding and signers (Kantara publicKey).
  SessionBinding binding;
  SigningPublicKey patient_key;
  SigningPublicKey clinician_key;
  friend bool operator==(const ConsentReceipt&, const ConsentReceipt&) = default;
};

struct SignedConsentReceipt {
  ConsentReceipt receipt;
  Bytes receipt_bytes;  // EncodeReceipt(receipt): what both signatures cover
  Bytes patient_signature;
  Bytes clinician_signature;  // empty until countersigned
};

// The ISO/IEC TS 27560 states this library computes.
enum class ConsentState : uint8_t { kGiven = 1, kWithdrawn = 2, kLapsed = 3 };
std::string_view ConsentStateName(ConsentState state);

// 16 random bytes, lower-case hex.
std::string NewReceiptId(Random& random);

// Purpose labels messages carry: the four standard ones or a clinic's own, "x-" followed by an id
// ("x-research-study-12"). 1..64 bytes of [a-z0-9._-] after the prefix.
inline constexpr std::string_view kPurposeTreatment = "treatment";
inline constexpr std::string_view kPurposeScheduling = "scheduling";
inline constexpr std::string_view kPurposeBilling = "billing";
inline constexpr std::string_view kPurposeMarketing = "marketing";
bool IsValidPurposeLabel(std::string_view label);

// Checks every rule above (sizes, ids, sensitive with "health", a purpose label per purpose, the principal
// being the patient key's fingerprint, well-formed keys). kInvalidArgument naming the rule.
Status ValidateReceipt(const ConsentReceipt& receipt);

Result<Bytes> EncodeReceipt(const ConsentReceipt& receipt);
Result<ConsentReceipt> DecodeReceipt(ByteView bytes);

// The patient signs: `signer` must hold receipt.patient_key. The result is not yet countersigned.
Result<SignedConsentReceipt> SignReceipt(const ConsentReceipt& receipt, Signer& patient);
// The clinician's device countersigns after checking the patient's signature and that the receipt is for
// `session` (the session it shares with that patient). `clinician` must hold receipt.clinician_key.
Status CountersignReceipt(SignedConsentReceipt* signed_receipt, const SessionBinding& session,
                          Signer& clinician, const Verifier& verifier);

Result<Bytes> EncodeSignedReceipt(const SignedConsentReceipt& signed_receipt);
Result<SignedConsentReceipt> DecodeSignedReceipt(ByteView bytes);

// The patient's half on its way to the clinician for countersigning (a receipt request):
//   [1, receipt bytes (bin), patient signature (bin)]
// Encode needs the patient signature and ignores any clinician signature; Decode gives a
// SignedConsentReceipt with an empty clinician_signature, for CountersignReceipt. Errors as the signed form.
Result<Bytes> EncodeReceiptRequest(const SignedConsentReceipt& patient_signed);
Result<SignedConsentReceipt> DecodeReceiptRequest(ByteView bytes);

// Who the verifier expects: the session it holds with the other side and the signing keys of both parties
// as it knows them (with identity-key XEdDSA signing: the identity keys of that session).
struct ReceiptExpectations {
  SessionBinding session;
  SigningPublicKey patient_key;
  SigningPublicKey clinician_key;
};

// Verifies both signatures, the signers and the binding. Does not look at time or withdrawals (the ledger
// does). kPermissionDenied for another session, kBadSignature for another signer or a bad signature.
Status VerifyReceipt(const SignedConsentReceipt& signed_receipt, const ReceiptExpectations& expect,
                     const Verifier& verifier);
// Verifies both signatures against the keys the receipt itself names: for an offline verifier that has no
// session (VerifyExport), which then decides whether it trusts those keys.
Status VerifyReceiptSelfConsistent(const SignedConsentReceipt& signed_receipt, const Verifier& verifier);

// BLAKE2b-256 of the signed encoding: how withdrawals and audit entries name one exact receipt.
Digest ReceiptDigest(const SignedConsentReceipt& signed_receipt);

// A withdrawal: a new transaction signed by the patient (the receipt's patient_key).
struct ConsentWithdrawal {
  std::string receipt_id;
  Digest receipt_digest{};
  int64_t withdrawn_at_ms = 0;
  std::vector<std::string> purposes;  // the labels withdrawn; empty = every purpose of the receipt
  SigningPublicKey signer;
  Bytes signature;
};

// Builds and signs a withdrawal of `purposes` (empty: all) at the clock's now. kInvalidArgument when
// `patient` is not the receipt's patient key or a purpose is not in the receipt.
Result<ConsentWithdrawal> Withdraw(const SignedConsentReceipt& signed_receipt,
                                   std::vector<std::string> purposes, const Clock& clock, Signer& patient);
Result<Bytes> EncodeWithdrawal(const ConsentWithdrawal& withdrawal);
Result<ConsentWithdrawal> DecodeWithdrawal(ByteView bytes);
// Checks that `withdrawal` names this exact receipt, is signed by its patient, and names only its purposes.
Status VerifyWithdrawal(const ConsentWithdrawal& withdrawal, const SignedConsentReceipt& signed_receipt,
                        const Verifier& verifier);

// The receipt in Kantara Consent Receipt v1.1 JSON (consentTimestamp in seconds, as Kantara specifies), with
// the ISO 27560 fields Kantara lacks, the session binding and the signatures under "cipherward". UTF-8.
std::string ReceiptToKantaraJson(const SignedConsentReceipt& signed_receipt);

}  // namespace cw::compliance
