#include "core/wire/receipt.h"

#include <gtest/gtest.h>

#include "tests/wire/print_status.h"

namespace cw::wire {
namespace {

Receipt Make(ReceiptType type, size_t n) {
  Receipt r;
  r.type = type;
  for (size_t i = 0; i < n; ++i) {
    ReceiptRef ref;
    ref.fill(static_cast<uint8_t>(i));
    r.refs.push_back(ref);
  }
  return r;
}

TEST(ReceiptTest, RoundTripsBothTypesUpToTheLimit) {
  for (ReceiptType t : {ReceiptType::kDelivered, ReceiptType::kRead}) {
    for (size_t n : {size_t{1}, size_t{2}, kMaxReceiptRefs}) {
      const Receipt r = Make(t, n);
      auto enc = EncodeReceipt(r);
      ASSERT_TRUE(enc.has_value());
      auto dec = DecodeReceipt(*enc);
      ASSERT_TRUE(dec.has_value()) << dec.error().ToString();
      EXPECT_EQ(*dec, r);
    }
  }
}

TEST(ReceiptTest, EncodeRefusesNoRefsTooManyAndUnknownTypes) {
  EXPECT_EQ(EncodeReceipt(Make(ReceiptType::kRead, 0)).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeReceipt(Make(ReceiptType::kRead, kMaxReceiptRefs + 1)).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeReceipt(Make(static_cast<ReceiptType>(3), 1)).error().code(), StatusCode::kInvalidArgument);
}

TEST(ReceiptTest, DecodeRefusesWhatIsNotExactlyAReceipt) {
  auto good = EncodeReceipt(Make(ReceiptType::kDelivered, 1));
  ASSERT_TRUE(good.has_value());
  // [1, 1, [bin 16]]: 0x93 0x01 0x01 0x91 0xc4 0x10 <16 bytes>
  ASSERT_EQ(good->size(), 4u + 2u + kReceiptRefSize);
  Bytes other_version = *good;
  other_version[1] = 2;
  EXPECT_EQ(DecodeReceipt(other_version).error().code(), StatusCode::kUnsupportedVersion);
  Bytes bad_type = *good;
  bad_type[2] = 3;
  EXPECT_EQ(DecodeReceipt(bad_type).error().code(), StatusCode::kMalformed);
  Bytes short_ref = *good;
  short_ref[5] = kReceiptRefSize - 1;
  short_ref.pop_back();
  EXPECT_EQ(DecodeReceipt(short_ref).error().code(), StatusCode::kMalformed);
  Bytes trailing = *good;
  trailing.push_back(0);
  EXPECT_EQ(DecodeReceipt(trailing).error().code(), StatusCode::kMalformed);
  const Bytes empty_refs{0x93, 0x01, 0x01, 0x90};
  EXPECT_EQ(DecodeReceipt(empty_refs).error().code(), StatusCode::kMalformed);
  EXPECT_EQ(DecodeReceipt(Bytes{}).error().code(), StatusCode::kMalformed);
}

}  // namespace
}  // namespace cw::wire
