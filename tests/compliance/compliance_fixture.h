// Shared test fixtures for cw_compliance: deterministic Ed25519 parties, a full consent receipt bound to a
// session, and an XEdDSA signer over a real Curve25519 identity key pair (what the runtime does with the
// engine's identity key), built through libsignal with a provider that only supplies randomness.
#pragma once

#include <gtest/gtest.h>
#include <signal/curve.h>
#include <signal/signal_protocol.h>
#include <sodium.h>

#include <memory>
#include <ostream>
#include <string>

#include "core/base/clock.h"
#include "core/base/random.h"
#include "core/compliance/consent.h"
#include "core/compliance/signing.h"

namespace cw {
inline void PrintTo(StatusCode code, std::ostream* os) { *os << StatusCodeName(code); }
inline void PrintTo(const Status& status, std::ostream* os) { *os << status.ToString(); }
}  // namespace cw

namespace cw::compliance::testing {

inline std::unique_ptr<Ed25519Signer> SignerFromByte(uint8_t b) {
  Bytes seed(32, b);
  auto s = Ed25519Signer::FromSeed(seed);
  EXPECT_TRUE(s.has_value());
  return std::move(*s);
}

inline Bytes IdentityKey(uint8_t b) {
  Bytes k(kIdentityKeySize, b);
  k[0] = 0x05;
  return k;
}

inline SessionBinding Binding(uint8_t patient = 0x11, uint8_t clinician = 0x22,
                              std::string digits = std::string(60, '7')) {
  return SessionBinding{IdentityKey(patient), IdentityKey(clinician), std::move(digits)};
}

inline Purpose MakePurpose(std::string label, std::string category) {
  Purpose p;
  p.purpose = std::move(label);
  p.purpose_category = std::move(category);
  p.pii_categories = {"messages", "appointment times"};
  p.termination = "until withdrawn or the care relationship ends";
  return p;
}

inline ConsentReceipt MakeReceipt(const SessionBinding& binding, const SigningPublicKey& patient,
                                  const SigningPublicKey& clinician,
                                  std::string id = "0123456789abcdef0123456789abcdef",
                                  int64_t now = 1'700'000'000'000) {
  ConsentReceipt r;
  r.receipt_id = std::move(id);
  r.consent_timestamp_ms = now;
  r.jurisdiction = "US-CA";
  r.collection_method = "in-app consent screen";
  r.policy_url = "https://riverside.example/privacy";
  r.principal_id = IdentityFingerprint(binding.patient_identity_key);
  Controller c;
  c.id = "npi:1234567893";
  c.name = "Riverside Clinic";
  c.contact = "Privacy Office";
  c.email = "privacy@riverside.example";
  c.phone = "+1 555 0100";
  r.controllers = {c};
  Service s;
  s.service = "Secure messaging with Riverside Clinic";
  s.purposes = {MakePurpose("treatment", "Health care delivery"), MakePurpose("scheduling", "Appointments"),
                MakePurpose("billing", "Payment"), MakePurpose("marketing", "Marketing")};
  s.purposes[3].primary_purpose = false;
  r.services = {s};
  r.retention_period = "P6Y";
  r.expires_at_ms = now + 365LL * 24 * 3600 * 1000;
  r.withdrawal_method = "Settings > Consent > Withdraw in the app, or message the clinic";
  r.binding = binding;
  r.patient_key = patient;
  r.clinician_key = clinician;
  return r;
}

// The parties of the standard test session, with Ed25519 keys.
struct Parties {
  std::unique_ptr<Ed25519Signer> patient = SignerFromByte(1);
  std::unique_ptr<Ed25519Signer> clinician = SignerFromByte(2);
  std::unique_ptr<Ed25519Signer> mallory = SignerFromByte(3);
  SessionBinding session = Binding();
  StandardVerifier verifier;

  ReceiptExpectations Expect() const { return {session, patient->public_key(), clinician->public_key()}; }

  SignedConsentReceipt Signed(ConsentReceipt r) {
    auto s = SignReceipt(r, *patient);
    EXPECT_TRUE(s.has_value()) << s.error().ToString();
    Status st = CountersignReceipt(&*s, session, *clinician, verifier);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return std::move(*s);
  }
  SignedConsentReceipt Signed(std::string id = "0123456789abcdef0123456789abcdef",
                              int64_t now = 1'700'000'000'000) {
    return Signed(MakeReceipt(session, patient->public_key(), clinician->public_key(), std::move(id), now));
  }
};

// XEdDSA over a Curve25519 identity key pair, through libsignal, as the runtime signs with the engine's
// identity key. Test-only: it holds the private key itself.
class XEdDSATestSigner final : public Signer {
 public:
  XEdDSATestSigner() {
    signal_context_create(&context_, nullptr);
    signal_crypto_provider provider = {};
    provider.random_func = [](uint8_t* data, size_t len, void*) -> int {
      randombytes_buf(data, len);
      return 0;
    };
    // libsignal insists on a complete provider; XEdDSA needs only randomness, so the rest fail if called.
    provider.hmac_sha256_init_func = [](void**, const uint8_t*, size_t, void*) -> int {
      return SG_ERR_UNKNOWN;
    };
    provider.hmac_sha256_update_func = [](void*, const uint8_t*, size_t, void*) -> int {
      return SG_ERR_UNKNOWN;
    };
    provider.hmac_sha256_final_func = [](void*, signal_buffer**, void*) -> int { return SG_ERR_UNKNOWN; };
    provider.hmac_sha256_cleanup_func = [](void*, void*) {};
    provider.sha512_digest_init_func = [](void**, void*) -> int { return SG_ERR_UNKNOWN; };
    provider.sha512_digest_update_func = [](void*, const uint8_t*, size_t, void*) -> int {
      return SG_ERR_UNKNOWN;
    };
    provider.sha512_digest_final_func = [](void*, signal_buffer**, void*) -> int { return SG_ERR_UNKNOWN; };
    provider.sha512_digest_cleanup_func = [](void*, void*) {};
    provider.encrypt_func = [](signal_buffer**, int, const uint8_t*, size_t, const uint8_t*, size_t,
                               const uint8_t*, size_t, void*) -> int { return SG_ERR_UNKNOWN; };
    provider.decrypt_func = provider.encrypt_func;
    EXPECT_EQ(signal_context_set_crypto_provider(context_, &provider), 0);
    ec_key_pair* pair = nullptr;
    EXPECT_EQ(curve_generate_key_pair(context_, &pair), 0);
    private_key_ = ec_key_pair_get_private(pair);
    SIGNAL_REF(private_key_);
    signal_buffer* serialized = nullptr;
    EXPECT_EQ(ec_public_key_serialize(&serialized, ec_key_pair_get_public(pair)), 0);
    public_key_.scheme = SignatureScheme::kXEdDSA;
    public_key_.key.assign(signal_buffer_data(serialized),
                           signal_buffer_data(serialized) + signal_buffer_len(serialized));
    signal_buffer_free(serialized);
    SIGNAL_UNREF(pair);
  }
  ~XEdDSATestSigner() override {
    SIGNAL_UNREF(private_key_);
    signal_context_destroy(context_);
  }
  const SigningPublicKey& public_key() const override { return public_key_; }
  Result<Bytes> Sign(ByteView message) override {
    signal_buffer* sig = nullptr;
    if (curve_calculate_signature(context_, &sig, private_key_, message.data(), message.size()) != 0) {
      return Error(StatusCode::kInternal, "XEdDSA signing failed");
    }
    Bytes out(signal_buffer_data(sig), signal_buffer_data(sig) + signal_buffer_len(sig));
    signal_buffer_free(sig);
    return out;
  }

 private:
  signal_context* context_ = nullptr;
  ec_private_key* private_key_ = nullptr;
  SigningPublicKey public_key_;
};

}  // namespace cw::compliance::testing
