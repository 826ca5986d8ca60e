#include "core/compliance/signing.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include "tests/compliance/compliance_fixture.h"

namespace cw::compliance {
namespace {

using testing::SignerFromByte;
using testing::XEdDSATestSigner;

TEST(ComplianceSignerTest, Ed25519SignsAndOnlyItsKeyVerifies) {
  auto alice = SignerFromByte(1);
  auto bob = SignerFromByte(2);
  StandardVerifier v;
  const Bytes msg = ToBytes("checkpoint 42");
  auto sig = alice->Sign(msg);
  ASSERT_TRUE(sig.has_value());
  EXPECT_EQ(sig->size(), kSignatureSize);
  EXPECT_TRUE(v.Verify(alice->public_key(), msg, *sig).ok());
  EXPECT_EQ(v.Verify(bob->public_key(), msg, *sig).code(), StatusCode::kBadSignature);
  EXPECT_EQ(v.Verify(alice->public_key(), ToBytes("checkpoint 43"), *sig).code(), StatusCode::kBadSignature);
  Bytes bad = *sig;
  bad[10] ^= 1;
  EXPECT_EQ(v.Verify(alice->public_key(), msg, bad).code(), StatusCode::kBadSignature);
  EXPECT_EQ(v.Verify(alice->public_key(), msg, ByteView(sig->data(), 63)).code(), StatusCode::kBadSignature);
  // The same seed is the same key (a key derived from the keystore is stable across restarts).
  EXPECT_EQ(SignerFromByte(1)->public_key(), alice->public_key());
  EXPECT_FALSE(Ed25519Signer::FromSeed(Bytes(31, 0)).has_value());
}

TEST(ComplianceSignerTest, XEdDSAIdentityKeySignaturesVerifyWithThePublicIdentityKeyOnly) {
  XEdDSATestSigner identity;
  StandardVerifier v;
  ASSERT_EQ(identity.public_key().key.size(), kXEdDSAPublicKeySize);
  ASSERT_EQ(identity.public_key().key[0], 0x05);
  const Bytes msg = ToBytes("consent receipt bytes");
  auto sig = identity.Sign(msg);
  ASSERT_TRUE(sig.has_value());
  EXPECT_TRUE(v.Verify(identity.public_key(), msg, *sig).ok());
  Bytes other = msg;
  other[0] ^= 1;
  EXPECT_EQ(v.Verify(identity.public_key(), other, *sig).code(), StatusCode::kBadSignature);
  XEdDSATestSigner someone_else;
  EXPECT_EQ(v.Verify(someone_else.public_key(), msg, *sig).code(), StatusCode::kBadSignature);
  // The scheme is part of the key: the same bytes as an Ed25519 key do not verify.
  SigningPublicKey wrong_scheme{SignatureScheme::kEd25519, identity.public_key().key};
  EXPECT_EQ(v.Verify(wrong_scheme, msg, *sig).code(), StatusCode::kBadSignature);
  // A key that is not a point of the right type is refused, not crashed on.
  SigningPublicKey junk{SignatureScheme::kXEdDSA, Bytes(33, 0xff)};
  EXPECT_EQ(v.Verify(junk, msg, *sig).code(), StatusCode::kBadSignature);
}

TEST(ComplianceSignerTest, Blake2b256AndFingerprints) {
  // BLAKE2b-256 of "abc" (RFC 7693 test vector is for BLAKE2b-512; this one is from libsodium directly).
  uint8_t expected[32];
  crypto_generichash(expected, 32, reinterpret_cast<const uint8_t*>("abc"), 3, nullptr, 0);
  const Digest d = Blake2b256({AsBytes("a"), AsBytes("bc")});
  EXPECT_EQ(ToHex(d), ToHex(ByteView(expected, 32)));
  EXPECT_EQ(ToHex(d), "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  const std::string f = IdentityFingerprint(testing::IdentityKey(0x11));
  EXPECT_EQ(f.size(), 64u);
  EXPECT_NE(f, IdentityFingerprint(testing::IdentityKey(0x12)));
  EXPECT_TRUE(IsValidId(f));
  EXPECT_FALSE(IsValidId("take 5 mg"));
  EXPECT_FALSE(IsValidId(""));
  EXPECT_FALSE(IsValidId(std::string(129, 'a')));
}

}  // namespace
}  // namespace cw::compliance
