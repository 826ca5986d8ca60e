#include "transport/frame.h"

#include <gtest/gtest.h>

#include "core/base/random.h"

namespace cw::transport {
namespace {

std::vector<Bytes> DrainAll(FrameDecoder& d, Status* error) {
  std::vector<Bytes> out;
  for (;;) {
    auto f = d.Next();
    if (!f) {
      *error = f.error();
      return out;
    }
    if (!*f) return out;
    out.emplace_back((*f)->begin(), (*f)->end());
  }
}

TEST(Frame, AppendWritesBigEndianLength) {
  Bytes out;
  ASSERT_TRUE(AppendFrame(ToBytes("abc"), 10, &out).ok());
  EXPECT_EQ(out, (Bytes{0, 0, 0, 3, 'a', 'b', 'c'}));
  out.clear();
  ASSERT_TRUE(AppendFrame(ToBytes("abc"), 10, &out, 2).ok());
  EXPECT_EQ(out, (Bytes{0, 3, 'a', 'b', 'c'}));
}

TEST(Frame, AppendRefusesEmptyAndOversized) {
  Bytes out;
  EXPECT_EQ(AppendFrame({}, 10, &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(AppendFrame(Bytes(11), 10, &out).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(out.empty());
}

TEST(Frame, DecoderYieldsFramesFromEverySplitOfTheStream) {
  SeededRandom rng(5);
  std::vector<Bytes> frames;
  Bytes stream;
  for (size_t size : {1, 2, 3, 100, 4096, 70000, 1}) {
    Bytes f(size);
    rng.Fill(f.data(), f.size());
    ASSERT_TRUE(AppendFrame(f, kDefaultMaxFrameSize, &stream).ok());
    frames.push_back(f);
  }
  // Chunks of random sizes, including single bytes, many times.
  for (int round = 0; round < 50; ++round) {
    FrameDecoder d;
    std::vector<Bytes> got;
    size_t pos = 0;
    while (pos < stream.size()) {
      const size_t n = std::min<size_t>(stream.size() - pos, 1 + rng.Uniform(round % 2 ? 7 : 20000));
      ASSERT_TRUE(d.Append(ByteView(stream).subspan(pos, n)).ok());
      pos += n;
      Status error;
      for (auto& f : DrainAll(d, &error)) got.push_back(std::move(f));
      ASSERT_TRUE(error.ok()) << error.ToString();
    }
    EXPECT_EQ(got, frames);
    EXPECT_EQ(d.buffered_bytes(), 0u);
  }
}

TEST(Frame, OversizedLengthIsRejectedAsSoonAsTheHeaderArrives) {
  FrameDecoder d(1000);
  // 1001 announced; only the header is sent: the payload never needs to be buffered.
  Status s = d.Append(Bytes{0, 0, 0x03, 0xe9});
  EXPECT_EQ(s.code(), StatusCode::kMalformed);
  EXPECT_NE(s.message().find("exceeds the maximum of 1000"), std::string::npos) << s.message();
  // Sticky.
  EXPECT_EQ(d.Append(Bytes{1}).code(), StatusCode::kMalformed);
  EXPECT_FALSE(d.Next().has_value());
}

TEST(Frame, OversizedHeaderSplitAcrossChunks) {
  FrameDecoder d(1000);
  ASSERT_TRUE(d.Append(Bytes{0xff, 0xff}).ok());
  auto f = d.Next();
  ASSERT_TRUE(f.has_value());
  EXPECT_FALSE(f->has_value());
  EXPECT_EQ(d.Append(Bytes{0xff, 0xff}).code(), StatusCode::kMalformed);
}

TEST(Frame, ZeroLengthIsRejected) {
  FrameDecoder d;
  Bytes stream;
  ASSERT_TRUE(AppendFrame(ToBytes("ok"), kDefaultMaxFrameSize, &stream).ok());
  stream.insert(stream.end(), {0, 0, 0, 0});
  ASSERT_TRUE(d.Append(stream).ok());  // the first header is fine
  Status error;
  auto frames = DrainAll(d, &error);
  ASSERT_EQ(frames.size(), 1u) << "the good frame before the bad one is still delivered";
  EXPECT_EQ(error.code(), StatusCode::kMalformed);
  EXPECT_EQ(error.message(), "zero-length frame");
}

TEST(Frame, TwoByteHeaderForNoiseRecords) {
  FrameDecoder d(kNoiseMaxMessageSize, 2);
  Bytes stream;
  ASSERT_TRUE(AppendFrame(Bytes(65535, 7), kNoiseMaxMessageSize, &stream, 2).ok());
  ASSERT_TRUE(d.Append(stream).ok());
  auto f = d.Next();
  ASSERT_TRUE(f.has_value() && f->has_value());
  EXPECT_EQ((*f)->size(), 65535u);
}

TEST(Endpoint, ParsesPinnedKeyInHexAndBase64Url) {
  SeededRandom rng(1);
  const auto key = StaticKeyPair::Generate(rng);
  for (const std::string& k : {KeyToHex(key.public_key()), KeyToBase64Url(key.public_key())}) {
    auto ep = Endpoint::Parse("cw://" + k + "@127.0.0.1:4433");
    ASSERT_TRUE(ep.has_value()) << ep.error().ToString();
    EXPECT_EQ(ep->host, "127.0.0.1");
    EXPECT_EQ(ep->port, 4433);
    ASSERT_TRUE(ep->static_key.has_value());
    EXPECT_EQ(*ep->static_key, key.public_key());
    auto again = Endpoint::Parse(ep->ToString());
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->static_key, ep->static_key);
  }
  auto v6 = Endpoint::Parse("cw://" + KeyToHex(key.public_key()) + "@[::1]:1");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(Endpoint::Parse(v6->ToString())->host, "::1");
  auto plain = Endpoint::Parse("localhost:0");
  ASSERT_TRUE(plain.has_value());
  EXPECT_FALSE(plain->static_key.has_value());
}

TEST(Endpoint, RejectsMalformedAddresses) {
  SeededRandom rng(1);
  const std::string hex = KeyToHex(StaticKeyPair::Generate(rng).public_key());
  for (const std::string& bad :
       {std::string("cw://@h:1"), "cw://" + hex + "h:1", "cw://" + hex.substr(1) + "@h:1",
        "cw://" + hex + "@h", "cw://" + hex + "@h:65536", "cw://" + hex + "@h:-1", "cw://" + hex + "@:1",
        std::string("::1:5"), "cw://" + std::string(64, 'z') + "@h:1",
        "cw://" + std::string(43, '!') + "@h:1", std::string("h:1x")}) {
    auto ep = Endpoint::Parse(bad);
    EXPECT_FALSE(ep.has_value()) << bad;
    if (!ep) {
      EXPECT_EQ(ep.error().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(Endpoint, Base64UrlMustBeCanonical) {
  SeededRandom rng(2);
  const auto key = StaticKeyPair::Generate(rng);
  std::string b64 = KeyToBase64Url(key.public_key());
  // The last character carries 2 unused bits; flipping them gives another string for the same key.
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const size_t v = alphabet.find(b64.back());
  b64.back() = alphabet[v ^ 1];
  EXPECT_FALSE(ParseKey(b64).has_value());
}

}  // namespace
}  // namespace cw::transport
