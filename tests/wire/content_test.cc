#include "core/wire/content.h"

#include <gtest/gtest.h>

#include "tests/wire/print_status.h"

#include "tests/wire/msgpack_writer.h"

namespace cw::wire {
namespace {

using testing::MsgpackWriter;

Bytes Revealed(const SecretBytes& s) { return Bytes(s.reveal().begin(), s.reveal().end()); }

Content Make(ContentKind kind, std::string group_id, Bytes body, std::vector<std::string> members) {
  Content c;
  c.kind = kind;
  c.group_id = std::move(group_id);
  c.body = SecretBytes(body);
  c.members = std::move(members);
  return c;
}

void ExpectRoundTrip(const Content& c) {
  auto encoded = EncodeContent(c);
  ASSERT_TRUE(encoded.has_value()) << encoded.error().ToString();
  auto decoded = DecodeContent(encoded->reveal());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(decoded->kind, c.kind);
  EXPECT_EQ(decoded->group_id, c.group_id);
  EXPECT_TRUE(decoded->body.Equals(c.body));
  EXPECT_EQ(decoded->members, c.members);
}

// [version, kind, group_id, body, members, epoch] written by hand.
Bytes HandWritten(uint64_t version, uint64_t kind, std::string_view group_id, const std::vector<std::string>& members,
                  size_t body_size = 3) {
  MsgpackWriter w;
  w.Array(6).Uint(version).Uint(kind).Str(group_id).Bin(body_size, 'b').Array(static_cast<uint32_t>(members.size()));
  for (const auto& m : members) w.Str(m);
  w.Uint(1);
  return w.bytes();
}

void ExpectRejected(const Bytes& b, StatusCode code, const char* what) {
  auto r = DecodeContent(b);
  ASSERT_FALSE(r.has_value()) << what;
  EXPECT_EQ(r.error().code(), code) << what << ": " << r.error().ToString();
}

TEST(ContentTest, RoundTripMessage) {
  ExpectRoundTrip(Make(ContentKind::kMessage, "", ToBytes("BP 120/80, take with food"), {}));
  ExpectRoundTrip(Make(ContentKind::kMessage, "", {}, {}));  // an empty message
  Bytes binary(70000);
  for (size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<uint8_t>(i);
  ExpectRoundTrip(Make(ContentKind::kMessage, "", binary, {}));
}

TEST(ContentTest, RoundTripGroupMessageCarriesGroupId) {
  ExpectRoundTrip(Make(ContentKind::kMessage, "ward-7", ToBytes("rounds at 9"), {}));
}

TEST(ContentTest, RoundTripSenderKey) {
  Bytes skdm(140, 0x33);
  ExpectRoundTrip(Make(ContentKind::kSenderKey, "ward-7", skdm, {}));
}

TEST(ContentTest, RoundTripGroupMembers) {
  ExpectRoundTrip(Make(ContentKind::kGroupMembers, "ward-7", {}, {"clinician", "nurse", "patient"}));
  std::vector<std::string> many;
  for (size_t i = 0; i < kMaxGroupMembers; ++i) many.push_back("member-" + std::to_string(i));
  ExpectRoundTrip(Make(ContentKind::kGroupMembers, std::string(kMaxGroupIdSize, 'g'), {}, many));
  ExpectRoundTrip(Make(ContentKind::kGroupMembers, "g", {}, {std::string(kMaxNameSize, 'n')}));
}

TEST(ContentTest, EncodeRejectsOversizedGroupIdOrMemberList) {
  auto a = EncodeContent(Make(ContentKind::kGroupMembers, std::string(kMaxGroupIdSize + 1, 'g'), {}, {"a"}));
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), StatusCode::kInvalidArgument);
  std::vector<std::string> many(kMaxGroupMembers + 1, "m");
  auto b = EncodeContent(Make(ContentKind::kGroupMembers, "g", {}, many));
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code(), StatusCode::kInvalidArgument);
}

TEST(ContentTest, HandWrittenContentDecodes) {
  // Guards the variants below: with nothing wrong, they parse.
  auto r = DecodeContent(HandWritten(1, 3, "g", {"a", "b"}));
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->members, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(r->member_keys.empty());  // six fields: written before member keys
}

// [2, kind, group_id, body, members, epoch, member_keys]: `keys` entries of size 0 are nil.
Bytes HandWrittenWithKeys(uint64_t kind, const std::vector<std::string>& members,
                          const std::vector<size_t>& keys) {
  MsgpackWriter w;
  w.Array(7).Uint(2).Uint(kind).Str("g").Bin(3, 'b').Array(static_cast<uint32_t>(members.size()));
  for (const auto& m : members) w.Str(m);
  w.Uint(1).Array(static_cast<uint32_t>(keys.size()));
  for (size_t k : keys) {
    if (k == 0) {
      w.Nil();
    } else {
      w.Bin(k, 5);
    }
  }
  return w.bytes();
}

TEST(ContentTest, AMembershipCarriesTheKeyListedForEachMember) {
  Content c = Make(ContentKind::kGroupMembers, "ward-7", Bytes(20, 9), {"a", "b", "c"});
  c.member_keys.resize(3);
  c.member_keys[0].emplace().fill(1);
  c.member_keys[2].emplace().fill(2);
  auto encoded = EncodeContent(c);
  ASSERT_TRUE(encoded.has_value()) << encoded.error().ToString();
  auto decoded = DecodeContent(encoded->reveal());
  ASSERT_TRUE(decoded.has_value()) << decoded.error().ToString();
  EXPECT_EQ(decoded->member_keys, c.member_keys);

  auto ok = DecodeContent(HandWrittenWithKeys(3, {"a", "b"}, {kPublicKeySize, 0}));
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  ExpectRejected(HandWrittenWithKeys(3, {"a", "b"}, {kPublicKeySize}), StatusCode::kMalformed,
                 "one key short");
  ExpectRejected(HandWrittenWithKeys(3, {}, {}), StatusCode::kMalformed, "version 2 without keys");
  ExpectRejected(HandWritten(2, 3, "g", {"a"}), StatusCode::kMalformed, "version 2 in six fields");
  Bytes seven_of_one = HandWrittenWithKeys(3, {"a"}, {kPublicKeySize});
  seven_of_one[1] = 1;  // version 1 has six
  ExpectRejected(seven_of_one, StatusCode::kMalformed, "version 1 in seven fields");
  ExpectRejected(HandWrittenWithKeys(3, {"a"}, {kPublicKeySize - 1}), StatusCode::kMalformed, "short key");
  ExpectRejected(HandWrittenWithKeys(2, {"a"}, {kPublicKeySize}), StatusCode::kMalformed,
                 "keys on a sender key");
  c.member_keys.pop_back();
  EXPECT_EQ(EncodeContent(c).error().code(), StatusCode::kInvalidArgument);
}

TEST(ContentTest, MemberNameWithNulIsMalformed) {
  ExpectRejected(HandWritten(1, 3, "g", {"nurse", std::string("pat\0ient", 8)}), StatusCode::kMalformed, "NUL");
  ExpectRejected(HandWritten(1, 3, "g", {std::string(1, '\0')}), StatusCode::kMalformed, "lone NUL");
}

TEST(ContentTest, EmptyOrOverlongMemberNameIsMalformed) {
  ExpectRejected(HandWritten(1, 3, "g", {"nurse", ""}), StatusCode::kMalformed, "empty name");
  ExpectRejected(HandWritten(1, 3, "g", {std::string(kMaxNameSize + 1, 'n')}), StatusCode::kMalformed,
                 "long name");
}

TEST(ContentTest, TooManyMembersIsMalformed) {
  std::vector<std::string> many(kMaxGroupMembers + 1, "m");
  ExpectRejected(HandWritten(1, 3, "g", many), StatusCode::kMalformed, "257 members");
}

TEST(ContentTest, GroupKindWithoutGroupIdIsMalformed) {
  ExpectRejected(HandWritten(1, 2, "", {}), StatusCode::kMalformed, "sender key without group");
  ExpectRejected(HandWritten(1, 3, "", {"a"}), StatusCode::kMalformed, "members without group");
  // The encoder does not stop this, so the decoder must.
  auto encoded = EncodeContent(Make(ContentKind::kSenderKey, "", Bytes(10, 1), {}));
  if (encoded.has_value()) {
    ExpectRejected(Revealed(*encoded), StatusCode::kMalformed, "encoded sender key without group");
  }
}

TEST(ContentTest, OverlongGroupIdIsMalformed) {
  ExpectRejected(HandWritten(1, 3, std::string(kMaxGroupIdSize + 1, 'g'), {"a"}), StatusCode::kMalformed,
                 "65-byte group id");
}

TEST(ContentTest, UnknownKindIsMalformed) {
  for (uint64_t kind : {0ull, 4ull, 255ull, 256ull}) {
    ExpectRejected(HandWritten(1, kind, "g", {}), StatusCode::kMalformed, "kind");
  }
}

TEST(ContentTest, UnknownVersionIsUnsupported) {
  for (uint64_t version : {0ull, 3ull, 200ull}) {
    ExpectRejected(HandWritten(version, 1, "", {}), StatusCode::kUnsupportedVersion, "version");
  }
  // A later version with more fields is still "unsupported version", not "malformed".
  MsgpackWriter w;
  w.Array(8).Uint(3).Uint(1).Str("").Bin(1, 0).Array(0).Uint(0).Array(0).Str("x");
  ExpectRejected(w.bytes(), StatusCode::kUnsupportedVersion, "v3 with 8 fields");
}

TEST(ContentTest, WrongShapeIsMalformed) {
  ExpectRejected({}, StatusCode::kMalformed, "empty");
  ExpectRejected(MsgpackWriter().Uint(1).bytes(), StatusCode::kMalformed, "not an array");
  ExpectRejected(MsgpackWriter().Array(0).bytes(), StatusCode::kMalformed, "empty array");
  ExpectRejected(MsgpackWriter().Array(4).Uint(1).Uint(1).Str("").Bin(1, 0).bytes(), StatusCode::kMalformed,
                 "4 fields");
  ExpectRejected(MsgpackWriter().Array(7).Uint(1).Uint(1).Str("").Bin(1, 0).Array(0).Uint(1).Nil().bytes(),
                 StatusCode::kMalformed, "6 fields");
  // Body as a string, group id as bin, members not an array, a member not a string.
  ExpectRejected(MsgpackWriter().Array(6).Uint(1).Uint(1).Str("").Str("body").Array(0).Uint(1).bytes(),
                 StatusCode::kMalformed, "str body");
  ExpectRejected(MsgpackWriter().Array(6).Uint(1).Uint(1).Bin(1, 'g').Bin(1, 0).Array(0).Uint(1).bytes(),
                 StatusCode::kMalformed, "bin group id");
  ExpectRejected(MsgpackWriter().Array(6).Uint(1).Uint(1).Str("").Bin(1, 0).Nil().Uint(1).bytes(), StatusCode::kMalformed,
                 "nil members");
  ExpectRejected(MsgpackWriter().Array(6).Uint(1).Uint(3).Str("g").Bin(1, 0).Array(1).Uint(7).Uint(1).bytes(),
                 StatusCode::kMalformed, "int member");
  // Nested deeper than the format allows.
  ExpectRejected(MsgpackWriter().Array(6).Uint(1).Uint(3).Str("g").Bin(1, 0).Array(1).Array(0).Uint(1).bytes(),
                 StatusCode::kMalformed, "nested member");
}

TEST(ContentTest, TruncatedAtEveryLengthIsMalformed) {
  auto encoded = EncodeContent(Make(ContentKind::kGroupMembers, "ward-7", Bytes(20, 9), {"a", "bb", "ccc"}));
  ASSERT_TRUE(encoded.has_value());
  Bytes b = Revealed(*encoded);
  for (size_t len = 0; len < b.size(); ++len) {
    auto r = DecodeContent(std::span<const uint8_t>(b.data(), len));
    ASSERT_FALSE(r.has_value()) << len;
    EXPECT_EQ(r.error().code(), StatusCode::kMalformed) << len;
  }
}

TEST(ContentTest, TrailingBytesAreMalformed) {
  auto encoded = EncodeContent(Make(ContentKind::kMessage, "", ToBytes("hi"), {}));
  ASSERT_TRUE(encoded.has_value());
  Bytes b = Revealed(*encoded);
  b.push_back(0xc0);
  ExpectRejected(b, StatusCode::kMalformed, "trailing nil");
}

TEST(ContentTest, HugeDeclaredLengthsAreRejected) {
  // A member array claiming 4 billion entries, and a bin claiming 4 GiB.
  Bytes arr = {0x95, 0x01, 0x03, 0xa1, 'g', 0xc4, 0x00, 0xdd, 0xff, 0xff, 0xff, 0xff};
  Bytes bin = {0x95, 0x01, 0x01, 0xa0, 0xc6, 0xff, 0xff, 0xff, 0xff};
  ExpectRejected(arr, StatusCode::kMalformed, "array32");
  ExpectRejected(bin, StatusCode::kMalformed, "bin32");
}

TEST(ContentTest, IsValidName) {
  EXPECT_TRUE(IsValidName("patient"));
  EXPECT_TRUE(IsValidName(std::string(kMaxNameSize, 'x')));
  EXPECT_FALSE(IsValidName(""));
  EXPECT_FALSE(IsValidName(std::string(kMaxNameSize + 1, 'x')));
  EXPECT_FALSE(IsValidName(std::string_view("a\0b", 3)));
}

// A client of the previous version accepts only a fixarray of six fields (0x96) and drops anything else as
// malformed: a 1:1 message, a sender key, every content without member keys must still encode as six fields.
TEST(ContentTest, ContentWithoutMemberKeysEncodesAsThePreviousVersionReadsIt) {
  for (ContentKind kind : {ContentKind::kMessage, ContentKind::kSenderKey}) {
    Content c = Make(kind, kind == ContentKind::kMessage ? "" : "g", Bytes(3, 1), {});
    auto encoded = EncodeContent(c);
    ASSERT_TRUE(encoded.has_value()) << encoded.error().ToString();
    EXPECT_EQ(encoded->reveal()[0], 0x96)
        << "kind " << static_cast<int>(kind) << ": the previous version drops this as malformed";
    EXPECT_EQ(encoded->reveal()[1], 1) << "kind " << static_cast<int>(kind);
  }
}

}  // namespace
}  // namespace cw::wire
