#include "storage/keystore.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/base/bytes.h"
#include "core/base/clock.h"
#include "tests/storage/storage_test_util.h"

namespace cw::storage {
namespace {

using testing::TempDir;

constexpr std::string_view kPass = "correct horse battery staple";
constexpr std::string_view kWrong = "Tr0ub4dor&3-wrong";

class KeystoreTest : public ::testing::Test {
 protected:
  KeystoreOptions Options() {
    KeystoreOptions o = KeystoreOptions::MinimumCostForTesting();
    o.clock = &clock_;
    return o;
  }
  std::string path() const { return dir_.Sub("keystore"); }

  std::array<uint8_t, 32> Subkey(const Keystore& ks) {
    std::array<uint8_t, 32> out{};
    Status s = ks.DeriveSubkey(7, "testctx1", out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::string ReadFileBytes() {
    std::ifstream f(path(), std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  void WriteFileBytes(const std::string& b) {
    std::ofstream f(path(), std::ios::binary | std::ios::trunc);
    f << b;
  }

  TempDir dir_;
  FakeClock clock_;
};

TEST_F(KeystoreTest, DefaultsAreLibsodiumModerateLimits) {
  KeystoreOptions o;
  EXPECT_EQ(o.argon2_opslimit, crypto_pwhash_OPSLIMIT_MODERATE);
  EXPECT_EQ(o.argon2_memlimit, crypto_pwhash_MEMLIMIT_MODERATE);
  EXPECT_FALSE(o.erase_after_failures.has_value());
}

TEST_F(KeystoreTest, CreateUnlockAndTheSameMasterKeyComesBack) {
  auto ks = Keystore::Create(path(), AsBytes(kPass), Options());
  CW_ST_ASSERT_OK(ks);
  EXPECT_TRUE((*ks)->unlocked());
  const auto before = Subkey(**ks);
  ks->reset();

  auto opened = Keystore::Open(path(), Options());
  CW_ST_ASSERT_OK(opened);
  EXPECT_FALSE((*opened)->unlocked());
  CW_ST_ASSERT_OK((*opened)->Unlock(AsBytes(kPass)));
  EXPECT_TRUE((*opened)->unlocked());
  EXPECT_EQ(Subkey(**opened), before);

  // Distinct ids and contexts give distinct subkeys.
  std::array<uint8_t, 32> other{};
  CW_ST_ASSERT_OK((*opened)->DeriveSubkey(8, "testctx1", other));
  EXPECT_NE(other, before);
}

TEST_F(KeystoreTest, TwoKeystoresHaveDifferentMasterKeys) {
  auto a = Keystore::Create(path(), AsBytes(kPass), Options());
  auto b = Keystore::Create(dir_.Sub("other"), AsBytes(kPass), Options());
  CW_ST_ASSERT_OK(a);
  CW_ST_ASSERT_OK(b);
  EXPECT_NE(Subkey(**a), Subkey(**b));
}

TEST_F(KeystoreTest, CreateAndOpenErrors) {
  CW_ST_EXPECT_CODE(Keystore::Open(path(), Options()), StatusCode::kNotFound);
  CW_ST_EXPECT_CODE(Keystore::Create(path(), AsBytes(""), Options()), StatusCode::kInvalidArgument);
  std::string huge(kMaxPassphraseSize + 1, 'x');
  CW_ST_EXPECT_CODE(Keystore::Create(path(), AsBytes(huge), Options()), StatusCode::kInvalidArgument);
  KeystoreOptions bad = Options();
  bad.argon2_opslimit = 0;
  CW_ST_EXPECT_CODE(Keystore::Create(path(), AsBytes(kPass), bad), StatusCode::kInvalidArgument);
  CW_ST_ASSERT_OK(Keystore::Create(path(), AsBytes(kPass), Options()));
  CW_ST_EXPECT_CODE(Keystore::Create(path(), AsBytes(kPass), Options()), StatusCode::kAlreadyExists);
  std::array<uint8_t, 32> out{};
  auto ks = Keystore::Open(path(), Options());
  CW_ST_ASSERT_OK(ks);
  CW_ST_EXPECT_CODE((*ks)->DeriveSubkey(1, "short", out), StatusCode::kInvalidArgument);
}

TEST_F(KeystoreTest, WrongPassphraseIsClearCountedPersistentlyAndNeverEchoed) {
  CW_ST_ASSERT_OK(Keystore::Create(path(), AsBytes(kPass), Options()));
  {
    auto ks = Keystore::Open(path(), Options());
    CW_ST_ASSERT_OK(ks);
    Status s = (*ks)->Unlock(AsBytes(kWrong));
    EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << s.ToString();
    EXPECT_NE(s.message().find("wrong passphrase"), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find(kWrong), std::string::npos);
    EXPECT_EQ(s.message().find(kPass), std::string::npos);
    EXPECT_FALSE((*ks)->unlocked());
    EXPECT_EQ((*ks)->failed_attempts(), 1u);
    CW_ST_EXPECT_CODE((*ks)->Unlock(AsBytes("")), StatusCode::kPermissionDenied);
    EXPECT_EQ((*ks)->failed_attempts(), 2u);
  }
  {
    // The count survives a restart of the app.
    auto ks = Keystore::Open(path(), Options());
    CW_ST_ASSERT_OK(ks);
    EXPECT_EQ((*ks)->failed_attempts(), 2u);
    CW_ST_ASSERT_OK((*ks)->Unlock(AsBytes(kPass)));
    EXPECT_EQ((*ks)->failed_attempts(), 0u);
  }
  auto ks = Keystore::Open(path(), Options());
  CW_ST_ASSERT_OK(ks);
  EXPECT_EQ((*ks)->failed_attempts(), 0u);
}

TEST_F(KeystoreTest, RepeatedFailuresBackOffExponentially) {
  KeystoreOptions o = Options();
  o.backoff_free_attempts = 3;
  o.backoff_base_ms = 1000;
  CW_ST_ASSERT_OK(Keystore::Create(path(), AsBytes(kPass), o));
  auto ks = Keystore::Open(path(), o);
  CW_ST_ASSERT_OK(ks);
  Keystore& k = **ks;
  for (int i = 0; i < 3; ++i) CW_ST_EXPECT_CODE(k.Unlock(AsBytes(kWrong)), StatusCode::kPermissionDenied);
  EXPECT_EQ(k.RetryAfterMillis(), 1000);

  // While backing off even the right passphrase is refused, without being tried or counted.
  Status s = k.Unlock(AsBytes(kPass));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("retry in 1000 ms"), std::string::npos) << s.message();
  EXPECT_EQ(k.failed_attempts(), 3u);
  EXPECT_FALSE(k.unlocked());

  clock_.Advance(999);
  CW_ST_EXPECT_CODE(k.Unlock(AsBytes(kPass)), StatusCode::kUnavailable);
  EXPECT_EQ(k.RetryAfterMillis(), 1);
  clock_.Advance(1);
  EXPECT_EQ(k.RetryAfterMillis(), 0);
  CW_ST_EXPECT_CODE(k.Unlock(AsBytes(kWrong)), StatusCode::kPermissionDenied);
  EXPECT_EQ(k.RetryAfterMillis(), 2000);
  clock_.Advance(2000);
  CW_ST_EXPECT_CODE(k.Unlock(AsBytes(kWrong)), StatusCode::kPermissionDenied);
  EXPECT_EQ(k.RetryAfterMillis(), 4000);

  // The wait is persistent too: a restarted app must wait the same.
  clock_.Advance(1500);
  {
    auto again = Keystore::Open(path(), o);
    CW_ST_ASSERT_OK(again);
    EXPECT_EQ((*again)->failed_attempts(), 5u);
    EXPECT_EQ((*again)->RetryAfterMillis(), 2500);
    CW_ST_EXPECT_CODE((*again)->Unlock(AsBytes(kPass)), StatusCode::kUnavailable);
  }
  clock_.Advance(2500);
  CW_ST_ASSERT_OK(k.Unlock(AsBytes(kPass)));
  EXPECT_EQ(k.failed_attempts(), 0u);
  EXPECT_EQ(k.RetryAfterMillis(), 0);
}

TEST_F(KeystoreTest, BackoffIsCappedAndAClockSetBackDoesNotLockForever) {
  KeystoreOptions o = Options();
  o.backoff_free_attempts = 1;
  o.backoff_base_ms = 1000;
  o.backoff_max_ms = 5000;
  auto ks = Keystore::Create(path(), AsBytes(kPass), o);
  CW_ST_ASSERT_OK(ks);
  for (int i = 0; i < 8; ++i) {
    clock_.Advance(10'000);
    CW_ST_EXPECT_CODE((*ks)->Unlock(AsBytes(kWrong)), StatusCode::kPermissionDenied);
  }
  EXPECT_EQ((*ks)->RetryAfterMillis(), 5000);
  clock_.Advance(-1'000'000);
  EXPECT_EQ((*ks)->RetryAfterMillis(), 5000);
}

TEST_F(KeystoreTest, ErasePolicyShredsTheKeystoreAtTheLimit) {
  KeystoreOptions o = Options();
  o.backoff_free_attempts = 100;  // no waiting in this test
  o.erase_after_failures = 3;
  auto ks = Keystore::Create(path(), AsBytes(kPass), o);
  CW_ST_ASSERT_OK(ks);
  (*ks)->Lock();
  CW_ST_EXPECT_CODE((*ks)->Unlock(AsBytes(kWrong)), StatusCode::kPermissionDenied);
  CW_ST_EXPECT_CODE((*ks)->Unlock(AsBytes(kWrong)), StatusCode::kPermissionDenied);
  EXPECT_TRUE(std::filesystem::exists(path()));
  Status s = (*ks)->Unlock(AsBytes(kWrong));
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_NE(s.message().find("erased"), std::string::npos) << s.message();
  EXPECT_TRUE((*ks)->erased());
  EXPECT_FALSE(std::filesystem::exists(path()));
  EXPECT_FALSE(std::filesystem::exists(path() + ".tmp"));
  CW_ST_EXPECT_CODE((*ks)->Unlock(AsBytes(kPass)), StatusCode::kNotFound);
  CW_ST_EXPECT_CODE(Keystore::Open(path(), o), StatusCode::kNotFound);
}

TEST_F(KeystoreTest, EraseIsOffByDefault) {
  KeystoreOptions o = Options();
  o.backoff_free_attempts = 100;
  auto ks = Keystore::Create(path(), AsBytes(kPass), o);
  CW_ST_ASSERT_OK(ks);
  for (int i = 0; i < 12; ++i)
    CW_ST_EXPECT_CODE((*ks)->Unlock(AsBytes(kWrong)), StatusCode::kPermissionDenied);
  EXPECT_FALSE((*ks)->erased());
  CW_ST_ASSERT_OK((*ks)->Unlock(AsBytes(kPass)));
}

TEST_F(KeystoreTest, ChangePassphraseRewrapsTheSameMasterKey) {
  auto ks = Keystore::Create(path(), AsBytes(kPass), Options());
  CW_ST_ASSERT_OK(ks);
  const auto before = Subkey(**ks);
  const std::string old_file = ReadFileBytes();

  CW_ST_EXPECT_CODE((*ks)->ChangePassphrase(AsBytes(kWrong), AsBytes("new pin 4711")),
                    StatusCode::kPermissionDenied);
  EXPECT_EQ((*ks)->failed_attempts(), 1u);
  CW_ST_EXPECT_CODE((*ks)->ChangePassphrase(AsBytes(kPass), AsBytes("")), StatusCode::kInvalidArgument);
  CW_ST_ASSERT_OK((*ks)->ChangePassphrase(AsBytes(kPass), AsBytes("new pin 4711")));
  EXPECT_TRUE((*ks)->unlocked());
  EXPECT_EQ((*ks)->failed_attempts(), 0u);
  const std::string new_file = ReadFileBytes();
  ASSERT_EQ(new_file.size(), old_file.size());
  EXPECT_NE(new_file.substr(24, 16), old_file.substr(24, 16)) << "a new salt";
  ks->reset();

  auto opened = Keystore::Open(path(), Options());
  CW_ST_ASSERT_OK(opened);
  CW_ST_EXPECT_CODE((*opened)->Unlock(AsBytes(kPass)), StatusCode::kPermissionDenied);
  CW_ST_ASSERT_OK((*opened)->Unlock(AsBytes("new pin 4711")));
  EXPECT_EQ(Subkey(**opened), before);
}

TEST_F(KeystoreTest, LockWipesAndEveryDerivationFailsAfterwards) {
  auto ks = Keystore::Create(path(), AsBytes(kPass), Options());
  CW_ST_ASSERT_OK(ks);
  const auto before = Subkey(**ks);
  (*ks)->Lock();
  EXPECT_FALSE((*ks)->unlocked());
  std::array<uint8_t, 32> out{};
  Status s = (*ks)->DeriveSubkey(7, "testctx1", out);
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(), "keystore is locked");
  EXPECT_EQ(out, (std::array<uint8_t, 32>{}));
  (*ks)->Lock();  // idempotent
  CW_ST_ASSERT_OK((*ks)->Unlock(AsBytes(kPass)));
  EXPECT_EQ(Subkey(**ks), before);
}

TEST_F(KeystoreTest, LockListenersRunOnEveryLockUntilRemoved) {
  KeystoreOptions o = Options();
  o.backoff_free_attempts = 100;
  o.erase_after_failures = 1;
  auto ks = Keystore::Create(path(), AsBytes(kPass), o);
  CW_ST_ASSERT_OK(ks);
  int first = 0, second = 0;
  const auto a = (*ks)->AddLockListener([&] {
    ++first;
    EXPECT_FALSE((*ks)->unlocked());  // runs after the wipe
  });
  const auto b = (*ks)->AddLockListener([&] { ++second; });
  (*ks)->Lock();
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 1);
  (*ks)->RemoveLockListener(a);
  (*ks)->RemoveLockListener(a);  // unknown ids are ignored
  CW_ST_ASSERT_OK((*ks)->Unlock(AsBytes(kPass)));
  (*ks)->Lock();
  EXPECT_EQ(first, 1);
  EXPECT_EQ(second, 2);
  // The erase after too many failures wipes an unlocked key too, and says so.
  CW_ST_ASSERT_OK((*ks)->Unlock(AsBytes(kPass)));
  CW_ST_EXPECT_CODE((*ks)->Unlock(AsBytes("wrong")), StatusCode::kPermissionDenied);
  EXPECT_TRUE((*ks)->erased());
  EXPECT_EQ(second, 3);
  (*ks)->RemoveLockListener(b);
}

TEST_F(KeystoreTest, DamagedFilesAreRefusedNotTrusted) {
  CW_ST_ASSERT_OK(Keystore::Create(path(), AsBytes(kPass), Options()));
  const std::string good = ReadFileBytes();
  ASSERT_EQ(good.size(), 128u);

  // A changed salt, cost or wrapped key: the passphrase no longer opens it.
  for (size_t offset : {16u, 30u, 50u, 70u, 100u}) {
    std::string b = good;
    b[offset] = static_cast<char>(b[offset] ^ 0x01);
    WriteFileBytes(b);
    auto ks = Keystore::Open(path(), Options());
    CW_ST_ASSERT_OK(ks);
    CW_ST_EXPECT_CODE((*ks)->Unlock(AsBytes(kPass)), StatusCode::kPermissionDenied);
  }
  std::string b = good;
  b.resize(100);
  WriteFileBytes(b);
  CW_ST_EXPECT_CODE(Keystore::Open(path(), Options()), StatusCode::kMalformed);
  b = good;
  b[4] = 2;
  WriteFileBytes(b);
  CW_ST_EXPECT_CODE(Keystore::Open(path(), Options()), StatusCode::kUnsupportedVersion);
  b = good;
  b[23] = 0x7f;  // a memlimit in the exabytes
  WriteFileBytes(b);
  CW_ST_EXPECT_CODE(Keystore::Open(path(), Options()), StatusCode::kMalformed);

  WriteFileBytes(good);
  auto ks = Keystore::Open(path(), Options());
  CW_ST_ASSERT_OK(ks);
  CW_ST_ASSERT_OK((*ks)->Unlock(AsBytes(kPass)));
}

}  // namespace
}  // namespace cw::storage
