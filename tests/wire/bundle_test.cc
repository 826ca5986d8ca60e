#include "core/wire/bundle.h"

#include <gtest/gtest.h>

#include "tests/wire/print_status.h"

#include <random>

#include "tests/wire/msgpack_writer.h"

namespace cw::wire {
namespace {

using testing::MsgpackWriter;

PublicKey Key(uint8_t seed) {
  PublicKey k;
  k[0] = 0x05;
  for (size_t i = 1; i < k.size(); ++i) k[i] = static_cast<uint8_t>(seed + i * 7);
  return k;
}

PreKeyBundle SampleBundle(bool with_one_time_pre_key) {
  PreKeyBundle b;
  b.registration_id = 12345;
  b.device_id = 3;
  b.identity_key = Key(1);
  b.signed_pre_key.id = 0x00abcdef;
  b.signed_pre_key.public_key = Key(2);
  for (size_t i = 0; i < b.signed_pre_key.signature.size(); ++i) {
    b.signed_pre_key.signature[i] = static_cast<uint8_t>(0xff - i);
  }
  if (with_one_time_pre_key) b.one_time_pre_key = OneTimePreKeyPublic{.id = 77, .public_key = Key(3)};
  return b;
}

// The fields of a bundle written by hand, so single fields can be made wrong.
struct Fields {
  uint64_t version = kBundleVersion;
  uint64_t registration_id = 1;
  uint64_t device_id = 1;
  size_t identity_key_size = kPublicKeySize;
  uint64_t spk_id = 1;
  size_t spk_size = kPublicKeySize;
  size_t signature_size = kSignatureSize;
  bool otpk_id_present = true;
  bool otpk_present = true;
  size_t otpk_size = kPublicKeySize;
};

Bytes HandWritten(const Fields& f) {
  MsgpackWriter w;
  w.Array(9).Uint(f.version).Uint(f.registration_id).Uint(f.device_id).Bin(f.identity_key_size, 0x05);
  w.Uint(f.spk_id).Bin(f.spk_size, 0x05).Bin(f.signature_size, 0xaa);
  if (f.otpk_id_present) {
    w.Uint(9);
  } else {
    w.Nil();
  }
  if (f.otpk_present) {
    w.Bin(f.otpk_size, 0x05);
  } else {
    w.Nil();
  }
  return w.bytes();
}

TEST(BundleTest, RoundTripWithOneTimePreKey) {
  PreKeyBundle b = SampleBundle(true);
  Bytes encoded = EncodeBundle(b);
  EXPECT_LE(encoded.size(), kMaxBundleSize);
  auto decoded = DecodeBundle(encoded);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(*decoded, b);
  ASSERT_TRUE(decoded->one_time_pre_key.has_value());
  EXPECT_EQ(decoded->one_time_pre_key->id, 77u);
}

TEST(BundleTest, RoundTripWithoutOneTimePreKey) {
  PreKeyBundle b = SampleBundle(false);
  auto decoded = DecodeBundle(EncodeBundle(b));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(*decoded, b);
  EXPECT_FALSE(decoded->one_time_pre_key.has_value());
}

TEST(BundleTest, RoundTripKeepsExtremeIds) {
  for (uint32_t v : {0u, 1u, 127u, 128u, 255u, 256u, 65535u, 65536u, UINT32_MAX}) {
    PreKeyBundle b = SampleBundle(true);
    b.registration_id = v;
    b.device_id = v;
    b.signed_pre_key.id = v;
    b.one_time_pre_key->id = v;
    auto decoded = DecodeBundle(EncodeBundle(b));
    ASSERT_TRUE(decoded.has_value()) << v << ": " << decoded.error().ToString();
    EXPECT_EQ(*decoded, b) << v;
  }
}

TEST(BundleTest, HandWrittenBundleDecodes) {
  // Guards the hand-written variants below: with nothing wrong, they parse.
  auto decoded = DecodeBundle(HandWritten(Fields{}));
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  ASSERT_TRUE(decoded->one_time_pre_key.has_value());
  EXPECT_EQ(decoded->one_time_pre_key->id, 9u);
  Fields no_otpk;
  no_otpk.otpk_id_present = false;
  no_otpk.otpk_present = false;
  auto decoded2 = DecodeBundle(HandWritten(no_otpk));
  ASSERT_TRUE(decoded2.has_value()) << decoded2.error().ToString();
  EXPECT_FALSE(decoded2->one_time_pre_key.has_value());
}

TEST(BundleTest, UnknownVersionIsUnsupported) {
  for (uint64_t version : {0ull, 2ull, 3ull, 127ull, 255ull, 0xffffffffull}) {
    Fields f;
    f.version = version;
    auto r = DecodeBundle(HandWritten(f));
    ASSERT_FALSE(r.has_value()) << version;
    EXPECT_EQ(r.error().code(), StatusCode::kUnsupportedVersion) << version << ": " << r.error().ToString();
  }
  // Version 1's bytes with the version field edited in place.
  Bytes encoded = EncodeBundle(SampleBundle(true));
  ASSERT_EQ(encoded[1], kBundleVersion);
  encoded[1] = 2;
  auto r = DecodeBundle(encoded);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnsupportedVersion);
}

TEST(BundleTest, FutureVersionWithMoreFieldsIsUnsupportedNotMalformed) {
  // A later version may carry more fields; a v1 reader must say "unsupported version", so the client can
  // tell the user to update, rather than "malformed".
  MsgpackWriter w;
  w.Array(11).Uint(2).Uint(1).Uint(1).Bin(kPublicKeySize, 5).Uint(1).Bin(kPublicKeySize, 5);
  w.Bin(kSignatureSize, 1).Nil().Nil().Uint(1).Uint(2);
  auto r = DecodeBundle(w.bytes());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnsupportedVersion);
}

TEST(BundleTest, TruncatedAtEveryLengthIsMalformed) {
  for (bool otpk : {true, false}) {
    Bytes encoded = EncodeBundle(SampleBundle(otpk));
    for (size_t len = 0; len < encoded.size(); ++len) {
      auto r = DecodeBundle(ByteView(encoded.data(), len));
      ASSERT_FALSE(r.has_value()) << "length " << len;
      EXPECT_EQ(r.error().code(), StatusCode::kMalformed) << "length " << len << ": " << r.error().ToString();
    }
  }
}

TEST(BundleTest, TrailingBytesAreMalformed) {
  for (bool otpk : {true, false}) {
    for (const Bytes& tail : {Bytes{0x00}, Bytes{0xc0}, Bytes{0x01, 0x02}, EncodeBundle(SampleBundle(otpk))}) {
      Bytes encoded = EncodeBundle(SampleBundle(otpk));
      encoded.insert(encoded.end(), tail.begin(), tail.end());
      auto r = DecodeBundle(encoded);
      ASSERT_FALSE(r.has_value());
      EXPECT_EQ(r.error().code(), StatusCode::kMalformed);
    }
  }
}

TEST(BundleTest, WrongSizeKeysAreMalformed) {
  for (size_t size : {size_t{0}, size_t{1}, kPublicKeySize - 1, kPublicKeySize + 1, size_t{64}}) {
    Fields identity;
    identity.identity_key_size = size;
    Fields spk;
    spk.spk_size = size;
    Fields otpk;
    otpk.otpk_size = size;
    for (const Fields& f : {identity, spk, otpk}) {
      auto r = DecodeBundle(HandWritten(f));
      ASSERT_FALSE(r.has_value()) << size;
      EXPECT_EQ(r.error().code(), StatusCode::kMalformed) << size;
    }
  }
  for (size_t size : {size_t{0}, kSignatureSize - 1, kSignatureSize + 1}) {
    Fields f;
    f.signature_size = size;
    auto r = DecodeBundle(HandWritten(f));
    ASSERT_FALSE(r.has_value()) << size;
    EXPECT_EQ(r.error().code(), StatusCode::kMalformed) << size;
  }
}

TEST(BundleTest, HalfAOneTimePreKeyIsMalformed) {
  Fields id_only;
  id_only.otpk_present = false;
  Fields key_only;
  key_only.otpk_id_present = false;
  for (const Fields& f : {id_only, key_only}) {
    auto r = DecodeBundle(HandWritten(f));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), StatusCode::kMalformed);
  }
}

TEST(BundleTest, OutOfRangeOrWrongTypeIntegersAreMalformed) {
  for (int field = 0; field < 3; ++field) {
    Fields f;
    uint64_t* targets[] = {&f.registration_id, &f.device_id, &f.spk_id};
    *targets[field] = 0x100000000ull;  // does not fit uint32
    auto r = DecodeBundle(HandWritten(f));
    ASSERT_FALSE(r.has_value()) << field;
    EXPECT_EQ(r.error().code(), StatusCode::kMalformed) << field;
  }
  // A negative registration id.
  MsgpackWriter w;
  w.Array(9).Uint(1).NegativeFixint(-1).Uint(1).Bin(kPublicKeySize, 5).Uint(1).Bin(kPublicKeySize, 5);
  w.Bin(kSignatureSize, 1).Nil().Nil();
  auto r = DecodeBundle(w.bytes());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kMalformed);
  // A key as a string instead of bin.
  MsgpackWriter s;
  s.Array(9).Uint(1).Uint(1).Uint(1).Str(std::string(kPublicKeySize, 'k')).Uint(1).Bin(kPublicKeySize, 5);
  s.Bin(kSignatureSize, 1).Nil().Nil();
  auto r2 = DecodeBundle(s.bytes());
  ASSERT_FALSE(r2.has_value());
  EXPECT_EQ(r2.error().code(), StatusCode::kMalformed);
}

TEST(BundleTest, WrongShapeIsMalformed) {
  std::vector<Bytes> inputs;
  inputs.push_back({});
  inputs.push_back(MsgpackWriter().Uint(1).bytes());        // not an array
  inputs.push_back(MsgpackWriter().Array(0).bytes());       // empty array
  inputs.push_back(MsgpackWriter().Array(1).Uint(1).bytes());  // version only
  inputs.push_back(MsgpackWriter().Array(1).Nil().bytes());    // no version
  {
    MsgpackWriter w;  // v1 with a field too few
    w.Array(8).Uint(1).Uint(1).Uint(1).Bin(kPublicKeySize, 5).Uint(1).Bin(kPublicKeySize, 5);
    w.Bin(kSignatureSize, 1).Nil();
    inputs.push_back(w.bytes());
  }
  {
    MsgpackWriter w;  // v1 with a field too many
    w.Array(10).Uint(1).Uint(1).Uint(1).Bin(kPublicKeySize, 5).Uint(1).Bin(kPublicKeySize, 5);
    w.Bin(kSignatureSize, 1).Nil().Nil().Nil();
    inputs.push_back(w.bytes());
  }
  inputs.push_back(Bytes{0x81, 0x01, 0x02});  // a map instead of an array
  inputs.push_back(Bytes(kMaxBundleSize + 1, 0xc0));  // over the size bound
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto r = DecodeBundle(inputs[i]);
    ASSERT_FALSE(r.has_value()) << "input " << i;
    EXPECT_EQ(r.error().code(), StatusCode::kMalformed) << "input " << i << ": " << r.error().ToString();
  }
}

TEST(BundleTest, HugeDeclaredLengthsAreRejectedWithoutAllocating) {
  // A bin32 header claiming 4 GiB, and an array32 claiming 4 billion elements.
  Bytes bin = {0x99, 0x01, 0x01, 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff};
  Bytes arr = {0xdd, 0xff, 0xff, 0xff, 0xff, 0x01};
  for (const Bytes& b : {bin, arr}) {
    auto r = DecodeBundle(b);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), StatusCode::kMalformed);
  }
}

TEST(BundleTest, EveryByteFlipEitherDecodesOrIsRejectedCleanly) {
  // Not a signature check (the session layer does that): only "never crash, never half-decode".
  Bytes encoded = EncodeBundle(SampleBundle(true));
  for (size_t i = 0; i < encoded.size(); ++i) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
      Bytes b = encoded;
      b[i] ^= mask;
      auto r = DecodeBundle(b);
      if (r.has_value()) {
        EXPECT_EQ(EncodeBundle(*r), b) << "a decoded bundle re-encodes to the same bytes (pos " << i << ")";
      } else {
        EXPECT_TRUE(r.error().code() == StatusCode::kMalformed ||
                    r.error().code() == StatusCode::kUnsupportedVersion)
            << r.error().ToString();
      }
    }
  }
}

TEST(BundleTest, RandomBytesNeverCrash) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 20000; ++i) {
    Bytes b(rng() % 200);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    if (!b.empty() && (i & 1)) b[0] = 0x99;  // fixarray of 9, to get past the first check more often
    auto r = DecodeBundle(b);
    if (!r.has_value()) {
      EXPECT_TRUE(r.error().code() == StatusCode::kMalformed ||
                  r.error().code() == StatusCode::kUnsupportedVersion);
    }
  }
}

}  // namespace
}  // namespace cw::wire
