// libsignal-protocol-c's X25519 (curve25519_donna) runs on libsodium through the definition in
// core/session/provider.cc (fast_curve.h). These tests hold it to the library's own function: known answers, the same
// output as the library's donna on random, unclamped and low-order inputs, and proof that the library's own
// calls reach it.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sodium.h>

#include <array>
#include <cstdint>
#include <string>

#include "core/base/bytes.h"
#include "core/session/engine.h"
#include "core/session/fast_curve.h"
#include "core/session/store.h"

extern "C" int curve25519_donna(uint8_t* mypublic, const uint8_t* secret, const uint8_t* basepoint);

namespace cw::session {
namespace {

using Key = std::array<uint8_t, 32>;
using DonnaFn = int (*)(uint8_t*, const uint8_t*, const uint8_t*);

Key FromHex(const std::string& hex) {
  Key k{};
  size_t len = 0;
  EXPECT_EQ(sodium_hex2bin(k.data(), k.size(), hex.data(), hex.size(), nullptr, &len, nullptr), 0);
  EXPECT_EQ(len, k.size());
  return k;
}

std::string Hex(const Key& k) {
  char out[65];
  sodium_bin2hex(out, sizeof out, k.data(), k.size());
  return out;
}

// X25519's clamping (RFC 7748, section 5), which libsignal applies when it makes a private key.
Key Clamp(Key k) {
  k[0] &= 248;
  k[31] &= 127;
  k[31] |= 64;
  return k;
}

Key Mult(DonnaFn fn, const Key& scalar, const Key& point) {
  Key out{};
  EXPECT_EQ(fn(out.data(), scalar.data(), point.data()), 0);
  return out;
}

// The library's own donna: the next definition after this executable's.
DonnaFn LibraryDonna() { return reinterpret_cast<DonnaFn>(dlsym(RTLD_NEXT, "curve25519_donna")); }

TEST(FastCurve, ResolvesToOurDefinition) {
  void* resolved = dlsym(RTLD_DEFAULT, "curve25519_donna");
  ASSERT_NE(resolved, nullptr);
  Dl_info info{};
  ASSERT_NE(dladdr(resolved, &info), 0);
  const std::string where = info.dli_fname ? info.dli_fname : "";
  EXPECT_EQ(where.find("libsignal-protocol-c"), std::string::npos) << "bound to " << where;
  EXPECT_EQ(reinterpret_cast<void*>(&curve25519_donna), resolved);
  ASSERT_NE(LibraryDonna(), nullptr);
  EXPECT_NE(reinterpret_cast<void*>(LibraryDonna()), resolved);
}

// RFC 7748, sections 5.2 and 6.1, with the scalars clamped as X25519 does before multiplying.
TEST(FastCurve, KnownAnswers) {
  const Key nine{9};
  const Key a = Clamp(FromHex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
  const Key b = Clamp(FromHex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
  const Key alice_public = Mult(&curve25519_donna, a, nine);
  const Key bob_public = Mult(&curve25519_donna, b, nine);
  EXPECT_EQ(Hex(alice_public), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(Hex(bob_public), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  const std::string shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
  EXPECT_EQ(Hex(Mult(&curve25519_donna, a, bob_public)), shared);
  EXPECT_EQ(Hex(Mult(&curve25519_donna, b, alice_public)), shared);
  EXPECT_EQ(Hex(Mult(&curve25519_donna, Clamp(FromHex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")),
                     FromHex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"))),
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
}

// Bit for bit the library's function, including where libsodium would answer differently: unclamped
// scalars (the library does not clamp) and low-order points (libsodium refuses them).
TEST(FastCurve, SameOutputAsTheLibrarysDonna) {
  const DonnaFn library = LibraryDonna();
  ASSERT_NE(library, nullptr);
  const uint64_t fast_before = FastCurveCallsForTesting();
  for (int i = 0; i < 64; ++i) {
    Key scalar{}, point{};
    randombytes_buf(scalar.data(), scalar.size());
    randombytes_buf(point.data(), point.size());  // the top bit included: both ignore it
    const Key clamped = Clamp(scalar);
    EXPECT_EQ(Mult(&curve25519_donna, clamped, point), Mult(library, clamped, point));
    EXPECT_EQ(Mult(&curve25519_donna, scalar, point), Mult(library, scalar, point));
  }
  // Low-order points: 0, 1, and the order-8 point of RFC 7748's curve.
  const Key low_order[] = {Key{}, Key{1},
                           FromHex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")};
  for (const Key& point : low_order) {
    Key scalar{};
    randombytes_buf(scalar.data(), scalar.size());
    EXPECT_EQ(Mult(&curve25519_donna, Clamp(scalar), point), Mult(library, Clamp(scalar), point));
  }
  EXPECT_GE(FastCurveCallsForTesting() - fast_before, 64u);  // the clamped, valid ones went to libsodium
}

// The library's own calls (identity, signed pre-key and one-time pre-key generation) reach the definition.
TEST(FastCurve, LibsignalsOwnCallsReachIt) {
  InMemoryStore store;
  EngineOptions options;
  options.one_time_pre_key_batch = 5;
  const uint64_t before = FastCurveCallsForTesting();
  auto engine = Engine::Open(&store, "dr.lee", options);
  ASSERT_TRUE(engine.has_value()) << engine.error().ToString();
  EXPECT_GE(FastCurveCallsForTesting() - before, 7u);  // identity + signed pre-key + 5 one-time pre-keys
}

}  // namespace
}  // namespace cw::session
