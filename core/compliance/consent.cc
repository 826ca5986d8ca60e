#include "core/compliance/consent.h"

#include <sodium.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/compliance/canonical.h"

namespace cw::compliance {

namespace {

using internal::Fields;
using internal::Packer;

constexpr std::string_view kPatientDomain = "cipherward-consent-receipt-v1";
constexpr std::string_view kClinicianDomain = "cipherward-consent-countersign-v1";
constexpr std::string_view kWithdrawalDomain = "cipherward-consent-withdrawal-v1";
constexpr uint8_t kWithdrawalVersion = 1;
constexpr size_t kMaxWithdrawalSize = 4096;

Status Invalid(const char* what) { return Status(StatusCode::kInvalidArgument, what); }

bool TextOk(const std::string& s, bool required) {
  return s.size() <= kMaxTextSize && (!required || !s.empty());
}

bool IsDigits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void PackKey(Packer& p, const SigningPublicKey& k) {
  p.Array(2).Uint(static_cast<uint8_t>(k.scheme)).Bin(k.key);
}

bool ReadKey(const msgpack::object& o, SigningPublicKey* out) {
  uint64_t scheme = 0;
  Fields f(o, 2);
  f.Uint(&scheme).Bin(&out->key, kXEdDSAPublicKeySize);
  if (!f.ok() || (scheme != 1 && scheme != 2)) return false;
  out->scheme = static_cast<SignatureScheme>(scheme);
  return true;
}

bool ReadStrings(const msgpack::object_array& a, std::vector<std::string>* out, size_t max_size) {
  out->clear();
  for (uint32_t i = 0; i < a.size; ++i) {
    const msgpack::object& o = a.ptr[i];
    if (o.type != msgpack::type::STR || o.via.str.size > max_size) return false;
    out->emplace_back(o.via.str.ptr, o.via.str.size);
  }
  return true;
}

Bytes PatientMessage(ByteView receipt_bytes) { return SignedMessage(kPatientDomain, receipt_bytes); }

Bytes ClinicianMessage(ByteView receipt_bytes, ByteView patient_signature) {
  Bytes body(receipt_bytes.begin(), receipt_bytes.end());
  body.insert(body.end(), patient_signature.begin(), patient_signature.end());
  return SignedMessage(kClinicianDomain, body);
}

Bytes WithdrawalBody(const ConsentWithdrawal& w) {
  Packer p;
  p.Array(6).Uint(kWithdrawalVersion).Str(w.receipt_id).Bin(w.receipt_digest).Int(w.withdrawn_at_ms);
  p.Array(static_cast<uint32_t>(w.purposes.size()));
  for (const auto& s : w.purposes) p.Str(s);
  PackKey(p, w.signer);
  return p.Take();
}

bool ReceiptHasPurpose(const ConsentReceipt& r, std::string_view label) {
  for (const auto& s : r.services) {
    for (const auto& p : s.purposes) {
      if (p.purpose == label) return true;
    }
  }
  return false;
}

}  // namespace

std::string_view ConsentStateName(ConsentState state) {
  switch (state) {
    case ConsentState::kGiven:
      return "given";
    case ConsentState::kWithdrawn:
      return "withdrawn";
    case ConsentState::kLapsed:
      return "lapsed";
  }
  return "unknown";
}

std::string NewReceiptId(Random& random) {
  uint8_t id[16];
  random.Fill(id, sizeof id);
  return ToHex(ByteView(id, sizeof id));
}

bool IsValidPurposeLabel(std::string_view label) {
  auto simple = [](std::string_view s) {
    if (s.empty() || s.size() > 64) return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    });
  };
  if (label == kPurposeTreatment || label == kPurposeScheduling || label == kPurposeBilling ||
      label == kPurposeMarketing) {
    return true;
  }
  return label.size() > 2 && label.substr(0, 2) == "x-" && simple(label.substr(2));
}

Status ValidateReceipt(const ConsentReceipt& r) {
  if (r.version != kKantaraVersion) return Invalid("receipt version must be KI-CR-v1.1.0");
  if (!IsValidId(r.receipt_id)) return Invalid("receipt id is not a valid id");
  if (r.consent_timestamp_ms <= 0) return Invalid("consent timestamp missing");
  if (r.expires_at_ms < 0 || (r.expires_at_ms != 0 && r.expires_at_ms <= r.consent_timestamp_ms)) {
    return Invalid("expiry must follow the consent timestamp");
  }
  if (!TextOk(r.jurisdiction, true) || !TextOk(r.collection_method, true) || !TextOk(r.language, true) ||
      !TextOk(r.policy_url, true) || !TextOk(r.retention_period, true) ||
      !TextOk(r.withdrawal_method, true) || !TextOk(r.lawful_basis, true)) {
    return Invalid("a required text field is empty or too long");
  }
  if (r.controllers.empty() || r.controllers.size() > kMaxControllers) return Invalid("controller count");
  for (const auto& c : r.controllers) {
    if (!IsValidId(c.id) || !TextOk(c.name, true) || !TextOk(c.contact, true) || !TextOk(c.address, false) ||
        !TextOk(c.email, false) || !TextOk(c.phone, false) || !TextOk(c.url, false)) {
      return Invalid("controller needs an id, a name and a contact");
    }
  }
  if (r.services.empty() || r.services.size() > kMaxServices) return Invalid("service count");
  std::vector<std::string_view> labels;
  for (const auto& s : r.services) {
    if (!TextOk(s.service, true)) return Invalid("service name");
    if (s.purposes.empty() || s.purposes.size() > kMaxPurposesPerService) return Invalid("purpose count");
    for (const auto& p : s.purposes) {
      if (!IsValidPurposeLabel(p.purpose)) return Invalid("purpose is not a valid purpose label");
      if (std::find(labels.begin(), labels.end(), p.purpose) != labels.end())
        return Invalid("purpose repeated");
      labels.push_back(p.purpose);
      if (!TextOk(p.purpose_category, true) || !TextOk(p.termination, true) ||
          !TextOk(p.third_party_name, false)) {
        return Invalid("purpose category and termination are required");
      }
      if (p.consent_type != ConsentType::kExplicit && p.consent_type != ConsentType::kImplied) {
        return Invalid("consent type");
      }
      if (p.third_party_disclosure != !p.third_party_name.empty()) {
        return Invalid("a third-party disclosure names the third party, and only then");
      }
      if (p.pii_categories.empty() || p.pii_categories.size() > kMaxCategories)
        return Invalid("data categories");
      for (const auto& c : p.pii_categories) {
        if (!TextOk(c, true)) return Invalid("data category");
      }
    }
  }
  if (!r.sensitive) return Invalid("health data receipts are sensitive");
  if (r.spi_categories.size() > kMaxCategories ||
      std::find(r.spi_categories.begin(), r.spi_categories.end(), "health") == r.spi_categories.end()) {
    return Invalid("sensitive categories must include health");
  }
  for (const auto& c : r.spi_categories) {
    if (!TextOk(c, true)) return Invalid("sensitive category");
  }
  const SessionBinding& b = r.binding;
  if (b.patient_identity_key.size() != kIdentityKeySize ||
      b.clinician_identity_key.size() != kIdentityKeySize || b.safety_number.size() != kSafetyNumberDigits ||
      !IsDigits(b.safety_number)) {
    return Invalid("session binding needs both identity keys and the 60-digit safety number");
  }
  if (b.patient_identity_key == b.clinician_identity_key)
    return Invalid("patient and clinician are one identity");
  if (r.principal_id != IdentityFingerprint(b.patient_identity_key)) {
    return Invalid("principal id is not the patient identity key's fingerprint");
  }
  if (!IsWellFormed(r.patient_key) || !IsWellFormed(r.clinician_key)) return Invalid("malformed signing key");
  if (r.patient_key == r.clinician_key) return Invalid("patient and clinician signing keys are the same");
  return Status::Ok();
}

Result<Bytes> EncodeReceipt(const ConsentReceipt& r) {
  CW_RETURN_IF_ERROR(ValidateReceipt(r));
  Packer p;
  p.Array(9).Uint(kReceiptFormatVersion);
  p.Array(7)
      .Str(r.version)
      .Str(r.receipt_id)
      .Int(r.consent_timestamp_ms)
      .Str(r.jurisdiction)
      .Str(r.collection_method)
      .Str(r.language)
      .Str(r.policy_url);
  p.Str(r.principal_id);
  p.Array(static_cast<uint32_t>(r.controllers.size()));
  for (const auto& c : r.controllers) {
    p.Array(7).Str(c.id).Str(c.name).Str(c.contact).Str(c.address).Str(c.email).Str(c.phone).Str(c.url);
  }
  p.Array(static_cast<uint32_t>(r.services.size()));
  for (const auto& s : r.services) {
    p.Array(2).Str(s.service).Array(static_cast<uint32_t>(s.purposes.size()));
    for (const auto& u : s.purposes) {
      p.Array(8).Str(u.purpose).Str(u.purpose_category).Uint(static_cast<uint8_t>(u.consent_type));
      p.Array(static_cast<uint32_t>(u.pii_categories.size()));
      for (const auto& c : u.pii_categories) p.Str(c);
      p.Bool(u.primary_purpose).Str(u.termination).Bool(u.third_party_disclosure).Str(u.third_party_name);
    }
  }
  p.Array(2).Bool(r.sensitive).Array(static_cast<uint32_t>(r.spi_categories.size()));
  for (const auto& c : r.spi_categories) p.Str(c);
  p.Array(4).Str(r.retention_period).Int(r.expires_at_ms).Str(r.withdrawal_method).Str(r.lawful_basis);
  p.Array(3)
      .Bin(r.binding.patient_identity_key)
      .Bin(r.binding.clinician_identity_key)
      .Str(r.binding.safety_number);
  p.Array(2);
  PackKey(p, r.patient_key);
  PackKey(p, r.clinician_key);
  Bytes out = p.Take();
  if (out.size() > kMaxReceiptSize) return Error(StatusCode::kInvalidArgument, "receipt too large");
  return out;
}

Result<ConsentReceipt> DecodeReceipt(ByteView bytes) {
  if (bytes.size() > kMaxReceiptSize) return Error(StatusCode::kMalformed, "receipt too large");
  CW_RETURN_IF_ERROR(internal::CheckHeader(bytes, kReceiptFormatVersion, "receipt"));
  internal::Limits limits;
  limits.array = 16;  // the widest array: 16 purposes or categories
  limits.str = kMaxTextSize;
  limits.bin = kXEdDSAPublicKeySize;
  limits.depth = 6;  // receipt > services > service > purposes > purpose > categories
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return Error(StatusCode::kMalformed, "receipt is not valid msgpack within limits");
  const auto bad = [] { return Error(StatusCode::kMalformed, "receipt field has wrong type or size"); };

  ConsentReceipt r;
  uint64_t format = 0;
  const msgpack::object *header = nullptr, *sensitivity = nullptr, *retention = nullptr, *binding = nullptr;
  const msgpack::object_array *controllers = nullptr, *services = nullptr, *signers = nullptr;
  Fields root(handle->get(), 9);
  root.Uint(&format)
      .Any(&header)
      .Str(&r.principal_id, 64)
      .Array(&controllers, kMaxControllers)
      .Array(&services, kMaxServices)
      .Any(&sensitivity)
      .Any(&retention)
      .Any(&binding)
      .Array(&signers, 2);
  if (!root.ok() || signers->size != 2) return bad();

  Fields h(*header, 7);
  h.Str(&r.version, kMaxTextSize)
      .Str(&r.receipt_id, 128)
      .Int(&r.consent_timestamp_ms)
      .Str(&r.jurisdiction, kMaxTextSize)
      .Str(&r.collection_method, kMaxTextSize)
      .Str(&r.language, kMaxTextSize)
      .Str(&r.policy_url, kMaxTextSize);
  if (!h.ok()) return bad();

  for (uint32_t i = 0; i < controllers->size; ++i) {
    Controller c;
    Fields f(controllers->ptr[i], 7);
    f.Str(&c.id, 128)
        .Str(&c.name, kMaxTextSize)
        .Str(&c.contact, kMaxTextSize)
        .Str(&c.address, kMaxTextSize)
        .Str(&c.email, kMaxTextSize)
        .Str(&c.phone, kMaxTextSize)
        .Str(&c.url, kMaxTextSize);
    if (!f.ok()) return bad();
    r.controllers.push_back(std::move(c));
  }
  for (uint32_t i = 0; i < services->size; ++i) {
    Service s;
    const msgpack::object_array* purposes = nullptr;
    Fields f(services->ptr[i], 2);
    f.Str(&s.service, kMaxTextSize).Array(&purposes, kMaxPurposesPerService);
    if (!f.ok()) return bad();
    for (uint32_t j = 0; j < purposes->size; ++j) {
      Purpose u;
      uint64_t type = 0;
      const msgpack::object_array* categories = nullptr;
      Fields g(purposes->ptr[j], 8);
      g.Str(&u.purpose, 66)
          .Str(&u.purpose_category, kMaxTextSize)
          .Uint(&type)
          .Array(&categories, kMaxCategories)
          .Bool(&u.primary_purpose)
          .Str(&u.termination, kMaxTextSize)
          .Bool(&u.third_party_disclosure)
          .Str(&u.third_party_name, kMaxTextSize);
      if (!g.ok() || type < 1 || type > 2 || !ReadStrings(*categories, &u.pii_categories, kMaxTextSize))
        return bad();
      u.consent_type = static_cast<ConsentType>(type);
      s.purposes.push_back(std::move(u));
    }
    r.services.push_back(std::move(s));
  }
  const msgpack::object_array* spi = nullptr;
  Fields sf(*sensitivity, 2);
  sf.Bool(&r.sensitive).Array(&spi, kMaxCategories);
  if (!sf.ok() || !ReadStrings(*spi, &r.spi_categories, kMaxTextSize)) return bad();
  Fields rf(*retention, 4);
  rf.Str(&r.retention_period, kMaxTextSize)
      .Int(&r.expires_at_ms)
      .Str(&r.withdrawal_method, kMaxTextSize)
      .Str(&r.lawful_basis, kMaxTextSize);
  if (!rf.ok()) return bad();
  Fields bf(*binding, 3);
  bf.Bin(&r.binding.patient_identity_key, kIdentityKeySize)
      .Bin(&r.binding.clinician_identity_key, kIdentityKeySize)
      .Str(&r.binding.safety_number, kSafetyNumberDigits);
  if (!bf.ok()) return bad();
  if (!ReadKey(signers->ptr[0], &r.patient_key) || !ReadKey(signers->ptr[1], &r.clinician_key)) return bad();

  Status valid = ValidateReceipt(r);
  if (!valid.ok()) return Error(StatusCode::kMalformed, "receipt breaks a rule: " + valid.message());
  // Canonical: the bytes must be exactly what we would write, so the signatures cover the value.
  auto again = EncodeReceipt(r);
  if (!again || !std::equal(again->begin(), again->end(), bytes.begin(), bytes.end())) {
    return Error(StatusCode::kMalformed, "receipt is not in canonical form");
  }
  return r;
}

Result<SignedConsentReceipt> SignReceipt(const ConsentReceipt& receipt, Signer& patient) {
  if (!(patient.public_key() == receipt.patient_key)) {
    return Error(StatusCode::kInvalidArgument, "signer is not the receipt's patient key");
  }
  SignedConsentReceipt s;
  CW_ASSIGN_OR_RETURN(s.receipt_bytes, EncodeReceipt(receipt));
  s.receipt = receipt;
  CW_ASSIGN_OR_RETURN(s.patient_signature, patient.Sign(PatientMessage(s.receipt_bytes)));
  return s;
}

Status CountersignReceipt(SignedConsentReceipt* s, const SessionBinding& session, Signer& clinician,
                          const Verifier& verifier) {
  if (!(clinician.public_key() == s->receipt.clinician_key)) {
    return Status(StatusCode::kInvalidArgument, "signer is not the receipt's clinician key");
  }
  if (!(s->receipt.binding == session))
    return Status(StatusCode::kPermissionDenied, "receipt is for another session");
  CW_RETURN_IF_ERROR(
      verifier.Verify(s->receipt.patient_key, PatientMessage(s->receipt_bytes), s->patient_signature));
  CW_ASSIGN_OR_RETURN(s->clinician_signature,
                      clinician.Sign(ClinicianMessage(s->receipt_bytes, s->patient_signature)));
  return Status::Ok();
}

Result<Bytes> EncodeSignedReceipt(const SignedConsentReceipt& s) {
  if (s.patient_signature.size() != kSignatureSize || s.clinician_signature.size() != kSignatureSize) {
    return Error(StatusCode::kInvalidArgument, "receipt is not signed and countersigned");
  }
  Packer p;
  p.Array(4)
      .Uint(kReceiptFormatVersion)
      .Bin(s.receipt_bytes)
      .Bin(s.patient_signature)
      .Bin(s.clinician_signature);
  return p.Take();
}

Result<SignedConsentReceipt> DecodeSignedReceipt(ByteView bytes) {
  if (bytes.size() > kMaxReceiptSize + 2 * kSignatureSize + 16) {
    return Error(StatusCode::kMalformed, "signed receipt too large");
  }
  CW_RETURN_IF_ERROR(internal::CheckHeader(bytes, kReceiptFormatVersion, "signed receipt"));
  internal::Limits limits;
  limits.array = 4;
  limits.str = 0;
  limits.bin = kMaxReceiptSize;
  limits.depth = 1;
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return Error(StatusCode::kMalformed, "signed receipt is not valid msgpack within limits");
  SignedConsentReceipt s;
  uint64_t version = 0;
  Fields f(handle->get(), 4);
  f.Uint(&version)
      .Bin(&s.receipt_bytes, kMaxReceiptSize)
      .Bin(&s.patient_signature, kSignatureSize)
      .Bin(&s.clinician_signature, kSignatureSize);
  if (!f.ok() || s.patient_signature.size() != kSignatureSize ||
      s.clinician_signature.size() != kSignatureSize) {
    return Error(StatusCode::kMalformed, "signed receipt field has wrong type or size");
  }
  CW_ASSIGN_OR_RETURN(s.receipt, DecodeReceipt(s.receipt_bytes));
  return s;
}

Result<Bytes> EncodeReceiptRequest(const SignedConsentReceipt& s) {
  if (s.patient_signature.size() != kSignatureSize) {
    return Error(StatusCode::kInvalidArgument, "receipt request is not signed by the patient");
  }
  Packer p;
  p.Array(3).Uint(kReceiptFormatVersion).Bin(s.receipt_bytes).Bin(s.patient_signature);
  return p.Take();
}

Result<SignedConsentReceipt> DecodeReceiptRequest(ByteView bytes) {
  if (bytes.size() > kMaxReceiptSize + kSignatureSize + 16) {
    return Error(StatusCode::kMalformed, "receipt request too large");
  }
  CW_RETURN_IF_ERROR(internal::CheckHeader(bytes, kReceiptFormatVersion, "receipt request"));
  internal::Limits limits;
  limits.array = 3;
  limits.str = 0;
  limits.bin = kMaxReceiptSize;
  limits.depth = 1;
  auto handle = internal::UnpackOne(bytes, limits);
  if (!handle) return Error(StatusCode::kMalformed, "receipt request is not valid msgpack within limits");
  SignedConsentReceipt s;
  uint64_t version = 0;
  Fields f(handle->get(), 3);
  f.Uint(&version).Bin(&s.receipt_bytes, kMaxReceiptSize).Bin(&s.patient_signature, kSignatureSize);
  if (!f.ok() || s.patient_signature.size() != kSignatureSize) {
    return Error(StatusCode::kMalformed, "receipt request field has wrong type or size");
  }
  CW_ASSIGN_OR_RETURN(s.receipt, DecodeReceipt(s.receipt_bytes));
  return s;
}

Status VerifyReceiptSelfConsistent(const SignedConsentReceipt& s, const Verifier& verifier) {
  // The struct and the signed bytes must agree: a caller that edits `receipt` after signing gets a failure,
  // not a verified receipt whose fields were never signed.
  auto encoded = EncodeReceipt(s.receipt);
  if (!encoded || *encoded != s.receipt_bytes) {
    return Status(StatusCode::kBadSignature, "receipt fields differ from the signed bytes");
  }
  if (!verifier.Verify(s.receipt.patient_key, PatientMessage(s.receipt_bytes), s.patient_signature).ok()) {
    return Status(StatusCode::kBadSignature, "patient signature does not verify");
  }
  if (!verifier
           .Verify(s.receipt.clinician_key, ClinicianMessage(s.receipt_bytes, s.patient_signature),
                   s.clinician_signature)
           .ok()) {
    return Status(StatusCode::kBadSignature, "clinician countersignature does not verify");
  }
  return Status::Ok();
}

Status VerifyReceipt(const SignedConsentReceipt& s, const ReceiptExpectations& expect,
                     const Verifier& verifier) {
  if (!(s.receipt.binding == expect.session)) {
    return Status(StatusCode::kPermissionDenied, "receipt is bound to another session");
  }
  if (!(s.receipt.patient_key == expect.patient_key)) {
    return Status(StatusCode::kBadSignature, "receipt is signed by a key other than the patient's");
  }
  if (!(s.receipt.clinician_key == expect.clinician_key)) {
    return Status(StatusCode::kBadSignature, "receipt is countersigned by a key other than the clinician's");
  }
  return VerifyReceiptSelfConsistent(s, verifier);
}

Digest ReceiptDigest(const SignedConsentReceipt& s) {
  auto encoded = EncodeSignedReceipt(s);
  if (!encoded) return Blake2b256({s.receipt_bytes, s.patient_signature, s.clinician_signature});
  return Blake2b256({*encoded});
}

Result<ConsentWithdrawal> Withdraw(const SignedConsentReceipt& s, std::vector<std::string> purposes,
                                   const Clock& clock, Signer& patient) {
  if (!(patient.public_key() == s.receipt.patient_key)) {
    return Error(StatusCode::kInvalidArgument, "only the receipt's patient can withdraw it");
  }
  if (purposes.size() > kMaxServices * kMaxPurposesPerService)
    return Error(StatusCode::kInvalidArgument, "too many purposes");
  std::sort(purposes.begin(), purposes.end());
  purposes.erase(std::unique(purposes.begin(), purposes.end()), purposes.end());
  for (const auto& p : purposes) {
    if (!ReceiptHasPurpose(s.receipt, p))
      return Error(StatusCode::kInvalidArgument, "purpose is not in the receipt");
  }
  ConsentWithdrawal w;
  w.receipt_id = s.receipt.receipt_id;
  w.receipt_digest = ReceiptDigest(s);
  w.withdrawn_at_ms = clock.NowMillis();
  w.purposes = std::move(purposes);
  w.signer = patient.public_key();
  CW_ASSIGN_OR_RETURN(w.signature, patient.Sign(SignedMessage(kWithdrawalDomain, WithdrawalBody(w))));
  return w;
}

Result<Bytes> EncodeWithdrawal(const ConsentWithdrawal& w) {
  if (!IsValidId(w.receipt_id) || !IsWellFormed(w.signer) || w.signature.size() != kSignatureSize ||
      w.withdrawn_at_ms < 0 || w.purposes.size() > kMaxServices * kMaxPurposesPerService) {
    return Error(StatusCode::kInvalidArgument, "withdrawal is incomplete");
  }
  for (size_t i = 0; i < w.purposes.size(); ++i) {
    if (!IsValidPurposeLabel(w.purposes[i]) || (i > 0 && w.purposes[i - 1] >= w.purposes[i])) {
      return Error(StatusCode::kInvalidArgument, "withdrawn purposes must be sorted, distinct labels");
    }
  }
  Packer p;
  p.Array(2).Bin(WithdrawalBody(w)).Bin(w.signature);
  return p.Take();
}

Result<ConsentWithdrawal> DecodeWithdrawal(ByteView bytes) {
  if (bytes.size() > kMaxWithdrawalSize) return Error(StatusCode::kMalformed, "withdrawal too large");
  internal::Limits outer;
  outer.array = 2;
  outer.str = 0;
  outer.bin = kMaxWithdrawalSize;
  outer.depth = 1;
  auto handle = internal::UnpackOne(bytes, outer);
  if (!handle) return Error(StatusCode::kMalformed, "withdrawal is not valid msgpack within limits");
  Bytes body;
  ConsentWithdrawal w;
  Fields f(handle->get(), 2);
  f.Bin(&body, kMaxWithdrawalSize).Bin(&w.signature, kSignatureSize);
  if (!f.ok()) return Error(StatusCode::kMalformed, "withdrawal field has wrong type or size");
  CW_RETURN_IF_ERROR(internal::CheckHeader(body, kWithdrawalVersion, "withdrawal"));
  internal::Limits limits;
  limits.array = kMaxServices * kMaxPurposesPerService;
  limits.str = 128;
  limits.bin = kDigestSize + 1;
  limits.depth = 3;
  auto inner = internal::UnpackOne(body, limits);
  if (!inner) return Error(StatusCode::kMalformed, "withdrawal body is not valid msgpack within limits");
  uint64_t version = 0;
  Bytes digest;
  const msgpack::object_array* purposes = nullptr;
  const msgpack::object* signer = nullptr;
  Fields g(inner->get(), 6);
  g.Uint(&version)
      .Str(&w.receipt_id, 128)
      .Bin(&digest, kDigestSize)
      .Int(&w.withdrawn_at_ms)
      .Array(&purposes, kMaxServices * kMaxPurposesPerService)
      .Any(&signer);
  if (!g.ok() || digest.size() != kDigestSize || !ReadStrings(*purposes, &w.purposes, 66) ||
      !ReadKey(*signer, &w.signer)) {
    return Error(StatusCode::kMalformed, "withdrawal field has wrong type or size");
  }
  std::copy(digest.begin(), digest.end(), w.receipt_digest.begin());
  auto again = EncodeWithdrawal(w);
  if (!again) return Error(StatusCode::kMalformed, "withdrawal breaks a rule: " + again.error().message());
  if (!std::equal(again->begin(), again->end(), bytes.begin(), bytes.end())) {
    return Error(StatusCode::kMalformed, "withdrawal is not in canonical form");
  }
  return w;
}

Status VerifyWithdrawal(const ConsentWithdrawal& w, const SignedConsentReceipt& s, const Verifier& verifier) {
  if (w.receipt_id != s.receipt.receipt_id || w.receipt_digest != ReceiptDigest(s)) {
    return Status(StatusCode::kInvalidArgument, "withdrawal names another receipt");
  }
  if (!(w.signer == s.receipt.patient_key)) {
    return Status(StatusCode::kBadSignature, "withdrawal is not signed by the receipt's patient");
  }
  for (const auto& p : w.purposes) {
    if (!ReceiptHasPurpose(s.receipt, p))
      return Status(StatusCode::kInvalidArgument, "purpose is not in the receipt");
  }
  if (w.signature.size() != kSignatureSize)
    return Status(StatusCode::kBadSignature, "withdrawal signature missing");
  return verifier.Verify(w.signer, SignedMessage(kWithdrawalDomain, WithdrawalBody(w)), w.signature);
}

std::string ReceiptToKantaraJson(const SignedConsentReceipt& s) {
  using nlohmann::json;
  const ConsentReceipt& r = s.receipt;
  auto key_json = [](const SigningPublicKey& k) {
    return json{{"scheme", k.scheme == SignatureScheme::kEd25519 ? "Ed25519" : "XEdDSA-25519"},
                {"key", ToHex(k.key)}};
  };
  json controllers = json::array();
  for (const auto& c : r.controllers) {
    controllers.push_back({{"piiController", c.name},
                           {"onBehalf", false},
                           {"contact", c.contact},
                           {"address", c.address},
                           {"email", c.email},
                           {"phone", c.phone},
                           {"piiControllerUrl", c.url},
                           {"controllerId", c.id}});
  }
  json services = json::array();
  for (const auto& sv : r.services) {
    json purposes = json::array();
    for (const auto& p : sv.purposes) {
      purposes.push_back({{"purpose", p.purpose},
                          {"purposeCategory", json::array({p.purpose_category})},
                          {"consentType", p.consent_type == ConsentType::kExplicit ? "EXPLICIT" : "IMPLIED"},
                          {"piiCategory", p.pii_categories},
                          {"primaryPurpose", p.primary_purpose},
                          {"termination", p.termination},
                          {"thirdPartyDisclosure", p.third_party_disclosure},
                          {"thirdPartyName", p.third_party_name}});
    }
    services.push_back({{"service", sv.service}, {"purposes", purposes}});
  }
  json j = {
      {"version", r.version},
      {"jurisdiction", r.jurisdiction},
      {"consentTimestamp", r.consent_timestamp_ms / 1000},
      {"collectionMethod", r.collection_method},
      {"consentReceiptID", r.receipt_id},
      {"publicKey", ToHex(r.patient_key.key)},
      {"language", r.language},
      {"piiPrincipalId", r.principal_id},
      {"piiControllers", controllers},
      {"policyUrl", r.policy_url},
      {"services", services},
      {"sensitive", r.sensitive},
      {"spiCat", r.spi_categories},
      {"cipherward",
       {{"consentTimestampMs", r.consent_timestamp_ms},
        {"expiresAtMs", r.expires_at_ms},
        {"retentionPeriod", r.retention_period},
        {"withdrawalMethod", r.withdrawal_method},
        {"lawfulBasis", r.lawful_basis},
        {"session",
         {{"patientIdentityKey", ToHex(r.binding.patient_identity_key)},
          {"clinicianIdentityKey", ToHex(r.binding.clinician_identity_key)},
          {"safetyNumber", r.binding.safety_number}}},
        {"patientKey", key_json(r.patient_key)},
        {"clinicianKey", key_json(r.clinician_key)},
        {"receiptBytes", ToHex(s.receipt_bytes)},
        {"patientSignature", ToHex(s.patient_signature)},
        {"clinicianSignature", ToHex(s.clinician_signature)}}},
  };
  // Free text came from people; bytes that are not UTF-8 are shown replaced rather than failing the export
  // (the signed bytes, in hex above, stay authoritative).
  return j.dump(2, ' ', false, json::error_handler_t::replace);
}

}  // namespace cw::compliance
