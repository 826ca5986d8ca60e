#include "core/wire/padding.h"

#include <gtest/gtest.h>

#include "tests/wire/print_status.h"

#include <set>

namespace cw::wire {
namespace {

Bytes Content(size_t n, uint8_t salt = 0) {
  Bytes b(n);
  // Includes 0x00 and 0x80 bytes, so the pad marker cannot be found by accident in the content.
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i * 31 + salt);
  return b;
}

Bytes Revealed(const SecretBytes& s) { return Bytes(s.reveal().begin(), s.reveal().end()); }

TEST(PadTest, PaddedSizeHasAFloorOf256) {
  for (size_t n = 0; n < kMinPaddedSize; ++n) EXPECT_EQ(PaddedSize(n), kMinPaddedSize) << n;
  EXPECT_GT(PaddedSize(kMinPaddedSize), kMinPaddedSize) << "256 bytes of content plus the marker exceed 256";
}

TEST(PadTest, PaddedSizeFitsTheMarkerIsMonotonicAndBoundedBy12Percent) {
  size_t previous = 0;
  double worst = 0;
  for (size_t n = 0; n <= kMaxPlaintextSize; ++n) {
    const size_t p = PaddedSize(n);
    ASSERT_GE(p, n + 1) << n;
    ASSERT_GE(p, previous) << n;
    if (n + 1 > kMinPaddedSize) {
      const double overhead = static_cast<double>(p - (n + 1)) / static_cast<double>(n + 1);
      ASSERT_LE(overhead, 0.12) << n;
      worst = std::max(worst, overhead);
    }
    previous = p;
  }
  EXPECT_GT(worst, 0.05) << "buckets this tight leak more length than Padme should";
}

TEST(PadTest, BucketsAreFewAndStable) {
  std::set<size_t> buckets;
  for (size_t n = 0; n <= kMaxPlaintextSize; ++n) {
    const size_t p = PaddedSize(n);
    buckets.insert(p);
    // A bucket size is a fixed point: any content that fills a bucket lands in that bucket.
    if (p > kMinPaddedSize) {
      ASSERT_EQ(PaddedSize(p - 1), p) << n;
    }
  }
  // Padme leaks O(log log n) bits; 1 MiB in 1-byte steps must collapse into a few hundred sizes at most.
  EXPECT_LT(buckets.size(), 400u) << buckets.size();
  EXPECT_GT(buckets.size(), 50u);
}

TEST(PadTest, ShortMessagesAllLookAlike) {
  auto a = Pad(Bytes{});
  auto b = Pad(Content(200));
  ASSERT_TRUE(a.has_value() && b.has_value());
  EXPECT_EQ(a->size(), b->size());
  EXPECT_EQ(a->size(), kMinPaddedSize);
}

void ExpectRoundTrip(size_t n) {
  Bytes content = Content(n, static_cast<uint8_t>(n));
  auto padded = Pad(content);
  ASSERT_TRUE(padded.has_value()) << n << ": " << padded.error().ToString();
  ASSERT_EQ(padded->size(), PaddedSize(n)) << n;
  Bytes p = Revealed(*padded);
  ASSERT_TRUE(std::equal(content.begin(), content.end(), p.begin())) << n;
  ASSERT_EQ(p[n], 0x80) << n;
  for (size_t i = n + 1; i < p.size(); ++i) ASSERT_EQ(p[i], 0) << n;
  auto unpadded = Unpad(p);
  ASSERT_TRUE(unpadded.has_value()) << n << ": " << unpadded.error().ToString();
  ASSERT_EQ(Revealed(*unpadded), content) << n;
}

TEST(PadTest, RoundTripEveryLengthUpTo3000) {
  for (size_t n = 0; n <= 3000; ++n) ExpectRoundTrip(n);
}

TEST(PadTest, RoundTripLargeLengths) {
  for (size_t n : {size_t{4095}, size_t{4096}, size_t{4097}, size_t{65535}, size_t{65536}, size_t{100000},
                   kMaxPlaintextSize - 1, kMaxPlaintextSize}) {
    ExpectRoundTrip(n);
  }
}

TEST(PadTest, ContentEndingLikeAPadRoundTrips) {
  // Content that itself ends in a marker and zeros: removal must strip only the real pad.
  for (const Bytes& content : {Bytes{0x80}, Bytes{0x80, 0x00}, Bytes{'a', 0x80, 0x00, 0x00}, Bytes(255, 0x00),
                               Bytes(255, 0x80), Bytes(300, 0x00)}) {
    auto padded = Pad(content);
    ASSERT_TRUE(padded.has_value());
    auto unpadded = Unpad(padded->reveal());
    ASSERT_TRUE(unpadded.has_value()) << unpadded.error().ToString();
    EXPECT_EQ(Revealed(*unpadded), content);
  }
}

TEST(PadTest, PadRejectsOversizedPlaintext) {
  Bytes big(kMaxPlaintextSize + 1, 'x');
  auto r = Pad(big);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
}

TEST(UnpadTest, RejectsEveryFlippedPadByte) {
  for (size_t n : {size_t{0}, size_t{10}, size_t{254}, size_t{300}, size_t{1000}}) {
    Bytes p = Revealed(*Pad(Content(n)));
    for (size_t i = n + 1; i < p.size(); ++i) {
      // Not 0x80: a pad byte turned into 0x80 is a valid pad of longer content, which the scheme cannot tell
      // apart (the 1:1 MAC protects the plaintext, not the padding rule).
      for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x40}, uint8_t{0xff}}) {
        Bytes bad = p;
        bad[i] ^= mask;
        auto r = Unpad(bad);
        ASSERT_FALSE(r.has_value()) << "n=" << n << " pos=" << i << " mask=" << int(mask);
        ASSERT_EQ(r.error().code(), StatusCode::kMalformed);
      }
    }
  }
}

TEST(UnpadTest, RejectsMissingOrAlteredMarker) {
  // Content without any 0x80 byte, so removing the marker leaves nothing that looks like one.
  Bytes content(100, 'a');
  Bytes p = Revealed(*Pad(content));
  ASSERT_EQ(p[100], 0x80);
  for (uint8_t v : {uint8_t{0x00}, uint8_t{0x01}, uint8_t{0x7f}, uint8_t{0x81}, uint8_t{0xff}}) {
    Bytes bad = p;
    bad[100] = v;
    auto r = Unpad(bad);
    ASSERT_FALSE(r.has_value()) << int(v);
    EXPECT_EQ(r.error().code(), StatusCode::kMalformed);
  }
  for (const Bytes& bad : {Bytes{}, Bytes(256, 0x00), Bytes(256, 'a'), Bytes{0x80}}) {
    auto r = Unpad(bad);
    ASSERT_FALSE(r.has_value()) << bad.size();
    EXPECT_EQ(r.error().code(), StatusCode::kMalformed);
  }
}

TEST(UnpadTest, RejectsWrongTotalLength) {
  for (size_t n : {size_t{0}, size_t{100}, size_t{255}, size_t{256}, size_t{2000}}) {
    Bytes p = Revealed(*Pad(Content(n)));
    Bytes longer = p;
    longer.push_back(0);  // one zero too many
    Bytes shorter(p.begin(), p.end() - 1);
    Bytes doubled = p;
    doubled.resize(p.size() * 2, 0);
    for (const Bytes& bad : {longer, shorter, doubled}) {
      if (bad.size() <= n) continue;  // the marker was cut off
      auto r = Unpad(bad);
      ASSERT_FALSE(r.has_value()) << "n=" << n << " size=" << bad.size();
      EXPECT_EQ(r.error().code(), StatusCode::kMalformed);
    }
  }
}

TEST(UnpadTest, RejectsAMarkerTooEarlyForItsBucket) {
  // 256 bytes holding only 10 bytes of content is right; 512 bytes holding 10 is not a bucket Pad makes.
  Bytes p(512, 0);
  p[10] = 0x80;
  auto r = Unpad(p);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kMalformed);
}

}  // namespace
}  // namespace cw::wire
