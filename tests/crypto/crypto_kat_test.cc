// Known answers for cw_crypto: RFC 4231 (HMAC-SHA256), NIST SP 800-38A (AES-CBC, AES-CTR), FIPS 180-2
// (SHA-512) and RFC 8439 (ChaCha20-Poly1305), libsodium as the reference for its own secretstream, plus the
// padding, length and reuse behaviour libsignal's provider, the Noise links and attachments rely on.
#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/bytes.h"
#include "core/crypto/crypto.h"

namespace cw::crypto {
namespace {

Bytes Hex(std::string_view hex) {
  Bytes out;
  EXPECT_TRUE(FromHex(hex, &out)) << "bad hex in test vector: " << hex;
  return out;
}

Bytes Repeat(uint8_t byte, size_t count) { return Bytes(count, byte); }

Bytes Concat(ByteView a, ByteView b) {
  Bytes out(a.begin(), a.end());
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

std::string HmacHex(ByteView key, ByteView data) {
  auto mac = HmacSha256Digest(key, data);
  if (!mac) {
    ADD_FAILURE() << mac.error().ToString();
    return "";
  }
  return ToHex(*mac);
}

std::string Sha512Hex(ByteView data) {
  auto digest = Sha512Digest(data);
  if (!digest) {
    ADD_FAILURE() << digest.error().ToString();
    return "";
  }
  return ToHex(*digest);
}

// ---------------------------------------------------------------------------------------------------------
// HMAC-SHA256

struct HmacVector {
  const char* name;
  Bytes key;
  Bytes data;
  std::string mac;  // hex; RFC 4231 case 5 gives only the first 128 bits
};

std::vector<HmacVector> Rfc4231Vectors() {
  return {
      {"Case1", Repeat(0x0b, 20), ToBytes("Hi There"),
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"Case2", ToBytes("Jefe"), ToBytes("what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {"Case3", Repeat(0xaa, 20), Repeat(0xdd, 50),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {"Case4", Hex("0102030405060708090a0b0c0d0e0f10111213141516171819"), Repeat(0xcd, 50),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {"Case5Truncated128", Repeat(0x0c, 20), ToBytes("Test With Truncation"),
       "a3b6167473100ee06e0c796c2955552b"},
      {"Case6", Repeat(0xaa, 131), ToBytes("Test Using Larger Than Block-Size Key - Hash Key First"),
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {"Case7", Repeat(0xaa, 131),
       ToBytes("This is a test using a larger than block-size key and a larger than block-size data. The key "
               "needs to be hashed before being used by the HMAC algorithm."),
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
}

TEST(HmacSha256Test, Rfc4231Cases1To7) {
  for (const HmacVector& v : Rfc4231Vectors()) {
    SCOPED_TRACE(v.name);
    const std::string mac = HmacHex(v.key, v.data);
    ASSERT_EQ(mac.size(), 2 * kHmacSha256Size);
    EXPECT_EQ(mac.substr(0, v.mac.size()), v.mac);
  }
}

TEST(HmacSha256Test, EmptyKeyIsTheZeroKey) {
  EXPECT_EQ(HmacHex({}, {}), "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
  const Bytes message = ToBytes("libsignal MACs with whatever key it derived");
  EXPECT_EQ(HmacHex({}, message), HmacHex(Repeat(0, 1), message));
  EXPECT_EQ(HmacHex({}, message), HmacHex(Repeat(0, 64), message));
}

TEST(HmacSha256Test, IncrementalUpdatesAtOddBoundariesMatchOneShot) {
  const HmacVector v = Rfc4231Vectors().back();  // 152 bytes: spans three SHA-256 blocks
  const size_t kSplits[][6] = {{1, 2, 3, 5, 7, 11}, {63, 1, 64, 0, 13, 17}, {0, 151, 1, 0, 0, 0}};
  for (const auto& splits : kSplits) {
    auto hmac = HmacSha256::New(v.key);
    ASSERT_TRUE(hmac) << hmac.error().ToString();
    size_t at = 0;
    for (size_t i = 0; at < v.data.size(); ++i) {
      const size_t n = std::min(splits[i % std::size(splits)], v.data.size() - at);
      ASSERT_TRUE((*hmac)->Update(ByteView(v.data).subspan(at, n)).ok());
      at += n;
    }
    auto mac = (*hmac)->Final();
    ASSERT_TRUE(mac) << mac.error().ToString();
    EXPECT_EQ(ToHex(*mac), v.mac);
  }
}

TEST(HmacSha256Test, FinalIsSingleUse) {
  auto hmac = HmacSha256::New(Repeat(0x0b, 20));
  ASSERT_TRUE(hmac);
  ASSERT_TRUE((*hmac)->Update(ToBytes("Hi There")).ok());
  ASSERT_TRUE((*hmac)->Final());
  auto again = (*hmac)->Final();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*hmac)->Update(ToBytes("more")).code(), StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------------------
// AES

// NIST SP 800-38A appendix F: every mode encrypts the same four blocks.
const Bytes& NistPlaintext() {
  static const Bytes plaintext =
      Hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
          "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710");
  return plaintext;
}
constexpr std::string_view kNistKey128 = "2b7e151628aed2a6abf7158809cf4f3c";
constexpr std::string_view kNistKey192 = "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b";
constexpr std::string_view kNistKey256 = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
constexpr std::string_view kNistCbcIv = "000102030405060708090a0b0c0d0e0f";
constexpr std::string_view kNistCtrCounter = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

struct AesVector {
  const char* name;
  std::string_view key;
  std::string_view ciphertext;
};

constexpr AesVector kNistCbc[] = {
    {"F.2.1-2 CBC-AES128", kNistKey128,
     "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
     "73bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7"},
    {"F.2.3-4 CBC-AES192", kNistKey192,
     "4f021db243bc633d7178183a9fa071e8b4d9ada9ad7dedf4e5e738763f69145a"
     "571b242012fb7ae07fa9baac3df102e008b0e27988598881d920a9e64f5615cd"},
    {"F.2.5-6 CBC-AES256", kNistKey256,
     "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d"
     "39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b"},
};

constexpr AesVector kNistCtr[] = {
    {"F.5.1-2 CTR-AES128", kNistKey128,
     "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"
     "5ae4df3edbd5d35e5b4f09020db03eab1e031dda2fbe03d1792170a0f3009cee"},
    {"F.5.3-4 CTR-AES192", kNistKey192,
     "1abc932417521ca24f2b0459fe7e6e0b090339ec0aa6faefd5ccc2c6f4ce8e94"
     "1e36b26bd1ebc670d1bd1d665620abf74f78a7f6d29809585a97daec58c6b050"},
    {"F.5.5-6 CTR-AES256", kNistKey256,
     "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
     "2b0930daa23de94ce87017ba2d84988ddfc9c58db67aada613c2dd08457941a6"},
};

Bytes Plain(const SecretBytes& secret) { return Bytes(secret.reveal().begin(), secret.reveal().end()); }

TEST(AesTest, NistCbcVectorsWithPkcs7PaddingBlock) {
  for (const AesVector& v : kNistCbc) {
    SCOPED_TRACE(v.name);
    const Bytes key = Hex(v.key);
    const Bytes iv = Hex(kNistCbcIv);
    auto ciphertext = AesEncrypt(AesMode::kCbcPkcs7, key, iv, NistPlaintext());
    ASSERT_TRUE(ciphertext) << ciphertext.error().ToString();
    // 64 bytes of plaintext gain a whole block of padding; the first four blocks are NIST's.
    ASSERT_EQ(ciphertext->size(), 80u);
    EXPECT_EQ(ToHex(ByteView(*ciphertext).first(64)), v.ciphertext);

    auto plaintext = AesDecrypt(AesMode::kCbcPkcs7, key, iv, *ciphertext);
    ASSERT_TRUE(plaintext) << plaintext.error().ToString();
    EXPECT_EQ(Plain(*plaintext), NistPlaintext());
  }
}

TEST(AesTest, NistCtrVectorsExact) {
  for (const AesVector& v : kNistCtr) {
    SCOPED_TRACE(v.name);
    const Bytes key = Hex(v.key);
    const Bytes counter = Hex(kNistCtrCounter);
    auto ciphertext = AesEncrypt(AesMode::kCtr, key, counter, NistPlaintext());
    ASSERT_TRUE(ciphertext) << ciphertext.error().ToString();
    EXPECT_EQ(ToHex(*ciphertext), v.ciphertext);

    auto plaintext = AesDecrypt(AesMode::kCtr, key, counter, Hex(v.ciphertext));
    ASSERT_TRUE(plaintext) << plaintext.error().ToString();
    EXPECT_EQ(Plain(*plaintext), NistPlaintext());

    // CTR is a stream: a prefix that ends mid-block encrypts to the same prefix.
    auto prefix = AesEncrypt(AesMode::kCtr, key, counter, ByteView(NistPlaintext()).first(37));
    ASSERT_TRUE(prefix);
    EXPECT_EQ(ToHex(*prefix), v.ciphertext.substr(0, 74));
  }
}

TEST(AesTest, RoundTripsEveryLengthModeAndKeySize) {
  const Bytes iv = Hex(kNistCbcIv);
  const Bytes message = Concat(NistPlaintext(), NistPlaintext());
  for (std::string_view key_hex : {kNistKey128, kNistKey192, kNistKey256}) {
    const Bytes key = Hex(key_hex);
    for (AesMode mode : {AesMode::kCbcPkcs7, AesMode::kCtr}) {
      for (size_t n = 0; n <= 49; ++n) {
        SCOPED_TRACE(testing::Message()
                     << "key " << key.size() << " mode " << static_cast<int>(mode) << " n " << n);
        const ByteView input = ByteView(message).first(n);
        auto ciphertext = AesEncrypt(mode, key, iv, input);
        ASSERT_TRUE(ciphertext);
        EXPECT_EQ(ciphertext->size(), mode == AesMode::kCtr ? n : (n / 16 + 1) * 16);
        auto plaintext = AesDecrypt(mode, key, iv, *ciphertext);
        ASSERT_TRUE(plaintext) << plaintext.error().ToString();
        EXPECT_EQ(Plain(*plaintext), Bytes(input.begin(), input.end()));
      }
    }
  }
}

TEST(AesTest, EmptyPlaintextCbcIsOnePaddingBlock) {
  const Bytes key = Hex(kNistKey256);
  const Bytes iv = Hex(kNistCbcIv);
  auto ciphertext = AesEncrypt(AesMode::kCbcPkcs7, key, iv, {});
  ASSERT_TRUE(ciphertext);
  ASSERT_EQ(ciphertext->size(), 16u);
  auto plaintext = AesDecrypt(AesMode::kCbcPkcs7, key, iv, *ciphertext);
  ASSERT_TRUE(plaintext) << plaintext.error().ToString();
  EXPECT_TRUE(plaintext->empty());
}

class AesCbcTamperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ciphertext = AesEncrypt(AesMode::kCbcPkcs7, key_, iv_, NistPlaintext());
    ASSERT_TRUE(ciphertext);
    ciphertext_ = *ciphertext;
    ASSERT_EQ(ciphertext_.size(), 80u);  // the last block decrypts to sixteen 0x10 bytes
  }

  void ExpectTampered(ByteView ciphertext) {
    auto plaintext = AesDecrypt(AesMode::kCbcPkcs7, key_, iv_, ciphertext);
    ASSERT_FALSE(plaintext);
    EXPECT_EQ(plaintext.error().code(), StatusCode::kTampered) << plaintext.error().ToString();
    const std::string& text = plaintext.error().message();
    EXPECT_EQ(text.find(ToHex(key_)), std::string::npos);
    EXPECT_EQ(text.find("6bc1bee2"), std::string::npos);
    EXPECT_EQ(text.find(ToHex(NistPlaintext())), std::string::npos);
  }

  const Bytes key_ = Hex(kNistKey256);
  const Bytes iv_ = Hex(kNistCbcIv);
  Bytes ciphertext_;
};

TEST_F(AesCbcTamperTest, FlippedByteInLastBlock) {
  ciphertext_.back() ^= 0x01;
  ExpectTampered(ciphertext_);
}

TEST_F(AesCbcTamperTest, EveryPaddingByteIsChecked) {
  // CBC XORs the previous ciphertext block into the last plaintext block, so flipping byte 63 sets the
  // final pad byte to 0x10 ^ flip exactly.
  for (uint8_t flip : {0x10 /* pad 0x00 */, 0x01 /* pad 0x11 > 16 */, 0x12 /* pad 0x02 over 0x10 */}) {
    SCOPED_TRACE(static_cast<int>(flip));
    Bytes tampered = ciphertext_;
    tampered[63] ^= flip;
    ExpectTampered(tampered);
  }
  // Without the padding block the last block is P4, whose final byte is 0x10 but whose others are not.
  ExpectTampered(ByteView(ciphertext_).first(64));
}

TEST_F(AesCbcTamperTest, TruncatedOrPartialBlock) {
  ExpectTampered(ByteView(ciphertext_).first(79));
  ExpectTampered(ByteView(ciphertext_).first(15));
  ExpectTampered(ByteView(ciphertext_).first(1));
  ExpectTampered({});
  Bytes extended = ciphertext_;
  extended.push_back(0);
  ExpectTampered(extended);
}

TEST(AesTest, WrongKeyOrIvSizeIsInvalidArgument) {
  const Bytes iv = Hex(kNistCbcIv);
  const Bytes block = Repeat(0, 16);
  for (AesMode mode : {AesMode::kCbcPkcs7, AesMode::kCtr}) {
    for (size_t key_size : {0, 1, 15, 17, 23, 31, 33, 64}) {
      SCOPED_TRACE(key_size);
      const Bytes key = Repeat(0x2b, key_size);
      auto enc = AesEncrypt(mode, key, iv, block);
      ASSERT_FALSE(enc);
      EXPECT_EQ(enc.error().code(), StatusCode::kInvalidArgument);
      // The key check comes first: a bad key with a cut ciphertext is still the caller's mistake.
      auto dec = AesDecrypt(mode, key, iv, ByteView(block).first(5));
      ASSERT_FALSE(dec);
      EXPECT_EQ(dec.error().code(), StatusCode::kInvalidArgument);
    }
    const Bytes key = Hex(kNistKey128);
    for (size_t iv_size : {0, 8, 12, 15, 17, 32}) {
      SCOPED_TRACE(iv_size);
      const Bytes bad_iv = Repeat(0, iv_size);
      auto enc = AesEncrypt(mode, key, bad_iv, block);
      ASSERT_FALSE(enc);
      EXPECT_EQ(enc.error().code(), StatusCode::kInvalidArgument);
      auto dec = AesDecrypt(mode, key, bad_iv, block);
      ASSERT_FALSE(dec);
      EXPECT_EQ(dec.error().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(AesTest, CtrAcceptsAnyLengthIncludingEmpty) {
  const Bytes key = Hex(kNistKey128);
  const Bytes counter = Hex(kNistCtrCounter);
  auto ciphertext = AesEncrypt(AesMode::kCtr, key, counter, {});
  ASSERT_TRUE(ciphertext);
  EXPECT_TRUE(ciphertext->empty());
  auto plaintext = AesDecrypt(AesMode::kCtr, key, counter, {});
  ASSERT_TRUE(plaintext);
  EXPECT_TRUE(plaintext->empty());
}

// ---------------------------------------------------------------------------------------------------------
// SHA-512

constexpr std::string_view kSha512Abc =
    "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
constexpr std::string_view kSha512Empty =
    "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
    "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

TEST(Sha512Test, Fips180Vectors) {
  EXPECT_EQ(Sha512Hex(ToBytes("abc")), kSha512Abc);
  EXPECT_EQ(Sha512Hex({}), kSha512Empty);
  EXPECT_EQ(Sha512Hex(ToBytes("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                              "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu")),
            "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
            "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909");
}

TEST(Sha512Test, MillionAInChunks) {
  constexpr std::string_view kMillionA =
      "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973eb"
      "de0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b";
  const Bytes chunk = Repeat('a', 4093);  // prime, so chunks straddle the 128-byte blocks
  auto sha = Sha512::New();
  ASSERT_TRUE(sha);
  size_t fed = 0;
  while (fed < 1000000) {
    const size_t n = std::min(chunk.size(), 1000000 - fed);
    ASSERT_TRUE((*sha)->Update(ByteView(chunk).first(n)).ok());
    fed += n;
  }
  auto digest = (*sha)->Final();
  ASSERT_TRUE(digest);
  EXPECT_EQ(ToHex(*digest), kMillionA);
  EXPECT_EQ(Sha512Hex(Repeat('a', 1000000)), kMillionA);
}

TEST(Sha512Test, FinalResetsForTheNextInput) {
  auto sha = Sha512::New();
  ASSERT_TRUE(sha);
  ASSERT_TRUE((*sha)->Update(ToBytes("abc")).ok());
  auto first = (*sha)->Final();
  ASSERT_TRUE(first);
  EXPECT_EQ(ToHex(*first), kSha512Abc);
  auto second = (*sha)->Final();  // nothing fed since the reset
  ASSERT_TRUE(second);
  EXPECT_EQ(ToHex(*second), kSha512Empty);
}

// libsignal's displayable fingerprint iterates hash = SHA-512(hash || key) 5200 times on one context.
TEST(Sha512Test, OneObjectReused5200Times) {
  auto sha = Sha512::New();
  ASSERT_TRUE(sha);
  const Bytes key = Hex(kNistKey256);
  Bytes hash = ToBytes("fingerprint version and identifier");
  for (int i = 0; i < 5200; ++i) {
    ASSERT_TRUE((*sha)->Update(hash).ok());
    ASSERT_TRUE((*sha)->Update(key).ok());
    auto digest = (*sha)->Final();
    ASSERT_TRUE(digest) << "iteration " << i;
    const std::string expected = Sha512Hex(Concat(hash, key));
    ASSERT_EQ(ToHex(*digest), expected) << "iteration " << i;
    hash.assign(digest->begin(), digest->end());
  }
}

// ------------------------------------------------------------------------------------ ChaCha20-Poly1305

// RFC 8439 section 2.8.2.
TEST(ChaChaPolyTest, Rfc8439Section282) {
  const Bytes key = Hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
  const Bytes nonce = Hex("070000004041424344454647");
  const Bytes ad = Hex("50515253c0c1c2c3c4c5c6c7");
  const std::string_view text =
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen "
      "would be it.";
  const Bytes plaintext(text.begin(), text.end());
  const Bytes expected =
      Hex("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
          "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
          "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
          "3ff4def08e4b7a9de576d26586cec64b6116"
          "1ae10b594f09e26a7e902ecbd0600691");
  auto aead = ChaChaPoly::New(key);
  ASSERT_TRUE(aead.has_value()) << aead.error().ToString();
  const std::span<const uint8_t, kChaChaPolyNonceSize> n(nonce.data(), kChaChaPolyNonceSize);
  Bytes sealed(plaintext.size() + kChaChaPolyTagSize);
  ASSERT_TRUE((*aead)->Seal(n, ad, plaintext, sealed.data()).ok());
  EXPECT_EQ(ToHex(sealed), ToHex(expected));
  Bytes opened(plaintext.size());
  ASSERT_TRUE((*aead)->Open(n, ad, sealed, opened.data()).ok());
  EXPECT_EQ(opened, plaintext);
}

// The Noise links switched from libsodium's AEAD to this one: every length a link record can have, with
// associated data of every length a handshake uses (an empty payload under the 64-byte handshake hash is
// what XK seals), one object alternating directions and nonces, gives libsodium's bytes; and so does the
// libsodium backend, used where OpenSSL offers no ChaCha20-Poly1305.
TEST(ChaChaPolyTest, AgreesWithLibsodiumAtEveryLengthBothWays) {
  ASSERT_TRUE(Init().ok());
  Bytes key(kChaChaPolyKeySize);
  randombytes_buf(key.data(), key.size());
  for (const auto backend : {ChaChaPoly::Backend::kOpenSsl, ChaChaPoly::Backend::kLibsodium}) {
    auto aead = ChaChaPoly::New(key, backend);
    ASSERT_TRUE(aead.has_value());
    EXPECT_EQ((*aead)->backend(), backend);
    std::vector<size_t> sizes;
    for (size_t n = 0; n <= 300; n += (n < 80 ? 1 : 7)) sizes.push_back(n);
    for (size_t n : {511u, 512u, 513u, 1023u, 4096u, 4097u, 16384u, 65519u}) sizes.push_back(n);
    uint64_t counter = 0;
    for (size_t size : sizes) {
      for (size_t ad_size : {size_t{0}, size_t{1}, size_t{16}, size_t{64}}) {
        SCOPED_TRACE(::testing::Message() << "size " << size << ", ad " << ad_size);
        Bytes plaintext(size), ad(ad_size);
        // randombytes_buf takes no null pointer, which an empty vector's data() may be.
        if (!plaintext.empty()) randombytes_buf(plaintext.data(), plaintext.size());
        if (!ad.empty()) randombytes_buf(ad.data(), ad.size());
        uint8_t nonce[kChaChaPolyNonceSize] = {};
        ++counter;
        std::memcpy(nonce + 4, &counter, sizeof counter);
        Bytes ours(size + kChaChaPolyTagSize), theirs(size + kChaChaPolyTagSize);
        ASSERT_TRUE((*aead)->Seal(nonce, ad, plaintext, ours.data()).ok());
        unsigned long long len = 0;
        crypto_aead_chacha20poly1305_ietf_encrypt(theirs.data(), &len, plaintext.data(), plaintext.size(),
                                                  ad.data(), ad.size(), nullptr, nonce, key.data());
        ASSERT_EQ(ours, theirs);
        // And what libsodium seals under the next nonce, this opens.
        ++counter;
        std::memcpy(nonce + 4, &counter, sizeof counter);
        crypto_aead_chacha20poly1305_ietf_encrypt(theirs.data(), &len, plaintext.data(), plaintext.size(),
                                                  ad.data(), ad.size(), nullptr, nonce, key.data());
        Bytes opened(size);
        ASSERT_TRUE((*aead)->Open(nonce, ad, theirs, opened.data()).ok());
        ASSERT_EQ(opened, plaintext);
        // In place, as the links open their records.
        ASSERT_TRUE((*aead)->Open(nonce, ad, theirs, theirs.data()).ok());
        ASSERT_EQ(Bytes(theirs.begin(), theirs.begin() + static_cast<std::ptrdiff_t>(size)), plaintext);
      }
    }
  }
}

class ChaChaPolyBackendTest : public ::testing::TestWithParam<ChaChaPoly::Backend> {};
INSTANTIATE_TEST_SUITE_P(Both, ChaChaPolyBackendTest,
                         ::testing::Values(ChaChaPoly::Backend::kOpenSsl, ChaChaPoly::Backend::kLibsodium));

TEST_P(ChaChaPolyBackendTest, AnyChangeIsTamperedAndLeavesNoPlaintextBehind) {
  const Bytes key(kChaChaPolyKeySize, 7);
  auto aead = ChaChaPoly::New(key, GetParam());
  ASSERT_TRUE(aead.has_value());
  const uint8_t nonce[kChaChaPolyNonceSize] = {0, 0, 0, 0, 1};
  const Bytes plaintext(100, 0x41), ad = Hex("0102");
  Bytes sealed(plaintext.size() + kChaChaPolyTagSize);
  ASSERT_TRUE((*aead)->Seal(nonce, ad, plaintext, sealed.data()).ok());
  auto refused = [&](ByteView nonce_used, ByteView ad_used, ByteView ciphertext) {
    Bytes out(ciphertext.size() - kChaChaPolyTagSize, 0xee);
    const Status s =
        (*aead)->Open(std::span<const uint8_t, kChaChaPolyNonceSize>(nonce_used.data(), kChaChaPolyNonceSize),
                      ad_used, ciphertext, out.data());
    EXPECT_EQ(s.code(), StatusCode::kTampered);
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0; }))
        << "plaintext left behind";
  };
  for (size_t i : {size_t{0}, size_t{50}, plaintext.size(), sealed.size() - 1}) {  // body and tag
    Bytes changed = sealed;
    changed[i] ^= 0x01;
    refused(ByteView(nonce, sizeof nonce), ad, changed);
  }
  refused(ByteView(nonce, sizeof nonce), Hex("0103"), sealed);
  uint8_t other_nonce[kChaChaPolyNonceSize] = {0, 0, 0, 0, 2};
  refused(ByteView(other_nonce, sizeof other_nonce), ad, sealed);
  // The object still opens what is genuine after refusals.
  Bytes opened(plaintext.size());
  ASSERT_TRUE((*aead)->Open(nonce, ad, sealed, opened.data()).ok());
  EXPECT_EQ(opened, plaintext);
  uint8_t out[1];
  EXPECT_EQ((*aead)->Open(nonce, ad, Bytes(kChaChaPolyTagSize - 1), out).code(), StatusCode::kTampered);
}

TEST(ChaChaPolyTest, AKeyOfTheWrongSizeIsInvalidArgument) {
  EXPECT_EQ(ChaChaPoly::New(Bytes(31)).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ChaChaPoly::New(Bytes(33)).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ChaChaPoly::New({}).error().code(), StatusCode::kInvalidArgument);
}

// Attachments switched from libsodium's secretstream to this one. libsodium is the reference (the
// construction is its own): a stream pushed here gives, message for message, the bytes libsodium's push gives
// from the same header (a state that init_pull builds from the header is the one init_push built), at every
// length up to a whole relay chunk, through the tags that rekey; and libsodium pulls it. The other way round,
// what libsodium pushes pulls here. Both backends, since the libsodium one runs where OpenSSL lacks ChaCha20.
TEST(SecretStreamTest, AgreesWithLibsodiumMessageForMessageBothWays) {
  ASSERT_TRUE(Init().ok());
  Bytes key(kSecretStreamKeySize);
  randombytes_buf(key.data(), key.size());
  std::vector<size_t> sizes;
  for (size_t n = 0; n <= 300; n += (n < 80 ? 1 : 7)) sizes.push_back(n);
  for (size_t n : {1023u, 4096u, 65488u, 65495u, 65536u}) sizes.push_back(n);
  // MESSAGE mostly; PUSH and REKEY change the state differently, and FINAL is what an attachment ends on.
  auto tag_of = [&](size_t k) -> uint8_t {
    if (k + 1 == sizes.size()) return crypto_secretstream_xchacha20poly1305_TAG_FINAL;
    if (k % 29 == 5) return crypto_secretstream_xchacha20poly1305_TAG_REKEY;
    if (k % 31 == 7) return crypto_secretstream_xchacha20poly1305_TAG_PUSH;
    return crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
  };
  for (const auto backend : {SecretStream::Backend::kOpenSsl, SecretStream::Backend::kLibsodium}) {
    SCOPED_TRACE(backend == SecretStream::Backend::kOpenSsl ? "OpenSSL" : "libsodium");
    uint8_t header[kSecretStreamHeaderSize];
    auto ours = SecretStream::NewPush(key, header, backend);
    ASSERT_TRUE(ours.has_value());
    EXPECT_EQ((*ours)->backend(), backend);
    crypto_secretstream_xchacha20poly1305_state same_push, pull;
    ASSERT_EQ(crypto_secretstream_xchacha20poly1305_init_pull(&same_push, header, key.data()), 0);
    ASSERT_EQ(crypto_secretstream_xchacha20poly1305_init_pull(&pull, header, key.data()), 0);
    for (size_t k = 0; k < sizes.size(); ++k) {
      const size_t size = sizes[k];
      SCOPED_TRACE(::testing::Message() << "message " << k << ", size " << size);
      Bytes plaintext(size);
      // randombytes_buf takes no null pointer, which an empty vector's data() may be.
      if (!plaintext.empty()) randombytes_buf(plaintext.data(), plaintext.size());
      Bytes mine(size + kSecretStreamOverhead), theirs(size + kSecretStreamOverhead);
      ASSERT_TRUE((*ours)->Push(plaintext, tag_of(k), mine.data()).ok());
      crypto_secretstream_xchacha20poly1305_push(&same_push, theirs.data(), nullptr, plaintext.data(), size,
                                                 nullptr, 0, tag_of(k));
      ASSERT_EQ(mine, theirs);
      Bytes opened(size);
      unsigned char tag = 0xff;
      ASSERT_EQ(crypto_secretstream_xchacha20poly1305_pull(&pull, opened.data(), nullptr, &tag, mine.data(),
                                                           mine.size(), nullptr, 0),
                0);
      ASSERT_EQ(opened, plaintext);
      ASSERT_EQ(tag, tag_of(k));
    }
  }
  for (const auto backend : {SecretStream::Backend::kOpenSsl, SecretStream::Backend::kLibsodium}) {
    SCOPED_TRACE(backend == SecretStream::Backend::kOpenSsl ? "OpenSSL pulls" : "libsodium pulls");
    crypto_secretstream_xchacha20poly1305_state push;
    uint8_t header[kSecretStreamHeaderSize];
    crypto_secretstream_xchacha20poly1305_init_push(&push, header, key.data());
    auto ours = SecretStream::NewPull(key, header, backend);
    ASSERT_TRUE(ours.has_value());
    for (size_t k = 0; k < sizes.size(); ++k) {
      const size_t size = sizes[k];
      SCOPED_TRACE(::testing::Message() << "message " << k << ", size " << size);
      Bytes plaintext(size);
      if (!plaintext.empty()) randombytes_buf(plaintext.data(), plaintext.size());
      Bytes sealed(size + kSecretStreamOverhead);
      crypto_secretstream_xchacha20poly1305_push(&push, sealed.data(), nullptr, plaintext.data(), size,
                                                 nullptr, 0, tag_of(k));
      Bytes opened(size);
      auto tag = (*ours)->Pull(sealed, opened.data());
      ASSERT_TRUE(tag.has_value()) << tag.error().message();
      ASSERT_EQ(*tag, tag_of(k));
      ASSERT_EQ(opened, plaintext);
    }
  }
}

class SecretStreamBackendTest : public ::testing::TestWithParam<SecretStream::Backend> {};
INSTANTIATE_TEST_SUITE_P(Both, SecretStreamBackendTest,
                         ::testing::Values(SecretStream::Backend::kOpenSsl,
                                           SecretStream::Backend::kLibsodium));

// A refused message writes nothing and leaves the stream where it was: the genuine message still opens
// after any number of refusals, and the ones after it too. A changed bit anywhere, a message out of its
// place, one from another stream, or one too short to hold a MAC is kTampered.
TEST_P(SecretStreamBackendTest, AnyChangeIsTamperedAndTheStreamStaysWhereItWas) {
  ASSERT_TRUE(Init().ok());
  const Bytes key(kSecretStreamKeySize, 7);
  uint8_t header[kSecretStreamHeaderSize];
  auto push = SecretStream::NewPush(key, header, GetParam());
  ASSERT_TRUE(push.has_value());
  std::vector<Bytes> plaintexts = {Bytes(100, 0x41), Bytes(100, 0x42), Bytes(33, 0x43)};
  std::vector<Bytes> sealed;
  for (const Bytes& p : plaintexts) {
    Bytes& s = sealed.emplace_back(p.size() + kSecretStreamOverhead);
    ASSERT_TRUE((*push)->Push(p, kSecretStreamTagMessage, s.data()).ok());
  }
  auto pull = SecretStream::NewPull(key, header, GetParam());
  ASSERT_TRUE(pull.has_value());
  auto refused = [&](ByteView message) {
    Bytes out(message.size() < kSecretStreamOverhead ? 1 : message.size() - kSecretStreamOverhead + 1, 0xee);
    auto tag = (*pull)->Pull(message, out.data());
    ASSERT_FALSE(tag.has_value());
    EXPECT_EQ(tag.error().code(), StatusCode::kTampered);
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](uint8_t b) { return b == 0xee; })) << "output written";
  };
  Bytes opened(100);
  ASSERT_TRUE((*pull)->Pull(sealed[0], opened.data()).has_value());
  for (size_t i = 0; i < sealed[1].size(); ++i) {  // the tag byte, the body and the MAC
    Bytes changed = sealed[1];
    changed[i] ^= 0x80;
    refused(changed);
  }
  refused(sealed[2]);  // out of its place
  refused(sealed[0]);  // again
  refused(Bytes(sealed[1].begin(), sealed[1].end() - 1));
  refused(Bytes(kSecretStreamOverhead - 1, 0));
  uint8_t other_header[kSecretStreamHeaderSize];
  auto other = SecretStream::NewPush(key, other_header, GetParam());
  ASSERT_TRUE(other.has_value());
  Bytes foreign(100 + kSecretStreamOverhead);
  ASSERT_TRUE((*other)->Push(Bytes(100, 0x42), kSecretStreamTagMessage, foreign.data()).ok());
  refused(foreign);
  for (size_t k = 1; k < sealed.size(); ++k) {
    Bytes out(plaintexts[k].size());
    auto tag = (*pull)->Pull(sealed[k], out.data());
    ASSERT_TRUE(tag.has_value()) << "message " << k;
    EXPECT_EQ(*tag, kSecretStreamTagMessage);
    EXPECT_EQ(out, plaintexts[k]);
  }
  // Each stream goes one way.
  uint8_t scratch[kSecretStreamOverhead + 1];
  EXPECT_FALSE((*pull)->Push(Bytes(1), kSecretStreamTagMessage, scratch).ok());
  EXPECT_FALSE((*push)->Pull(sealed[0], scratch).has_value());
}

TEST(SecretStreamTest, AKeyOfTheWrongSizeIsInvalidArgument) {
  uint8_t header[kSecretStreamHeaderSize] = {};
  EXPECT_EQ(SecretStream::NewPush(Bytes(31), header).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SecretStream::NewPull(Bytes(33), header).error().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cw::crypto
