// Noise unit tests: both sides ours. Interop with an independent implementation is noise_interop_test.cc.
#include "transport/noise.h"

#include <gtest/gtest.h>

#include "core/base/random.h"
#include "transport/link.h"

namespace cw::transport::noise {
namespace {

struct Pair {
  std::unique_ptr<HandshakeState> initiator, responder;
};

Pair MakeXk(Random& rng, const StaticKeyPair& i, const StaticKeyPair& r, const PublicKey& pinned) {
  HandshakeConfig ic;
  ic.role = Role::kInitiator;
  ic.local_static = &i;
  ic.remote_static = pinned;
  ic.prologue = AsBytes("p");
  ic.random = &rng;
  HandshakeConfig rc;
  rc.role = Role::kResponder;
  rc.local_static = &r;
  rc.prologue = AsBytes("p");
  rc.random = &rng;
  return {std::move(*HandshakeState::New(ic)), std::move(*HandshakeState::New(rc))};
}

TEST(Noise, ProtocolNames) {
  EXPECT_EQ(ProtocolName(Pattern::kXK), "Noise_XK_25519_ChaChaPoly_BLAKE2b");
  EXPECT_EQ(ProtocolName(Pattern::kIK), "Noise_IK_25519_ChaChaPoly_BLAKE2b");
  EXPECT_EQ(ProtocolName(Pattern::kKK), "Noise_KK_25519_ChaChaPoly_BLAKE2b");
}

TEST(Noise, XkRoundTripAuthenticatesBothStaticKeys) {
  SeededRandom rng(1);
  auto i = StaticKeyPair::Generate(rng);
  auto r = StaticKeyPair::Generate(rng);
  auto p = MakeXk(rng, i, r, r.public_key());
  EXPECT_FALSE(p.responder->remote_static().has_value());
  auto m1 = p.initiator->WriteMessage(ToBytes("one"));
  ASSERT_TRUE(m1.has_value());
  EXPECT_EQ(m1->size(), 32u + 3 + 16);
  EXPECT_EQ(*p.responder->ReadMessage(*m1), ToBytes("one"));
  auto m2 = p.responder->WriteMessage(ToBytes("two"));
  EXPECT_EQ(*p.initiator->ReadMessage(*m2), ToBytes("two"));
  auto m3 = p.initiator->WriteMessage({});
  EXPECT_EQ(m3->size(), 48u + 16);
  EXPECT_TRUE(p.responder->ReadMessage(*m3)->empty());
  ASSERT_TRUE(p.initiator->IsComplete() && p.responder->IsComplete());
  EXPECT_EQ(*p.responder->remote_static(), i.public_key());
  auto ci = p.initiator->Split();
  auto cr = p.responder->Split();
  ASSERT_TRUE(ci && cr);
  EXPECT_EQ(ci->handshake_hash, cr->handshake_hash);
  for (int n = 0; n < 3; ++n) {
    auto c = ci->send.EncryptWithAd({}, ToBytes("hi"));
    EXPECT_EQ(*cr->receive.DecryptWithAd({}, *c), ToBytes("hi"));
    auto d = cr->send.EncryptWithAd({}, ToBytes("yo"));
    EXPECT_EQ(*ci->receive.DecryptWithAd({}, *d), ToBytes("yo"));
  }
  EXPECT_FALSE(p.initiator->Split().has_value()) << "single use";
}

TEST(Noise, WrongPinnedKeyFailsAtTheFirstMessage) {
  SeededRandom rng(2);
  auto i = StaticKeyPair::Generate(rng);
  auto r = StaticKeyPair::Generate(rng);
  auto other = StaticKeyPair::Generate(rng);
  auto p = MakeXk(rng, i, r, other.public_key());
  auto m1 = p.initiator->WriteMessage({});
  auto read = p.responder->ReadMessage(*m1);
  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code(), StatusCode::kTampered);
  // Dead afterwards.
  EXPECT_EQ(p.responder->WriteMessage({}).error().code(), StatusCode::kInvalidArgument);
}

TEST(Noise, EveryFlippedBitOfEveryMessageIsDetected) {
  for (int msg = 0; msg < 3; ++msg) {
    for (size_t bit = 0; bit < 8 * 96; bit += 37) {
      SeededRandom rng(3);
      auto i = StaticKeyPair::Generate(rng);
      auto r = StaticKeyPair::Generate(rng);
      auto p = MakeXk(rng, i, r, r.public_key());
      HandshakeState* writer[3] = {p.initiator.get(), p.responder.get(), p.initiator.get()};
      HandshakeState* reader[3] = {p.responder.get(), p.initiator.get(), p.responder.get()};
      for (int k = 0; k < msg; ++k)
        ASSERT_TRUE(reader[k]->ReadMessage(*writer[k]->WriteMessage({})).has_value());
      auto m = writer[msg]->WriteMessage(ToBytes("payload"));
      if (bit / 8 >= m->size()) continue;
      (*m)[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      auto read = reader[msg]->ReadMessage(*m);
      ASSERT_FALSE(read.has_value()) << "message " << msg << " bit " << bit;
      // A flipped bit in the ephemeral key gives another (valid) point: authentication still fails.
      EXPECT_TRUE(read.error().code() == StatusCode::kTampered ||
                  read.error().code() == StatusCode::kMalformed);
    }
  }
}

TEST(Noise, TruncatedMessagesAreMalformed) {
  SeededRandom rng(4);
  auto i = StaticKeyPair::Generate(rng);
  auto r = StaticKeyPair::Generate(rng);
  for (size_t len : {0, 1, 31, 32, 47}) {
    auto p = MakeXk(rng, i, r, r.public_key());
    auto m1 = p.initiator->WriteMessage({});
    auto read = p.responder->ReadMessage(ByteView(*m1).first(len));
    ASSERT_FALSE(read.has_value());
    EXPECT_EQ(read.error().code(), StatusCode::kMalformed) << len;
  }
}

TEST(Noise, LowOrderEphemeralIsRejected) {
  SeededRandom rng(5);
  auto i = StaticKeyPair::Generate(rng);
  auto r = StaticKeyPair::Generate(rng);
  auto p = MakeXk(rng, i, r, r.public_key());
  Bytes m1(48, 0);  // e = 0 (a low-order point), then a tag
  auto read = p.responder->ReadMessage(m1);
  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code(), StatusCode::kMalformed);
}

TEST(Noise, TurnsAreEnforced) {
  SeededRandom rng(6);
  auto i = StaticKeyPair::Generate(rng);
  auto r = StaticKeyPair::Generate(rng);
  auto p = MakeXk(rng, i, r, r.public_key());
  EXPECT_EQ(p.responder->WriteMessage({}).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(p.initiator->ReadMessage(Bytes(64)).error().code(), StatusCode::kInvalidArgument);
}

TEST(Noise, MissingKeysAreRefusedAtConstruction) {
  SeededRandom rng(7);
  auto s = StaticKeyPair::Generate(rng);
  HandshakeConfig c;
  c.local_static = &s;
  c.random = &rng;
  EXPECT_FALSE(HandshakeState::New(c).has_value()) << "XK initiator without the pinned key";
  c.pattern = Pattern::kKK;
  c.role = Role::kResponder;
  EXPECT_FALSE(HandshakeState::New(c).has_value()) << "KK responder without the peer key";
  c.pattern = Pattern::kXK;
  c.local_static = nullptr;
  EXPECT_FALSE(HandshakeState::New(c).has_value()) << "no static key: there is no anonymous mode";
}

TEST(Noise, MessageSizeLimits) {
  SeededRandom rng(8);
  auto i = StaticKeyPair::Generate(rng);
  auto r = StaticKeyPair::Generate(rng);
  auto p = MakeXk(rng, i, r, r.public_key());
  EXPECT_EQ(p.initiator->WriteMessage(Bytes(65535 - 48 + 1)).error().code(), StatusCode::kInvalidArgument);
  auto q = MakeXk(rng, i, r, r.public_key());
  auto m = q.initiator->WriteMessage(Bytes(65535 - 48));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->size(), 65535u);
  EXPECT_TRUE(q.responder->ReadMessage(*m).has_value());
  CipherState cs;
  cs.InitializeKey(Bytes(32, 1));
  EXPECT_TRUE(cs.EncryptWithAd({}, Bytes(kMaxTransportPlaintext)).has_value());
  EXPECT_FALSE(cs.EncryptWithAd({}, Bytes(kMaxTransportPlaintext + 1)).has_value());
}

TEST(Noise, CipherStateNonceRulesAndRekey) {
  CipherState a, b;
  a.InitializeKey(Bytes(32, 9));
  b.InitializeKey(Bytes(32, 9));
  auto c0 = a.EncryptWithAd(ToBytes("ad"), ToBytes("x"));
  auto c1 = a.EncryptWithAd(ToBytes("ad"), ToBytes("x"));
  EXPECT_NE(*c0, *c1);
  // Out of order: fails, and the failure leaves n unchanged.
  EXPECT_EQ(b.DecryptWithAd(ToBytes("ad"), *c1).error().code(), StatusCode::kTampered);
  EXPECT_EQ(b.nonce(), 0u);
  EXPECT_TRUE(b.DecryptWithAd(ToBytes("ad"), *c0).has_value());
  EXPECT_FALSE(b.DecryptWithAd(ToBytes("other ad"), *c1).has_value());
  EXPECT_TRUE(b.DecryptWithAd(ToBytes("ad"), *c1).has_value());
  ASSERT_TRUE(a.Rekey().ok());
  ASSERT_TRUE(b.Rekey().ok());
  EXPECT_EQ(*b.DecryptWithAd({}, *a.EncryptWithAd({}, ToBytes("after rekey"))), ToBytes("after rekey"));
  a.SetNonce(UINT64_MAX);
  EXPECT_EQ(a.EncryptWithAd({}, ToBytes("x")).error().code(), StatusCode::kResourceExhausted);
  // The nonce layout: 4 zero bytes then n little-endian. n = 1 with this layout gives what libsodium gives.
  CipherState c;
  c.InitializeKey(Bytes(32, 3));
  c.SetNonce(0x0102030405060708ull);
  auto ours = c.EncryptWithAd({}, ToBytes("z"));
  uint8_t nonce[12] = {0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1};
  Bytes key(32, 3);
  Bytes expected(17);
  unsigned long long len = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(expected.data(), &len, reinterpret_cast<const uint8_t*>("z"), 1,
                                            nullptr, 0, nullptr, nonce, key.data());
  EXPECT_EQ(*ours, expected);
}

// Links decrypt their records in place: the same plaintext and nonce rules as DecryptWithAd, and a record
// that fails is wiped and leaves n unchanged.
// Section 4.2 REKEY computed by hand with libsodium's AEAD: k' = first 32 bytes of ENCRYPT(k, 2^64 - 1,
// empty, 32 zero bytes); then a message under k' and the unchanged n.
TEST(Noise, RekeyGivesWhatLibsodiumGives) {
  const Bytes key(32, 0x42);
  CipherState c;
  c.InitializeKey(key);
  c.SetNonce(5);
  ASSERT_TRUE(c.Rekey().ok());
  EXPECT_EQ(c.nonce(), 5u);
  auto ours = c.EncryptWithAd(ToBytes("ad"), ToBytes("after rekey"));
  ASSERT_TRUE(ours.has_value());
  uint8_t max_nonce[12] = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  uint8_t zeros[32] = {}, rekeyed[48];
  unsigned long long len = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(rekeyed, &len, zeros, sizeof zeros, nullptr, 0, nullptr,
                                            max_nonce, key.data());
  uint8_t five[12] = {0, 0, 0, 0, 5};
  const Bytes ad = ToBytes("ad"), text = ToBytes("after rekey");
  Bytes expected(text.size() + 16);
  crypto_aead_chacha20poly1305_ietf_encrypt(expected.data(), &len, text.data(), text.size(), ad.data(),
                                            ad.size(), nullptr, five, rekeyed);
  EXPECT_EQ(*ours, expected);
}

TEST(Noise, DecryptInPlaceMatchesDecryptWithAd) {
  CipherState a, b;
  a.InitializeKey(Bytes(32, 4));
  b.InitializeKey(Bytes(32, 4));
  const Bytes text = ToBytes("a record's worth of frames");
  Bytes first = *a.EncryptWithAd({}, text);
  Bytes second = *a.EncryptWithAd({}, text);
  Bytes tampered = first;
  tampered[3] ^= 0x10;
  auto refused = b.DecryptInPlace({}, tampered);
  EXPECT_EQ(refused.error().code(), StatusCode::kTampered);
  EXPECT_EQ(tampered, Bytes(tampered.size(), 0));
  EXPECT_EQ(b.nonce(), 0u);
  auto opened = b.DecryptInPlace({}, first);
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(opened->data(), first.data());
  EXPECT_EQ(Bytes(opened->begin(), opened->end()), text);
  EXPECT_EQ(*b.DecryptWithAd({}, second), text);
  EXPECT_EQ(b.nonce(), 2u);
}

TEST(NoiseLink, FramesOfEverySizeCrossTheLinkInArbitraryChunks) {
  SeededRandom rng(9);
  auto i = StaticKeyPair::Generate(rng);
  auto r = StaticKeyPair::Generate(rng);
  NoiseLink::Config ic{Role::kInitiator, &i, r.public_key(), AsBytes("p"), kDefaultMaxFrameSize, &rng};
  NoiseLink::Config rc{Role::kResponder, &r, std::nullopt, AsBytes("p"), kDefaultMaxFrameSize, &rng};
  auto a = std::move(*NoiseLink::New(ic));
  auto b = std::move(*NoiseLink::New(rc));
  Bytes a_to_b, b_to_a;
  ASSERT_TRUE(a->Start(&a_to_b).ok());
  std::vector<Bytes> got;
  auto deliver = [&](NoiseLink& link, Bytes& in, Bytes& reply) {
    size_t pos = 0;
    while (pos < in.size()) {
      const size_t n = std::min<size_t>(in.size() - pos, 1 + rng.Uniform(3000));
      ASSERT_TRUE(link.Feed(ByteView(in).subspan(pos, n)).ok());
      pos += n;
      for (;;) {
        auto ev = link.Next(&reply);
        ASSERT_TRUE(ev.has_value()) << ev.error().ToString();
        if (ev->kind == NoiseLink::EventKind::kNeedMore) break;
        if (ev->kind == NoiseLink::EventKind::kFrame) got.emplace_back(ev->frame.begin(), ev->frame.end());
      }
    }
    in.clear();
  };
  deliver(*b, a_to_b, b_to_a);
  deliver(*a, b_to_a, a_to_b);
  ASSERT_TRUE(a->handshake_complete());
  // The client may send right after its last handshake message, in the same write.
  std::vector<Bytes> sent;
  Bytes stream;
  for (size_t size : {1, 65519, 65520, 131072, 5, 200000 % 131072}) {
    Bytes f(size);
    rng.Fill(f.data(), f.size());
    ASSERT_TRUE(AppendFrame(f, kDefaultMaxFrameSize, &stream).ok());
    sent.push_back(f);
  }
  ASSERT_TRUE(a->SealFrames(stream, &a_to_b).ok());
  deliver(*b, a_to_b, b_to_a);
  ASSERT_TRUE(b->handshake_complete());
  EXPECT_EQ(*b->remote_static(), i.public_key());
  EXPECT_EQ(a->handshake_hash(), b->handshake_hash());
  EXPECT_EQ(got, sent);
}

TEST(NoiseLink, OversizedFrameInsideTheEncryptedStreamIsMalformed) {
  SeededRandom rng(10);
  auto i = StaticKeyPair::Generate(rng);
  auto r = StaticKeyPair::Generate(rng);
  NoiseLink::Config ic{Role::kInitiator, &i, r.public_key(), AsBytes("p"), 1 << 20, &rng};
  NoiseLink::Config rc{Role::kResponder, &r, std::nullopt, AsBytes("p"), 1000, &rng};
  auto a = std::move(*NoiseLink::New(ic));
  auto b = std::move(*NoiseLink::New(rc));
  Bytes ab, ba;
  ASSERT_TRUE(a->Start(&ab).ok());
  ASSERT_TRUE(b->Feed(ab).ok());
  ab.clear();
  ASSERT_TRUE(b->Next(&ba).has_value());
  ASSERT_TRUE(a->Feed(ba).ok());
  ASSERT_EQ(a->Next(&ab)->kind, NoiseLink::EventKind::kHandshakeComplete);
  Bytes stream;
  ASSERT_TRUE(AppendFrame(Bytes(1001), 1 << 20, &stream).ok());
  ASSERT_TRUE(a->SealFrames(ByteView(stream).first(10), &ab).ok());  // just the header and a little
  ASSERT_TRUE(b->Feed(ab).ok());
  ASSERT_EQ(b->Next(&ba)->kind, NoiseLink::EventKind::kHandshakeComplete);
  auto ev = b->Next(&ba);
  ASSERT_FALSE(ev.has_value());
  EXPECT_EQ(ev.error().code(), StatusCode::kMalformed);
  EXPECT_NE(ev.error().message().find("exceeds the maximum of 1000"), std::string::npos);
}

TEST(NoiseLink, ZeroLengthRecordIsMalformed) {
  SeededRandom rng(11);
  auto r = StaticKeyPair::Generate(rng);
  NoiseLink::Config rc{Role::kResponder, &r, std::nullopt, AsBytes("p"), 1000, &rng};
  auto b = std::move(*NoiseLink::New(rc));
  EXPECT_EQ(b->Feed(Bytes{0, 0}).code(), StatusCode::kMalformed);
}

}  // namespace
}  // namespace cw::transport::noise
