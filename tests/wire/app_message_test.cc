#include "core/wire/app_message.h"

#include <gtest/gtest.h>

#include "tests/wire/msgpack_writer.h"
#include "tests/wire/print_status.h"

namespace cw::wire {
namespace {

using testing::MsgpackWriter;

AppMessage Make(AppKind kind, std::string purpose, std::string_view payload) {
  AppMessage m;
  m.kind = kind;
  m.purpose = std::move(purpose);
  m.payload = SecretBytes(AsBytes(payload));
  return m;
}

void ExpectRoundTrip(const AppMessage& m) {
  auto encoded = EncodeAppMessage(m);
  ASSERT_TRUE(encoded.has_value()) << encoded.error().ToString();
  auto decoded = DecodeAppMessage(encoded->reveal());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(decoded->kind, m.kind);
  EXPECT_EQ(decoded->purpose, m.purpose);
  EXPECT_TRUE(decoded->payload.Equals(m.payload));
}

void ExpectRejected(const Bytes& b, StatusCode code, const char* what) {
  auto r = DecodeAppMessage(b);
  ASSERT_FALSE(r.has_value()) << what;
  EXPECT_EQ(r.error().code(), code) << what << ": " << r.error().ToString();
}

Bytes HandWritten(uint64_t version, uint64_t kind, std::string_view purpose, size_t payload_size) {
  MsgpackWriter w;
  w.Array(4).Uint(version).Uint(kind).Str(purpose).Bin(payload_size, 'p');
  return w.bytes();
}

TEST(AppMessageTest, RoundTripsEveryKind) {
  for (uint8_t k = 1; k <= kMaxAppKind; ++k) {
    ExpectRoundTrip(Make(static_cast<AppKind>(k), "treatment", "payload bytes"));
  }
  ExpectRoundTrip(Make(AppKind::kText, "", ""));  // no purpose, empty text
  ExpectRoundTrip(Make(AppKind::kText, std::string(kMaxPurposeSize, 'x'), "BP 120/80"));
  AppMessage big;
  big.payload = SecretBytes(kMaxAppPayloadSize);
  ExpectRoundTrip(big);
}

TEST(AppMessageTest, EncodingIsTheDocumentedLayout) {
  auto encoded = EncodeAppMessage(Make(AppKind::kText, "billing", "hi"));
  ASSERT_TRUE(encoded.has_value());
  MsgpackWriter w;
  w.Array(4).Uint(1).Uint(1).Str("billing").Bin(AsBytes("hi"));
  EXPECT_EQ(Bytes(encoded->reveal().begin(), encoded->reveal().end()), w.bytes());
}

TEST(AppMessageTest, EncodeRefusesWhatDecodeWouldRefuse) {
  auto a = EncodeAppMessage(Make(AppKind::kText, std::string(kMaxPurposeSize + 1, 'x'), "t"));
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), StatusCode::kInvalidArgument);
  AppMessage b;
  b.payload = SecretBytes(kMaxAppPayloadSize + 1);
  auto r = EncodeAppMessage(b);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  auto c = EncodeAppMessage(Make(static_cast<AppKind>(kMaxAppKind + 1), "", "t"));
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().code(), StatusCode::kInvalidArgument);
}

TEST(AppMessageTest, RejectsUnknownKinds) {
  ExpectRejected(HandWritten(1, 0, "", 1), StatusCode::kMalformed, "kind 0");
  ExpectRejected(HandWritten(1, kMaxAppKind + 1, "", 1), StatusCode::kMalformed, "the kind after the last");
  ExpectRejected(HandWritten(1, 1u << 20, "", 1), StatusCode::kMalformed, "huge kind");
}

TEST(AppMessageTest, RejectsOtherVersions) {
  ExpectRejected(HandWritten(2, 1, "", 1), StatusCode::kUnsupportedVersion, "version 2");
  ExpectRejected(HandWritten(0, 1, "", 1), StatusCode::kUnsupportedVersion, "version 0");
}

TEST(AppMessageTest, RejectsMalformedShapes) {
  ExpectRejected({}, StatusCode::kMalformed, "empty");
  ExpectRejected(ToBytes("plain old text"), StatusCode::kMalformed, "raw text (the old body)");
  ExpectRejected(HandWritten(1, 1, std::string(kMaxPurposeSize + 1, 'x'), 1), StatusCode::kMalformed,
                 "purpose too long");
  Bytes trailing = HandWritten(1, 1, "", 1);
  trailing.push_back(0);
  ExpectRejected(trailing, StatusCode::kMalformed, "trailing byte");
  Bytes truncated = HandWritten(1, 1, "", 10);
  truncated.pop_back();
  ExpectRejected(truncated, StatusCode::kMalformed, "truncated payload");
  {
    MsgpackWriter w;
    w.Array(3).Uint(1).Uint(1).Str("");
    ExpectRejected(w.bytes(), StatusCode::kMalformed, "three fields");
  }
  {
    MsgpackWriter w;
    w.Array(5).Uint(1).Uint(1).Str("").Bin(1, 'p').Uint(0);
    ExpectRejected(w.bytes(), StatusCode::kMalformed, "five fields");
  }
  {
    MsgpackWriter w;
    w.Array(4).Uint(1).Uint(1).Str("").Str("text as str, not bin");
    ExpectRejected(w.bytes(), StatusCode::kMalformed, "payload as str");
  }
  {
    MsgpackWriter w;
    w.Array(4).Uint(1).Uint(1).Bin(1, 'p').Bin(1, 'p');
    ExpectRejected(w.bytes(), StatusCode::kMalformed, "purpose as bin");
  }
  {
    MsgpackWriter w;
    w.Array(4).Uint(1).Array(1).Uint(1).Str("").Bin(1, 'p');
    ExpectRejected(w.bytes(), StatusCode::kMalformed, "nested kind");
  }
}

TEST(AppMessageTest, RejectsPayloadOverTheBoundBeforeAllocatingIt) {
  // A bin header that claims more than the bound, with only a few bytes behind it.
  MsgpackWriter w;
  w.Array(4).Uint(1).Uint(1).Str("");
  Bytes b = w.bytes();
  const uint32_t claimed = kMaxAppPayloadSize + 1;
  b.push_back(0xc6);
  for (int i = 3; i >= 0; --i) b.push_back(static_cast<uint8_t>(claimed >> (8 * i)));
  b.push_back('p');
  ExpectRejected(b, StatusCode::kMalformed, "oversized bin");
}

}  // namespace
}  // namespace cw::wire
