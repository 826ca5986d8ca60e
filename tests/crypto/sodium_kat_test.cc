// libsodium known answers, linked into every binary that also links libsignal-protocol-c.
//
// libsignal-protocol-c exports crypto_hash_sha512 (libsodium's name and prototype) and its own ref10
// Ed25519 helpers. If it precedes libsodium on a link line, libsodium's internal calls (its Ed25519 key
// derivation hashes the seed with crypto_hash_sha512) bind to libsignal's code. These tests pin libsodium's
// results and where that symbol resolves, so a reordered link line fails here and not in the field.
// Self-contained on purpose: only libsodium, libc and GoogleTest, so any test binary can add this file.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace {

std::vector<uint8_t> Unhex(std::string_view hex) {
  if (hex.empty()) return {};  // sodium_hex2bin's output pointer must not be null
  std::vector<uint8_t> out(hex.size() / 2);
  size_t size = 0;
  if (sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &size, nullptr) != 0 ||
      size != out.size()) {
    ADD_FAILURE() << "bad hex in test vector: " << hex;
    return {};
  }
  return out;
}

std::string Hex(const uint8_t* data, size_t size) {
  std::string out(size * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), data, size);
  out.pop_back();
  return out;
}

class SodiumKnownAnswer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_GE(sodium_init(), 0); }

  static std::string HashSha512(std::string_view message) {
    uint8_t digest[crypto_hash_sha512_BYTES];
    crypto_hash_sha512(digest, reinterpret_cast<const uint8_t*>(message.data()), message.size());
    return Hex(digest, sizeof digest);
  }
};

// FIPS 180-2 appendix C.
TEST_F(SodiumKnownAnswer, HashSha512Abc) {
  EXPECT_EQ(HashSha512("abc"),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
}

TEST_F(SodiumKnownAnswer, HashSha512TwoBlocks) {
  EXPECT_EQ(HashSha512("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                       "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu"),
            "8e959b75dae313da8cf4f72814fc143f8f7779c6eb9f7fa17299aeadb6889018"
            "501d289e4900f7e4331b99dec4b5433ac7d329eeb6dd26545e96e55b874be909");
}

struct Ed25519Vector {
  const char* name;
  const char* secret_key;  // RFC 8032 calls the 32-byte seed the secret key
  const char* public_key;
  const char* message;
  const char* signature;
};

// RFC 8032 section 7.1, TEST 1 (empty message) and TEST 2 (one byte).
constexpr Ed25519Vector kEd25519Vectors[] = {
    {"Rfc8032Test1", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
     "d25bf5f0595bbe24655141438e7a100b"},
    {"Rfc8032Test2", "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c"
     "387b2eaeb4302aeeb00d291612bb0c00"},
};

TEST_F(SodiumKnownAnswer, Ed25519SignAndVerifyRfc8032) {
  for (const Ed25519Vector& v : kEd25519Vectors) {
    SCOPED_TRACE(v.name);
    const std::vector<uint8_t> seed = Unhex(v.secret_key);
    const std::vector<uint8_t> message = Unhex(v.message);
    ASSERT_EQ(seed.size(), crypto_sign_SEEDBYTES);

    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    uint8_t sk[crypto_sign_SECRETKEYBYTES];
    ASSERT_EQ(crypto_sign_seed_keypair(pk, sk, seed.data()), 0);
    EXPECT_EQ(Hex(pk, sizeof pk), v.public_key);

    uint8_t sig[crypto_sign_BYTES];
    unsigned long long sig_size = 0;
    ASSERT_EQ(crypto_sign_detached(sig, &sig_size, message.data(), message.size(), sk), 0);
    EXPECT_EQ(sig_size, crypto_sign_BYTES);
    EXPECT_EQ(Hex(sig, sizeof sig), v.signature);

    const std::vector<uint8_t> expected_sig = Unhex(v.signature);
    ASSERT_EQ(expected_sig.size(), crypto_sign_BYTES);
    EXPECT_EQ(crypto_sign_verify_detached(expected_sig.data(), message.data(), message.size(), pk), 0);

    // Verification must also reject, or a verify that always succeeds would pass the line above.
    uint8_t bad_sig[crypto_sign_BYTES];
    std::copy(expected_sig.begin(), expected_sig.end(), bad_sig);
    bad_sig[0] ^= 0x01;
    EXPECT_NE(crypto_sign_verify_detached(bad_sig, message.data(), message.size(), pk), 0);
    sodium_memzero(sk, sizeof sk);
  }
}

// The known answers above cannot see today's clash: Debian's libsignal-protocol-c 2.3.3 carries a correct
// SHA-512 under that name, so libsodium bound to it still signs correctly. Check the binding itself, so the
// day either library changes its code the wrong one is not silently in use.
TEST_F(SodiumKnownAnswer, HashSha512ResolvesToLibsodium) {
  void* sodium_init_address = dlsym(RTLD_DEFAULT, "sodium_init");
  Dl_info sodium_file{};
  if (sodium_init_address == nullptr || dladdr(sodium_init_address, &sodium_file) == 0) {
    GTEST_SKIP() << "libsodium is not a shared library here";
  }
  void* sodium = dlopen(sodium_file.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (sodium == nullptr) GTEST_SKIP() << "libsodium is linked statically";
  void* own = dlsym(sodium, "crypto_hash_sha512");
  void* bound = dlsym(RTLD_DEFAULT, "crypto_hash_sha512");
  dlclose(sodium);
  Dl_info bound_file{};
  EXPECT_EQ(bound, own) << "crypto_hash_sha512 resolves into "
                        << (dladdr(bound, &bound_file) != 0 ? bound_file.dli_fname : "an unknown object")
                        << ", not " << sodium_file.dli_fname
                        << ": put libsodium before libsignal-protocol-c on the link line";
}

}  // namespace
